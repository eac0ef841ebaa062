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

use memkit_types::{Frame, FrameCount, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr};

use crate::area::MemoryArea;
use crate::error::{AllocateAtError, AllocateError, AreaError, AttachError, FreeError, GetHeaderError, InitError};
use crate::reach::{Path, hit};

/// The header's first word.
pub const HEADER_MAGIC: u64 = 0x6d6b_7068_7973_0001;

const W_MAGIC: usize = 0;
const W_START: usize = 1;
const W_END: usize = 2;
const W_HEADER_START: usize = 3;
const W_HEADER_FRAMES: usize = 4;
const W_FREE: usize = 5;
const W_USABLE: usize = 6;
const W_HINT: usize = 7;
const W_WORDS: usize = 8;
const W_CHECK: usize = 9;
/// The smallest order >= 6 known to have no free block (`u64::MAX`: none known). Valid until
/// a bit at level 1 or above is set: only that can make a block of order >= 6 free.
const W_NO_FIT: usize = 10;
/// Word `W_ORDER_HINT + k` (k >= 6): no word of level `k / 6` below this index holds a free
/// block of order `k`, so searches start there.
const W_ORDER_HINT: usize = 16;
/// Words before the first bitmap.
const FIXED_WORDS: usize = W_ORDER_HINT + Order::MAX.get() as usize + 1;

/// Levels of "fully free unit" bitmaps: level `L` units are `64^L` frames; 8 levels reach
/// 2^48 frames, beyond the physical limit.
const MAX_LEVELS: usize = 8;
/// Summary layers over one level's bitmap (64-ary): 8 reach 2^48 words.
const MAX_LAYERS: usize = 8;

/// A bitmap inside the header: `words` words from word `offset` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bitmap {
    offset: usize,
    words: usize,
}

/// One level: its bitmap (word `i` is absolute word `lo + i`) and the summaries over it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Level {
    bits: Bitmap,
    lo: u64,
    layers: usize,
    tree: [Bitmap; MAX_LAYERS],
}

/// Where everything is in a header for a given area. Computed from the area alone, so the
/// same area always gives the same header layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    /// First frame number of the area.
    start: u64,
    /// One past the last frame number.
    end: u64,
    levels: usize,
    level: [Level; MAX_LEVELS],
    reserved: Bitmap,
    total_words: usize,
    max_order: u8,
}

impl Geometry {
    fn new(start: u64, end: u64) -> Geometry {
        let span = end - start;
        let mut g = Geometry {
            start,
            end,
            levels: 0,
            level: [Level::default(); MAX_LEVELS],
            reserved: Bitmap::default(),
            total_words: 0,
            max_order: 0,
        };
        let mut offset = FIXED_WORDS;
        // Level 0 and R share the frame indexing.
        let (mut us, mut ue) = (start, end);
        let mut l = 0;
        loop {
            let lo = us / 64;
            let hi = ue.div_ceil(64);
            let words = (hi - lo) as usize;
            let bits = Bitmap { offset, words };
            offset += words;
            if l == 0 {
                g.reserved = Bitmap { offset, words };
                offset += words;
            }
            let mut lv = Level { bits, lo, layers: 0, tree: [Bitmap::default(); MAX_LAYERS] };
            let mut cur = words;
            while cur > 1 {
                let w = cur.div_ceil(64);
                lv.tree[lv.layers] = Bitmap { offset, words: w };
                lv.layers += 1;
                offset += w;
                cur = w;
            }
            g.level[l] = lv;
            l += 1;
            // Level l-1 reaches blocks of order 6(l-1)+5; stop once that covers the span.
            if 6 * l as u32 >= 64 || (1u64 << (6 * l)) > span || l == MAX_LEVELS {
                break;
            }
            us = lo;
            ue = hi;
        }
        g.levels = l;
        g.total_words = offset;
        g.max_order = (63 - span.leading_zeros()).min(u32::from(Order::MAX.get())) as u8;
        g
    }

    fn checksum(&self) -> u64 {
        (self.start.rotate_left(7) ^ self.end.rotate_left(29) ^ (self.total_words as u64).rotate_left(41))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The frame range of a 4 KiB aligned, non-empty area inside the physical limit.
fn area_frames(area: MemoryArea) -> Result<(u64, u64), AreaError> {
    if !area.is_frame_aligned() {
        return Err(AreaError::Unaligned(area));
    }
    if area.size == 0 {
        return Err(AreaError::Empty(area));
    }
    match area.start.as_u64().checked_add(area.size) {
        Some(end) if end <= PhysAddr::LIMIT => Ok((area.start.as_u64() >> PAGE_SHIFT, end >> PAGE_SHIFT)),
        _ => Err(AreaError::TooLarge(area)),
    }
}

/// The seed's `pmallocator_get_header_size`: the bytes of header an area needs, a multiple of
/// 4 KiB.
///
/// # Errors
/// [`AreaError`] when the area is not 4 KiB aligned, empty or past the physical limit.
pub fn header_size(area: MemoryArea) -> Result<u64, AreaError> {
    let (s, e) = area_frames(area)?;
    Ok(header_bytes(&Geometry::new(s, e)))
}

fn header_bytes(g: &Geometry) -> u64 {
    ((g.total_words * 8) as u64).next_multiple_of(PAGE_SIZE as u64)
}

/// The number of `u64` words the header mapping of `area` must hold (its header size / 8).
///
/// # Errors
/// [`AreaError`] when the area is not 4 KiB aligned, empty or past the physical limit.
pub fn header_words(area: MemoryArea) -> Result<usize, AreaError> {
    Ok((header_size(area)? / 8) as usize)
}

/// The seed's `pmallocator_get_header`: finds a 4 KiB aligned region of
/// [`header_size`]`(area)` bytes inside `area` that avoids every reserved region, as high in
/// the area as possible (so that low memory stays for users that need it).
///
/// `reserved` enumerates the reserved regions (the seed's enumerator); it is walked several
/// times, hence `Clone`. Regions need not be aligned or inside the area.
///
/// # Errors
/// [`GetHeaderError::OutOfMemory`] when no such region exists,
/// [`GetHeaderError::BadArea`] when the area itself cannot be managed.
pub fn get_header<I>(area: MemoryArea, reserved: I) -> Result<MemoryArea, GetHeaderError>
where
    I: IntoIterator<Item = MemoryArea> + Clone,
{
    let size = header_size(area).map_err(GetHeaderError::BadArea)?;
    let needed = GetHeaderError::OutOfMemory { needed: size };
    let lowest = area.start.as_u64();
    let mut top = area.end().checked_sub(size).ok_or(needed)?;
    if top < lowest {
        return Err(needed);
    }
    // Move the candidate down below every reserved region it overlaps until none does.
    loop {
        let candidate = MemoryArea::new(PhysAddr::new(top), size);
        let mut moved = false;
        for r in reserved.clone() {
            if candidate.overlaps(r) {
                let below = r.start.as_u64().checked_sub(size).ok_or(needed)? & !(PAGE_SIZE as u64 - 1);
                if below < lowest {
                    return Err(needed);
                }
                top = top.min(below);
                moved = true;
            }
        }
        if !moved {
            return Ok(candidate);
        }
    }
}

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
    pub fn max_order(&self) -> Order {
        Order::new(self.geo.max_order)
    }

    /// Frames free now.
    #[must_use]
    pub fn free_frames(&self) -> FrameCount {
        FrameCount::new(self.words[W_FREE])
    }

    /// Frames managed: the area minus reserved regions and the header.
    #[must_use]
    pub fn total_frames(&self) -> FrameCount {
        FrameCount::new(self.words[W_USABLE])
    }

    /// Whether `frame` is free.
    #[must_use]
    pub fn is_free(&self, frame: Frame) -> bool {
        let n = frame.number();
        n >= self.geo.start && n < self.geo.end && self.bit(self.geo.level[0].bits, n)
    }

    /// Whether `frame` is reserved (a reserved region, a hole or the header) or outside the
    /// area.
    #[must_use]
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

    #[inline]
    fn bit(&self, bm: Bitmap, frame: u64) -> bool {
        let lo = self.geo.level[0].lo;
        let w = self.words[bm.offset + (frame / 64 - lo) as usize];
        w & (1 << (frame % 64)) != 0
    }

    /// Sets bits `[a, b)` of a frame-indexed bitmap (A0 indexing), without summaries.
    fn bits_set(&mut self, bm: Bitmap, a: u64, b: u64) {
        self.bits_apply(bm, a, b, true);
    }

    fn bits_clear(&mut self, bm: Bitmap, a: u64, b: u64) {
        self.bits_apply(bm, a, b, false);
    }

    fn bits_apply(&mut self, bm: Bitmap, a: u64, b: u64, set: bool) {
        let lo = self.geo.level[0].lo;
        let mut u = a;
        while u < b {
            let wi = (u / 64 - lo) as usize;
            let end = b.min((u / 64 + 1) * 64);
            let m = range_mask(u % 64, end - (u / 64) * 64);
            let w = &mut self.words[bm.offset + wi];
            if set {
                *w |= m;
            } else {
                *w &= !m;
            }
            u = end;
        }
    }

    /// The first frame in `[a, b)` whose bit in `bm` is `value`, if any.
    fn first_with(&self, bm: Bitmap, a: u64, b: u64, value: bool) -> Option<u64> {
        let lo = self.geo.level[0].lo;
        let mut u = a;
        while u < b {
            let wi = (u / 64 - lo) as usize;
            let base = (u / 64) * 64;
            let end = b.min(base + 64);
            let m = range_mask(u % 64, end - base);
            let w = self.words[bm.offset + wi];
            let hits = if value { w & m } else { !w & m };
            if hits != 0 {
                return Some(base + u64::from(hits.trailing_zeros()));
            }
            u = end;
        }
        None
    }

    /// Whether a frame in `[a, b)` is free or reserved (one pass over both bitmaps).
    fn any_free_or_reserved(&self, a: u64, b: u64) -> bool {
        let (lo, f, r) = (self.geo.level[0].lo, self.geo.level[0].bits.offset, self.geo.reserved.offset);
        let mut u = a;
        while u < b {
            let wi = (u / 64 - lo) as usize;
            let base = (u / 64) * 64;
            let end = b.min(base + 64);
            if (self.words[f + wi] | self.words[r + wi]) & range_mask(u % 64, end - base) != 0 {
                return true;
            }
            u = end;
        }
        false
    }

    /// Rebuilds every level above 0 and every summary from A0.
    fn rebuild_upper(&mut self) {
        for l in 0..self.geo.levels {
            let lv = self.geo.level[l];
            if l > 0 {
                let below = self.geo.level[l - 1];
                for i in 0..lv.bits.words {
                    let mut v = 0u64;
                    for b in 0..64u64 {
                        let abs = (lv.lo + i as u64) * 64 + b;
                        if abs >= below.lo && abs < below.lo + below.bits.words as u64 {
                            let bw = self.words[below.bits.offset + (abs - below.lo) as usize];
                            if bw == !0 {
                                v |= 1 << b;
                            }
                        }
                    }
                    self.words[lv.bits.offset + i] = v;
                }
            }
            let mut src = lv.bits;
            for j in 0..lv.layers {
                let t = lv.tree[j];
                for i in 0..t.words {
                    let mut v = 0u64;
                    for b in 0..64 {
                        let k = i * 64 + b;
                        if k < src.words && self.words[src.offset + k] != 0 {
                            v |= 1 << b;
                        }
                    }
                    self.words[t.offset + i] = v;
                }
                src = t;
            }
        }
    }

    /// Marks summary bit `i` of level `l`'s layer 0 (word `i` of the level is not zero).
    #[inline(always)]
    fn tree_set(&mut self, l: usize, mut i: usize) {
        let lv = &self.geo.level[l];
        for j in 0..lv.layers {
            let idx = lv.tree[j].offset + i / 64;
            let old = self.words[idx];
            self.words[idx] = old | (1 << (i % 64));
            if old != 0 {
                break;
            }
            if j + 1 < lv.layers {
                hit(Path::SummaryUpperSet);
            }
            i /= 64;
        }
    }

    #[inline]
    fn tree_clear(&mut self, l: usize, mut i: usize) {
        let lv = &self.geo.level[l];
        for j in 0..lv.layers {
            let idx = lv.tree[j].offset + i / 64;
            let new = self.words[idx] & !(1 << (i % 64));
            self.words[idx] = new;
            if new != 0 {
                break;
            }
            if j + 1 < lv.layers {
                hit(Path::SummaryUpperCleared);
            }
            i /= 64;
        }
    }

    /// Sets unit `u` (absolute) of level `l`, keeping summaries and upper levels.
    #[inline]
    fn set_unit(&mut self, mut l: usize, mut u: u64) {
        loop {
            let lv = self.geo.level[l];
            let wi = (u / 64 - lv.lo) as usize;
            let idx = lv.bits.offset + wi;
            let old = self.words[idx];
            let new = old | (1 << (u % 64));
            self.words[idx] = new;
            if l > 0 {
                self.large_unit_set(l, wi, new);
            }
            if old == 0 {
                self.tree_set(l, wi);
            }
            if new != !0 || l + 1 >= self.geo.levels {
                return;
            }
            hit(if l == 0 { Path::WordFilled } else { Path::MergeUpper });
            l += 1;
            u /= 64;
        }
    }

    #[inline]
    fn clear_unit(&mut self, mut l: usize, mut u: u64) {
        loop {
            let lv = self.geo.level[l];
            let wi = (u / 64 - lv.lo) as usize;
            let idx = lv.bits.offset + wi;
            let old = self.words[idx];
            let new = old & !(1 << (u % 64));
            self.words[idx] = new;
            if new == 0 {
                self.tree_clear(l, wi);
            }
            if old != !0 || l + 1 >= self.geo.levels {
                return;
            }
            hit(if l == 0 { Path::WordEmptiedFull } else { Path::SplitUpper });
            l += 1;
            u /= 64;
        }
    }

    /// Sets units `[a, b)` of level `l` and everything above.
    fn set_units(&mut self, l: usize, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (off, lo) = (self.geo.level[l].bits.offset, self.geo.level[l].lo);
        if l > 0 {
            hit(Path::UnitsSetUpper);
            self.large_unit_freed(l, (a / 64 - lo) as usize);
        }
        let (first, last) = (a / 64, (b - 1) / 64);
        let put = |words: &mut [u64], w: u64, m: u64| -> (bool, bool) {
            let idx = off + (w - lo) as usize;
            let old = words[idx];
            words[idx] = old | m;
            (old == 0, old | m == !0 && old != !0)
        };
        // Which words became full: the interior, and the edges that filled up.
        let (any_was_zero, fs, ft) = if first == last {
            let (z, full) = put(self.words, first, range_mask(a % 64, b - first * 64));
            (z, first, if full { first + 1 } else { first })
        } else {
            if l == 0 {
                hit(Path::RangeFreedBits);
            }
            let (z0, f0) = put(self.words, first, range_mask(a % 64, 64));
            let (z1, f1) = put(self.words, last, range_mask(0, b - last * 64));
            let mut z = z0 | z1;
            let (s0, s1) = (off + (first + 1 - lo) as usize, off + (last - lo) as usize);
            for v in &mut self.words[s0..s1] {
                z |= *v == 0;
                *v = !0;
            }
            (z, if f0 { first } else { first + 1 }, if f1 { last + 1 } else { last })
        };
        if any_was_zero {
            // Every touched word is non-zero now.
            self.tree_set_range(l, 0, (first - lo) as usize, (last - lo) as usize + 1);
        }
        if fs < ft && l + 1 < self.geo.levels {
            self.set_units(l + 1, fs, ft);
        }
    }

    /// Clears units `[a, b)` of level `l` and the units above that cover them.
    fn clear_units(&mut self, l: usize, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (off, lo) = (self.geo.level[l].bits.offset, self.geo.level[l].lo);
        if l > 0 {
            hit(Path::UnitsClearedUpper);
        }
        let (first, last) = (a / 64, (b - 1) / 64);
        let take = |words: &mut [u64], w: u64, m: u64| -> (bool, bool) {
            let idx = off + (w - lo) as usize;
            let old = words[idx];
            words[idx] = old & !m;
            (old == !0, old & !m == 0)
        };
        // Clear the edge words with masks and the interior whole.
        let (was_full, first_zero, last_zero) = if first == last {
            let (f, z) = take(self.words, first, range_mask(a % 64, b - first * 64));
            (f, z, z)
        } else {
            if l == 0 {
                hit(Path::RangeTakenBits);
            }
            let (f0, z0) = take(self.words, first, range_mask(a % 64, 64));
            let (f1, z1) = take(self.words, last, range_mask(0, b - last * 64));
            let mut f = f0 | f1;
            let (s0, s1) = (off + (first + 1 - lo) as usize, off + (last - lo) as usize);
            for v in &mut self.words[s0..s1] {
                f |= *v == !0;
                *v = 0;
            }
            (f, z0, z1)
        };
        // The words that are zero now: the interior, and the edges if they emptied.
        let zf = if first_zero { first } else { first + 1 };
        let zt = if last_zero { last + 1 } else { last };
        if zf < zt {
            self.tree_clear_range(l, 0, (zf - lo) as usize, (zt - lo) as usize);
        }
        if was_full && l + 1 < self.geo.levels {
            self.clear_units(l + 1, first, last + 1);
        }
    }

    /// Sets bits `[a, b)` of summary layer `j` of level `l`, and the layers above.
    fn tree_set_range(&mut self, l: usize, j: usize, a: usize, b: usize) {
        if j >= self.geo.level[l].layers || a >= b {
            return;
        }
        let off = self.geo.level[l].tree[j].offset;
        if a / 64 != (b - 1) / 64 {
            hit(Path::SummaryRangeSet);
        }
        let mut any_was_zero = false;
        let mut u = a;
        while u < b {
            let w = u / 64;
            let end = b.min((w + 1) * 64);
            let m = range_mask((u % 64) as u64, (end - w * 64) as u64);
            let old = self.words[off + w];
            self.words[off + w] = old | m;
            any_was_zero |= old == 0;
            u = end;
        }
        if any_was_zero {
            if j + 1 < self.geo.level[l].layers {
                hit(Path::SummaryUpperSet);
            }
            self.tree_set_range(l, j + 1, a / 64, (b - 1) / 64 + 1);
        }
    }

    /// Clears bits `[a, b)` of summary layer `j` of level `l`, and in the layers above the
    /// bits of the words that became zero.
    fn tree_clear_range(&mut self, l: usize, j: usize, a: usize, b: usize) {
        if j >= self.geo.level[l].layers || a >= b {
            return;
        }
        let off = self.geo.level[l].tree[j].offset;
        if a / 64 != (b - 1) / 64 {
            hit(Path::SummaryRangeCleared);
        }
        let mut zero: Option<(usize, usize)> = None;
        let mut u = a;
        while u < b {
            let w = u / 64;
            let end = b.min((w + 1) * 64);
            let m = range_mask((u % 64) as u64, (end - w * 64) as u64);
            let old = self.words[off + w];
            let new = old & !m;
            self.words[off + w] = new;
            if new == 0 && old != 0 {
                zero = match zero {
                    Some((f, _)) => Some((f, w + 1)),
                    None => Some((w, w + 1)),
                };
            }
            u = end;
        }
        if let Some((f, t)) = zero {
            if j + 1 < self.geo.level[l].layers {
                hit(Path::SummaryUpperCleared);
            }
            self.tree_clear_range(l, j + 1, f, t);
        }
    }

    /// Marks words `[w0, w1)` of level `l` non-zero in the summaries: one summary word and
    /// one walk up when they share a summary word (a block of up to 64 words).
    #[inline(always)]
    fn tree_set_words(&mut self, l: usize, w0: usize, w1: usize) {
        let lv = &self.geo.level[l];
        if lv.layers == 0 || w0 / 64 != (w1 - 1) / 64 {
            return self.tree_set_range(l, 0, w0, w1);
        }
        // Bit `w0` walks up; the others join it in its now non-zero summary word.
        let idx = lv.tree[0].offset + w0 / 64;
        self.tree_set(l, w0);
        self.words[idx] |= range_mask((w0 % 64) as u64, (w1 - w0 / 64 * 64) as u64);
    }

    /// Marks words `[w0, w1)` of level `l` zero in the summaries, as
    /// [`tree_set_words`](Self::tree_set_words) does the other way.
    #[inline]
    fn tree_clear_words(&mut self, l: usize, w0: usize, w1: usize) {
        let lv = &self.geo.level[l];
        if lv.layers == 0 || w0 / 64 != (w1 - 1) / 64 {
            return self.tree_clear_range(l, 0, w0, w1);
        }
        // The others leave first; bit `w0` walks up if the summary word empties.
        let idx = lv.tree[0].offset + w0 / 64;
        let others = range_mask((w0 % 64) as u64, (w1 - w0 / 64 * 64) as u64) & !(1 << (w0 % 64));
        self.words[idx] &= !others;
        self.tree_clear(l, w0);
    }

    /// Takes the free block of order `k >= 6` at frame `f`: whole words at the levels below
    /// `k / 6` empty, and `2^(k % 6)` bits of one word at level `k / 6` clear.
    #[inline]
    fn take_block(&mut self, f: u64, k: u8) {
        let top = usize::from(k / 6);
        hit(if top > 1 { Path::BlockTakenUpper } else { Path::BlockTaken });
        let (off, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].lo);
        let (w0, n) = ((f / 64 - lo) as usize, 1usize << (k - 6));
        // The emptied frame words keep their summary bits (stale), as after `take_one`.
        self.words[off + w0..off + w0 + n].fill(0);
        for l in 1..top {
            let lv = &self.geo.level[l];
            let (off, n) = (lv.bits.offset, 1usize << (k as usize - 6 * (l + 1)));
            let w0 = ((f >> (6 * l)) / 64 - lv.lo) as usize;
            self.words[off + w0..off + w0 + n].fill(0);
            self.tree_clear_words(l, w0, w0 + n);
        }
        let lv = &self.geo.level[top];
        let u = f >> (6 * top);
        let wi = (u / 64 - lv.lo) as usize;
        let idx = lv.bits.offset + wi;
        let old = self.words[idx];
        let new = old & !(((1u64 << (1u32 << (k % 6))) - 1) << (u % 64));
        self.words[idx] = new;
        if new == 0 {
            self.tree_clear(top, wi);
        }
        if old == !0 && top + 1 < self.geo.levels {
            self.clear_unit(top + 1, u / 64);
        }
        self.words[W_FREE] -= 1 << k;
    }

    /// Frees the block of order `k >= 6` at frame `s` (aligned, inside the area) after
    /// checking that its frames are all allocated, as [`take_block`](Self::take_block) does
    /// the other way.
    fn free_block(&mut self, s: u64, k: u8) -> Result<(), FreeError> {
        let (a0, r, lo) = (self.geo.level[0].bits.offset, self.geo.reserved.offset, self.geo.level[0].lo);
        let n = 1usize << (k - 6);
        let w0 = (s / 64 - lo) as usize;
        let busy = or_all(&self.words[a0 + w0..a0 + w0 + n]) | or_all(&self.words[r + w0..r + w0 + n]);
        if busy != 0 {
            return Err(self.free_error(s, s + (1 << k)));
        }
        self.words[a0 + w0..a0 + w0 + n].fill(!0);
        self.tree_set_words(0, w0, w0 + n);
        let top = usize::from(k / 6);
        hit(if top > 1 { Path::BlockFreedUpper } else { Path::BlockFreed });
        for l in 1..top {
            let lv = &self.geo.level[l];
            let (off, n) = (lv.bits.offset, 1usize << (k as usize - 6 * (l + 1)));
            let w0 = ((s >> (6 * l)) / 64 - lv.lo) as usize;
            self.words[off + w0..off + w0 + n].fill(!0);
            self.tree_set_words(l, w0, w0 + n);
            self.large_unit_freed(l, w0);
        }
        let lv = &self.geo.level[top];
        let u = s >> (6 * top);
        let wi = (u / 64 - lv.lo) as usize;
        let idx = lv.bits.offset + wi;
        let old = self.words[idx];
        let new = old | (((1u64 << (1u32 << (k % 6))) - 1) << (u % 64));
        self.words[idx] = new;
        self.large_unit_set(top, wi, new);
        if old == 0 {
            self.tree_set(top, wi);
        }
        if new == !0 && top + 1 < self.geo.levels {
            self.set_unit(top + 1, u / 64);
        }
        self.words[W_FREE] += 1 << k;
        Ok(())
    }

    /// The error of freeing frames `[s, e)` (inside the area) when one is free or reserved.
    #[cold]
    fn free_error(&self, s: u64, e: u64) -> FreeError {
        if let Some(f) = self.first_with(self.geo.level[0].bits, s, e, true) {
            return FreeError::AlreadyFree(Frame::from_number(f));
        }
        let f = self.first_with(self.geo.reserved, s, e, true).unwrap_or(s);
        FreeError::Reserved(Frame::from_number(f))
    }

    /// Takes frames `[a, b)`, all free.
    fn take_range(&mut self, a: u64, b: u64) {
        if b == a + 1 {
            self.clear_unit(0, a);
        } else if (a | b).is_multiple_of(64) {
            // Whole level-0 words, all ones: they empty, and so do their units above.
            hit(Path::RangeTakenWords);
            let (a0, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].lo);
            let (w0, w1) = ((a / 64 - lo) as usize, (b / 64 - lo) as usize);
            self.words[a0 + w0..a0 + w1].fill(0);
            self.tree_clear_words(0, w0, w1);
            if self.geo.levels > 1 {
                self.clear_units(1, a / 64, b / 64);
            }
        } else {
            self.clear_units(0, a, b);
        }
        self.words[W_FREE] -= b - a;
    }

    /// Takes one free frame below `limit`, trying the hint word first.
    #[inline]
    fn take_one(&mut self, limit: u64) -> Option<u64> {
        let (off, count, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].bits.words, self.geo.level[0].lo);
        let hint = self.words[W_HINT] as usize;
        let on_hint = hint < count && self.words[off + hint] != 0;
        let wi = if on_hint { hint } else { self.next_nonzero_cleaning(0)? };
        let old = self.words[off + wi];
        let f = (lo + wi as u64) * 64 + u64::from(old.trailing_zeros());
        if f >= limit {
            // The hint was above the limit: the lowest free frame decides.
            let wi = self.next_nonzero(0, 0)?;
            let f = (lo + wi as u64) * 64 + u64::from(self.words[off + wi].trailing_zeros());
            if f >= limit {
                return None;
            }
            hit(Path::TakeOneLimit);
            self.words[W_HINT] = wi as u64;
            self.take_range(f, f + 1);
            return Some(f);
        }
        // When the word becomes zero its summary bit is left set (stale): the next free in
        // the word would set it again, and searches skip stale bits (`next_nonzero`).
        hit(if on_hint { Path::TakeOneHint } else { Path::TakeOneSearch });
        self.words[off + wi] = old & (old - 1);
        if old == !0 && self.geo.levels > 1 {
            hit(Path::WordEmptiedFull);
            self.clear_unit(1, lo + wi as u64);
        }
        self.words[W_FREE] -= 1;
        self.words[W_HINT] = wi as u64;
        Some(f)
    }

    /// Takes the lowest free frame of the hint word when that touches the word alone: the
    /// word is neither empty nor full (a full word's level-1 unit would go too). `None`
    /// sends the caller to [`take_one`](Self::take_one).
    #[inline(always)]
    fn take_one_fast(&mut self) -> Option<u64> {
        let lv0 = &self.geo.level[0];
        let hint = *self.words.get(W_HINT)? as usize;
        if hint >= lv0.bits.words {
            return None;
        }
        let w = self.words.get_mut(lv0.bits.offset + hint)?;
        let old = *w;
        if old == 0 || old == !0 {
            return None;
        }
        *w = old & (old - 1);
        self.words[W_FREE] -= 1;
        hit(Path::TakeOneFast);
        Some((lv0.lo + hint as u64) * 64 + u64::from(old.trailing_zeros()))
    }

    /// Takes frame `s` (inside the area): one word when the frame is free and its word is
    /// not full (no unit above to clear; an emptied word keeps its summary bit, as in
    /// `take_one`).
    #[inline]
    fn take_at(&mut self, s: u64) -> Result<(), AllocateAtError> {
        let lv0 = &self.geo.level[0];
        let wi = (s / 64 - lv0.lo) as usize;
        let bit = 1u64 << (s % 64);
        let old = self.words[lv0.bits.offset + wi];
        if old & bit == 0 {
            return Err(if self.words[self.geo.reserved.offset + wi] & bit != 0 {
                AllocateAtError::Reserved(frame(s))
            } else {
                AllocateAtError::InUse(frame(s))
            });
        }
        if old == !0 {
            self.take_range(s, s + 1);
        } else {
            hit(Path::TakeAtOneWord);
            self.words[lv0.bits.offset + wi] = old & !bit;
            self.words[W_FREE] -= 1;
        }
        Ok(())
    }

    /// Frees frame `s` when that touches its word alone: the frame is allocated, its word
    /// does not fill up (no merge above) and either was not empty or still has its (stale)
    /// summary bit. `false` changes nothing and sends the caller to the general path, which
    /// also reports errors.
    ///
    /// Only the word index is range-checked: the frames of the edge words that lie outside
    /// the area are reserved, so the reserved bit turns them away.
    #[inline(always)]
    fn free_one_fast(&mut self, s: u64) -> bool {
        let (lv0, r) = (&self.geo.level[0], self.geo.reserved.offset);
        let wi = (s / 64).wrapping_sub(lv0.lo) as usize;
        if wi >= lv0.bits.words {
            return false;
        }
        let bit = 1u64 << (s % 64);
        let (Some(&old), Some(&rv)) = (self.words.get(lv0.bits.offset + wi), self.words.get(r + wi)) else {
            return false;
        };
        let new = old | bit;
        if (old | rv) & bit != 0 || new == !0 {
            return false;
        }
        if old == 0 {
            if lv0.layers == 0 {
                return false;
            }
            match self.words.get(lv0.tree[0].offset + wi / 64) {
                Some(&t) if t & (1 << (wi % 64)) != 0 => {}
                _ => return false,
            }
        }
        self.words[lv0.bits.offset + wi] = new;
        self.words[W_FREE] += 1;
        self.words[W_HINT] = wi as u64;
        hit(Path::FreeOneFast);
        true
    }

    /// Frees frames `[s, s + n)` after checking that each is allocated.
    #[inline(never)]
    fn free_frames_checked(&mut self, s: u64, n: u64) -> Result<(), FreeError> {
        if n == 1 && s >= self.geo.start && s < self.geo.end {
            return self.free_one(s);
        }
        self.free_many(s, n)
    }

    /// Frees frame `s`, inside the area.
    #[inline(always)]
    fn free_one(&mut self, s: u64) -> Result<(), FreeError> {
        let lo = self.geo.level[0].lo;
        let wi = (s / 64 - lo) as usize;
        let bit = 1u64 << (s % 64);
        let a0 = self.geo.level[0].bits.offset + wi;
        let old = self.words[a0];
        if (old | self.words[self.geo.reserved.offset + wi]) & bit != 0 {
            return Err(if old & bit != 0 { FreeError::AlreadyFree(frame(s)) } else { FreeError::Reserved(frame(s)) });
        }
        let new = old | bit;
        self.words[a0] = new;
        hit(Path::FreeOneSlow);
        if old == 0 {
            self.tree_set(0, wi);
        }
        if new == !0 && self.geo.levels > 1 {
            hit(Path::WordFilled);
            self.set_unit(1, lo + wi as u64);
        }
        self.words[W_FREE] += 1;
        self.words[W_HINT] = wi as u64;
        Ok(())
    }

    /// Frees frames `[s, s + n)`, checking the range and every frame first.
    fn free_many(&mut self, s: u64, n: u64) -> Result<(), FreeError> {
        if n == 0 || s < self.geo.start || s >= self.geo.end || n > self.geo.end - s {
            return Err(FreeError::OutsideArea(MemoryArea::new(PhysAddr::new(s << PAGE_SHIFT), n << PAGE_SHIFT)));
        }
        let e = s + n;
        if n >= 64 && n.is_power_of_two() && s & (n - 1) == 0 {
            return self.free_block(s, n.trailing_zeros() as u8);
        }
        if (s | n).is_multiple_of(64) {
            return self.free_words(s, e);
        }
        if self.any_free_or_reserved(s, e) {
            if let Some(f) = self.first_with(self.geo.level[0].bits, s, e, true) {
                return Err(FreeError::AlreadyFree(Frame::from_number(f)));
            }
            if let Some(f) = self.first_with(self.geo.reserved, s, e, true) {
                return Err(FreeError::Reserved(Frame::from_number(f)));
            }
        }
        self.set_units(0, s, e);
        self.words[W_FREE] += n;
        Ok(())
    }

    /// [`free_many`](Self::free_many) for frames `[s, e)` inside the area that cover whole
    /// level-0 words: the words are checked and filled whole, and the level above gets units
    /// `s / 64 .. e / 64`.
    fn free_words(&mut self, s: u64, e: u64) -> Result<(), FreeError> {
        let (a0, r, lo) = (self.geo.level[0].bits.offset, self.geo.reserved.offset, self.geo.level[0].lo);
        let (w0, w1) = ((s / 64 - lo) as usize, (e / 64 - lo) as usize);
        let busy = or_all(&self.words[a0 + w0..a0 + w1]) | or_all(&self.words[r + w0..r + w1]);
        if busy != 0 {
            return Err(self.free_error(s, e));
        }
        hit(Path::RangeFreedWords);
        self.words[a0 + w0..a0 + w1].fill(!0);
        self.tree_set_words(0, w0, w1);
        if self.geo.levels > 1 {
            self.set_units(1, s / 64, e / 64);
        }
        self.words[W_FREE] += e - s;
        Ok(())
    }

    /// The index of the first non-zero word at or after `from` in level `l`'s bitmap.
    ///
    /// Layer-0 summary bits may be stale (set over a zero word, see `take_one`); they are
    /// skipped here. Upper summary layers are exact.
    #[inline]
    fn next_nonzero(&self, l: usize, mut from: usize) -> Option<usize> {
        let lv = &self.geo.level[l];
        if lv.layers == 0 {
            return (from..lv.bits.words).find(|&i| self.words[lv.bits.offset + i] != 0);
        }
        loop {
            let i = self.next_set(lv, 0, from)?;
            if self.words[lv.bits.offset + i] != 0 {
                return Some(i);
            }
            from = i + 1;
        }
    }

    /// [`next_nonzero`](Self::next_nonzero) from the start of level 0, clearing the stale
    /// summary bits it meets on the way.
    fn next_nonzero_cleaning(&mut self, l: usize) -> Option<usize> {
        let lv = self.geo.level[l];
        if lv.layers == 0 {
            return self.next_nonzero(l, 0);
        }
        let mut from = 0;
        loop {
            let i = self.next_set(&lv, 0, from)?;
            if self.words[lv.bits.offset + i] != 0 {
                return Some(i);
            }
            hit(Path::StaleSummaryCleaned);
            self.tree_clear(l, i);
            from = i + 1;
        }
    }

    /// The first set bit at or after `from` in summary layer `j` of `lv`.
    fn next_set(&self, lv: &Level, j: usize, from: usize) -> Option<usize> {
        let t = lv.tree[j];
        let wi = from / 64;
        if wi >= t.words {
            return None;
        }
        let w = self.words[t.offset + wi] & (!0u64 << (from % 64));
        if w != 0 {
            return Some(wi * 64 + w.trailing_zeros() as usize);
        }
        let next = if j + 1 < lv.layers {
            self.next_set(lv, j + 1, wi + 1)?
        } else {
            (wi + 1..t.words).find(|&i| self.words[t.offset + i] != 0)?
        };
        Some(next * 64 + self.words[t.offset + next].trailing_zeros() as usize)
    }

    /// A unit of level `l >= 1` in word `wi` (or from it on) became free: blocks of orders
    /// `6l .. 6l + 5` may exist from word `wi` on again.
    fn large_unit_freed(&mut self, l: usize, wi: usize) {
        self.words[W_NO_FIT] = u64::MAX;
        for k in 6 * l..(6 * l + 6).min(Order::MAX.get() as usize + 1) {
            let h = &mut self.words[W_ORDER_HINT + k];
            *h = (*h).min(wi as u64);
        }
    }

    /// A unit of level `l >= 1` in word `wi` was set, leaving the word `new`: only the orders
    /// `6l + r` whose aligned runs of `2^r` units exist in `new` may have gained a free block,
    /// so only their hints move back, and the no-fit order is forgotten only when one of them
    /// is at or above it.
    #[inline(always)]
    fn large_unit_set(&mut self, l: usize, wi: usize, new: u64) {
        let first = W_ORDER_HINT + 6 * l;
        let orders = (Order::MAX.get() as usize + 1).saturating_sub(6 * l).min(6);
        // `x` holds the starts of aligned runs of `2^r` set bits (before the mask), one more
        // halving step per order; the no-fit order is checked once, against the largest.
        let mut x = new;
        let mut top = None;
        for (r, h) in self.words[first..first + orders].iter_mut().enumerate() {
            if x & RUN_STARTS[r] == 0 {
                break;
            }
            *h = (*h).min(wi as u64);
            top = Some(6 * l + r);
            x &= x >> (1u32 << r);
        }
        if let Some(k) = top
            && k as u64 >= self.words[W_NO_FIT]
        {
            self.words[W_NO_FIT] = u64::MAX;
        }
    }

    /// [`find_block`](Self::find_block), remembering for orders >= 6 where the search may
    /// start (`W_ORDER_HINT`) and which orders have no free block at all (`W_NO_FIT`), so that
    /// first-fit searches skip what earlier searches found full.
    #[inline(always)]
    fn find_block_cached(&mut self, k: u8, need: u64, limit: u64) -> Option<u64> {
        if k < 6 {
            return self.find_block(k, need, limit, 0);
        }
        if u64::from(k) >= self.words[W_NO_FIT] {
            hit(Path::NoFitSkip);
            return None;
        }
        let from = self.words[W_ORDER_HINT + k as usize] as usize;
        if from > 0 {
            hit(Path::HintSkip);
        }
        // The superpage orders (9: 2 MiB, 18: 1 GiB; also 12) search inline, the others
        // through the shared dispatch.
        let found = match k % 6 {
            0 => self.find_block_r::<0>(k, need, limit, from),
            3 => self.find_block_r::<3>(k, need, limit, from),
            _ => self.find_block(k, need, limit, from),
        };
        match found {
            Some(f) => {
                let l = usize::from(k / 6);
                let wi = ((f >> (6 * l)) / 64 - self.geo.level[l].lo) as usize;
                self.words[W_ORDER_HINT + k as usize] = wi as u64;
            }
            None if limit == u64::MAX && need == 1 << k => {
                // No block of order `k` anywhere: later searches start past the end until
                // a freed unit moves the hint back.
                hit(Path::NoFitRecorded);
                self.words[W_NO_FIT] = self.words[W_NO_FIT].min(u64::from(k));
                self.words[W_ORDER_HINT + k as usize] = self.geo.level[usize::from(k / 6)].bits.words as u64;
            }
            None => {}
        }
        found
    }

    /// The lowest free block of order `k` whose first `need` frames end at or below `limit`.
    ///
    /// Walks the non-zero words of level `k / 6` in address order (through the bits of one
    /// summary word at a time) and asks each for an aligned run of `2^(k % 6)` units.
    fn find_block(&self, k: u8, need: u64, limit: u64, from: usize) -> Option<u64> {
        match k % 6 {
            0 => self.find_block_r::<0>(k, need, limit, from),
            1 => self.find_block_r::<1>(k, need, limit, from),
            2 => self.find_block_r::<2>(k, need, limit, from),
            3 => self.find_block_r::<3>(k, need, limit, from),
            4 => self.find_block_r::<4>(k, need, limit, from),
            _ => self.find_block_r::<5>(k, need, limit, from),
        }
    }

    /// [`find_block`](Self::find_block) for `k % 6 == R`, the run test fixed at compile time.
    #[inline(always)]
    fn find_block_r<const R: u32>(&self, k: u8, need: u64, limit: u64, from: usize) -> Option<u64> {
        let l = (k / 6) as usize;
        let lv = &self.geo.level[l];
        let shift = 6 * l as u32;
        // Words in address order: the first word with a run decides (its block is the lowest;
        // when it ends above the limit, every later one does too).
        let test = |wi: usize| -> Option<Option<u64>> {
            let m = aligned_runs(self.words[lv.bits.offset + wi], R);
            if m == 0 {
                return None;
            }
            let f = ((lv.lo + wi as u64) * 64 + u64::from(m.trailing_zeros())) << shift;
            Some((f.saturating_add(need) <= limit).then_some(f))
        };
        if lv.layers == 0 {
            return (from..lv.bits.words).find_map(test).flatten();
        }
        let t0 = lv.tree[0];
        let mut tw = from / 64;
        if tw >= t0.words {
            return None;
        }
        let mut bits = self.words[t0.offset + tw] & (!0u64 << (from % 64));
        loop {
            while bits != 0 {
                let wi = tw * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(found) = test(wi) {
                    return found;
                }
            }
            tw = if lv.layers > 1 {
                hit(Path::SearchUpperLayer);
                self.next_set(lv, 1, tw + 1)?
            } else {
                (tw + 1..t0.words).find(|&i| self.words[t0.offset + i] != 0)?
            };
            bits = self.words[t0.offset + tw];
        }
    }

    /// The lowest start of `n` free frames aligned to `2^align` ending at or below `limit`,
    /// by scanning the free runs.
    fn find_run(&self, n: u64, align: u8, limit: u64) -> Option<u64> {
        let mut found = None;
        let a = 1u64 << align;
        self.for_each_free_run(|s, e| {
            let s = s.next_multiple_of(a);
            if s.saturating_add(n) > limit {
                return false;
            }
            if s + n <= e {
                found = Some(s);
                return false;
            }
            true
        });
        found
    }

    /// Calls `f(start, end)` for every maximal run of free frames in address order until it
    /// returns `false`.
    fn for_each_free_run(&self, mut f: impl FnMut(u64, u64) -> bool) {
        let lv0 = self.geo.level[0];
        let mut open: Option<u64> = None;
        let mut wi = 0;
        while wi < lv0.bits.words {
            let w = self.words[lv0.bits.offset + wi];
            let base = (lv0.lo + wi as u64) * 64;
            if w == 0 && open.is_none() {
                // Skip to the next word with a free frame.
                match self.next_nonzero(0, wi) {
                    Some(n) => {
                        wi = n;
                        continue;
                    }
                    None => return,
                }
            }
            if w == !0 {
                open.get_or_insert(base);
                wi += 1;
                continue;
            }
            let mut pos = 0u32;
            while pos < 64 {
                let rest = w >> pos;
                if let Some(s) = open {
                    let ones = (!rest).trailing_zeros().min(64 - pos);
                    pos += ones;
                    if pos < 64 {
                        open = None;
                        if !f(s, base + u64::from(pos)) {
                            return;
                        }
                    }
                } else {
                    let zeros = if rest == 0 { 64 - pos } else { rest.trailing_zeros() };
                    pos += zeros;
                    if pos < 64 {
                        open = Some(base + u64::from(pos));
                    }
                }
            }
            wi += 1;
        }
        if let Some(s) = open {
            f(s, (lv0.lo + lv0.bits.words as u64) * 64);
        }
    }

    /// Checks every invariant of the header and panics, naming it, when one fails.
    ///
    /// # Invariants
    /// - the magic, area and geometry checksum are intact;
    /// - no frame is both free and reserved; frames outside the area are reserved and not free;
    ///   the header region is reserved;
    /// - the free counter equals the number of free bits; the free count never exceeds the
    ///   managed count;
    /// - the remembered no-fit order has no free block; no block of order `k` lies below its
    ///   search hint;
    /// - a level-`L+1` bit is set exactly when its level-`L` word is all ones;
    /// - a summary bit is set exactly when the word it stands for is not zero, except that a
    ///   layer-0 summary bit of level 0 may stay set over a frame word an allocation emptied
    ///   (it is cleaned lazily).
    ///
    /// # Panics
    /// When an invariant does not hold. O(header words).
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let g = &self.geo;
        assert_eq!(self.words[W_MAGIC], HEADER_MAGIC, "magic");
        assert_eq!(self.words[W_CHECK], g.checksum(), "geometry checksum");
        let a0 = g.level[0].bits;
        let r = g.reserved;
        let mut free = 0u64;
        for i in 0..a0.words {
            let (f, rv) = (self.words[a0.offset + i], self.words[r.offset + i]);
            assert_eq!(f & rv, 0, "a frame is free and reserved (word {i})");
            let base = (g.level[0].lo + i as u64) * 64;
            let inside = range_mask(g.start.clamp(base, base + 64) - base, g.end.clamp(base, base + 64) - base);
            assert_eq!(rv | inside, !0, "a frame outside the area is not reserved (word {i})");
            free += u64::from(f.count_ones());
        }
        assert_eq!(free, self.words[W_FREE], "free counter");
        let no_fit = self.words[W_NO_FIT];
        if no_fit != u64::MAX {
            assert!(no_fit >= 6 && no_fit <= u64::from(g.max_order), "no-fit order {no_fit}");
            assert!(
                self.find_block(no_fit as u8, 1 << no_fit, u64::MAX, 0).is_none(),
                "no-fit order {no_fit} has a block"
            );
        }
        for k in 6..=g.max_order {
            let (l, r) = (usize::from(k / 6), u32::from(k % 6));
            let lv = g.level[l];
            let hint = (self.words[W_ORDER_HINT + k as usize] as usize).min(lv.bits.words);
            for w in 0..hint {
                assert_eq!(aligned_runs(self.words[lv.bits.offset + w], r), 0, "order {k} block below its search hint");
            }
        }
        assert!(free <= self.words[W_USABLE], "more free than managed frames");
        let (hs, hn) = (self.words[W_HEADER_START], self.words[W_HEADER_FRAMES]);
        assert!(self.first_with(r, hs, hs + hn, false).is_none(), "the header is not reserved");
        for l in 0..g.levels {
            let lv = g.level[l];
            if l > 0 {
                let below = g.level[l - 1];
                for i in 0..lv.bits.words {
                    let w = self.words[lv.bits.offset + i];
                    for b in 0..64u64 {
                        let abs = (lv.lo + i as u64) * 64 + b;
                        let full = abs >= below.lo
                            && abs < below.lo + below.bits.words as u64
                            && self.words[below.bits.offset + (abs - below.lo) as usize] == !0;
                        assert_eq!(w & (1 << b) != 0, full, "level {l} unit {abs} disagrees with level {}", l - 1);
                    }
                }
            }
            let mut src = lv.bits;
            for j in 0..lv.layers {
                let t = lv.tree[j];
                for k in 0..t.words * 64 {
                    let set = self.words[t.offset + k / 64] & (1 << (k % 64)) != 0;
                    let nonzero = k < src.words && self.words[src.offset + k] != 0;
                    if j == 0 && l == 0 {
                        // Layer 0 of the frame words may keep stale bits over zero words, never
                        // miss a non-zero one.
                        assert!(set || !nonzero, "summary layer 0 of level {l} misses word {k}");
                        assert!(!set || k < src.words, "summary layer 0 of level {l} bit {k} past the end");
                    } else {
                        assert_eq!(set, nonzero, "summary layer {j} of level {l} bit {k}");
                    }
                }
                src = t;
            }
        }
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

/// The OR of all words (zero exactly when every bit is clear); a plain reduction the
/// compiler vectorises.
#[inline]
fn or_all(words: &[u64]) -> u64 {
    words.iter().fold(0, |acc, w| acc | w)
}

/// Bits `[from, to)` of a word (`from <= to <= 64`).
#[inline]
fn range_mask(from: u64, to: u64) -> u64 {
    let hi = if to >= 64 { !0 } else { (1u64 << to) - 1 };
    hi & !((1u64 << from) - 1)
}

/// The bits `i` of `w`, `i` a multiple of `2^r`, that start a run of `2^r` set bits.
#[inline(always)]
fn aligned_runs(w: u64, r: u32) -> u64 {
    let mut x = w;
    for i in 0..r {
        x &= x >> (1 << i);
    }
    x & RUN_STARTS[r as usize]
}

/// `RUN_STARTS[r]`: the bits that may start an aligned run of `2^r` bits.
const RUN_STARTS: [u64; 6] = [
    !0,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn area(start: u64, frames: u64) -> MemoryArea {
        MemoryArea::new(PhysAddr::new(start << PAGE_SHIFT), frames << PAGE_SHIFT)
    }

    #[test]
    fn masks_and_runs() {
        assert_eq!(range_mask(0, 64), !0);
        assert_eq!(range_mask(3, 5), 0b11000);
        assert_eq!(range_mask(7, 7), 0);
        assert_eq!(aligned_runs(0b1110, 1), 0b0100);
        assert_eq!(aligned_runs(0xff00, 3), 0x0100);
        assert_eq!(aligned_runs(0x0ff0, 3), 0);
        assert_eq!(aligned_runs(!0, 5), 0x0000_0001_0000_0001);
        let mut w = 0x9e37_79b9_7f4a_7c15u64;
        // A few words under Miri, where the naive loop is slow.
        for _ in 0..if cfg!(miri) { 8 } else { 200 } {
            w = w.rotate_left(13) ^ (w >> 7) ^ (w << 3);
            for v in [w, w | w >> 1, w | w >> 3 | w << 5, !w, !0, 0] {
                for r in 0..6 {
                    let len = 1u32 << r;
                    let naive = (0..64)
                        .step_by(len as usize)
                        .filter(|&i| (i..i + len).all(|b| v & (1 << b) != 0))
                        .fold(0u64, |m, i| m | 1 << i);
                    assert_eq!(aligned_runs(v, r), naive, "r {r} word {v:#x}");
                }
            }
        }
    }

    #[test]
    fn geometry_levels() {
        let g = Geometry::new(0, 1 << 18);
        assert_eq!(g.levels, 4);
        assert_eq!(g.max_order, 18);
        let g = Geometry::new(5, 6);
        assert_eq!(g.levels, 1);
        assert_eq!(g.max_order, 0);
        let g = Geometry::new(63, 64 * 64 + 1);
        assert_eq!(g.level[0].bits.words, 65);
    }

    #[test]
    fn allocate_all_then_free_all() {
        let a = area(100, 5000);
        let mut words = vec![0u64; header_words(a).unwrap()];
        let h = get_header(a, core::iter::empty()).unwrap();
        let mut al = Allocator::init(a, h, &mut words, core::iter::empty()).unwrap();
        al.check_invariants();
        let total = al.total_frames().get();
        let mut got = vec![];
        while let Ok(f) = al.allocate(Order::ZERO) {
            got.push(f);
        }
        assert_eq!(got.len() as u64, total);
        al.check_invariants();
        for f in got {
            al.free(MemoryArea::from_frames(f, FrameCount::new(1))).unwrap();
        }
        al.check_invariants();
        assert_eq!(al.free_frames().get(), total);
        // Frames 100..5100 minus the header at the top: the largest aligned block is 2048..4096.
        assert_eq!(al.largest_free_order(), Some(Order::new(11)));
        assert_eq!(al.stats().largest_free_order, Some(Order::new(11)));
    }

    #[test]
    fn single_frame_paths_at_the_edge_words() {
        // Frames 100..300: the first and last frame words hold frames outside the area.
        let a = area(100, 200);
        let reserved = [area(130, 2)];
        let mut words = vec![0u64; header_words(a).unwrap()];
        let h = get_header(a, reserved).unwrap();
        let mut al = Allocator::init(a, h, &mut words, reserved).unwrap();
        let one = FrameCount::new(1);
        let before = al.stats();
        for n in [0, 63, 99, 300, 319, 320, 1 << 30] {
            let f = Frame::from_number(n);
            assert!(matches!(al.free_run(f, one), Err(FreeError::OutsideArea(_))), "free of frame {n}");
            assert!(matches!(al.allocate_at(f, one), Err(AllocateAtError::OutsideArea(_))), "take of frame {n}");
        }
        let r = Frame::from_number(130);
        assert_eq!(al.free_run(r, one), Err(FreeError::Reserved(r)));
        assert_eq!(al.allocate_at(r, one), Err(AllocateAtError::Reserved(r)));
        assert_eq!(al.stats(), before);
        // Take every frame of the first word one by one at fixed addresses, free them again.
        let first: std::vec::Vec<u64> = (100..128).filter(|&n| !(130..132).contains(&n)).collect();
        for &n in &first {
            al.allocate_at(Frame::from_number(n), one).unwrap();
            al.check_invariants();
        }
        let f = Frame::from_number(100);
        assert_eq!(al.allocate_at(f, one), Err(AllocateAtError::InUse(f)));
        assert_eq!(al.allocate(Order::ZERO).unwrap().number(), 128, "the first word is empty");
        for &n in &first {
            al.free_run(Frame::from_number(n), one).unwrap();
            al.check_invariants();
        }
        assert_eq!(al.free_run(f, one), Err(FreeError::AlreadyFree(f)));
        al.free_run(Frame::from_number(128), one).unwrap();
        al.check_invariants();
        assert_eq!(al.stats(), before);
    }

    #[test]
    fn whole_word_frees_check_every_frame() {
        // Frames 0..8192 with frames 4200..4210 reserved.
        let a = area(0, 8192);
        let reserved = [area(4200, 10)];
        let mut words = vec![0u64; header_words(a).unwrap()];
        let h = get_header(a, reserved).unwrap();
        let mut al = Allocator::init(a, h, &mut words, reserved).unwrap();
        let f = al.allocate(Order::new(9)).unwrap();
        let g = al.allocate(Order::new(6)).unwrap();
        al.check_invariants();
        let before = (al.free_frames(), al.stats());
        // A block that overlaps a free block, a freed one again, one over reserved frames.
        let err = al.free_run(f, FrameCount::new(1024)).unwrap_err();
        assert_eq!(g.number(), f.number() + 512, "the lowest blocks");
        assert_eq!(err, FreeError::AlreadyFree(Frame::from_number(f.number() + 576)));
        al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap();
        let err = al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap_err();
        assert_eq!(err, FreeError::AlreadyFree(g));
        al.allocate_at(g, FrameCount::new(64)).unwrap();
        al.allocate_at(Frame::from_number(4096), FrameCount::new(104)).unwrap();
        al.allocate_at(Frame::from_number(4210), FrameCount::new(78)).unwrap();
        let err = al.free_run(Frame::from_number(4096), FrameCount::new(192)).unwrap_err();
        assert_eq!(err, FreeError::Reserved(Frame::from_number(4200)));
        al.free_run(Frame::from_number(4096), FrameCount::new(104)).unwrap();
        al.free_run(Frame::from_number(4210), FrameCount::new(78)).unwrap();
        al.check_invariants();
        assert_eq!((al.free_frames(), al.stats()), before);
        // The last word under a summary word, and a run across two summary words.
        for (s, n) in [(4032, 64), (4032, 128), (3968, 128)] {
            al.allocate_at(Frame::from_number(s), FrameCount::new(n)).unwrap();
            al.check_invariants();
            al.free_run(Frame::from_number(s), FrameCount::new(n)).unwrap();
            al.check_invariants();
        }
        // Whole-word frees merge up to the largest block again.
        al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap();
        al.free(MemoryArea::from_frames(f, FrameCount::new(512))).unwrap();
        al.check_invariants();
        assert_eq!(al.largest_free_order(), Some(Order::new(12)));
        assert_eq!(al.stats().largest_free_order, Some(Order::new(12)));
    }
}
