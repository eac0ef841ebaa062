//! The errors of the frame allocator and their seed codes.
//!
//! Seed 004 names four results: `ERR_NONE`, `ERR_OUT_OF_MEMORY`, `ERR_NOT_VALID` and
//! `ERR_PHYSICAL_MEMORY_FULL`. It does not give their numbers; memkit numbers them as
//! [`ErrorCode`] does. Every operation has its own small error enum whose `code()` maps each
//! variant to one of them.

use core::fmt;

use memkit_types::{Frame, Order};

use crate::area::MemoryArea;

/// A result code of seed 004 (`error_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `ERR_NONE`: success.
    None = 0,
    /// `ERR_OUT_OF_MEMORY`: no room for the header region.
    OutOfMemory = 1,
    /// `ERR_NOT_VALID`: an unsupported order, or an area that cannot be freed.
    NotValid = 2,
    /// `ERR_PHYSICAL_MEMORY_FULL`: no free block of the requested order.
    PhysicalMemoryFull = 3,
}

/// Why an area cannot be managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AreaError {
    /// The area does not start and end on a 4 KiB boundary.
    Unaligned(MemoryArea),
    /// The area is empty.
    Empty(MemoryArea),
    /// The area extends past the physical address limit.
    TooLarge(MemoryArea),
}

impl fmt::Display for AreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AreaError::Unaligned(a) => write!(f, "area {a} is not 4 KiB aligned"),
            AreaError::Empty(a) => write!(f, "area {a} is empty"),
            AreaError::TooLarge(a) => write!(f, "area {a} extends past the physical limit"),
        }
    }
}

impl core::error::Error for AreaError {}

/// The error of [`get_header`](crate::get_header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetHeaderError {
    /// `ERR_OUT_OF_MEMORY`: no run of `needed` bytes inside the area avoids every reserved region.
    OutOfMemory {
        /// The header size the area needs, in bytes.
        needed: u64,
    },
    /// The area itself cannot be managed (`ERR_NOT_VALID`).
    BadArea(AreaError),
}

impl GetHeaderError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        match self {
            GetHeaderError::OutOfMemory { .. } => ErrorCode::OutOfMemory,
            GetHeaderError::BadArea(_) => ErrorCode::NotValid,
        }
    }
}

impl fmt::Display for GetHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetHeaderError::OutOfMemory { needed } => {
                write!(f, "no room for a {needed}-byte header outside the reserved regions")
            }
            GetHeaderError::BadArea(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for GetHeaderError {}

/// The error of [`Allocator::init`](crate::Allocator::init). The seed's `init_region` only
/// returns `ERR_NONE`: these are its preconditions, checked; each maps to `ERR_NOT_VALID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// The area cannot be managed.
    BadArea(AreaError),
    /// The header region is not 4 KiB aligned, smaller than `header_size(area)` or not
    /// inside the area.
    BadHeaderRegion(MemoryArea),
    /// The header region overlaps this reserved region.
    HeaderOverlapsReserved(MemoryArea),
    /// The header mapping holds fewer words than the header needs.
    MappingTooSmall {
        /// Words the header needs.
        needed: usize,
        /// Words the mapping holds.
        given: usize,
    },
}

impl InitError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        ErrorCode::NotValid
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::BadArea(e) => e.fmt(f),
            InitError::BadHeaderRegion(h) => {
                write!(f, "header region {h} is unaligned, too small or outside the area")
            }
            InitError::HeaderOverlapsReserved(r) => write!(f, "header region overlaps reserved region {r}"),
            InitError::MappingTooSmall { needed, given } => {
                write!(f, "header mapping holds {given} words, the header needs {needed}")
            }
        }
    }
}

impl core::error::Error for InitError {}

/// The error of [`Allocator::attach`](crate::Allocator::attach): the words are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// The magic word is wrong (the words hold something else).
    BadMagic(u64),
    /// The stored geometry does not describe a valid area or does not match its checksum.
    BadGeometry,
    /// The mapping holds fewer words than the header.
    MappingTooSmall {
        /// Words the header needs.
        needed: usize,
        /// Words the mapping holds.
        given: usize,
    },
}

impl AttachError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        ErrorCode::NotValid
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::BadMagic(m) => write!(f, "not an allocator header (magic {m:#x})"),
            AttachError::BadGeometry => f.write_str("allocator header geometry is corrupt"),
            AttachError::MappingTooSmall { needed, given } => {
                write!(f, "header mapping holds {given} words, the header needs {needed}")
            }
        }
    }
}

impl core::error::Error for AttachError {}

/// The error of an allocation ([`Allocator::allocate`](crate::Allocator::allocate) and its
/// relatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocateError {
    /// `ERR_NOT_VALID`: the allocator does not support this order (larger than the area).
    NotValid(Order),
    /// `ERR_NOT_VALID`: a run of zero frames.
    ZeroCount,
    /// `ERR_PHYSICAL_MEMORY_FULL`: no free block of this order (below the limit, if any).
    PhysicalMemoryFull(Order),
}

impl AllocateError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        match self {
            AllocateError::NotValid(_) | AllocateError::ZeroCount => ErrorCode::NotValid,
            AllocateError::PhysicalMemoryFull(_) => ErrorCode::PhysicalMemoryFull,
        }
    }
}

impl fmt::Display for AllocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocateError::NotValid(o) => write!(f, "order {} is not supported by this allocator", o.get()),
            AllocateError::ZeroCount => f.write_str("cannot allocate zero frames"),
            AllocateError::PhysicalMemoryFull(o) => write!(f, "no free block of order {}", o.get()),
        }
    }
}

impl core::error::Error for AllocateError {}

/// The error of [`Allocator::allocate_at`](crate::Allocator::allocate_at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocateAtError {
    /// The range is empty or not entirely inside the allocator's area.
    OutsideArea(MemoryArea),
    /// This frame of the range is allocated already.
    InUse(Frame),
    /// This frame of the range is reserved (a reserved region, a hole or the header).
    Reserved(Frame),
}

impl AllocateAtError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        match self {
            AllocateAtError::OutsideArea(_) | AllocateAtError::Reserved(_) => ErrorCode::NotValid,
            AllocateAtError::InUse(_) => ErrorCode::PhysicalMemoryFull,
        }
    }
}

impl fmt::Display for AllocateAtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocateAtError::OutsideArea(a) => write!(f, "range {a} is not inside the allocator's area"),
            AllocateAtError::InUse(fr) => write!(f, "frame {:#x} is in use", fr.start_address().as_u64()),
            AllocateAtError::Reserved(fr) => write!(f, "frame {:#x} is reserved", fr.start_address().as_u64()),
        }
    }
}

impl core::error::Error for AllocateAtError {}

/// The error of [`Allocator::free`](crate::Allocator::free) and
/// [`Allocator::free_run`](crate::Allocator::free_run). Every variant is the seed's
/// `ERR_NOT_VALID`, and a failed free changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// The area is not a block: not 4 KiB aligned, not a power-of-two number of frames, or
    /// not aligned to its size.
    Unaligned(MemoryArea),
    /// The area is empty or not entirely inside the allocator's area (not the allocator's).
    OutsideArea(MemoryArea),
    /// This frame of the area is free already (possibly inside a larger free block).
    AlreadyFree(Frame),
    /// This frame of the area is reserved or holds the header: it was never handed out.
    Reserved(Frame),
}

impl FreeError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        ErrorCode::NotValid
    }
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::Unaligned(a) => write!(f, "area {a} is not a naturally aligned block"),
            FreeError::OutsideArea(a) => write!(f, "area {a} is not inside the allocator's area"),
            FreeError::AlreadyFree(fr) => write!(f, "frame {:#x} is already free", fr.start_address().as_u64()),
            FreeError::Reserved(fr) => {
                write!(f, "frame {:#x} is reserved, never allocated", fr.start_address().as_u64())
            }
        }
    }
}

impl core::error::Error for FreeError {}

/// The error of [`Allocator::add_region`](crate::Allocator::add_region): the region cannot
/// join. Each maps to `ERR_NOT_VALID`; nothing changes then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddRegionError {
    /// The region does not start and end on a 4 KiB boundary.
    Unaligned(MemoryArea),
    /// The region is empty or not inside the allocator's area.
    OutsideArea(MemoryArea),
    /// The region overlaps the header region (this frame of it).
    Header(Frame),
    /// This frame of the region is not reserved: it is managed already (free or allocated).
    NotReserved(Frame),
}

impl AddRegionError {
    /// The seed's code for this error.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        ErrorCode::NotValid
    }
}

impl fmt::Display for AddRegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddRegionError::Unaligned(a) => write!(f, "region {a} is not 4 KiB aligned"),
            AddRegionError::OutsideArea(a) => write!(f, "region {a} is empty or not inside the allocator's area"),
            AddRegionError::Header(fr) => {
                write!(f, "frame {:#x} of the region is the allocator's header", fr.start_address().as_u64())
            }
            AddRegionError::NotReserved(fr) => {
                write!(f, "frame {:#x} of the region is managed already", fr.start_address().as_u64())
            }
        }
    }
}

impl core::error::Error for AddRegionError {}
