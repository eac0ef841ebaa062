//! Exact-fit arenas: a two-level segregated fit (TLSF) over runs of pages, for requests
//! larger than the small classes, with the block map kept out of band of the blocks.
//!
//! ```text
//!   arena: a run of pages from the page source, granules of 64 bytes
//!   ┌ header ───────────────────────┬ block ──┬ free block ─┬ block ─┬ ... ─┐
//!   │ summary, blocks live,         │ (live,  │ (nothing    │        │      │
//!   │ start, alloc and quick bits   │ no tag) │ written)    │        │      │
//!   │ (1 per granule, a word a page)│         │             │        │      │
//!   └───────────────────────────────┴─────────┴─────────────┴────────┴──────┘
//!   summary: one bit per non-zero word of start bits
//!   shard: FitIndex (first-level bitmap, second-level bitmaps, list tops) over a pool of
//!          entries (arena | pages - 1, granule, size, next, prev), over all its arenas
//! ```
//!
//! Blocks tile the arena after its header; a start bit marks each block's first granule
//! and an alloc bit each allocated block's first granule. A block's size is the distance to
//! the next start bit (the summary finds it in a few word operations), so a free recovers
//! the size and both neighbours from the header alone: it checks that the pointer is a
//! block start and allocated before anything changes. Free neighbours are merged at once,
//! so two free blocks are never adjacent.
//!
//! Free blocks are found through the shard's [`FitIndex`]: segregated lists by size (16
//! lists per doubling of size, as in TLSF) of entries in a pool of its own, each naming a
//! block by arena, granule and size. Nothing is written into a block, free or allocated,
//! so taking and freeing touch only headers and the index, whose lines stay cached. Lists
//! are doubly linked: a block taken loses its entry, and so does a free block merged into a
//! neighbour when its entry is among the first few of its list (on the recorded traces,
//! every time); otherwise the entry goes stale and its list is marked, and the tops of a
//! marked list are checked against the header (a start, free, of its size) before use. A
//! request checks the top of the list of its exact size first (good fit), then the first
//! non-empty list whose blocks all fit.
//!
//! All accesses to an arena's header (and to the index) happen under the lock of the shard
//! that owns it; an [`Arena`] view is made only under that lock.
//!
//! # Unsafe
//!
//! An [`Arena`] is a view of a run of pages the heap took from its page source for it; its
//! header words are read and written through the run's pointer, sound while the run stays the
//! heap's and the owning shard's lock is held (the contract of `Arena::new` and `Arena::init`).
//! A [`FitIndex`]'s entries live in a pool of pages the index alone owns (handed in by
//! `grow`).

use memkit_types::{PAGE_SIZE, VirtAddr};

use crate::error::XmfreeError;

mod fit;

pub(crate) use fit::{ENTRY_BYTES, FitIndex};

/// log2 of [`GRANULE`].
pub(crate) const GRANULE_SHIFT: u32 = 6;
/// The unit of arena blocks: sizes are rounded up to it, blocks start on it.
pub(crate) const GRANULE: usize = 1 << GRANULE_SHIFT;
/// Granules per page (and start bits per word of the header).
const PAGE_GRANULES: usize = PAGE_SIZE / GRANULE;
/// Pages of an arena at most.
pub(crate) const MAX_ARENA_PAGES: usize = 512;

/// Second-level lists per first-level range (log2).
const SL_SHIFT: u32 = 4;
const SL_COUNT: usize = 1 << SL_SHIFT;
/// First-level ranges: sizes below 16 granules, then one per doubling up to the largest
/// arena.
const FL_COUNT: usize = (MAX_ARENA_PAGES * PAGE_GRANULES).ilog2() as usize - SL_SHIFT as usize + 1;

/// Header word of the count of blocks allocated.
const USED_WORD: usize = 0;
/// Header words of the summary (one bit per page, as many words as the largest arena
/// needs, so that every offset in the header is a constant or a page's).
const SUMMARY_WORD: usize = 1;
/// Header word of the first page's start bits (its alloc and quick bits follow).
const BITS_WORD: usize = SUMMARY_WORD + MAX_ARENA_PAGES / 64;
/// Bitmaps of the header (start, alloc, quick), one word per page each.
const BITMAPS: usize = 3;

/// Header words of an arena of `pages` pages: the count, the summary, and three bitmaps of
/// one word per page (start, alloc and quick words interleaved, so that one line holds a
/// page's three).
#[inline]
const fn header_words(pages: usize) -> usize {
    BITS_WORD + BITMAPS * pages
}

/// Header granules of an arena of `pages` pages.
#[inline]
pub(crate) const fn header_granules(pages: usize) -> usize {
    (header_words(pages) * 8).div_ceil(GRANULE)
}

/// The smallest arena (in pages) that holds a free block of `granules` granules.
#[inline]
pub(crate) fn pages_for(granules: usize) -> usize {
    let mut pages = granules.div_ceil(PAGE_GRANULES).max(1);
    while pages * PAGE_GRANULES - header_granules(pages) < granules {
        pages += 1;
    }
    pages
}

/// The list of free blocks of `size` granules (at least 1): `(first level, second level)`.
#[inline]
fn bucket(size: usize) -> (usize, usize) {
    if size < SL_COUNT {
        return (0, size);
    }
    let f = size.ilog2();
    ((f - SL_SHIFT + 1) as usize, (size >> (f - SL_SHIFT)) & (SL_COUNT - 1))
}

/// A view of one arena: its first page and its length.
///
/// # Invariants
/// The pages are a run of the heap set up as an arena (its header written by
/// [`Arena::init`]), and the holder of the view holds the lock of the shard owning it
/// while it uses the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arena {
    /// The first page, with the provenance of the memory the arena lies in.
    start: *mut u8,
    pages: usize,
}

impl Arena {
    /// A view of an arena.
    ///
    /// # Safety
    /// `start .. start + pages * PAGE_SIZE` is memory of the heap's, set up as an arena with
    /// [`Arena::init`], used by nothing but its blocks' owners; the caller holds the lock
    /// of the arena's shard while it uses the view (and any view a [`FitIndex`] of that
    /// shard gives back).
    #[inline]
    pub(crate) unsafe fn new(start: *mut u8, pages: usize) -> Self {
        debug_assert!(start.addr().is_multiple_of(PAGE_SIZE) && pages > 0 && pages <= MAX_ARENA_PAGES);
        Arena { start, pages }
    }

    /// Sets up a fresh arena: clears its header and makes the rest one free block (not in
    /// any list yet: see [`FitIndex::add_arena`]).
    ///
    /// # Safety
    /// As for [`Arena::new`], except that the header need not be written yet: the pages
    /// are the heap's and used by nobody else.
    pub(crate) unsafe fn init(start: *mut u8, pages: usize) -> Self {
        // SAFETY: the header (less than the first page) is ours (caller's contract) and
        // page-aligned.
        unsafe { core::ptr::write_bytes(start.cast::<u64>(), 0, header_words(pages)) };
        // SAFETY: the header is written now; the rest is the caller's contract.
        let arena = unsafe { Arena::new(start, pages) };
        arena.set_start(arena.header());
        arena
    }

    /// The first granule after the header.
    #[inline]
    pub(crate) fn header(&self) -> usize {
        header_granules(self.pages)
    }

    /// Granules of the arena, header included.
    #[inline]
    pub(crate) fn granules(&self) -> usize {
        self.pages * PAGE_GRANULES
    }

    #[inline]
    pub(crate) fn addr(&self, g: usize) -> usize {
        self.start.addr() + (g << GRANULE_SHIFT)
    }

    /// A pointer to granule `g`, with the arena's provenance.
    #[inline]
    pub(crate) fn ptr(&self, g: usize) -> *mut u8 {
        self.start.wrapping_add(g << GRANULE_SHIFT)
    }

    /// Word `i` of the header.
    #[inline]
    fn header_word(&self, i: usize) -> u64 {
        debug_assert!(i < header_words(self.pages));
        // SAFETY: the header holds `header_words(pages)` words at the arena's
        // start (type invariant), written by `init`, accessed only under the shard lock the
        // holder holds.
        unsafe { self.start.cast::<u64>().wrapping_add(i).read() }
    }

    #[inline]
    fn set_header_word(&self, i: usize, v: u64) {
        debug_assert!(i < header_words(self.pages));
        // SAFETY: as in `header_word`; nobody else reads or writes the header meanwhile.
        unsafe { self.start.cast::<u64>().wrapping_add(i).write(v) };
    }

    /// Word `w` of the start bits (`alloc` false) or alloc bits (`alloc` true).
    #[inline]
    fn word(&self, alloc: bool, w: usize) -> u64 {
        debug_assert!(w < self.pages);
        self.header_word(BITS_WORD + BITMAPS * w + alloc as usize)
    }

    #[inline]
    fn set_word(&self, alloc: bool, w: usize, v: u64) {
        debug_assert!(w < self.pages);
        self.set_header_word(BITS_WORD + BITMAPS * w + alloc as usize, v);
    }

    /// Word `w` of the quick bits.
    #[inline]
    fn quick_word(&self, w: usize) -> u64 {
        debug_assert!(w < self.pages);
        self.header_word(BITS_WORD + BITMAPS * w + 2)
    }

    /// Whether the allocated block at `g` is a quick one: freed by its owner, held by the
    /// shard for a request of its size (see `Heap`'s quick slots), not merged. To every
    /// check it is free ([`allocated_block`](Arena::allocated_block) refuses it); to the
    /// arena's tiling and count it is allocated (no neighbour merges with it).
    #[inline]
    pub(crate) fn is_quick(&self, g: usize) -> bool {
        self.quick_word(g / 64) >> (g % 64) & 1 == 1
    }

    /// Marks the allocated block at `g` quick (`on`) or allocated again.
    #[inline]
    pub(crate) fn set_quick(&self, g: usize, on: bool) {
        debug_assert!(self.is_start(g) && self.is_allocated(g) && self.is_quick(g) != on);
        let w = g / 64;
        let v = self.quick_word(w);
        self.set_header_word(BITS_WORD + BITMAPS * w + 2, if on { v | 1 << (g % 64) } else { v & !(1 << (g % 64)) });
    }

    /// Summary word `i`: bit `b` set when start word `64 i + b` is not zero.
    #[inline]
    fn summary(&self, i: usize) -> u64 {
        self.header_word(SUMMARY_WORD + i)
    }

    /// Blocks allocated in the arena.
    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.header_word(USED_WORD) as usize
    }

    #[inline]
    fn set_used(&self, used: usize) {
        self.set_header_word(USED_WORD, used as u64);
    }

    #[inline]
    fn bit(&self, alloc: bool, g: usize) -> bool {
        self.word(alloc, g / 64) >> (g % 64) & 1 == 1
    }

    #[inline]
    pub(crate) fn is_start(&self, g: usize) -> bool {
        self.bit(false, g)
    }

    #[inline]
    pub(crate) fn is_allocated(&self, g: usize) -> bool {
        self.bit(true, g)
    }

    #[inline]
    fn set_start(&self, g: usize) {
        let w = g / 64;
        let v = self.word(false, w);
        self.set_word(false, w, v | 1 << (g % 64));
        if v == 0 {
            self.set_header_word(SUMMARY_WORD + w / 64, self.summary(w / 64) | 1 << (w % 64));
        }
    }

    #[inline]
    fn clear_start(&self, g: usize) {
        let w = g / 64;
        let v = self.word(false, w) & !(1 << (g % 64));
        self.set_word(false, w, v);
        if v == 0 {
            self.set_header_word(SUMMARY_WORD + w / 64, self.summary(w / 64) & !(1 << (w % 64)));
        }
    }

    #[inline]
    fn set_allocated(&self, g: usize, on: bool) {
        let w = g / 64;
        let v = self.word(true, w);
        self.set_word(true, w, if on { v | 1 << (g % 64) } else { v & !(1 << (g % 64)) });
    }

    /// The first start bit after granule `g`, or the arena's end.
    #[inline]
    pub(crate) fn next_start(&self, g: usize) -> usize {
        let i = g + 1;
        if i >= self.granules() {
            return self.granules();
        }
        let w = i / 64;
        let v = self.word(false, w) & (!0u64 << (i % 64));
        if v != 0 {
            return w * 64 + v.trailing_zeros() as usize;
        }
        // The summary: the first non-zero word after `w`.
        let mut sw = (w + 1) / 64;
        let mut mask = !0u64 << ((w + 1) % 64);
        while sw * 64 < self.pages {
            let s = self.summary(sw) & mask;
            if s != 0 {
                let word = sw * 64 + s.trailing_zeros() as usize;
                return word * 64 + self.word(false, word).trailing_zeros() as usize;
            }
            sw += 1;
            mask = !0;
        }
        self.granules()
    }

    /// The last start bit before granule `g` (the header's end is one, so there is one for
    /// every `g` after it).
    #[inline]
    fn prev_start(&self, g: usize) -> usize {
        debug_assert!(g > self.header());
        let i = g - 1;
        let w = i / 64;
        let v = self.word(false, w) & (!0u64 >> (63 - i % 64));
        if v != 0 {
            return w * 64 + 63 - v.leading_zeros() as usize;
        }
        let mut sw = w / 64;
        let mut mask = (1u64 << (w % 64)) - 1;
        loop {
            let s = self.summary(sw) & mask;
            if s != 0 {
                let word = sw * 64 + 63 - s.leading_zeros() as usize;
                return word * 64 + 63 - self.word(false, word).leading_zeros() as usize;
            }
            // The header's end has a start bit: the loop ends before `sw` wraps.
            sw -= 1;
            mask = !0;
        }
    }

    /// Checks that `addr` (inside the arena) is the start of an allocated block; returns
    /// its granule. Reads nothing but the header.
    ///
    /// # Errors
    /// [`XmfreeError::NotBlockStart`] when it is not a block start (inside a block, in
    /// the header), [`XmfreeError::NotAllocated`] when the block is free (or quick: freed,
    /// held for reuse).
    #[inline]
    pub(crate) fn allocated_block(&self, addr: usize) -> Result<usize, XmfreeError> {
        let va = VirtAddr::new(addr);
        let off = addr.wrapping_sub(self.start.addr());
        let g = off >> GRANULE_SHIFT;
        if !off.is_multiple_of(GRANULE) || g < self.header() || g >= self.granules() || !self.is_start(g) {
            return Err(XmfreeError::NotBlockStart(va));
        }
        if !self.is_allocated(g) || self.is_quick(g) {
            return Err(XmfreeError::NotAllocated(va));
        }
        Ok(g)
    }

    /// Granules of the block starting at `g`.
    #[inline]
    pub(crate) fn block_granules(&self, g: usize) -> usize {
        self.next_start(g) - g
    }

    /// Granules of the blocks allocated (quick blocks not counted: they are free to their
    /// owners), found by walking the blocks.
    pub(crate) fn live_granules(&self) -> usize {
        let (mut g, mut live) = (self.header(), 0);
        while g < self.granules() {
            let next = self.next_start(g);
            if self.is_allocated(g) && !self.is_quick(g) {
                live += next - g;
            }
            g = next;
        }
        live
    }

    /// Whether no block is allocated: one free block from the header to the end.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        let h = self.header();
        !self.is_allocated(h) && self.next_start(h) == self.granules()
    }
}

#[cfg(any(test, feature = "check"))]
impl Arena {
    /// Checks the arena: header bits clear, alloc bits only on block starts, quick bits only
    /// on allocated blocks, summary bits match, no two free blocks adjacent, the count of
    /// blocks right. Returns (allocated blocks (quick ones included), free blocks,
    /// allocated granules (quick ones not), free blocks without a current entry in
    /// `index`).
    pub(crate) fn check(&self, index: &FitIndex) -> (usize, usize, usize, usize) {
        for w in 0..self.pages {
            let (s, a) = (self.word(false, w), self.word(true, w));
            assert_eq!(a & !s, 0, "alloc bits outside block starts in word {w} of {:#x}", self.start.addr());
            assert_eq!(
                self.quick_word(w) & !a,
                0,
                "quick bits outside allocated blocks in word {w} of {:#x}",
                self.start.addr()
            );
            assert_eq!(self.summary(w / 64) >> (w % 64) & 1 == 1, s != 0, "summary bit {w}");
        }
        for w in self.pages..MAX_ARENA_PAGES {
            assert_eq!(self.summary(w / 64) >> (w % 64) & 1, 0, "summary bit {w} beyond the arena");
        }
        for g in 0..self.header() {
            assert!(!self.is_start(g), "start bit in the header of {:#x}", self.start.addr());
        }
        assert!(self.is_start(self.header()), "no block at the header's end of {:#x}", self.start.addr());
        let (mut used, mut free, mut bytes, mut unlisted, mut prev_free) = (0, 0, 0, 0, false);
        let mut g = self.header();
        while g < self.granules() {
            let next = self.next_start(g);
            if self.is_allocated(g) {
                used += 1;
                if !self.is_quick(g) {
                    bytes += next - g;
                }
                prev_free = false;
            } else {
                assert!(!prev_free, "free blocks not merged at {:#x}", self.addr(g));
                unlisted += usize::from(!index.lists(self.addr(g), next - g));
                free += 1;
                prev_free = true;
            }
            g = next;
        }
        assert_eq!(used, self.used(), "blocks counted in the header of {:#x}", self.start.addr());
        (used, free, bytes, unlisted)
    }

    /// Quick blocks of the arena.
    pub(crate) fn quick_blocks(&self) -> usize {
        (0..self.pages).map(|w| self.quick_word(w).count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::fit::MIN_ENTRIES;
    use super::*;

    /// An arena over leaked, page-aligned memory.
    fn arena(pages: usize) -> Arena {
        let mem: &'static mut [u8] = vec![0u8; (pages + 1) * PAGE_SIZE].leak();
        let start = mem.as_mut_ptr().map_addr(|a| a.next_multiple_of(PAGE_SIZE));
        // SAFETY: leaked memory, used by this test alone, single-threaded.
        unsafe { Arena::init(start, pages) }
    }

    /// An index with a pool of `entries` over leaked memory.
    fn index_with(entries: usize) -> FitIndex {
        let mut index = FitIndex::EMPTY;
        let mem: &'static mut [u8] = vec![0u8; entries * ENTRY_BYTES + PAGE_SIZE].leak();
        let start = mem.as_mut_ptr().map_addr(|a| a.next_multiple_of(PAGE_SIZE));
        // SAFETY: leaked memory, page-aligned, `entries` entries long, used by this index alone.
        assert!(unsafe { index.grow(core::ptr::NonNull::new(start).unwrap(), entries) }.is_none());
        index
    }

    fn index() -> FitIndex {
        index_with(MIN_ENTRIES)
    }

    #[test]
    fn buckets_grow_with_size_and_find_rounds_up() {
        let mut last = (0, 0);
        for size in 1..(MAX_ARENA_PAGES * PAGE_GRANULES) {
            let b = bucket(size);
            assert!(b >= last && b.0 < FL_COUNT, "{size}");
            last = b;
        }
        // 1 count word, 8 summary words, 3 x 64 bitmap words: 1 608 bytes.
        assert_eq!(header_granules(64), 26);
        assert_eq!(pages_for(64 * 64 - 26), 64);
        assert_eq!(pages_for(64 * 64 - 25), 65);
    }

    #[test]
    fn a_freed_block_merges_with_both_neighbours() {
        let a = arena(4);
        let h = a.header();
        let mut index = index();
        index.add_arena(&a);
        let take = |index: &mut FitIndex, size| index.allocate(size, 1).unwrap().1;
        let blocks: Vec<usize> = (0..4).map(|_| take(&mut index, 10)).collect();
        assert_eq!(blocks, [h, h + 10, h + 20, h + 30]);
        assert_eq!(a.check(&index), (4, 1, 40, 0));
        assert_eq!(index.free(&a, h + 10), (3, 10));
        assert_eq!(index.free(&a, h + 30), (2, 10));
        assert_eq!(a.check(&index), (2, 2, 20, 0));
        assert_eq!(index.check(|_| a), (2, 0));
        // The middle one joins the free block before it and the free end after it.
        assert_eq!(index.free(&a, h + 20), (1, 10));
        assert_eq!(a.check(&index), (1, 1, 10, 0));
        assert_eq!(a.block_granules(h + 10), a.granules() - h - 10);
        let at = |g: usize| VirtAddr::new(a.addr(g));
        assert_eq!(a.allocated_block(a.addr(h + 20)), Err(XmfreeError::NotBlockStart(at(h + 20))));
        assert_eq!(a.allocated_block(a.addr(h + 10)), Err(XmfreeError::NotAllocated(at(h + 10))));
        assert_eq!(a.allocated_block(a.addr(h) + 8), Err(XmfreeError::NotBlockStart(VirtAddr::new(a.addr(h) + 8))));
        assert_eq!(a.allocated_block(a.addr(0)), Err(XmfreeError::NotBlockStart(at(0))));
        assert_eq!(index.free(&a, h), (0, 10));
        assert!(a.is_empty());
        assert_eq!(index.check(|_| a), (1, 0));
        index.remove_arena(&a);
        assert_eq!(index.check(|_| a), (0, 0));
        assert!(!index.has_free());
    }

    #[test]
    fn an_aligned_block_leaves_its_front_free() {
        let a = arena(8);
        let mut index = index();
        index.add_arena(&a);
        let (_, g) = index.allocate(3, 64).unwrap();
        assert_eq!(g, 64);
        assert_eq!(a.addr(g) % PAGE_SIZE, 0);
        assert_eq!(a.check(&index), (1, 2, 3, 0));
        let (_, h) = index.allocate(50, 1).unwrap();
        assert_eq!(h, a.header());
        assert_eq!(a.check(&index), (2, 2, 53, 0));
        index.free(&a, g);
        index.free(&a, h);
        assert!(a.is_empty());
        assert_eq!(index.check(|_| a), (1, 0));
    }

    #[test]
    fn a_block_merged_deep_in_its_list_leaves_a_stale_entry_in_a_marked_list() {
        let a = arena(16);
        let mut index = index();
        index.add_arena(&a);
        // Twelve blocks of 5 granules, each followed by a spacer of 1 kept allocated.
        let mut blocks = Vec::new();
        let mut spacers = Vec::new();
        for _ in 0..12 {
            blocks.push(index.allocate(5, 1).unwrap().1);
            spacers.push(index.allocate(1, 1).unwrap().1);
        }
        // Freed in order, each goes on top of the 5-granule list: the first is the deepest.
        for &b in &blocks {
            index.free(&a, b);
        }
        assert_eq!(index.check(|_| a), (13, 0));
        assert_eq!(index.stale_lists(), 0);
        // The first spacer merges with the first two blocks, both deeper in their list
        // than a free looks: their entries go stale and the list is marked.
        index.free(&a, spacers[0]);
        assert_eq!(a.block_granules(blocks[0]), 11);
        assert_eq!(index.stale_lists(), 1);
        assert_eq!(index.check(|_| a), (12, 0));
        assert_eq!(a.check(&index), (11, 12, 11, 0));
        // The ten current blocks of the list are taken from its top; then its stale entries
        // are dropped, the list empties and is unmarked, and the next request of 5 granules
        // splits a larger block.
        for &b in blocks[2..].iter().rev() {
            assert_eq!(index.allocate(5, 1).unwrap().1, b);
        }
        assert_eq!(index.stale_lists(), 1);
        let split = index.allocate(5, 1).unwrap().1;
        assert!(split == blocks[0] || split > *spacers.last().unwrap(), "{split}");
        assert_eq!(index.stale_lists(), 0);
        assert_eq!(index.check(|_| a), (2, 0));
        for g in blocks[2..].iter().copied().chain(spacers[1..].iter().copied()).chain([split]) {
            index.free(&a, g);
            index.check(|_| a);
        }
        assert!(a.is_empty());
        assert_eq!(a.check(&index), (0, 1, 0, 0));
    }

    #[test]
    fn a_short_pool_collects_stale_entries_and_a_rescan_finds_unlisted_blocks() {
        let a = arena(16);
        // A pool too small for this churn (nobody grows it here): entries go stale and are
        // collected, some free blocks go unlisted, and a rescan lists them again.
        let mut index = index_with(8);
        index.add_arena(&a);
        let mut live: Vec<usize> = Vec::new();
        let (mut rescans, mut unlisted_seen) = (0, 0);
        for round in 0..600usize {
            if live.len() < 24 && round % 3 != 2 {
                let size = 1 + (round * 7) % 40;
                let align = if round % 5 == 0 { 4 } else { 1 };
                let got = index.allocate(size, align).or_else(|| {
                    if !index.has_unlisted() {
                        return None;
                    }
                    rescans += 1;
                    index.rescan_begin();
                    index.rescan_arena(&a);
                    index.rescan_end();
                    index.allocate(size, align)
                });
                if let Some((_, g)) = got {
                    live.push(g);
                }
            } else if !live.is_empty() {
                let g = live.swap_remove(round % live.len());
                index.free(&a, g);
            }
            let (used, free, _, unlisted) = a.check(&index);
            assert_eq!(used, live.len());
            let (counted, bound) = index.check(|_| a);
            assert_eq!(counted, free);
            assert!(unlisted <= bound, "{unlisted} free blocks unlisted, {bound} counted");
            unlisted_seen = unlisted_seen.max(unlisted);
        }
        assert!(rescans > 0 && unlisted_seen > 0, "the pool never ran short");
        for g in live.drain(..) {
            index.free(&a, g);
        }
        index.rescan_begin();
        index.rescan_arena(&a);
        index.rescan_end();
        assert!(a.is_empty());
        assert_eq!(a.check(&index), (0, 1, 0, 0));
        assert_eq!(index.check(|_| a), (1, 0));
    }
}
