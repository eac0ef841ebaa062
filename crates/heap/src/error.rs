//! One error enum per operation, each with `code()` giving the seed's meaning.
//!
//! The AIX services report failure as a null pointer (`xmalloc`), `-1` (`xmfree`) or an
//! errno value (`pin`, `unpin`); `code()` returns the errno value of the failure
//! (`ENOMEM` = 12, `EINVAL` = 22), and [`XmfreeError::code`] the `-1` `xmfree` returns.

use core::fmt;

use memkit_types::VirtAddr;

/// `ENOMEM`: not enough memory.
pub const ENOMEM: i32 = 12;
/// `EINVAL`: an invalid argument.
pub const EINVAL: i32 = 22;

/// Why `xmalloc` returned a null pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmallocError {
    /// "La mémoire demandée ne peut pas être allouée": the page source has no room for
    /// this many bytes.
    NoMemory(usize),
    /// "Le segment de mémoire n'a pas été initialisé": the heap has not been initialised.
    NotInitialised,
    /// An alignment (log2) beyond what a heap serves.
    BadAlignment(u32),
    /// A size no heap could ever hold.
    TooLarge(usize),
}

impl XmallocError {
    /// The errno value: `ENOMEM` for a lack of memory or an uninitialised heap (both give a
    /// null pointer in the seed), `EINVAL` for an impossible request.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            XmallocError::NoMemory(_) | XmallocError::NotInitialised => ENOMEM,
            XmallocError::BadAlignment(_) | XmallocError::TooLarge(_) => EINVAL,
        }
    }
}

impl fmt::Display for XmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmallocError::NoMemory(n) => write!(f, "no memory for {n} bytes"),
            XmallocError::NotInitialised => f.write_str("heap not initialised"),
            XmallocError::BadAlignment(a) => write!(f, "alignment 2^{a} is not supported"),
            XmallocError::TooLarge(n) => write!(f, "{n} bytes can never be allocated"),
        }
    }
}

impl core::error::Error for XmallocError {}

/// Why `xmfree` refused a pointer; nothing was freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmfreeError {
    /// The pointer is in no page of the heap (never allocated from it).
    NotOwned(VirtAddr),
    /// The pointer belongs to another heap than the one named.
    OtherHeap(VirtAddr),
    /// The pointer is inside a block, not at its start.
    NotBlockStart(VirtAddr),
    /// The block is free: a double free, or a pointer never handed out.
    NotAllocated(VirtAddr),
    /// Kernel-heap memory still pinned (with this many pins): unpin it first.
    StillPinned(VirtAddr, u32),
    /// The pointer is not a canonical address, so no heap holds it.
    NonCanonical(usize),
}

impl XmfreeError {
    /// `-1`, what `xmfree` returns on every failure.
    #[must_use]
    pub const fn code(self) -> i32 {
        -1
    }

    /// The errno value of the failure: `EINVAL` for every kind.
    #[must_use]
    pub const fn errno(self) -> i32 {
        EINVAL
    }
}

impl fmt::Display for XmfreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmfreeError::NotOwned(a) => write!(f, "{a:?} was not allocated from this heap"),
            XmfreeError::OtherHeap(a) => write!(f, "{a:?} belongs to another heap"),
            XmfreeError::NotBlockStart(a) => write!(f, "{a:?} is not the start of a block"),
            XmfreeError::NotAllocated(a) => write!(f, "{a:?} is free (double free?)"),
            XmfreeError::StillPinned(a, n) => write!(f, "{a:?} is still pinned {n} times"),
            XmfreeError::NonCanonical(a) => write!(f, "{a:#x} is not a canonical address"),
        }
    }
}

impl core::error::Error for XmfreeError {}

/// Why `pin` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinError {
    /// The pointer is not a live block start of the heap.
    Invalid(XmfreeError),
    /// The pin table is full (or the pin count would overflow).
    NoMemory(VirtAddr),
}

impl PinError {
    /// `EINVAL` or `ENOMEM`.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            PinError::Invalid(_) => EINVAL,
            PinError::NoMemory(_) => ENOMEM,
        }
    }
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Invalid(e) => write!(f, "cannot pin: {e}"),
            PinError::NoMemory(a) => write!(f, "cannot pin {a:?}: too many pinned blocks"),
        }
    }
}

impl core::error::Error for PinError {}

/// Why `unpin` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnpinError {
    /// The pointer is not a live block start of the heap.
    Invalid(XmfreeError),
    /// The block is not pinned.
    NotPinned(VirtAddr),
    /// Pinned-heap memory "ne doit pas être débloquée": it must stay pinned.
    PinnedHeap(VirtAddr),
}

impl UnpinError {
    /// `EINVAL` for every kind.
    #[must_use]
    pub const fn code(self) -> i32 {
        EINVAL
    }
}

impl fmt::Display for UnpinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpinError::Invalid(e) => write!(f, "cannot unpin: {e}"),
            UnpinError::NotPinned(a) => write!(f, "{a:?} is not pinned"),
            UnpinError::PinnedHeap(a) => write!(f, "{a:?} is pinned-heap memory and must stay pinned"),
        }
    }
}

impl core::error::Error for UnpinError {}

/// Why `realloc` failed; the old block is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReallocError {
    /// The old pointer cannot be freed.
    Free(XmfreeError),
    /// No new block.
    Allocate(XmallocError),
}

impl ReallocError {
    /// The code of the underlying failure.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            ReallocError::Free(e) => e.code(),
            ReallocError::Allocate(e) => e.code(),
        }
    }
}

impl fmt::Display for ReallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReallocError::Free(e) => write!(f, "realloc: {e}"),
            ReallocError::Allocate(e) => write!(f, "realloc: {e}"),
        }
    }
}

impl core::error::Error for ReallocError {}
