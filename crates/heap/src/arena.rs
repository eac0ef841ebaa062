//! Exact-fit arenas: a two-level segregated fit (TLSF) over runs of pages, for requests
//! larger than the small classes, with the block map kept out of band of the blocks.
//!
//! ```text
//!   arena: a run of pages from the page source, granules of 64 bytes
//!   ┌ header ───────────────────────┬ block ──┬ free block ──────────┬ block ─┬ ... ─┐
//!   │ summary, blocks live,         │ (live,  │ next, prev, arena    │        │      │
//!   │ start and alloc bits (1 per   │ no tag) │ start and pages      │        │      │
//!   │ granule, one word each a page)│         │ (free memory only)   │        │      │
//!   └───────────────────────────────┴─────────┴──────────────────────┴────────┴──────┘
//!   summary: one bit per non-zero word of start bits
//!   shard: FitIndex (first-level bitmap, second-level bitmaps, list heads), over all its arenas
//! ```
//!
//! Blocks tile the arena after its header; a start bit marks each block's first granule
//! and an alloc bit each allocated block's first granule. A block's size is the distance to
//! the next start bit (the summary finds it in a few word operations), so a free recovers
//! the size and both neighbours from the header alone: it checks that the pointer is a
//! block start and allocated before anything changes. Free neighbours are merged at once,
//! so two free blocks are never adjacent.
//!
//! Free blocks are kept in segregated lists by size (16 lists per doubling of size, as in
//! TLSF), doubly linked through their first 32 bytes, which also name the block's arena (so
//! that taking a listed block needs no page map lookup): the only data the heap keeps
//! inside memory it manages, and only in free blocks. A free never trusts it: it finds the
//! block and checks it through the page map and the header. A request searches the list of
//! its exact size class first (good fit), then the first non-empty list whose blocks all
//! fit.
//!
//! All accesses to an arena (header and free blocks) happen under the lock of the shard
//! that owns it; an [`Arena`] view is made only under that lock.

use memkit_types::{PAGE_SIZE, VirtAddr};

use crate::error::XmfreeError;

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

/// Header words before the bitmaps: the summary (one bit per page), then the count of
/// blocks allocated.
const fn bitmap_base(pages: usize) -> usize {
    pages.div_ceil(64) + 1
}

/// Header granules of an arena of `pages` pages: the summary, the count, and two bitmaps
/// of one word per page (start and alloc words interleaved, so that one line holds both).
pub(crate) const fn header_granules(pages: usize) -> usize {
    ((bitmap_base(pages) + 2 * pages) * 8).div_ceil(GRANULE)
}

/// The smallest arena (in pages) that holds a free block of `granules` granules.
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
    start: usize,
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
    pub(crate) unsafe fn new(start: usize, pages: usize) -> Self {
        debug_assert!(start.is_multiple_of(PAGE_SIZE) && pages > 0 && pages <= MAX_ARENA_PAGES);
        Arena { start, pages }
    }

    /// Sets up a fresh arena: clears its header and makes the rest one free block (not in
    /// any list yet: see [`FitIndex::add_arena`]).
    ///
    /// # Safety
    /// As for [`Arena::new`], except that the header need not be written yet: the pages
    /// are the heap's and used by nobody else.
    pub(crate) unsafe fn init(start: usize, pages: usize) -> Self {
        // SAFETY: the header (less than the first page) is ours (caller's contract) and
        // page-aligned.
        unsafe { core::ptr::write_bytes(start as *mut u64, 0, bitmap_base(pages) + 2 * pages) };
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
        self.start + (g << GRANULE_SHIFT)
    }

    #[inline]
    fn granule(&self, addr: usize) -> usize {
        (addr - self.start) >> GRANULE_SHIFT
    }

    /// Word `i` of the header.
    #[inline]
    fn header_word(&self, i: usize) -> u64 {
        debug_assert!(i < bitmap_base(self.pages) + 2 * self.pages);
        // SAFETY: the header holds `bitmap_base(pages) + 2 * pages` words at the arena's
        // start (type invariant), written by `init`, accessed only under the shard lock the
        // holder holds.
        unsafe { ((self.start + i * 8) as *const u64).read() }
    }

    #[inline]
    fn set_header_word(&self, i: usize, v: u64) {
        debug_assert!(i < bitmap_base(self.pages) + 2 * self.pages);
        // SAFETY: as in `header_word`; nobody else reads or writes the header meanwhile.
        unsafe { ((self.start + i * 8) as *mut u64).write(v) };
    }

    /// Word `w` of the start bits (`alloc` false) or alloc bits (`alloc` true).
    #[inline]
    fn word(&self, alloc: bool, w: usize) -> u64 {
        debug_assert!(w < self.pages);
        self.header_word(bitmap_base(self.pages) + 2 * w + alloc as usize)
    }

    #[inline]
    fn set_word(&self, alloc: bool, w: usize, v: u64) {
        debug_assert!(w < self.pages);
        self.set_header_word(bitmap_base(self.pages) + 2 * w + alloc as usize, v);
    }

    /// Summary word `i`: bit `b` set when start word `64 i + b` is not zero.
    #[inline]
    fn summary(&self, i: usize) -> u64 {
        self.header_word(i)
    }

    /// Blocks allocated in the arena.
    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.header_word(bitmap_base(self.pages) - 1) as usize
    }

    #[inline]
    fn set_used(&self, used: usize) {
        self.set_header_word(bitmap_base(self.pages) - 1, used as u64);
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
            self.set_header_word(w / 64, self.summary(w / 64) | 1 << (w % 64));
        }
    }

    #[inline]
    fn clear_start(&self, g: usize) {
        let w = g / 64;
        let v = self.word(false, w) & !(1 << (g % 64));
        self.set_word(false, w, v);
        if v == 0 {
            self.set_header_word(w / 64, self.summary(w / 64) & !(1 << (w % 64)));
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
    /// the header), [`XmfreeError::NotAllocated`] when the block is free.
    #[inline]
    pub(crate) fn allocated_block(&self, addr: usize) -> Result<usize, XmfreeError> {
        let va = VirtAddr::new(addr);
        let off = addr.wrapping_sub(self.start);
        let g = off >> GRANULE_SHIFT;
        if !off.is_multiple_of(GRANULE) || g < self.header() || g >= self.granules() || !self.is_start(g) {
            return Err(XmfreeError::NotBlockStart(va));
        }
        if !self.is_allocated(g) {
            return Err(XmfreeError::NotAllocated(va));
        }
        Ok(g)
    }

    /// Granules of the block starting at `g`.
    #[inline]
    pub(crate) fn block_granules(&self, g: usize) -> usize {
        self.next_start(g) - g
    }

    /// Whether no block is allocated: one free block from the header to the end.
    pub(crate) fn is_empty(&self) -> bool {
        let h = self.header();
        !self.is_allocated(h) && self.next_start(h) == self.granules()
    }
}

/// The links of the free block at `addr`: (next, prev) addresses, 0 for none.
///
/// Callers pass only addresses of free blocks of arenas whose shard lock they hold: the
/// start of a free block an index lists, or one it is about to list.
#[inline]
fn links(addr: usize) -> (usize, usize) {
    // SAFETY: `addr` starts a free block of an arena (see above), at least one granule of
    // 64 bytes and 64-aligned; free memory is the heap's own and, under the shard lock,
    // touched by nobody else.
    let [next, prev] = unsafe { (addr as *const [usize; 2]).read() };
    (next, prev)
}

/// The arena the free block at `addr` names (see [`links`] for the callers' duty).
#[inline]
fn arena_of(addr: usize) -> Arena {
    // SAFETY: as in `links`; the block's third and fourth words.
    let [start, pages] = unsafe { ((addr + 16) as *const [usize; 2]).read() };
    Arena { start, pages }
}

/// Writes the links and the arena of a block about to be listed.
#[inline]
fn set_links(arena: &Arena, addr: usize, next: usize, prev: usize) {
    // SAFETY: as in `links`.
    unsafe { (addr as *mut [usize; 4]).write([next, prev, arena.start, arena.pages]) };
}

#[inline]
fn set_next(addr: usize, next: usize) {
    // SAFETY: as in `links`.
    unsafe { (addr as *mut usize).write(next) };
}

#[inline]
fn set_prev(addr: usize, prev: usize) {
    // SAFETY: as in `links`; the block's second word.
    unsafe { ((addr + 8) as *mut usize).write(prev) };
}

/// The free blocks of one shard's arenas, in segregated lists by size.
#[derive(Clone, Copy)]
pub(crate) struct FitIndex {
    /// Bit `f` set: some list of first level `f` is non-empty.
    first: u32,
    /// Bit `s` of word `f` set: list `(f, s)` is non-empty.
    second: [u32; FL_COUNT],
    /// Address of each list's first block, 0 when empty.
    heads: [[usize; SL_COUNT]; FL_COUNT],
}

impl FitIndex {
    /// No free blocks.
    pub(crate) const EMPTY: FitIndex = FitIndex { first: 0, second: [0; FL_COUNT], heads: [[0; SL_COUNT]; FL_COUNT] };

    /// Whether some list holds a block.
    pub(crate) fn has_free(&self) -> bool {
        self.first != 0
    }

    fn insert(&mut self, arena: &Arena, g: usize, size: usize) {
        let (f, s) = bucket(size);
        let head = self.heads[f][s];
        let addr = arena.addr(g);
        set_links(arena, addr, head, 0);
        if head != 0 {
            set_prev(head, addr);
        }
        self.heads[f][s] = addr;
        self.first |= 1 << f;
        self.second[f] |= 1 << s;
    }

    fn remove(&mut self, arena: &Arena, g: usize, size: usize) {
        let (f, s) = bucket(size);
        let addr = arena.addr(g);
        let (next, prev) = links(addr);
        // A list's first block keeps a stale back link (so that taking it writes nothing
        // into the next one): the head tells which block is first.
        if self.heads[f][s] == addr {
            self.heads[f][s] = next;
            if next == 0 {
                self.second[f] &= !(1 << s);
                if self.second[f] == 0 {
                    self.first &= !(1 << f);
                }
            }
        } else {
            set_next(prev, next);
            if next != 0 {
                set_prev(next, prev);
            }
        }
    }

    /// A non-empty list whose blocks all hold `size` granules: `(first, second)` level.
    #[inline]
    fn find(&self, size: usize) -> Option<(usize, usize)> {
        let rounded = if size < SL_COUNT { size } else { size + (1 << (size.ilog2() - SL_SHIFT)) - 1 };
        let (f, s) = bucket(rounded);
        if f >= FL_COUNT {
            return None;
        }
        let second = self.second[f] & (!0u32 << s);
        if second != 0 {
            return Some((f, second.trailing_zeros() as usize));
        }
        let first = self.first & (!0u32 << (f + 1));
        if first == 0 {
            return None;
        }
        let f = first.trailing_zeros() as usize;
        Some((f, self.second[f].trailing_zeros() as usize))
    }

    /// Makes a fresh arena's free block findable.
    pub(crate) fn add_arena(&mut self, arena: &Arena) {
        let h = arena.header();
        self.insert(arena, h, arena.granules() - h);
    }

    /// Takes an empty arena's free block out of the lists (before its pages go back).
    pub(crate) fn remove_arena(&mut self, arena: &Arena) {
        debug_assert!(arena.is_empty());
        let h = arena.header();
        self.remove(arena, h, arena.granules() - h);
    }

    /// Takes a block of `size` granules starting at a multiple of `align` granules (a power
    /// of two; the arena starts on a page) from a free block of the lists, splitting off
    /// what is left on either side as free blocks, and counts it in its arena. Returns the
    /// arena and the block's first granule.
    #[inline]
    pub(crate) fn allocate(&mut self, size: usize, align: usize) -> Option<(Arena, usize)> {
        let need = size + align - 1;
        let (bf, bs) = bucket(need);
        let exact = if bf < FL_COUNT { self.heads[bf][bs] } else { 0 };
        // Good fit: the first block of the request's own list, when it is large enough;
        // else the first block of a list whose blocks are all large enough.
        let (arena, g, free) = match exact {
            0 => None,
            addr => {
                let arena = arena_of(addr);
                let g = arena.granule(addr);
                let free = arena.block_granules(g);
                (g.next_multiple_of(align) + size <= g + free).then_some((arena, g, free))
            }
        }
        .or_else(|| {
            let (f, s) = self.find(need)?;
            let addr = self.heads[f][s];
            let arena = arena_of(addr);
            let g = arena.granule(addr);
            Some((arena, g, arena.block_granules(g)))
        })?;
        // The block is the free block's bottom (aligned up), whose first line was just read.
        self.remove(&arena, g, free);
        let at = g.next_multiple_of(align);
        if at > g {
            arena.set_start(at);
            self.insert(&arena, g, at - g);
        }
        let end = at + size;
        if end < g + free {
            arena.set_start(end);
            self.insert(&arena, end, g + free - end);
        }
        arena.set_allocated(at, true);
        arena.set_used(arena.used() + 1);
        Some((arena, at))
    }

    /// Frees the allocated block at granule `g` (checked by [`Arena::allocated_block`])
    /// and merges it with free neighbours; returns the blocks left allocated in the arena.
    #[inline]
    pub(crate) fn free(&mut self, arena: &Arena, g: usize) -> usize {
        debug_assert!(arena.is_start(g) && arena.is_allocated(g));
        let size = arena.block_granules(g);
        arena.set_allocated(g, false);
        let used = arena.used() - 1;
        arena.set_used(used);
        let (mut start, mut end) = (g, g + size);
        if end < arena.granules() && !arena.is_allocated(end) {
            let next = arena.block_granules(end);
            self.remove(arena, end, next);
            arena.clear_start(end);
            end += next;
        }
        if g > arena.header() {
            let prev = arena.prev_start(g);
            if !arena.is_allocated(prev) {
                self.remove(arena, prev, g - prev);
                arena.clear_start(g);
                start = prev;
            }
        }
        self.insert(arena, start, end - start);
        used
    }

    /// Checks the lists: bitmaps match the heads, back links match, every listed block is
    /// a free block start of the arena it names, which `owner` finds from its address, of
    /// its list's size range. Returns the blocks listed.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn check(&self, owner: impl Fn(usize) -> Arena) -> usize {
        let mut n = 0;
        for f in 0..FL_COUNT {
            assert_eq!(self.first >> f & 1 == 1, self.second[f] != 0, "first-level bit {f}");
            for s in 0..SL_COUNT {
                let head = self.heads[f][s];
                assert_eq!(self.second[f] >> s & 1 == 1, head != 0, "second-level bit ({f}, {s})");
                let (mut cur, mut prev) = (head, 0);
                while cur != 0 {
                    let arena = owner(cur);
                    assert_eq!(arena_of(cur), arena, "listed block {cur:#x} names another arena");
                    let g = arena.granule(cur);
                    assert!(cur.is_multiple_of(GRANULE) && g >= arena.header(), "listed block {cur:#x} misplaced");
                    assert!(arena.is_start(g) && !arena.is_allocated(g), "listed block {cur:#x} is not free");
                    assert_eq!(bucket(arena.block_granules(g)), (f, s), "listed block {cur:#x} in the wrong list");
                    let (next, back) = links(cur);
                    assert!(prev == 0 || back == prev, "back link of {cur:#x}");
                    (prev, cur) = (cur, next);
                    n += 1;
                }
            }
        }
        n
    }

    /// Whether the free block at `addr` is in the list of its `size`.
    #[cfg(any(test, feature = "check"))]
    fn lists(&self, addr: usize, size: usize) -> bool {
        let (f, s) = bucket(size);
        let mut cur = self.heads[f][s];
        while cur != 0 {
            if cur == addr {
                return true;
            }
            cur = links(cur).0;
        }
        false
    }
}

#[cfg(any(test, feature = "check"))]
impl Arena {
    /// Checks the arena: header bits clear, alloc bits only on block starts, summary bits
    /// match, no two free blocks adjacent, every free block in `index`, the count of blocks
    /// right. Returns (allocated blocks, free blocks, allocated granules).
    pub(crate) fn check(&self, index: &FitIndex) -> (usize, usize, usize) {
        for w in 0..self.pages {
            let (s, a) = (self.word(false, w), self.word(true, w));
            assert_eq!(a & !s, 0, "alloc bits outside block starts in word {w} of {:#x}", self.start);
            assert_eq!(self.summary(w / 64) >> (w % 64) & 1 == 1, s != 0, "summary bit {w}");
        }
        for w in self.pages..self.pages.div_ceil(64) * 64 {
            assert_eq!(self.summary(w / 64) >> (w % 64) & 1, 0, "summary bit {w} beyond the arena");
        }
        for g in 0..self.header() {
            assert!(!self.is_start(g), "start bit in the header of {:#x}", self.start);
        }
        assert!(self.is_start(self.header()), "no block at the header's end of {:#x}", self.start);
        let (mut used, mut free, mut bytes, mut prev_free) = (0, 0, 0, false);
        let mut g = self.header();
        while g < self.granules() {
            let next = self.next_start(g);
            if self.is_allocated(g) {
                used += 1;
                bytes += next - g;
                prev_free = false;
            } else {
                assert!(!prev_free, "free blocks not merged at {:#x}", self.addr(g));
                assert!(index.lists(self.addr(g), next - g), "free block {:#x} not listed", self.addr(g));
                free += 1;
                prev_free = true;
            }
            g = next;
        }
        assert_eq!(used, self.used(), "blocks counted in the header of {:#x}", self.start);
        (used, free, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;

    /// An arena over leaked, page-aligned memory.
    fn arena(pages: usize) -> Arena {
        let mem: &'static mut [u8] = vec![0u8; (pages + 1) * PAGE_SIZE].leak();
        let start = (mem.as_mut_ptr() as usize).next_multiple_of(PAGE_SIZE);
        // SAFETY: leaked memory, used by this test alone, single-threaded.
        unsafe { Arena::init(start, pages) }
    }

    #[test]
    fn buckets_grow_with_size_and_find_rounds_up() {
        let mut last = (0, 0);
        for size in 1..(MAX_ARENA_PAGES * PAGE_GRANULES) {
            let b = bucket(size);
            assert!(b >= last && b.0 < FL_COUNT, "{size}");
            last = b;
        }
        assert_eq!(header_granules(64), 17);
        assert_eq!(pages_for(64 * 64 - 17), 64);
        assert_eq!(pages_for(64 * 64 - 16), 65);
    }

    #[test]
    fn a_freed_block_merges_with_both_neighbours() {
        let a = arena(4);
        let mut index = FitIndex::EMPTY;
        index.add_arena(&a);
        let take = |index: &mut FitIndex, size| index.allocate(size, 1).unwrap().1;
        let blocks: Vec<usize> = (0..4).map(|_| take(&mut index, 10)).collect();
        assert_eq!(blocks, [2, 12, 22, 32]);
        assert_eq!(a.check(&index), (4, 1, 40));
        assert_eq!(index.free(&a, 12), 3);
        assert_eq!(index.free(&a, 32), 2);
        assert_eq!(a.check(&index), (2, 2, 20));
        assert_eq!(index.check(|_| a), 2);
        // The middle one joins the free block before it and the free end after it.
        assert_eq!(index.free(&a, 22), 1);
        assert_eq!(a.check(&index), (1, 1, 10));
        assert_eq!(a.block_granules(12), a.granules() - 12);
        assert_eq!(a.allocated_block(a.addr(22)), Err(XmfreeError::NotBlockStart(VirtAddr::new(a.addr(22)))));
        assert_eq!(a.allocated_block(a.addr(12)), Err(XmfreeError::NotAllocated(VirtAddr::new(a.addr(12)))));
        assert_eq!(a.allocated_block(a.addr(2) + 8), Err(XmfreeError::NotBlockStart(VirtAddr::new(a.addr(2) + 8))));
        assert_eq!(a.allocated_block(a.addr(0)), Err(XmfreeError::NotBlockStart(VirtAddr::new(a.addr(0)))));
        assert_eq!(index.free(&a, 2), 0);
        assert!(a.is_empty());
        assert_eq!(index.check(|_| a), 1);
        index.remove_arena(&a);
        assert!(!index.has_free());
    }

    #[test]
    fn an_aligned_block_leaves_its_front_free() {
        let a = arena(8);
        let mut index = FitIndex::EMPTY;
        index.add_arena(&a);
        let (_, g) = index.allocate(3, 64).unwrap();
        assert_eq!(g, 64);
        assert_eq!(a.addr(g) % PAGE_SIZE, 0);
        assert_eq!(a.check(&index), (1, 2, 3));
        let (_, h) = index.allocate(60, 1).unwrap();
        assert_eq!(h, a.header());
        assert_eq!(a.check(&index), (2, 2, 63));
        index.free(&a, g);
        index.free(&a, h);
        assert!(a.is_empty());
        assert_eq!(index.check(|_| a), 1);
    }
}
