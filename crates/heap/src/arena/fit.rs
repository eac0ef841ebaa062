//! The fit index of a shard: segregated lists by size (two levels, as in TLSF) of entries
//! naming free arena blocks, in a pool of pages of its own.
//!
//! # Unsafe
//!
//! The entries live in a pool of pages the index alone owns (taken from the page source for
//! it and handed in by `grow`, which copies the old pool into the new one); entries below
//! `capacity` are initialised, and `&mut self` makes writes exclusive.

use memkit_types::PAGE_SIZE;

use super::{Arena, FL_COUNT, MAX_ARENA_PAGES, PAGE_GRANULES, SL_COUNT, SL_SHIFT, bucket};

/// One entry of a [`FitIndex`]: a free block as it was when it was listed. A block that is
/// taken loses its entry; one merged into a neighbour loses it when it is among the first
/// [`FORGET_SCAN`] of its list, else the entry goes stale and its list is marked as one
/// that may hold stale entries (dropped when they reach the top of the list or when the
/// index collects them).
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
    /// The previous entry of its list, [`NIL`] for the top (unused when spare).
    prev: u32,
}

/// Bytes of one [`Entry`]: the index grows its pool in whole pages of them.
pub(crate) const ENTRY_BYTES: usize = size_of::<Entry>();
const _: () = assert!(MAX_ARENA_PAGES <= PAGE_SIZE && MAX_ARENA_PAGES * PAGE_GRANULES <= 1 << 16);
/// No entry.
pub(super) const NIL: u32 = u32::MAX;
/// Entries of the smallest pool: one page.
pub(super) const MIN_ENTRIES: usize = PAGE_SIZE / ENTRY_BYTES;
/// Entries of its list a block merged into a neighbour looks at for its own (more would
/// cost a free more than a stale entry costs an allocation).
const FORGET_SCAN: usize = 4;

impl Entry {
    /// How an entry names `arena`: its first page with its page count less one in the low
    /// bits of the address.
    #[inline]
    fn key(arena: &Arena) -> *mut u8 {
        arena.start.map_addr(|a| a | (arena.pages - 1))
    }

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
/// The headers are the truth and the index is a cache of them. Lists are doubly linked
/// stacks of [`Entry`] in a pool of pages from the page source. A block taken loses its
/// entry (the top of its list); a free block merged into a neighbour that is freed, or into
/// a block that grows in place, loses its entry if it is among the first [`FORGET_SCAN`] of
/// its list, else the entry goes stale and the list is marked (`stale`). The top of an
/// unmarked list is current and taken as it is; the top of a marked one is checked against
/// its arena's header first, and a stale one dropped (a marked list that empties is
/// unmarked). When the pool runs low, [`collect`](FitIndex::collect) drops every stale and
/// duplicate entry and unmarks every list, and the heap grows the pool (by half) when that
/// leaves less than half of it spare. When it cannot (the page
/// source is dry), a new free block goes unlisted and is counted; a request the lists
/// cannot serve then has the heap [`rescan`](FitIndex::rescan_arena) the shard's arenas.
pub(crate) struct FitIndex {
    /// Bit `f` set: some list of first level `f` is non-empty.
    first: u32,
    /// Bit `s` of word `f` set: list `(f, s)` is non-empty.
    second: [u32; FL_COUNT],
    /// Each list's top entry, [`NIL`] when empty.
    heads: [[u32; SL_COUNT]; FL_COUNT],
    /// Bit `s` of word `f` set: list `(f, s)` may hold entries that are stale or name the
    /// same block as another (only such a list may).
    stale: [u32; FL_COUNT],
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
pub(super) const LOW_SPARES: u32 = 4;

impl FitIndex {
    /// No arenas, no pool.
    pub(crate) const EMPTY: FitIndex = FitIndex {
        first: 0,
        second: [0; FL_COUNT],
        heads: [[NIL; SL_COUNT]; FL_COUNT],
        stale: [0; FL_COUNT],
        pool: core::ptr::null_mut(),
        capacity: 0,
        spare: NIL,
        spares: 0,
        free_blocks: 0,
        unlisted: 0,
    };

    /// Whether some arena block is free.
    #[inline]
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
    #[inline]
    pub(crate) fn has_unlisted(&self) -> bool {
        self.unlisted != 0
    }

    /// The pool's memory and its length in bytes, if it has one (to give back).
    #[inline]
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
            unsafe {
                new.wrapping_add(i).write(Entry { arena: core::ptr::null_mut(), at: 0, size: 0, next, prev: NIL })
            };
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
        *self.entry_mut(i) = Entry { arena: Entry::key(arena), at: g as u16, size: size as u16, next, prev: NIL };
        if next != NIL {
            self.entry_mut(next).prev = i;
        }
        self.heads[f][s] = i;
        self.first |= 1 << f;
        self.second[f] |= 1 << s;
    }

    /// Unlinks the top entry of list `(f, s)` (non-empty) and makes it spare.
    #[inline]
    fn pop(&mut self, f: usize, s: usize) {
        self.unlink(self.heads[f][s], f, s);
    }

    /// Unlinks entry `i` of list `(f, s)` and makes it spare.
    #[inline]
    fn unlink(&mut self, i: u32, f: usize, s: usize) {
        let Entry { next, prev, .. } = *self.entry(i);
        if next != NIL {
            self.entry_mut(next).prev = prev;
        }
        if prev != NIL {
            self.entry_mut(prev).next = next;
        } else {
            self.heads[f][s] = next;
            if next == NIL {
                self.second[f] &= !(1 << s);
                self.stale[f] &= !(1 << s);
                if self.second[f] == 0 {
                    self.first &= !(1 << f);
                }
            }
        }
        let spare = self.spare;
        self.entry_mut(i).next = spare;
        self.spare = i;
        self.spares += 1;
    }

    /// The top entry of list `(f, s)`: as it is when the list is not marked stale, else
    /// after dropping the stale ones above it.
    #[inline]
    fn top(&mut self, f: usize, s: usize) -> Option<Entry> {
        loop {
            let i = self.heads[f][s];
            if i == NIL {
                return None;
            }
            let e = *self.entry(i);
            if self.stale[f] >> s & 1 == 0 || e.is_current() {
                return Some(e);
            }
            self.pop(f, s);
        }
    }

    /// Drops the entry of the free block of `size` granules at granule `g` of `arena`,
    /// which is being merged into a neighbour, if it is among the first [`FORGET_SCAN`] of
    /// its list; else (it is deeper, or the block is unlisted) marks the list stale.
    #[inline]
    fn forget(&mut self, arena: &Arena, g: usize, size: usize) {
        let (f, s) = bucket(size);
        let key = Entry::key(arena);
        let mut cur = self.heads[f][s];
        for _ in 0..FORGET_SCAN {
            if cur == NIL {
                // The whole list was looked at: the block is unlisted.
                return;
            }
            let e = self.entry(cur);
            if e.at as usize == g && e.size as usize == size && e.arena == key {
                self.unlink(cur, f, s);
                return;
            }
            cur = e.next;
        }
        if cur != NIL {
            self.stale[f] |= 1 << s;
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
                        let kept = self.entry_mut(cur);
                        kept.next = NIL;
                        kept.prev = last;
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
        // Every list is current and without duplicates now.
        self.stale = [0; FL_COUNT];
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
            self.forget(arena, end, next - end);
            arena.clear_start(end);
            end = next;
            self.free_blocks -= 1;
        }
        if g > arena.header() {
            let prev = arena.prev_start(g);
            if !arena.is_allocated(prev) {
                self.forget(arena, prev, g - prev);
                arena.clear_start(g);
                start = prev;
                self.free_blocks -= 1;
            }
        }
        self.free_blocks += 1;
        self.push(arena, start, end - start);
        (used, granules)
    }

    /// Resizes the allocated block at granule `g` (checked by [`Arena::allocated_block`])
    /// to `size` granules in place: a smaller size gives its tail back as a free block
    /// (merged with a free block after it); a larger one takes the front of the free
    /// block after it, when that block is large enough. Returns the block's granules
    /// before, or `None` (nothing changed) when it cannot grow in place.
    #[inline]
    pub(crate) fn resize(&mut self, arena: &Arena, g: usize, size: usize) -> Option<usize> {
        debug_assert!(arena.is_start(g) && arena.is_allocated(g) && size > 0);
        let end = arena.next_start(g);
        let old = end - g;
        let next_free = end < arena.granules() && !arena.is_allocated(end);
        if size == old {
            return Some(old);
        }
        let free_end = if next_free { arena.next_start(end) } else { end };
        if g + size > free_end {
            return None;
        }
        // The free block after the block (if any) joins the tail: one free block from
        // the new end to `free_end`, or none.
        if next_free {
            self.forget(arena, end, free_end - end);
            arena.clear_start(end);
            self.free_blocks -= 1;
        }
        if g + size < free_end {
            arena.set_start(g + size);
            self.free_blocks += 1;
            self.push(arena, g + size, free_end - g - size);
        }
        Some(old)
    }

    /// Checks the index: bitmaps match the lists, links both ways, every entry is in one
    /// list or spare (once, and counted), entries name blocks of arenas that `owner` finds
    /// from their addresses and sit in the list of their size, and every entry of a list
    /// not marked stale is current. Returns the free blocks counted and the
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
                let stale = self.stale[f] >> s & 1 == 1;
                assert!(!stale || head != NIL, "empty list ({f}, {s}) marked stale");
                let (mut cur, mut prev) = (head, NIL);
                while cur != NIL {
                    let e = *self.entry(cur);
                    assert_eq!(e.prev, prev, "entry {cur} linked back to another");
                    let arena = e.arena();
                    assert_eq!(owner(arena.addr(e.at as usize)), arena, "entry {cur} names another arena");
                    assert!(
                        e.at as usize >= arena.header() && (e.at as usize) < arena.granules(),
                        "entry {cur} misplaced"
                    );
                    assert_eq!(bucket(e.size as usize), (f, s), "entry {cur} in the wrong list");
                    // A current entry's block is marked allocated until the end of the check,
                    // so that a second entry of it is not current.
                    if !stale {
                        assert!(e.is_current(), "entry {cur} stale or a duplicate in a list not marked so");
                        arena.set_allocated(e.at as usize, true);
                    }
                    mark(self, cur);
                    (prev, cur) = (cur, e.next);
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
        for f in 0..FL_COUNT {
            for s in (0..SL_COUNT).filter(|&s| self.stale[f] >> s & 1 == 0) {
                let mut cur = self.heads[f][s];
                while cur != NIL {
                    let e = *self.entry(cur);
                    e.arena().set_allocated(e.at as usize, false);
                    cur = e.next;
                }
            }
        }
        (self.free_blocks as usize, self.unlisted as usize)
    }

    /// Lists marked as possibly holding stale entries.
    #[cfg(test)]
    pub(super) fn stale_lists(&self) -> u32 {
        self.stale.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether the free block of `size` granules at `addr` has a current entry.
    #[cfg(any(test, feature = "check"))]
    pub(super) fn lists(&self, addr: usize, size: usize) -> bool {
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
