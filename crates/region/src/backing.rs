//! What a region map needs from the store behind its regions (the dataspace manager).
//!
//! The region map knows nothing of how dataspaces allocate, copy or share frames: it asks a
//! [`Backing`] for the frame behind an offset when a page faults, for the rights a handle
//! allows when it attaches, and tells it when an attachment appears or goes away.

use core::fmt;

use memkit_types::{Access, Frame, Rights};

/// Why the backing store could not provide a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingError {
    /// The dataspace does not exist (any more).
    UnknownDataspace,
    /// The offset is at or beyond the dataspace's size.
    OutOfRange(u64),
    /// The dataspace does not allow this access.
    Forbidden(Access),
    /// No memory to allocate the frame (or to break copy-on-write).
    OutOfMemory,
}

impl BackingError {
    /// The seed's code: `-L4_EINVAL` (22), `-L4_ERANGE` (34), `-L4_EPERM` (1), `-L4_ENOMEM` (12).
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            BackingError::UnknownDataspace => crate::L4_EINVAL,
            BackingError::OutOfRange(_) => crate::L4_ERANGE,
            BackingError::Forbidden(_) => crate::L4_EPERM,
            BackingError::OutOfMemory => crate::L4_ENOMEM,
        }
    }
}

impl fmt::Display for BackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackingError::UnknownDataspace => f.write_str("no such dataspace"),
            BackingError::OutOfRange(o) => write!(f, "offset {o:#x} is beyond the dataspace"),
            BackingError::Forbidden(a) => write!(f, "the dataspace does not allow {a:?}"),
            BackingError::OutOfMemory => f.write_str("no memory for the page"),
        }
    }
}

impl core::error::Error for BackingError {}

/// A store of dataspaces that regions are attached to.
///
/// Offsets are bytes from the dataspace's start, page aligned.
pub trait Backing {
    /// How a dataspace is named. `Copy`, so that the fault path moves it without allocating.
    type Id: Copy + Eq + fmt::Debug;

    /// The rights the handle `id` allows (what an attachment may ask for at most), or `None`
    /// when there is no such dataspace.
    fn rights(&self, id: Self::Id) -> Option<Rights>;

    /// The frame behind the page at `offset` for an `access`, allocating it on first touch
    /// and breaking copy-on-write on a write, with the rights the mapping may have now (a
    /// copy-on-write page shared after a read is mapped without `WRITE`).
    ///
    /// # Errors
    /// [`BackingError`] when the offset is outside the dataspace, the dataspace is gone or
    /// forbids the access, or memory is exhausted. The fault path calls this: it should not
    /// allocate heap memory.
    fn map(&mut self, id: Self::Id, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError>;

    /// A new attachment of `id` now refers to it (an attach or the second half of a split).
    fn attached(&mut self, id: Self::Id);

    /// An attachment of `id` went away (a whole region was detached).
    fn detached(&mut self, id: Self::Id);

    /// The detached bytes `offset .. offset + size` of `id` are no longer needed (a region
    /// attached with `DETACH_FREE` was detached without `DETACH_KEEP`): the store may free
    /// their frames.
    fn release(&mut self, id: Self::Id, offset: u64, size: u64);
}

impl<B: Backing + ?Sized> Backing for &mut B {
    type Id = B::Id;
    fn rights(&self, id: Self::Id) -> Option<Rights> {
        (**self).rights(id)
    }
    fn map(&mut self, id: Self::Id, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        (**self).map(id, offset, access)
    }
    fn attached(&mut self, id: Self::Id) {
        (**self).attached(id);
    }
    fn detached(&mut self, id: Self::Id) {
        (**self).detached(id);
    }
    fn release(&mut self, id: Self::Id, offset: u64, size: u64) {
        (**self).release(id, offset, size);
    }
}
