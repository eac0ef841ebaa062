//! Physical memory areas: the seed's `memory_area_t`.

use core::fmt;

use memkit_types::{Frame, FrameCount, PAGE_SIZE, PhysAddr};

/// A range of physical memory: `size` bytes from `start` on (the seed's `memory_area_t` and
/// `memory_region_t`).
///
/// An area need not be aligned; the allocator's functions say what alignment they require.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemoryArea {
    /// The first byte.
    pub start: PhysAddr,
    /// The length in bytes.
    pub size: u64,
}

impl MemoryArea {
    /// The area of `size` bytes from `start` on.
    #[must_use]
    pub const fn new(start: PhysAddr, size: u64) -> Self {
        MemoryArea { start, size }
    }

    /// The area from `start` (inclusive) to `end` (exclusive); empty if `end <= start`.
    #[must_use]
    pub const fn from_bounds(start: PhysAddr, end: PhysAddr) -> Self {
        let size = end.as_u64().saturating_sub(start.as_u64());
        MemoryArea { start, size }
    }

    /// The area covering `count` frames from `start` on (its size saturates at `u64::MAX`, an
    /// area no allocator accepts).
    #[must_use]
    pub const fn from_frames(start: Frame, count: FrameCount) -> Self {
        MemoryArea { start: start.start_address(), size: count.get().saturating_mul(PAGE_SIZE as u64) }
    }

    /// One past the last byte (saturating, so an area that overflows ends at `u64::MAX`).
    #[must_use]
    pub const fn end(self) -> u64 {
        self.start.as_u64().saturating_add(self.size)
    }

    /// Whether the area starts and ends on a 4 KiB boundary.
    #[must_use]
    pub const fn is_frame_aligned(self) -> bool {
        self.start.is_aligned(PAGE_SIZE as u64) && self.size.is_multiple_of(PAGE_SIZE as u64)
    }

    /// Whether the two areas share a byte.
    #[must_use]
    pub const fn overlaps(self, other: MemoryArea) -> bool {
        self.size != 0 && other.size != 0 && self.start.as_u64() < other.end() && other.start.as_u64() < self.end()
    }

    /// Whether `other` lies entirely inside `self`.
    #[must_use]
    pub const fn contains(self, other: MemoryArea) -> bool {
        other.start.as_u64() >= self.start.as_u64() && other.end() <= self.end()
    }

    /// The first frame number the area touches and one past the last (rounded outwards):
    /// the frames a reserved region given as this area keeps from the allocator.
    #[must_use]
    pub const fn frames_outward(self) -> (u64, u64) {
        let s = self.start.as_u64() / PAGE_SIZE as u64;
        let e = self.end().div_ceil(PAGE_SIZE as u64);
        (s, e)
    }
}

impl fmt::Debug for MemoryArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryArea({:#x}..{:#x})", self.start.as_u64(), self.end())
    }
}

impl fmt::Display for MemoryArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start.as_u64(), self.end())
    }
}
