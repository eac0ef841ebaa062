//! [`SpaceError`]: an operation on a space failed, because there is no such space or the
//! operation itself failed; with the L4 code of each case.

use core::fmt;

use memkit_region::{AttachError, DetachError, FaultError, ProtectError, RemapError};
use memkit_types::l4::L4_EINVAL;

use super::SpaceId;

/// An operation on a space of a [`SpaceSet`](super::SpaceSet) failed: there is no such space, or the
/// operation itself failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceError<E> {
    /// No space has this id.
    NoSpace(SpaceId),
    /// The operation's own error.
    Op(E),
}

impl<E: fmt::Display> fmt::Display for SpaceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::NoSpace(id) => write!(f, "no address space {}", id.0),
            SpaceError::Op(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for SpaceError<E> {}

impl SpaceError<AttachError> {
    /// `-L4_EINVAL` for a missing space, else the attach error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => -L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<DetachError> {
    /// `-L4_EINVAL` for a missing space, else the detach error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => -L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<ProtectError> {
    /// `-L4_EINVAL` for a missing space, else the protect error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => -L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<RemapError> {
    /// `-L4_EINVAL` for a missing space, else the remap error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => -L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<FaultError> {
    /// `-L4_EINVAL` for a missing space, else the fault error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => -L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}
