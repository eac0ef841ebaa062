//! Exact-fit arenas: a two-level segregated fit (TLSF) over runs of pages, for requests
//! larger than the small classes, with the block map kept out of band of the blocks.
//!
//! ```text
//!   arena: a run of pages from the page source, granules of 64 bytes
//!   ┌ header ───────────────────────┬ block ──┬ free block ─┬ block ─┬ ... ─┐
//!   │ summary, blocks live,         │ (live,  │ (nothing    │        │      │
//!   │ start and alloc bits (1 per   │ no tag) │ written)    │        │      │
//!   │ granule, one word each a page)│         │             │        │      │
//!   └───────────────────────────────┴─────────┴─────────────┴────────┴──────┘
//!   summary: one bit per non-zero word of start bits
//!   shard: FitIndex (first-level bitmap, second-level bitmaps, list tops) over a pool of
//!          entries (arena | pages - 1, granule, size, next), over all its arenas
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
//! so taking and freeing touch only headers and the index, whose lines stay cached. An
//! entry is not unlinked when its block is taken or merged: it goes stale, and is checked
//! against the header (a start, free, of its size) before it is used. A request checks the
//! top of the list of its exact size first (good fit), then the first non-empty list whose
//! blocks all fit.
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
/// Header word of the first page's start bits (its alloc bits follow).
const BITS_WORD: usize = SUMMARY_WORD + MAX_ARENA_PAGES / 64;

/// Header words of an arena of `pages` pages: the count, the summary, and two bitmaps of
/// one word per page (start and alloc words interleaved, so that one line holds both).
const fn header_words(pages: usize) -> usize {
    BITS_WORD + 2 * pages
}

/// Header granules of an arena of `pages` pages.
pub(crate) const fn header_granules(pages: usize) -> usize {
    (header_words(pages) * 8).div_ceil(GRANULE)
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
        self.header_word(BITS_WORD + 2 * w + alloc as usize)
    }

    #[inline]
    fn set_word(&self, alloc: bool, w: usize, v: u64) {
        debug_assert!(w < self.pages);
        self.set_header_word(BITS_WORD + 2 * w + alloc as usize, v);
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
    /// the header), [`XmfreeError::NotAllocated`] when the block is free.
    #[inline]
    pub(crate) fn allocated_block(&self, addr: usize) -> Result<usize, XmfreeError> {
        let va = VirtAddr::new(addr);
        let off = addr.wrapping_sub(self.start.addr());
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

/// One entry of a [`FitIndex`]: a free block as it was when it was listed. It goes stale
/// when the block is taken, merged into a neighbour or split; stale entries are dropped
/// when they reach the top of their list or when the index collects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Entry {
    /// The arena's first page (with its provenance), with its page count less one in the
    /// low bits of the address.
    arena: *mut u8,
    /// The block's first granule.
    at: u16,
    /// The block's granules.
    size: u16,
    /// The next entry of its list (or of the spare list), [`NIL`] at the end.
    next: u32,
}

/// Bytes of one [`Entry`]: the index grows its pool in whole pages of them.
pub(crate) const ENTRY_BYTES: usize = size_of::<Entry>();
const _: () = assert!(PAGE_SIZE.is_multiple_of(ENTRY_BYTES));
const _: () = assert!(MAX_ARENA_PAGES <= PAGE_SIZE && MAX_ARENA_PAGES * PAGE_GRANULES <= 1 << 16);
/// No entry.
const NIL: u32 = u32::MAX;
/// Entries of the smallest pool: one page.
const MIN_ENTRIES: usize = PAGE_SIZE / ENTRY_BYTES;

impl Entry {
    #[inline]
    fn arena(&self) -> Arena {
        Arena { start: self.arena.map_addr(|a| a & !(PAGE_SIZE - 1)), pages: (self.arena.addr() & (PAGE_SIZE - 1)) + 1 }
    }

    /// Whether the block it names is free and of its size now: its granule is a free
    /// block start, the next start is at its end (or its end is the arena's).
    #[inline]
    fn is_current(&self) -> bool {
        let arena = self.arena();
        let (g, end) = (self.at as usize, self.at as usize + self.size as usize);
        let w = g / 64;
        let (starts, allocs) = (arena.word(false, w), arena.word(true, w));
        let bit = 1u64 << (g % 64);
        if starts & bit == 0 || allocs & bit != 0 {
            return false;
        }
        // Starts after `g` in its word (none when `g` is the word's last granule).
        let after = starts & !((bit << 1).wrapping_sub(1));
        if end / 64 == w {
            // The end is in the same word, so it is not the arena's end: it must be the
            // first start after `g`.
            return after.trailing_zeros() as usize == end % 64;
        }
        after == 0 && arena.next_start(w * 64 + 63) == end
    }
}

/// The free blocks of one shard's arenas, in segregated lists by size (16 lists per
/// doubling, as in TLSF), kept out of band of the blocks: nothing is ever written into
/// heap memory, free or not, so taking and freeing blocks touches only the arenas' headers
/// and this index.
///
/// The headers are the truth and the index is a cache of them. Lists are stacks of
/// [`Entry`] in a pool of pages from the page source. Nothing is unlinked when a block
/// stops being free at its size (taken, merged, split): its entry goes stale, and a block
/// that changes gets a new entry. An entry is checked against its arena's header before it
/// is used, so a stale one is dropped then; when the pool runs low,
/// [`collect`](FitIndex::collect) drops every stale and duplicate entry, and the heap grows
/// the pool (by half) when that leaves less than half of it spare. When it cannot (the page
/// source is dry), a new free block goes unlisted and is counted; a request the lists
/// cannot serve then has the heap [`rescan`](FitIndex::rescan_arena) the shard's arenas.
pub(crate) struct FitIndex {
    /// Bit `f` set: some list of first level `f` is non-empty.
    first: u32,
    /// Bit `s` of word `f` set: list `(f, s)` is non-empty.
    second: [u32; FL_COUNT],
    /// Each list's top entry, [`NIL`] when empty.
    heads: [[u32; SL_COUNT]; FL_COUNT],
    /// The pool: `capacity` entries, null before the first [`grow`](FitIndex::grow).
    pool: *mut Entry,
    capacity: u32,
    /// Entries in no list, linked by `next`, and how many.
    spare: u32,
    spares: u32,
    /// Free blocks of the shard's arenas.
    free_blocks: u32,
    /// Free blocks that may have no current entry (their entry could not be had).
    unlisted: u32,
}

// SAFETY: the pool is memory the index owns alone (taken from the page source for it); the
// index is used only under its shard's lock.
unsafe impl Send for FitIndex {}

/// Spare entries below which the index collects, and grows when collecting leaves less
/// than half of the pool spare (so that a collection, which visits every listed entry,
/// comes at most once per as many new entries).
const LOW_SPARES: u32 = 4;

impl FitIndex {
    /// No arenas, no pool.
    pub(crate) const EMPTY: FitIndex = FitIndex {
        first: 0,
        second: [0; FL_COUNT],
        heads: [[NIL; SL_COUNT]; FL_COUNT],
        pool: core::ptr::null_mut(),
        capacity: 0,
        spare: NIL,
        spares: 0,
        free_blocks: 0,
        unlisted: 0,
    };

    /// Whether some arena block is free.
    pub(crate) fn has_free(&self) -> bool {
        self.free_blocks != 0
    }

    /// Whether some list of fragments (free blocks under [`SL_COUNT`] granules) has an
    /// entry (perhaps stale).
    #[inline]
    pub(crate) fn has_fragments(&self) -> bool {
        self.second[0] != 0
    }

    /// Whether some free block may be missing from the lists (see
    /// [`rescan_arena`](FitIndex::rescan_arena)).
    pub(crate) fn has_unlisted(&self) -> bool {
        self.unlisted != 0
    }

    /// The pool's memory and its length in bytes, if it has one (to give back).
    pub(crate) fn pool(&self) -> Option<(core::ptr::NonNull<u8>, usize)> {
        core::ptr::NonNull::new(self.pool.cast::<u8>()).map(|p| (p, self.capacity as usize * ENTRY_BYTES))
    }

    /// The pool size (in entries) the index wants to grow to, when it runs low on spare
    /// entries even after a collection; the heap then calls [`grow`](FitIndex::grow) if
    /// the page source has the pages.
    #[inline]
    pub(crate) fn wants_entries(&mut self) -> Option<usize> {
        if self.spares >= LOW_SPARES {
            return None;
        }
        self.wants_entries_slow()
    }

    #[cold]
    fn wants_entries_slow(&mut self) -> Option<usize> {
        self.collect(0);
        if self.capacity != 0 && self.spares >= LOW_SPARES.max(self.capacity / 2) {
            return None;
        }
        let want = (self.capacity as usize * 3 / 2).next_multiple_of(MIN_ENTRIES).max(MIN_ENTRIES);
        (want < NIL as usize).then_some(want)
    }

    /// Moves the pool to `mem`, `entries` long (more than now); returns the old pool's
    /// memory and length in bytes, to give back.
    ///
    /// # Safety
    /// `mem` is page-aligned memory of `entries * ENTRY_BYTES` bytes that nobody else uses
    /// and that stays valid until the index gives it back (through this call or
    /// [`pool`](FitIndex::pool)).
    pub(crate) unsafe fn grow(
        &mut self,
        mem: core::ptr::NonNull<u8>,
        entries: usize,
    ) -> Option<(core::ptr::NonNull<u8>, usize)> {
        debug_assert!(entries > self.capacity as usize && entries < NIL as usize);
        let new = mem.as_ptr().cast::<Entry>();
        let old = self.pool();
        if !self.pool.is_null() {
            // SAFETY: both pools are ours, disjoint, and the new one is larger.
            unsafe { core::ptr::copy_nonoverlapping(self.pool, new, self.capacity as usize) };
        }
        for i in self.capacity as usize..entries {
            let next = if i + 1 < entries { i as u32 + 1 } else { self.spare };
            // SAFETY: `i` is inside the new pool (caller's contract).
            unsafe { new.wrapping_add(i).write(Entry { arena: core::ptr::null_mut(), at: 0, size: 0, next }) };
        }
        self.spare = self.capacity;
        self.spares += entries as u32 - self.capacity;
        self.pool = new;
        self.capacity = entries as u32;
        old
    }

    #[inline]
    fn entry(&self, i: u32) -> &Entry {
        debug_assert!(i < self.capacity);
        // SAFETY: entries below `capacity` are the pool's, written by `grow`.
        unsafe { &*self.pool.wrapping_add(i as usize) }
    }

    #[inline]
    fn entry_mut(&mut self, i: u32) -> &mut Entry {
        debug_assert!(i < self.capacity);
        // SAFETY: as in `entry`; `&mut self` makes the access exclusive.
        unsafe { &mut *self.pool.wrapping_add(i as usize) }
    }

    /// Lists the free block of `size` granules at granule `g` of `arena` (it is counted
    /// in `free_blocks` already); when no entry is spare even after a collection, counts
    /// it unlisted instead.
    #[inline]
    fn push(&mut self, arena: &Arena, g: usize, size: usize) {
        if self.spare == NIL {
            self.collect(0);
            if self.spare == NIL {
                self.unlisted += 1;
                return;
            }
        }
        self.push_spare(arena, g, size);
    }

    /// [`push`](FitIndex::push) with a spare entry at hand.
    #[inline]
    fn push_spare(&mut self, arena: &Arena, g: usize, size: usize) {
        let i = self.spare;
        let (f, s) = bucket(size);
        self.spare = self.entry(i).next;
        self.spares -= 1;
        let next = self.heads[f][s];
        *self.entry_mut(i) =
            Entry { arena: arena.start.map_addr(|a| a | (arena.pages - 1)), at: g as u16, size: size as u16, next };
        self.heads[f][s] = i;
        self.first |= 1 << f;
        self.second[f] |= 1 << s;
    }

    /// Unlinks the top entry of list `(f, s)` (non-empty) and makes it spare.
    #[inline]
    fn pop(&mut self, f: usize, s: usize) {
        let i = self.heads[f][s];
        let next = self.entry(i).next;
        self.heads[f][s] = next;
        if next == NIL {
            self.second[f] &= !(1 << s);
            if self.second[f] == 0 {
                self.first &= !(1 << f);
            }
        }
        let spare = self.spare;
        self.entry_mut(i).next = spare;
        self.spare = i;
        self.spares += 1;
    }

    /// The top entry of list `(f, s)` after dropping the stale ones above it.
    #[inline]
    fn top(&mut self, f: usize, s: usize) -> Option<Entry> {
        loop {
            let i = self.heads[f][s];
            if i == NIL {
                return None;
            }
            let e = *self.entry(i);
            if e.is_current() {
                return Some(e);
            }
            self.pop(f, s);
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

    /// Drops every stale entry, every duplicate and every entry of the arena starting at
    /// `drop_arena` (0 for none), keeping the order of the rest: afterwards each listed
    /// free block has exactly one entry. With `unmark` false the kept entries' blocks stay
    /// marked allocated (for [`rescan_arena`](FitIndex::rescan_arena), which finds the
    /// free blocks not listed, then [`unmark`](FitIndex::unmark)).
    fn collect_marked(&mut self, drop_arena: usize, unmark: bool) {
        for f in 0..FL_COUNT {
            let mut second = self.second[f];
            while second != 0 {
                let s = second.trailing_zeros() as usize;
                second &= second - 1;
                let (mut cur, mut last) = (self.heads[f][s], NIL);
                self.heads[f][s] = NIL;
                while cur != NIL {
                    let e = *self.entry(cur);
                    let arena = e.arena();
                    // A kept entry's block is marked allocated until the end of the
                    // collection, so that a duplicate of it is not current.
                    if arena.start.addr() != drop_arena && e.is_current() {
                        arena.set_allocated(e.at as usize, true);
                        self.entry_mut(cur).next = NIL;
                        match last {
                            NIL => self.heads[f][s] = cur,
                            l => self.entry_mut(l).next = cur,
                        }
                        last = cur;
                    } else {
                        let spare = self.spare;
                        self.entry_mut(cur).next = spare;
                        self.spare = cur;
                        self.spares += 1;
                    }
                    cur = e.next;
                }
                if self.heads[f][s] == NIL {
                    self.second[f] &= !(1 << s);
                }
            }
            if self.second[f] == 0 {
                self.first &= !(1 << f);
            }
        }
        if unmark {
            self.unmark();
        }
    }

    /// Drops every stale and duplicate entry, and every entry of the arena at
    /// `drop_arena` (0 for none).
    fn collect(&mut self, drop_arena: usize) {
        self.collect_marked(drop_arena, true);
    }

    /// Clears the marks [`collect_marked`](FitIndex::collect_marked) left.
    fn unmark(&mut self) {
        for f in 0..FL_COUNT {
            for s in 0..SL_COUNT {
                let mut cur = self.heads[f][s];
                while cur != NIL {
                    let e = *self.entry(cur);
                    e.arena().set_allocated(e.at as usize, false);
                    cur = e.next;
                }
            }
        }
    }

    /// Starts a rescan: collects, leaving listed blocks marked, and forgets the unlisted
    /// count; then the heap calls [`rescan_arena`](FitIndex::rescan_arena) for each of
    /// the shard's arenas and [`rescan_end`](FitIndex::rescan_end).
    pub(crate) fn rescan_begin(&mut self) {
        self.collect_marked(0, false);
        self.unlisted = 0;
    }

    /// Lists every free block of `arena` that has no entry, while spare entries last
    /// (counting the rest unlisted).
    pub(crate) fn rescan_arena(&mut self, arena: &Arena) {
        for w in 0..arena.pages {
            let mut free = arena.word(false, w) & !arena.word(true, w);
            while free != 0 {
                let g = w * 64 + free.trailing_zeros() as usize;
                free &= free - 1;
                if self.spare == NIL {
                    self.unlisted += 1;
                } else {
                    self.push_spare(arena, g, arena.block_granules(g));
                }
            }
        }
    }

    /// Ends a rescan: clears the marks.
    pub(crate) fn rescan_end(&mut self) {
        self.unmark();
    }

    /// Makes a fresh arena's free block findable.
    pub(crate) fn add_arena(&mut self, arena: &Arena) {
        let h = arena.header();
        self.free_blocks += 1;
        self.push(arena, h, arena.granules() - h);
    }

    /// Forgets an empty arena (before its pages go back): drops every entry naming it.
    pub(crate) fn remove_arena(&mut self, arena: &Arena) {
        debug_assert!(arena.is_empty());
        self.free_blocks -= 1;
        // Its free block may have been an unlisted one: the count stays an upper bound.
        self.collect(arena.start.addr());
    }

    /// Takes a block of `size` granules starting at a multiple of `align` granules (a power
    /// of two; the arena starts on a page) from a free block, listing what is left on
    /// either side as free blocks, and counts it in its arena. Returns the arena and the
    /// block's first granule.
    #[inline]
    pub(crate) fn allocate(&mut self, size: usize, align: usize) -> Option<(Arena, usize)> {
        let need = size + align - 1;
        let (bf, bs) = bucket(need);
        // Good fit: the top block of the request's own list, when it is large enough;
        // else the top block of a list whose blocks are all large enough.
        let exact = if bf < FL_COUNT { self.top(bf, bs) } else { None };
        let (e, f, s) = match exact {
            Some(e) if (e.at as usize).next_multiple_of(align) + size <= e.at as usize + e.size as usize => (e, bf, bs),
            _ => loop {
                let (f, s) = self.find(need)?;
                if let Some(e) = self.top(f, s) {
                    break (e, f, s);
                }
            },
        };
        Some(self.take(e, f, s, size, align))
    }

    /// Takes a block of `size` granules at a multiple of `align` granules from a free
    /// block smaller than [`SL_COUNT`] granules (a fragment), if one holds it: packing
    /// heaps fill such fragments, left by splits and alignment, with small requests.
    #[inline]
    pub(crate) fn allocate_fragment(&mut self, size: usize, align: usize) -> Option<(Arena, usize)> {
        let need = size + align - 1;
        if need >= SL_COUNT {
            return None;
        }
        loop {
            let lists = self.second[0] & (!0u32 << need);
            if lists == 0 {
                return None;
            }
            let s = lists.trailing_zeros() as usize;
            if let Some(e) = self.top(0, s) {
                return Some(self.take(e, 0, s, size, align));
            }
        }
    }

    /// Takes `size` granules at a multiple of `align` from the block of entry `e`, the
    /// current top of list `(f, s)`, listing what is left on either side.
    #[inline]
    fn take(&mut self, e: Entry, f: usize, s: usize, size: usize, align: usize) -> (Arena, usize) {
        self.pop(f, s);
        let (arena, g, free) = (e.arena(), e.at as usize, e.size as usize);
        self.free_blocks -= 1;
        let at = g.next_multiple_of(align);
        if at > g {
            arena.set_start(at);
            self.free_blocks += 1;
            self.push(&arena, g, at - g);
        }
        let end = at + size;
        if end < g + free {
            arena.set_start(end);
            self.free_blocks += 1;
            self.push(&arena, end, g + free - end);
        }
        arena.set_allocated(at, true);
        arena.set_used(arena.used() + 1);
        (arena, at)
    }

    /// Frees the allocated block at granule `g` (checked by [`Arena::allocated_block`])
    /// and merges it with free neighbours; returns the blocks left allocated in the arena
    /// and the freed block's granules.
    #[inline]
    pub(crate) fn free(&mut self, arena: &Arena, g: usize) -> (usize, usize) {
        debug_assert!(arena.is_start(g) && arena.is_allocated(g));
        let mut end = arena.next_start(g);
        let granules = end - g;
        arena.set_allocated(g, false);
        let used = arena.used() - 1;
        arena.set_used(used);
        let mut start = g;
        if end < arena.granules() && !arena.is_allocated(end) {
            let next = arena.next_start(end);
            arena.clear_start(end);
            end = next;
            self.free_blocks -= 1;
        }
        if g > arena.header() {
            let prev = arena.prev_start(g);
            if !arena.is_allocated(prev) {
                arena.clear_start(g);
                start = prev;
                self.free_blocks -= 1;
            }
        }
        self.free_blocks += 1;
        self.push(arena, start, end - start);
        (used, granules)
    }

    /// Checks the index: bitmaps match the lists, every entry is in one list or spare
    /// (once, and counted), entries name blocks of arenas that `owner` finds from their
    /// addresses and sit in the list of their size. Returns the free blocks counted and the
    /// upper bound on unlisted ones (which [`Arena::check`] holds the arenas to).
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn check(&mut self, owner: impl Fn(usize) -> Arena) -> (usize, usize) {
        // Every entry reached is marked (the top bit of its size, which no size uses), so
        // that one linked twice is seen; the marks are cleared at the end.
        const MARK: u16 = 1 << 15;
        const _: () = assert!(MAX_ARENA_PAGES * PAGE_GRANULES <= MARK as usize);
        let mut reached = 0u32;
        let mut mark = |index: &mut FitIndex, i: u32| {
            assert!(i < index.capacity, "entry {i} outside the pool");
            let e = index.entry_mut(i);
            assert_eq!(e.size & MARK, 0, "entry {i} linked twice");
            e.size |= MARK;
            reached += 1;
        };
        for f in 0..FL_COUNT {
            assert_eq!(self.first >> f & 1 == 1, self.second[f] != 0, "first-level bit {f}");
            for s in 0..SL_COUNT {
                let head = self.heads[f][s];
                assert_eq!(self.second[f] >> s & 1 == 1, head != NIL, "second-level bit ({f}, {s})");
                let mut cur = head;
                while cur != NIL {
                    let e = *self.entry(cur);
                    let arena = e.arena();
                    assert_eq!(owner(arena.addr(e.at as usize)), arena, "entry {cur} names another arena");
                    assert!(
                        e.at as usize >= arena.header() && (e.at as usize) < arena.granules(),
                        "entry {cur} misplaced"
                    );
                    assert_eq!(bucket(e.size as usize), (f, s), "entry {cur} in the wrong list");
                    mark(self, cur);
                    cur = e.next;
                }
            }
        }
        let (mut cur, mut spares) = (self.spare, 0);
        while cur != NIL {
            let next = self.entry(cur).next;
            mark(self, cur);
            spares += 1;
            cur = next;
        }
        assert_eq!(spares, self.spares, "spare entries counted");
        assert_eq!(reached, self.capacity, "entries lost from the pool");
        for i in 0..self.capacity {
            self.entry_mut(i).size &= !MARK;
        }
        (self.free_blocks as usize, self.unlisted as usize)
    }

    /// Whether the free block of `size` granules at `addr` has a current entry.
    #[cfg(any(test, feature = "check"))]
    fn lists(&self, addr: usize, size: usize) -> bool {
        let (f, s) = bucket(size);
        let mut cur = self.heads[f][s];
        while cur != NIL {
            let e = self.entry(cur);
            if e.arena().addr(e.at as usize) == addr && e.size as usize == size {
                return true;
            }
            cur = e.next;
        }
        false
    }
}

#[cfg(any(test, feature = "check"))]
impl Arena {
    /// Checks the arena: header bits clear, alloc bits only on block starts, summary bits
    /// match, no two free blocks adjacent, the count of blocks right. Returns (allocated
    /// blocks, free blocks, allocated granules, free blocks without a current entry in
    /// `index`).
    pub(crate) fn check(&self, index: &FitIndex) -> (usize, usize, usize, usize) {
        for w in 0..self.pages {
            let (s, a) = (self.word(false, w), self.word(true, w));
            assert_eq!(a & !s, 0, "alloc bits outside block starts in word {w} of {:#x}", self.start.addr());
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
                bytes += next - g;
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
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

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
        assert_eq!(header_granules(64), 18);
        assert_eq!(pages_for(64 * 64 - 18), 64);
        assert_eq!(pages_for(64 * 64 - 17), 65);
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
