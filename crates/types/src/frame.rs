//! Frames, pages, orders and the counts of them.
//!
//! ```text
//!   physical memory:  | frame 0 | frame 1 | frame 2 | frame 3 | ...   (4 KiB each)
//!   an order-2 block: |<------------ 4 frames ------------>|            aligned to 16 KiB
//! ```

use core::fmt;

use crate::addr::{PhysAddr, VirtAddr};

/// log2 of the base page and frame size.
pub const PAGE_SHIFT: u32 = 12;
/// The base page and frame size: 4 KiB.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of the superpage size (2 MiB on x86_64).
pub const SUPERPAGE_SHIFT: u32 = 21;
/// The superpage size: 2 MiB.
pub const SUPERPAGE_SIZE: usize = 1 << SUPERPAGE_SHIFT;
/// The order of a superpage: 2^9 frames.
pub const SUPERPAGE_ORDER: Order = Order(9);

/// A 4 KiB physical frame, named by its number (its start address divided by 4 KiB).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Frame(u64);

impl Frame {
    /// The frame with this number.
    ///
    /// # Panics
    /// If the frame's start address would not be a valid [`PhysAddr`].
    #[inline]
    #[must_use]
    pub const fn from_number(number: u64) -> Self {
        assert!(number < (PhysAddr::LIMIT >> PAGE_SHIFT), "frame number beyond the physical limit");
        Frame(number)
    }

    /// The frame that starts at `addr`, or `None` if `addr` is not 4 KiB aligned.
    #[inline]
    #[must_use]
    pub const fn from_start_address(addr: PhysAddr) -> Option<Self> {
        if addr.is_aligned(PAGE_SIZE as u64) { Some(Frame(addr.as_u64() >> PAGE_SHIFT)) } else { None }
    }

    /// The frame that contains `addr`.
    #[inline]
    #[must_use]
    pub const fn containing_address(addr: PhysAddr) -> Self {
        Frame(addr.as_u64() >> PAGE_SHIFT)
    }

    /// The frame's number.
    #[inline]
    #[must_use]
    pub const fn number(self) -> u64 {
        self.0
    }

    /// The frame's first byte.
    #[inline]
    #[must_use]
    pub const fn start_address(self) -> PhysAddr {
        PhysAddr::new(self.0 << PAGE_SHIFT)
    }

    /// The frame `count` frames further on, or `None` past the physical limit.
    #[inline]
    #[must_use]
    pub const fn checked_add(self, count: FrameCount) -> Option<Self> {
        match self.0.checked_add(count.get()) {
            Some(n) if n < (PhysAddr::LIMIT >> PAGE_SHIFT) => Some(Frame(n)),
            _ => None,
        }
    }

    /// The number of frames from `earlier` to `self`, or `None` if `earlier` is above `self`.
    #[inline]
    #[must_use]
    pub const fn checked_distance_from(self, earlier: Frame) -> Option<FrameCount> {
        match self.0.checked_sub(earlier.0) {
            Some(n) => Some(FrameCount(n)),
            None => None,
        }
    }

    /// Whether the frame is the first of a naturally aligned block of `order`.
    #[inline]
    #[must_use]
    pub const fn is_aligned_to(self, order: Order) -> bool {
        self.0 & (order.frame_count().get() - 1) == 0
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:#x})", self.0 << PAGE_SHIFT)
    }
}

/// A 4 KiB virtual page, named by its number (its start address divided by 4 KiB).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Page(usize);

impl Page {
    /// The page that starts at `addr`, or `None` if `addr` is not 4 KiB aligned.
    #[inline]
    #[must_use]
    pub const fn from_start_address(addr: VirtAddr) -> Option<Self> {
        if addr.is_aligned(PAGE_SIZE) { Some(Page(addr.as_usize() >> PAGE_SHIFT)) } else { None }
    }

    /// The page that contains `addr`.
    #[inline]
    #[must_use]
    pub const fn containing_address(addr: VirtAddr) -> Self {
        Page(addr.as_usize() >> PAGE_SHIFT)
    }

    /// The page's number.
    #[inline]
    #[must_use]
    pub const fn number(self) -> usize {
        self.0
    }

    /// The page's first byte.
    #[inline]
    #[must_use]
    pub const fn start_address(self) -> VirtAddr {
        VirtAddr::new(self.0 << PAGE_SHIFT)
    }

    /// The page `count` pages further on, or `None` when that leaves the canonical range.
    #[inline]
    #[must_use]
    pub const fn checked_add(self, count: PageCount) -> Option<Self> {
        match self.0.checked_add(count.get()) {
            Some(n) => match n.checked_mul(PAGE_SIZE) {
                Some(a) if VirtAddr::try_new(a).is_ok() => Some(Page(n)),
                _ => None,
            },
            None => None,
        }
    }

    /// The number of pages from `earlier` to `self`, or `None` if `earlier` is above `self`.
    #[inline]
    #[must_use]
    pub const fn checked_distance_from(self, earlier: Page) -> Option<PageCount> {
        match self.0.checked_sub(earlier.0) {
            Some(n) => Some(PageCount(n)),
            None => None,
        }
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Page({:#x})", self.0 << PAGE_SHIFT)
    }
}

/// A number of 4 KiB frames.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct FrameCount(u64);

impl FrameCount {
    /// `n` frames.
    #[inline]
    #[must_use]
    pub const fn new(n: u64) -> Self {
        FrameCount(n)
    }

    /// The count as a number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The size in bytes, or `None` on overflow.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> Option<u64> {
        self.0.checked_mul(PAGE_SIZE as u64)
    }

    /// The number of frames that hold `bytes` (rounded up).
    #[inline]
    #[must_use]
    pub const fn for_bytes(bytes: u64) -> Self {
        FrameCount(bytes.div_ceil(PAGE_SIZE as u64))
    }
}

/// A number of 4 KiB virtual pages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct PageCount(usize);

impl PageCount {
    /// `n` pages.
    #[inline]
    #[must_use]
    pub const fn new(n: usize) -> Self {
        PageCount(n)
    }

    /// The count as a number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> usize {
        self.0
    }

    /// The size in bytes, or `None` on overflow.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> Option<usize> {
        self.0.checked_mul(PAGE_SIZE)
    }

    /// The number of pages that hold `bytes` (rounded up).
    #[inline]
    #[must_use]
    pub const fn for_bytes(bytes: usize) -> Self {
        PageCount(bytes.div_ceil(PAGE_SIZE))
    }
}

/// The error of [`Order::try_new`]: orders stop at [`Order::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderError(pub u32);

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {} is above the largest order {}", self.0, Order::MAX.0)
    }
}

impl core::error::Error for OrderError {}

/// The order of a block: a block of order `k` is 2^k frames, aligned to its size.
///
/// # Invariants
/// `k <= Order::MAX.get()`, so that a block's byte size fits in a `u64` address space of
/// 52 physical bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(transparent)]
pub struct Order(u8);

impl Order {
    /// The largest order any layer accepts: 2^40 frames (4 PiB), the physical limit.
    pub const MAX: Order = Order(40);
    /// Order 0, one frame.
    pub const ZERO: Order = Order(0);

    /// The order `k`.
    ///
    /// # Panics
    /// If `k` is above [`Order::MAX`].
    #[inline]
    #[must_use]
    pub const fn new(k: u8) -> Self {
        assert!(k <= Self::MAX.0, "order above Order::MAX");
        Order(k)
    }

    /// The order `k`.
    ///
    /// # Errors
    /// [`OrderError`] if `k` is above [`Order::MAX`].
    #[inline]
    pub const fn try_new(k: u32) -> Result<Self, OrderError> {
        if k <= Self::MAX.0 as u32 { Ok(Order(k as u8)) } else { Err(OrderError(k)) }
    }

    /// The order as a number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The number of frames in a block of this order.
    #[inline]
    #[must_use]
    pub const fn frame_count(self) -> FrameCount {
        FrameCount(1 << self.0)
    }

    /// The size in bytes of a block of this order.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> u64 {
        (PAGE_SIZE as u64) << self.0
    }

    /// The smallest order whose block holds `bytes` (order 0 for 0 bytes), or `None` past
    /// [`Order::MAX`].
    #[inline]
    #[must_use]
    pub const fn for_size(bytes: u64) -> Option<Self> {
        Self::for_frames(FrameCount::for_bytes(bytes))
    }

    /// The smallest order whose block holds `count` frames, or `None` past [`Order::MAX`].
    #[inline]
    #[must_use]
    pub const fn for_frames(count: FrameCount) -> Option<Self> {
        let n = if count.0 == 0 { 1 } else { count.0 };
        // Above 2^63 frames there is no next power of two in a u64 (and no order).
        let Some(p) = n.checked_next_power_of_two() else { return None };
        match Self::try_new(p.trailing_zeros()) {
            Ok(o) => Some(o),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_order_holds_more_than_2_pow_63_frames() {
        // next_power_of_two overflowed (a panic with overflow checks).
        for n in [u64::MAX, (1 << 63) + 1] {
            assert_eq!(Order::for_frames(FrameCount::new(n)), None);
        }
        assert_eq!(Order::for_frames(FrameCount::new(1 << 40)), Some(Order::MAX));
        assert_eq!(Order::for_frames(FrameCount::new((1 << 40) + 1)), None);
        assert_eq!(Order::for_size(u64::MAX), None);
    }

    #[test]
    fn frames_and_pages() {
        let f = Frame::containing_address(PhysAddr::new(0x1fff));
        assert_eq!(f.number(), 1);
        assert_eq!(Frame::from_start_address(PhysAddr::new(0x1001)), None);
        assert_eq!(f.start_address(), PhysAddr::new(0x1000));
        assert!(Frame::from_number(512).is_aligned_to(Order::new(9)));
        assert!(!Frame::from_number(513).is_aligned_to(Order::new(1)));
        let p = Page::containing_address(VirtAddr::new(0x7fff_ffff_f123));
        assert_eq!(p.checked_add(PageCount::new(1)), None);
        assert_eq!(Page::from_start_address(VirtAddr::new(0x3000)).map(Page::number), Some(3));
    }

    #[test]
    fn orders() {
        assert_eq!(Order::for_size(0), Some(Order::ZERO));
        assert_eq!(Order::for_size(4096), Some(Order::ZERO));
        assert_eq!(Order::for_size(4097), Some(Order::new(1)));
        assert_eq!(Order::for_frames(FrameCount::new(512)), Some(SUPERPAGE_ORDER));
        // Counts with no power of two above them in a u64 have no order (this overflowed).
        assert_eq!(Order::for_frames(FrameCount::new((1 << 63) + 1)), None);
        assert_eq!(Order::for_frames(FrameCount::new(u64::MAX)), None);
        assert_eq!(Order::for_frames(FrameCount::new(1 << 63)), None);
        assert_eq!(Order::try_new(41), Err(OrderError(41)));
        assert_eq!(Order::new(3).frame_count(), FrameCount::new(8));
        assert_eq!(FrameCount::for_bytes(4097), FrameCount::new(2));
    }
}
