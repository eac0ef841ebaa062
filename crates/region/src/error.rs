//! The error of each region-map operation, with the seed's code.

use core::fmt;

use memkit_types::{Access, Rights, VirtAddr};

use crate::backing::BackingError;
use crate::flags::Flags;
use crate::mmu::MapError;

use memkit_types::l4::{L4_EADDRNOTAVAIL, L4_EEXIST, L4_EINVAL, L4_ENOENT, L4_ENOMEM, L4_EPERM, L4_ERANGE};

/// The seed code of an MMU failure.
#[must_use]
pub const fn map_error_code(e: MapError) -> i32 {
    match e {
        MapError::AlreadyMapped(_) => -L4_EEXIST,
        MapError::NotMapped(_) => -L4_ENOENT,
        MapError::OutOfRange(_) => -L4_EADDRNOTAVAIL,
        MapError::InvalidFrame(_) => -L4_EINVAL,
        MapError::OutOfMemory => -L4_ENOMEM,
        MapError::Unsupported(_) => -L4_EINVAL,
    }
}

/// Why [`RegionMap::try_new`](crate::RegionMap::try_new) refused a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowError {
    /// The window has no bytes.
    Empty,
    /// The start or the size is not a whole number of pages.
    Unaligned {
        /// The window's start.
        start: VirtAddr,
        /// Its size in bytes.
        size: usize,
    },
    /// The window leaves the canonical range, or its end (one past its last byte) is not
    /// a number: it reaches the last page of the address space.
    OutOfRange {
        /// The window's start.
        start: VirtAddr,
        /// Its size in bytes.
        size: usize,
    },
}

impl WindowError {
    /// The seed's code: `-L4_EINVAL`.
    #[must_use]
    pub const fn code(self) -> i32 {
        -L4_EINVAL
    }
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowError::Empty => f.write_str("a window of zero bytes"),
            WindowError::Unaligned { start, size } => {
                write!(f, "window of {size:#x} bytes at {start} is not page aligned")
            }
            WindowError::OutOfRange { start, size } => write!(
                f,
                "window of {size:#x} bytes at {start} leaves the canonical range or reaches the end of the address space"
            ),
        }
    }
}

impl core::error::Error for WindowError {}

/// Why [`reserve_area`](crate::RegionMap::reserve_area) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveError {
    /// The size is zero.
    ZeroSize,
    /// The size, rounded up to pages, or the end of the range overflows.
    SizeOverflow(usize),
    /// A fixed start is not page aligned.
    Unaligned(VirtAddr),
    /// The alignment (log2) is above the address width.
    BadAlignment(u8),
    /// Flags other than `SEARCH_ADDR` and `RESERVED` were given.
    InvalidFlags(Flags),
    /// The fixed range is outside the address space or overlaps an area or a region.
    NotAvailable(VirtAddr),
    /// No free range of this size was found.
    NoSpace(usize),
}

impl ReserveError {
    /// The seed's code: `-L4_EADDRNOTAVAIL` when the area cannot be reserved, `-L4_EINVAL`
    /// for malformed arguments.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            ReserveError::NotAvailable(_) | ReserveError::NoSpace(_) => -L4_EADDRNOTAVAIL,
            _ => -L4_EINVAL,
        }
    }
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::ZeroSize => f.write_str("an area of zero bytes"),
            ReserveError::SizeOverflow(s) => write!(f, "an area of {s:#x} bytes overflows"),
            ReserveError::Unaligned(a) => write!(f, "area start {a} is not page aligned"),
            ReserveError::BadAlignment(a) => write!(f, "alignment 2^{a} is too large"),
            ReserveError::InvalidFlags(fl) => write!(f, "flags {fl:?} do not apply to an area"),
            ReserveError::NotAvailable(a) => write!(f, "the range at {a} cannot be reserved"),
            ReserveError::NoSpace(s) => write!(f, "no free range of {s:#x} bytes"),
        }
    }
}

impl core::error::Error for ReserveError {}

/// Why [`free_area`](crate::RegionMap::free_area) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeAreaError {
    /// No area contains the address.
    NoArea(VirtAddr),
}

impl FreeAreaError {
    /// The seed's code: `-L4_ENOENT`.
    #[must_use]
    pub const fn code(self) -> i32 {
        -L4_ENOENT
    }
}

impl fmt::Display for FreeAreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeAreaError::NoArea(a) => write!(f, "no area contains {a}"),
        }
    }
}

impl core::error::Error for FreeAreaError {}

/// Why [`attach`](crate::RegionMap::attach) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// The size is zero.
    ZeroSize,
    /// The size rounded up to pages, the end of the region, or the end of the dataspace
    /// range overflows.
    SizeOverflow(usize),
    /// A fixed start is not page aligned.
    Unaligned(VirtAddr),
    /// The offset into the dataspace is not page aligned.
    UnalignedOffset(u64),
    /// The alignment (log2) is above the address width.
    BadAlignment(u8),
    /// `RESERVED` is an area flag, not a region flag.
    InvalidFlags(Flags),
    /// The dataspace handle names no dataspace.
    UnknownDataspace,
    /// The rights asked for exceed what the handle allows.
    PermissionDenied {
        /// The rights asked for.
        requested: Rights,
        /// The rights the handle allows.
        allowed: Rights,
    },
    /// `IN_AREA` was given but no area contains the start address.
    NoArea(VirtAddr),
    /// `IN_AREA` named a `RESERVED` area, which accepts no attachment.
    ReservedArea(VirtAddr),
    /// The fixed range is outside the address space (or the area), or overlaps a region or
    /// an area.
    NotAvailable(VirtAddr),
    /// No free range of this size was found.
    NoSpace(usize),
    /// The region would show bytes past the end of its dataspace.
    BeyondDataspace {
        /// One past the last dataspace byte the region would show.
        end: u64,
        /// The dataspace's size.
        size: u64,
    },
    /// `EAGER_MAP`: the backing store could not provide a page.
    Backing(BackingError),
    /// `EAGER_MAP`: the MMU could not map a page (or, replacing, unmap one).
    Mmu(MapError),
}

impl AttachError {
    /// The seed's code: `-L4_ENOENT` (no area), `-L4_EPERM` (rights, reserved area),
    /// `-L4_EINVAL` (malformed arguments), `-L4_EADDRNOTAVAIL` (address not available), or
    /// the mapping error's code with `EAGER_MAP`.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            AttachError::NoArea(_) => -L4_ENOENT,
            AttachError::PermissionDenied { .. } | AttachError::ReservedArea(_) => -L4_EPERM,
            AttachError::NotAvailable(_) | AttachError::NoSpace(_) => -L4_EADDRNOTAVAIL,
            AttachError::BeyondDataspace { .. } => -L4_ERANGE,
            AttachError::Backing(e) => e.code(),
            AttachError::Mmu(e) => map_error_code(e),
            AttachError::ZeroSize
            | AttachError::SizeOverflow(_)
            | AttachError::Unaligned(_)
            | AttachError::UnalignedOffset(_)
            | AttachError::BadAlignment(_)
            | AttachError::InvalidFlags(_)
            | AttachError::UnknownDataspace => -L4_EINVAL,
        }
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::ZeroSize => f.write_str("a region of zero bytes"),
            AttachError::SizeOverflow(s) => write!(f, "a region of {s:#x} bytes overflows"),
            AttachError::Unaligned(a) => write!(f, "region start {a} is not page aligned"),
            AttachError::UnalignedOffset(o) => write!(f, "dataspace offset {o:#x} is not page aligned"),
            AttachError::BadAlignment(a) => write!(f, "alignment 2^{a} is too large"),
            AttachError::InvalidFlags(fl) => write!(f, "flags {fl:?} do not apply to a region"),
            AttachError::UnknownDataspace => f.write_str("no such dataspace"),
            AttachError::PermissionDenied { requested, allowed } => {
                write!(f, "rights {requested:?} exceed the handle's {allowed:?}")
            }
            AttachError::NoArea(a) => write!(f, "no area contains {a}"),
            AttachError::ReservedArea(a) => write!(f, "the area at {a} is reserved"),
            AttachError::NotAvailable(a) => write!(f, "the range at {a} is not available"),
            AttachError::NoSpace(s) => write!(f, "no free range of {s:#x} bytes"),
            AttachError::BeyondDataspace { end, size } => {
                write!(f, "the region would reach byte {end:#x} of a dataspace of {size:#x} bytes")
            }
            AttachError::Backing(e) => write!(f, "eager map: {e}"),
            AttachError::Mmu(e) => write!(f, "eager map: {e}"),
        }
    }
}

impl core::error::Error for AttachError {}

/// Why [`detach`](crate::RegionMap::detach) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DetachError {
    /// The size is zero.
    ZeroSize,
    /// The end of the range overflows.
    SizeOverflow(usize),
    /// `EXACT` and `OVERLAP` together, or an unknown bit.
    InvalidFlags(u8),
    /// No region overlaps the range.
    NoRegion(VirtAddr),
    /// The MMU could not unmap the range.
    Mmu(MapError),
}

impl DetachError {
    /// The seed's code: `-L4_ENOENT` when no region is found, `-L4_EINVAL` for malformed
    /// arguments, the MMU error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            DetachError::NoRegion(_) => -L4_ENOENT,
            DetachError::Mmu(e) => map_error_code(e),
            DetachError::ZeroSize | DetachError::SizeOverflow(_) | DetachError::InvalidFlags(_) => -L4_EINVAL,
        }
    }
}

impl fmt::Display for DetachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetachError::ZeroSize => f.write_str("a range of zero bytes"),
            DetachError::SizeOverflow(s) => write!(f, "a range of {s:#x} bytes overflows"),
            DetachError::InvalidFlags(b) => write!(f, "detach flags {b:#x} are invalid"),
            DetachError::NoRegion(a) => write!(f, "no region at {a}"),
            DetachError::Mmu(e) => write!(f, "unmap: {e}"),
        }
    }
}

impl core::error::Error for DetachError {}

/// Why [`find`](crate::RegionMap::find) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindError {
    /// The size is zero.
    ZeroSize,
    /// The end of the range overflows.
    SizeOverflow(usize),
    /// No region and no area overlaps the range.
    NotFound(VirtAddr),
}

impl FindError {
    /// The seed's code: `-L4_ENOENT` when nothing is found, `-L4_EINVAL` for malformed
    /// arguments.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            FindError::NotFound(_) => -L4_ENOENT,
            FindError::ZeroSize | FindError::SizeOverflow(_) => -L4_EINVAL,
        }
    }
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::ZeroSize => f.write_str("a range of zero bytes"),
            FindError::SizeOverflow(s) => write!(f, "a range of {s:#x} bytes overflows"),
            FindError::NotFound(a) => write!(f, "no region or area at {a}"),
        }
    }
}

impl core::error::Error for FindError {}

/// Why [`resolve`](crate::RegionMap::resolve) mapped nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultError {
    /// No region contains the address.
    NoRegion(VirtAddr),
    /// The region's rights (or what the backing allows now) forbid the access.
    Forbidden {
        /// The faulting address.
        addr: VirtAddr,
        /// The access.
        access: Access,
        /// What the mapping may allow.
        rights: Rights,
    },
    /// The backing store could not provide the page.
    Backing(BackingError),
    /// The MMU could not map the page.
    Mmu(MapError),
}

impl FaultError {
    /// The seed's code: `-L4_ENOENT` outside every region, `-L4_EPERM` beyond the rights,
    /// else the backing's or the MMU's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            FaultError::NoRegion(_) => -L4_ENOENT,
            FaultError::Forbidden { .. } => -L4_EPERM,
            FaultError::Backing(e) => e.code(),
            FaultError::Mmu(e) => map_error_code(e),
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::NoRegion(a) => write!(f, "no region at {a}"),
            FaultError::Forbidden { addr, access, rights } => {
                write!(f, "{access:?} at {addr} is beyond the rights {rights:?}")
            }
            FaultError::Backing(e) => write!(f, "page fault: {e}"),
            FaultError::Mmu(e) => write!(f, "page fault: {e}"),
        }
    }
}

impl core::error::Error for FaultError {}

/// Why [`protect`](crate::RegionMap::protect) failed (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectError {
    /// The size is zero.
    ZeroSize,
    /// The start is not page aligned.
    Unaligned(VirtAddr),
    /// The size rounded up to pages, or the end of the range, overflows.
    SizeOverflow(usize),
    /// A page of the range lies in no region (the first such address).
    NotMapped(VirtAddr),
    /// The rights exceed what the handle of a region's dataspace allows.
    PermissionDenied {
        /// The region's start.
        region: VirtAddr,
        /// The rights asked for.
        requested: Rights,
        /// The rights the handle allows (none when the dataspace is gone).
        allowed: Rights,
    },
    /// The MMU could not take rights away from a page.
    Mmu(MapError),
}

impl ProtectError {
    /// `-L4_ENOENT` (a hole in the range), `-L4_EPERM` (rights), the MMU error's code, else
    /// `-L4_EINVAL`.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            ProtectError::NotMapped(_) => -L4_ENOENT,
            ProtectError::PermissionDenied { .. } => -L4_EPERM,
            ProtectError::Mmu(e) => map_error_code(e),
            ProtectError::ZeroSize | ProtectError::Unaligned(_) | ProtectError::SizeOverflow(_) => -L4_EINVAL,
        }
    }
}

impl fmt::Display for ProtectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtectError::ZeroSize => f.write_str("a range of zero bytes"),
            ProtectError::Unaligned(a) => write!(f, "start {a} is not page aligned"),
            ProtectError::SizeOverflow(s) => write!(f, "a range of {s:#x} bytes overflows"),
            ProtectError::NotMapped(a) => write!(f, "no region at {a}"),
            ProtectError::PermissionDenied { region, requested, allowed } => {
                write!(f, "rights {requested:?} exceed the {allowed:?} of the dataspace of the region at {region}")
            }
            ProtectError::Mmu(e) => write!(f, "protect: {e}"),
        }
    }
}

impl core::error::Error for ProtectError {}

/// Why [`remap`](crate::RegionMap::remap) failed (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemapError {
    /// The old or the new size is zero.
    ZeroSize,
    /// The start or the fixed destination is not page aligned.
    Unaligned(VirtAddr),
    /// A size rounded up to pages, or the end of a range, overflows.
    SizeOverflow(usize),
    /// The old range is not inside one region (the start given).
    NotMapped(VirtAddr),
    /// The region cannot grow in place and may not move, or no free range of the new size
    /// was found.
    NoSpace(usize),
    /// The fixed destination is outside the window, overlaps an area it does not lie in
    /// (or a reserved one), or overlaps the old range.
    NotAvailable(VirtAddr),
    /// The region would show bytes past the end of its dataspace.
    BeyondDataspace {
        /// One past the last dataspace byte the region would show.
        end: u64,
        /// The dataspace's size.
        size: u64,
    },
    /// `EAGER_MAP`: the backing store could not provide a page of the grown part.
    Backing(BackingError),
    /// The MMU could not move or map a page.
    Mmu(MapError),
}

impl RemapError {
    /// `-L4_ENOENT` (no region), `-L4_EADDRNOTAVAIL` (no room), `-L4_ERANGE` (past the
    /// dataspace), the backing's or the MMU's code, else `-L4_EINVAL`.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            RemapError::NotMapped(_) => -L4_ENOENT,
            RemapError::NoSpace(_) | RemapError::NotAvailable(_) => -L4_EADDRNOTAVAIL,
            RemapError::BeyondDataspace { .. } => -L4_ERANGE,
            RemapError::Backing(e) => e.code(),
            RemapError::Mmu(e) => map_error_code(e),
            RemapError::ZeroSize | RemapError::Unaligned(_) | RemapError::SizeOverflow(_) => -L4_EINVAL,
        }
    }
}

impl fmt::Display for RemapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemapError::ZeroSize => f.write_str("a range of zero bytes"),
            RemapError::Unaligned(a) => write!(f, "address {a} is not page aligned"),
            RemapError::SizeOverflow(s) => write!(f, "a range of {s:#x} bytes overflows"),
            RemapError::NotMapped(a) => write!(f, "the range at {a} is not inside one region"),
            RemapError::NoSpace(s) => write!(f, "no room for {s:#x} bytes"),
            RemapError::NotAvailable(a) => write!(f, "the range at {a} is not available"),
            RemapError::BeyondDataspace { end, size } => {
                write!(f, "the region would reach byte {end:#x} of a dataspace of {size:#x} bytes")
            }
            RemapError::Backing(e) => write!(f, "eager map: {e}"),
            RemapError::Mmu(e) => write!(f, "remap: {e}"),
        }
    }
}

impl core::error::Error for RemapError {}
