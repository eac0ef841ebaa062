//! The pmallocator: a bitmap buddy allocator whose metadata lives in the managed RAM.
//!
//! # The header
//!
//! All metadata is a run of `u64` words (the header) inside the managed area. It holds no
//! pointers: only frame numbers, word offsets and bits. Every call goes through an
//! [`Allocator`] view attached over the header's *current* mapping (a `&mut [u64]`), so the
//! header keeps working after it is mapped elsewhere (boot identity map, then a higher-half
//! direct map; or copied to another buffer in a test).
//!
//! ```text
//!  header words:  | magic, area, header region, counters | A0 | R | A1 | T0.. | A2 | T1.. | ...
//!
//!  A0  one bit per frame:       1 = free                       (the truth)
//!  R   one bit per frame:       1 = reserved, header or outside the area
//!  A1  one bit per A0 word:     1 = all 64 frames free         (a free 64-frame unit)
//!  A2  one bit per A1 word:     1 = all 4096 frames free       ... up to the top level
//!  TL  one bit per AL word:     1 = the word is not zero       (64-ary summaries to find
//!      (and summaries of it)                                    a non-empty word fast)
//! ```
//!
//! A block of order `k = 6·L + r` is free exactly when its `2^r` bits at level `L` are set,
//! so blocks coalesce the moment their frames are free, as in an ideal buddy allocator, and
//! finding one is a walk down the summaries followed by a bit trick in one word.
//!
//! # Split and merge
//!
//! ```text
//!  allocate order 0 in a free 64-frame unit      free it again
//!  A1: ...1...  ->  ...0...                      A1: ...0...  ->  ...1...
//!  A0: 1111..11 ->  0111..11                     A0: 0111..11 ->  1111..11
//! ```
//! Splitting is clearing bits, merging is setting them: a level-`L+1` bit follows "my word at
//! level `L` is all ones", so no free lists are kept and no block is ever merged by hand.
//!
//! # Fast paths
//!
//! The common requests touch as few words as the design allows, and the code for them is
//! small enough to inline into the caller; everything else is out of line.
//!
//! - Order 0: take the lowest set bit of the hint word (`trailing_zeros`) when the word is
//!   neither empty nor full; free one frame by setting its bit when the frame is allocated
//!   (free and reserved bits checked in one test) and its word does not fill up. Only a word
//!   that fills up or empties completely climbs to the levels above.
//! - Blocks of order `k >= 6`: whole frame words (and whole words of the levels below
//!   `k / 6`) are filled or emptied at once, and `2^(k % 6)` bits of one word at level
//!   `k / 6` change; the search tests each word with a run mask fixed per order at compile
//!   time.
//! - A single frame at a fixed address: one word, unless it is full.
//!
//! # Hints (all in the header, all optional to correctness)
//!
//! - The word of the last single-frame free or allocation: order-0 requests try it first, so
//!   a free followed by an allocation touches one word.
//! - An allocation that empties frame words (a single frame, or the words of a block of
//!   order >= 6) leaves their layer-0 summary bits set; searches skip such stale bits and
//!   clear them on the way, and a free into such a word finds its bit already set.
//! - For orders >= 6: the first word a search may find a block in, and the smallest order
//!   known to have no free block at all; both move back when a unit of level >= 1 frees,
//!   and a single unit moves back only the orders whose aligned runs its word now holds.
//!
//! # Cost
//!
//! About 2.05 bits per frame (A0 and R; the upper levels and summaries add 1/32): 68 KiB
//! per GiB of managed RAM (rounded to whole frames), 0.0065 %.
//!
//! # Files
//!
//! This file holds [`Allocator`] and the seed's operations; `layout` the header words and
//! the geometry, `levels` the bit and summary operations and the hints, `search` first fit
//! over the levels, `take` taking and giving back blocks, runs and single frames, `check`
//! the invariants.

use memkit_types::{Frame, FrameCount, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr};

use self::layout::{
    FIXED_WORDS, Geometry, W_CHECK, W_END, W_FREE, W_HEADER_FRAMES, W_HEADER_START, W_MAGIC, W_NO_FIT, W_START,
    W_USABLE, W_WORDS, area_frames, header_bytes,
};
use crate::area::MemoryArea;
use crate::error::{AddRegionError, AllocateAtError, AllocateError, AttachError, FreeError, InitError};
use crate::reach::{Path, hit};

#[cfg(any(test, feature = "check"))]
mod check;
mod layout;
mod levels;
mod search;
mod take;
#[cfg(test)]
mod tests;

pub use layout::{HEADER_MAGIC, get_header, header_size, header_words};

/// Free frames by order and totals, as [`Allocator::stats`] reports them.
///
/// The free frames are split into maximal naturally aligned blocks, as a buddy allocator's
/// free lists would hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Frames the allocator manages: the area minus reserved regions and the header.
    pub total_frames: FrameCount,
    /// Frames free now.
    pub free_frames: FrameCount,
    /// `free_blocks[k]`: free blocks of order `k` in the buddy decomposition.
    pub free_blocks: [u64; Order::MAX.get() as usize + 1],
    /// The largest free block's order, `None` when nothing is free.
    pub largest_free_order: Option<Order>,
}

/// A view of an allocator's header through its current mapping.
///
/// The view caches the header's geometry (recomputed from the area on [`attach`]); the
/// header itself holds all state, so views can be dropped and re-attached at will, through
/// any mapping of the same words.
///
/// [`attach`]: Allocator::attach
pub struct Allocator<'h> {
    words: &'h mut [u64],
    geo: Geometry,
}

impl core::fmt::Debug for Allocator<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Allocator")
            .field("area", &self.area())
            .field("header", &self.header_region())
            .field("free_frames", &self.free_frames().get())
            .finish_non_exhaustive()
    }
}

impl<'h> Allocator<'h> {
    /// The seed's `pmallocator_init_region`: writes a fresh header for `area` into `header`
    /// (the current mapping of `header_region`) and returns a view of it.
    ///
    /// Every frame of the area is free except those of the reserved regions (rounded outwards
    /// to whole frames) and of the header region, which are never handed out.
    ///
    /// # Errors
    /// [`InitError`] when the area cannot be managed, the header region is unaligned, too
    /// small, outside the area or overlaps a reserved region, or the mapping is too short.
    /// Nothing is written then.
    pub fn init<I>(
        area: MemoryArea,
        header_region: MemoryArea,
        header: &'h mut [u64],
        reserved: I,
    ) -> Result<Self, InitError>
    where
        I: IntoIterator<Item = MemoryArea> + Clone,
    {
        let (s, e) = area_frames(area).map_err(InitError::BadArea)?;
        let geo = Geometry::new(s, e);
        let hsize = header_bytes(&geo);
        if !header_region.is_frame_aligned() || header_region.size < hsize || !area.contains(header_region) {
            return Err(InitError::BadHeaderRegion(header_region));
        }
        if let Some(r) = reserved.clone().into_iter().find(|r| header_region.overlaps(*r)) {
            return Err(InitError::HeaderOverlapsReserved(r));
        }
        if header.len() < geo.total_words {
            return Err(InitError::MappingTooSmall { needed: geo.total_words, given: header.len() });
        }
        let words = &mut header[..geo.total_words];
        words.fill(0);
        let (hs, he) = header_region.frames_outward();
        words[W_MAGIC] = HEADER_MAGIC;
        words[W_START] = s;
        words[W_END] = e;
        words[W_HEADER_START] = hs;
        words[W_HEADER_FRAMES] = he - hs;
        words[W_WORDS] = geo.total_words as u64;
        words[W_CHECK] = geo.checksum();
        words[W_NO_FIT] = u64::MAX;
        let mut a = Allocator { words: header, geo };
        // R: everything reserved, then the area opened, then reserved regions and the header closed.
        let r = a.geo.reserved;
        a.words[r.offset..r.offset + r.words].fill(!0);
        a.bits_clear(r, s, e);
        for region in reserved {
            let (rs, re) = region.frames_outward();
            let (rs, re) = (rs.max(s), re.min(e));
            if rs < re {
                a.bits_set(r, rs, re);
            }
        }
        a.bits_set(r, hs, he);
        // A0 = not R, then every level and summary from the bottom up.
        let a0 = a.geo.level[0].bits;
        let mut free = 0;
        for i in 0..a0.words {
            let v = !a.words[r.offset + i];
            a.words[a0.offset + i] = v;
            free += u64::from(v.count_ones());
        }
        a.words[W_FREE] = free;
        a.words[W_USABLE] = free;
        a.rebuild_upper();
        Ok(a)
    }

    /// Attaches a view to an initialised header through its current mapping.
    ///
    /// # Errors
    /// [`AttachError`] when the words do not start with the magic, their geometry is corrupt or
    /// the mapping is shorter than the header.
    pub fn attach(header: &'h mut [u64]) -> Result<Self, AttachError> {
        if header.len() < FIXED_WORDS {
            return Err(AttachError::MappingTooSmall { needed: FIXED_WORDS, given: header.len() });
        }
        if header[W_MAGIC] != HEADER_MAGIC {
            return Err(AttachError::BadMagic(header[W_MAGIC]));
        }
        let (s, e) = (header[W_START], header[W_END]);
        if s >= e || e > (PhysAddr::LIMIT >> PAGE_SHIFT) {
            return Err(AttachError::BadGeometry);
        }
        let geo = Geometry::new(s, e);
        if header[W_WORDS] != geo.total_words as u64 || header[W_CHECK] != geo.checksum() {
            return Err(AttachError::BadGeometry);
        }
        if header.len() < geo.total_words {
            return Err(AttachError::MappingTooSmall { needed: geo.total_words, given: header.len() });
        }
        Ok(Allocator { words: header, geo })
    }

    /// The managed area.
    #[must_use]
    pub fn area(&self) -> MemoryArea {
        MemoryArea::from_frames(Frame::from_number(self.geo.start), FrameCount::new(self.geo.end - self.geo.start))
    }

    /// The header region (inside the area, never handed out).
    #[must_use]
    pub fn header_region(&self) -> MemoryArea {
        MemoryArea::from_frames(
            Frame::from_number(self.words[W_HEADER_START]),
            FrameCount::new(self.words[W_HEADER_FRAMES]),
        )
    }

    /// The largest order [`allocate`](Allocator::allocate) accepts: the largest block that fits
    /// in the area.
    #[must_use]
    #[inline]
    pub fn max_order(&self) -> Order {
        Order::new(self.geo.max_order)
    }

    /// Frames free now.
    #[must_use]
    #[inline]
    pub fn free_frames(&self) -> FrameCount {
        FrameCount::new(self.words[W_FREE])
    }

    /// Frames managed: the area minus reserved regions and the header.
    #[must_use]
    #[inline]
    pub fn total_frames(&self) -> FrameCount {
        FrameCount::new(self.words[W_USABLE])
    }

    /// Whether `frame` is free.
    #[must_use]
    #[inline]
    pub fn is_free(&self, frame: Frame) -> bool {
        let n = frame.number();
        n >= self.geo.start && n < self.geo.end && self.bit(self.geo.level[0].bits, n)
    }

    /// Whether `frame` is reserved (a reserved region, a hole or the header) or outside the
    /// area.
    #[must_use]
    #[inline]
    pub fn is_reserved(&self, frame: Frame) -> bool {
        let n = frame.number();
        n < self.geo.start || n >= self.geo.end || self.bit(self.geo.reserved, n)
    }

    // ---- the seed's operations -------------------------------------------------------------

    /// The seed's `pmallocator_allocate`: a free block of `2^order` frames aligned to its
    /// size, the lowest such block in the area.
    ///
    /// # Errors
    /// [`AllocateError::NotValid`] for an order above [`max_order`](Allocator::max_order)
    /// (order 0 is always valid), [`AllocateError::PhysicalMemoryFull`] when no block of that
    /// order is free.
    #[inline]
    pub fn allocate(&mut self, order: Order) -> Result<Frame, AllocateError> {
        if order.get() == 0
            && let Some(f) = self.take_one_fast()
        {
            return Ok(frame(f));
        }
        self.allocate_slow(order)
    }

    /// [`allocate`](Self::allocate) beyond the one-word order-0 fast path.
    #[inline(never)]
    fn allocate_slow(&mut self, order: Order) -> Result<Frame, AllocateError> {
        if order.get() == 0 {
            return match self.take_one(u64::MAX) {
                Some(f) => Ok(frame(f)),
                None => Err(exhausted(order)),
            };
        }
        self.allocate_below(order, None)
    }

    /// The seed's `pmallocator_free`: gives back a block. `area` must be a naturally aligned
    /// block (4 KiB aligned, a power-of-two number of frames, aligned to its size) whose
    /// frames are all allocated.
    ///
    /// # Errors
    /// [`FreeError`] (all `ERR_NOT_VALID`) when the area is not such a block, is not inside
    /// the allocator's area, or has a frame that is free (already freed, or inside a free
    /// block) or reserved. Nothing changes then.
    #[inline]
    pub fn free(&mut self, area: MemoryArea) -> Result<(), FreeError> {
        let frames = area.size / PAGE_SIZE as u64;
        if !area.is_frame_aligned() || !frames.is_power_of_two() {
            return Err(FreeError::Unaligned(area));
        }
        let first = area.start.as_u64() >> PAGE_SHIFT;
        if first & (frames - 1) != 0 {
            return Err(FreeError::Unaligned(area));
        }
        if frames == 1 && self.free_one_fast(first) {
            return Ok(());
        }
        self.free_frames_checked(first, frames)
    }

    // ---- beyond the seed -------------------------------------------------------------------

    /// A block of `2^order` frames aligned to its size that ends at or below `limit`
    /// (`None`: anywhere), the lowest such block.
    ///
    /// # Errors
    /// As [`allocate`](Allocator::allocate); `PhysicalMemoryFull` also when every free block
    /// of that order lies above the limit.
    #[inline]
    pub fn allocate_below(&mut self, order: Order, limit: Option<PhysAddr>) -> Result<Frame, AllocateError> {
        if order.get() > self.geo.max_order {
            return Err(AllocateError::NotValid(order));
        }
        let limit = self.limit_frame(limit);
        if order.get() == 0 {
            let f = self.take_one(limit).ok_or_else(|| exhausted(order))?;
            return Ok(Frame::from_number(f));
        }
        let n = 1u64 << order.get();
        let f = self.find_block_cached(order.get(), n, limit).ok_or_else(|| exhausted(order))?;
        if order.get() >= 6 {
            self.take_block(f, order.get());
        } else {
            self.take_range(f, f + n);
        }
        Ok(Frame::from_number(f))
    }

    /// `count` contiguous frames whose first frame is aligned to `2^align` frames and whose
    /// end is at or below `limit` (`None`: anywhere). Only `count` frames are taken: the
    /// tail of the rounded-up block stays free.
    ///
    /// The lowest naturally aligned block that holds the run is tried first; when none is
    /// free, the free runs are scanned in address order for the first one that fits.
    ///
    /// # Errors
    /// [`AllocateError::ZeroCount`] for zero frames, [`AllocateError::NotValid`] when the
    /// run or the alignment is larger than the area, [`AllocateError::PhysicalMemoryFull`]
    /// when no free run fits.
    pub fn allocate_run(
        &mut self,
        count: FrameCount,
        align: Order,
        limit: Option<PhysAddr>,
    ) -> Result<Frame, AllocateError> {
        let n = count.get();
        if n == 0 {
            return Err(AllocateError::ZeroCount);
        }
        let need = Order::for_frames(count).unwrap_or(Order::MAX).max(align);
        if n > self.geo.end - self.geo.start || align.get() > self.geo.max_order {
            return Err(AllocateError::NotValid(need));
        }
        let limit = self.limit_frame(limit);
        if n == 1 && align.get() == 0 {
            let f = self.take_one(limit).ok_or_else(|| exhausted(need))?;
            return Ok(Frame::from_number(f));
        }
        let found = if need.get() <= self.geo.max_order { self.find_block_cached(need.get(), n, limit) } else { None };
        let f = match found {
            Some(f) => f,
            None => {
                let f = self.find_run(n, align.get(), limit).ok_or_else(|| exhausted(need))?;
                hit(Path::RunFallback);
                f
            }
        };
        self.take_range(f, f + n);
        Ok(Frame::from_number(f))
    }

    /// Allocates exactly the frames `start .. start + count` (any count, any alignment).
    ///
    /// # Errors
    /// [`AllocateAtError::OutsideArea`] for an empty range or one not inside the area,
    /// [`AllocateAtError::InUse`] / [`AllocateAtError::Reserved`] naming the first frame that
    /// is not free. Nothing changes then.
    pub fn allocate_at(&mut self, start: Frame, count: FrameCount) -> Result<(), AllocateAtError> {
        let (s, n) = (start.number(), count.get());
        let outside = AllocateAtError::OutsideArea(MemoryArea::new(start.start_address(), n << PAGE_SHIFT));
        if n == 0 || s < self.geo.start || s >= self.geo.end || n > self.geo.end - s {
            return Err(outside);
        }
        if n == 1 {
            return self.take_at(s);
        }
        let e = s + n;
        let a0 = self.geo.level[0].bits;
        if let Some(f) = self.first_with(a0, s, e, false) {
            return Err(if self.bit(self.geo.reserved, f) {
                AllocateAtError::Reserved(Frame::from_number(f))
            } else {
                AllocateAtError::InUse(Frame::from_number(f))
            });
        }
        self.take_range(s, e);
        Ok(())
    }

    /// Gives back the frames `start .. start + count`: any run of allocated frames, whole
    /// allocations or pieces of them.
    ///
    /// # Errors
    /// As [`free`](Allocator::free), except that no alignment is required. Nothing changes on
    /// error.
    #[inline]
    pub fn free_run(&mut self, start: Frame, count: FrameCount) -> Result<(), FreeError> {
        if count.get() == 1 && self.free_one_fast(start.number()) {
            return Ok(());
        }
        self.free_frames_checked(start.number(), count.get())
    }

    /// Lets the reserved frames of `region` join: they become free frames the allocator
    /// manages, as memory that arrives after init does (a bank added to a running machine,
    /// a chunk a hosted heap maps from the OS when it needs more). The area is fixed at
    /// init, so memory can join only inside it, where it was reserved: a caller that will
    /// grow gives [`init`](Allocator::init) the whole range it may ever manage and reserves
    /// what is not there yet.
    ///
    /// The frames are freed through the path every free takes, so their blocks merge with
    /// their free neighbours and the managed count ([`total_frames`](Self::total_frames))
    /// grows by the region's frames.
    ///
    /// # Errors
    /// [`AddRegionError::Unaligned`] for a region not on 4 KiB boundaries,
    /// [`AddRegionError::OutsideArea`] for an empty region or one not inside the area,
    /// [`AddRegionError::Header`] naming its first frame of the header region,
    /// [`AddRegionError::NotReserved`] naming its first frame that is managed already.
    /// Nothing changes then.
    pub fn add_region(&mut self, region: MemoryArea) -> Result<(), AddRegionError> {
        if !region.is_frame_aligned() {
            return Err(AddRegionError::Unaligned(region));
        }
        let (s, n) = (region.start.as_u64() >> PAGE_SHIFT, region.size >> PAGE_SHIFT);
        if n == 0 || s < self.geo.start || s >= self.geo.end || n > self.geo.end - s {
            return Err(AddRegionError::OutsideArea(region));
        }
        let e = s + n;
        let (hs, hn) = (self.words[W_HEADER_START], self.words[W_HEADER_FRAMES]);
        if s < hs + hn && hs < e {
            return Err(AddRegionError::Header(Frame::from_number(s.max(hs))));
        }
        if let Some(f) = self.first_with(self.geo.reserved, s, e, false) {
            return Err(AddRegionError::NotReserved(Frame::from_number(f)));
        }
        // Reserved frames are neither free nor counted: clearing their reserved bits makes
        // them allocated frames of the area, which the general free then hands over.
        self.bits_clear(self.geo.reserved, s, e);
        self.words[W_USABLE] += n;
        let freed = self.free_frames_checked(s, n);
        debug_assert_eq!(freed, Ok(()), "frames just unreserved are allocated");
        Ok(())
    }

    /// Free frames by order, totals and the largest free block. Walks the frame bitmap:
    /// O(frames / 64).
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut st = Stats {
            total_frames: self.total_frames(),
            free_frames: self.free_frames(),
            free_blocks: [0; Order::MAX.get() as usize + 1],
            largest_free_order: None,
        };
        let max = u32::from(self.geo.max_order);
        self.for_each_free_run(|mut s, e| {
            while s < e {
                let k = s.trailing_zeros().min(63 - (e - s).leading_zeros()).min(max);
                st.free_blocks[k as usize] += 1;
                s += 1 << k;
            }
            true
        });
        st.largest_free_order = st.free_blocks.iter().rposition(|&c| c > 0).map(|k| Order::new(k as u8));
        st
    }

    /// The order of the largest free block, `None` when nothing is free. Fast: asks the
    /// summaries, largest order first.
    #[must_use]
    pub fn largest_free_order(&self) -> Option<Order> {
        let top = match self.words[W_NO_FIT] {
            u64::MAX => self.geo.max_order,
            k => (k - 1) as u8,
        };
        (0..=top).rev().find(|&k| self.find_block(k, 1 << k, u64::MAX, 0).is_some()).map(Order::new)
    }

    // ---- internals -------------------------------------------------------------------------

    #[inline]
    fn limit_frame(&self, limit: Option<PhysAddr>) -> u64 {
        limit.map_or(u64::MAX, |l| l.as_u64() >> PAGE_SHIFT)
    }
}

/// The frame numbered `n` (a frame of the area, so below the physical limit), built through
/// `Frame::checked_add`, which has no panic path and inlines across crates.
#[inline]
fn frame(n: u64) -> Frame {
    const ZERO: Frame = Frame::from_number(0);
    match ZERO.checked_add(FrameCount::new(n)) {
        Some(f) => f,
        None => Frame::from_number(n),
    }
}

/// The error of an allocation nothing fits, counted.
#[cold]
fn exhausted(order: Order) -> AllocateError {
    hit(Path::Exhausted);
    AllocateError::PhysicalMemoryFull(order)
}
