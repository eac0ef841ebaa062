//! One page entry: the frame backing a page of a dataspace, packed in a `u64`.
//!
//! ```text
//!   63            12 11    7 6  4  3   1     0
//!  | frame number   | 0    | pool | 0 | COW | present |
//! ```
//!
//! `COW` marks a frame that may be shared with other page entries: a write must first ask
//! the share counts and copy the frame if another entry still references it. A `COW` mark
//! on a frame nobody else references any more is stale and harmless; the next write clears it.

use memkit_types::{Frame, PAGE_SHIFT};

use crate::ids::PoolId;

const PRESENT: u64 = 1 << 0;
const COW: u64 = 1 << 1;
const POOL_SHIFT: u32 = 4;
const POOL_MASK: u64 = 0b111 << POOL_SHIFT;

/// A page entry: empty, or a frame from a pool, possibly shared copy-on-write.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Entry(u64);

impl core::fmt::Debug for Entry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.frame() {
            None => f.write_str("Entry(empty)"),
            Some(fr) => write!(f, "Entry({fr:?} pool {}{})", self.pool(), if self.is_cow() { " cow" } else { "" }),
        }
    }
}

impl Entry {
    /// No frame yet: reads as zeros.
    pub(crate) const EMPTY: Entry = Entry(0);

    /// `frame`, taken from `pool`, not shared.
    pub(crate) const fn new(frame: Frame, pool: PoolId) -> Self {
        Entry((frame.number() << PAGE_SHIFT) | ((pool.index() as u64) << POOL_SHIFT) | PRESENT)
    }

    /// The backing frame, if any.
    #[inline]
    pub(crate) const fn frame(self) -> Option<Frame> {
        if self.0 & PRESENT != 0 { Some(Frame::from_number(self.0 >> PAGE_SHIFT)) } else { None }
    }

    /// The backing frame's number, if any (the hot loops avoid building a `Frame`).
    #[inline]
    pub(crate) const fn frame_number(self) -> Option<u64> {
        if self.0 & PRESENT != 0 { Some(self.0 >> PAGE_SHIFT) } else { None }
    }

    /// The pool the frame came from (and goes back to).
    #[inline]
    pub(crate) const fn pool(self) -> PoolId {
        match PoolId::new(((self.0 & POOL_MASK) >> POOL_SHIFT) as u32) {
            Some(p) => p,
            None => PoolId::DEFAULT,
        }
    }

    /// Whether the frame may be shared copy-on-write.
    #[inline]
    pub(crate) const fn is_cow(self) -> bool {
        self.0 & COW != 0
    }

    /// The same entry with the copy-on-write mark set or cleared.
    #[inline]
    pub(crate) const fn with_cow(self, cow: bool) -> Self {
        if cow { Entry(self.0 | COW) } else { Entry(self.0 & !COW) }
    }
}
