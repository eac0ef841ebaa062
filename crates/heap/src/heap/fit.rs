//! Exact fit: arenas of a packing heap, their free blocks in the shard's fit index, the
//! fragments small requests take, and the dry path through other shards' arenas.
//!
//! # Unsafe
//!
//! `arena_view` turns a descriptor into an [`Arena`]: sound for a live arena descriptor while
//! its shard's lock is held, which every caller here holds. The fit index's pool grows into
//! pages taken from the source, and the old pool's pages go back once copied.

use core::ptr::NonNull;
use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::{Order, PAGE_SHIFT, PAGE_SIZE};

use super::descriptors::{Descriptor, PageMap};
use super::stats::PathCounters;
use super::{
    ARENA_PAGES, CpuId, EMPTY_ARENAS_KEEP, Heap, KIND_ARENA, NONE, QUICK_MAX_GRANULES, QUICK_SLOTS, Quick, ShardState,
    page_count,
};
use crate::arena::{Arena, ENTRY_BYTES, GRANULE, GRANULE_SHIFT, pages_for};
use crate::error::XmallocError;
use crate::source::PageSource;

/// The arena of descriptor `d`, reached from `base` (the page source's
/// [`base_ptr`](PageSource::base_ptr)).
///
/// # Safety
/// `d` is a live arena (kind [`KIND_ARENA`]) and the caller holds the lock of its shard
/// while the view lives.
#[inline]
pub(super) unsafe fn arena_view(base: *mut u8, d: &Descriptor) -> Arena {
    debug_assert_eq!(d.kind.load(Relaxed), KIND_ARENA);
    let start = base.with_addr(d.start.load(Relaxed));
    // SAFETY: a live arena's pages are the heap's, set up by `Arena::init`; the lock is
    // the caller's contract.
    unsafe { Arena::new(start, d.pages.load(Relaxed) as usize) }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// A block of `size` bytes aligned to 2^`align_log2` (at most a page; its class is
    /// `class`) from the arenas of `shard`, else from a new arena; when the page source is
    /// dry, from the arenas of any shard, aligned holes of class spans, whole pages, or
    /// merged blocks of a span.
    #[inline]
    pub(super) fn allocate_fit(
        &self,
        map: &PageMap,
        shard: usize,
        size: usize,
        class: usize,
        align_log2: u32,
    ) -> Result<NonNull<u8>, XmallocError> {
        let align = 1 << align_log2;
        {
            let mut st = self.shards[shard].state.lock();
            if let Some(p) = self.take_fit(shard, &mut st, size, align) {
                return Ok(p);
            }
            if let Some(p) = self.grow_fit(map, shard, &mut st, size, align) {
                return Ok(p);
            }
        }
        self.allocate_fit_dry(map, shard, size, class, align_log2)
    }

    #[cold]
    fn allocate_fit_dry(
        &self,
        map: &PageMap,
        shard: usize,
        size: usize,
        class: usize,
        align_log2: u32,
    ) -> Result<NonNull<u8>, XmallocError> {
        let align = 1 << align_log2;
        self.trim();
        PathCounters::bump(&self.counters.dry_requests);
        let grown = self.grow_fit(map, shard, &mut self.shards[shard].state.lock(), size, align);
        grown
            .or_else(|| self.fit_from_any_shard(size, align))
            .or_else(|| self.allocate_from_larger_class(map, size, class, align))
            .or_else(|| self.allocate_large(map, size, align_log2))
            .or_else(|| self.allocate_merged(size, align))
            .ok_or(XmallocError::NoMemory(size))
    }

    /// A block from the arenas of `shard`, whose state `st` is locked.
    #[inline]
    fn take_fit(&self, shard: usize, st: &mut ShardState, size: usize, align: usize) -> Option<NonNull<u8>> {
        let granules = size.max(1).div_ceil(GRANULE);
        let align = (align >> GRANULE_SHIFT).max(1);
        if let Some(p) = self.take_quick(shard, st, granules, align) {
            return Some(p);
        }
        self.fit_entries(st);
        let (arena, g) = match st.fit.allocate(granules, align) {
            Some(got) => got,
            None if st.fit.has_unlisted() => {
                self.rescan_fit(shard, st);
                st.fit.allocate(granules, align)?
            }
            None => return None,
        };
        if arena.used() == 1 {
            // The arena was empty: if it is a kept one, it is not empty any more.
            let kept = &st.kept_arenas[..st.empty_arenas];
            if let Some(i) = kept.iter().position(|&id| self.live(id).start.load(Relaxed) == arena.addr(0)) {
                st.empty_arenas -= 1;
                st.kept_arenas.swap(i, st.empty_arenas);
                st.kept_arenas[st.empty_arenas] = NONE;
            }
        }
        self.shards[shard].count(granules * GRANULE, true);
        NonNull::new(arena.ptr(g))
    }

    /// A packing heap's small request: a fragment of an arena of `shard` that holds it.
    #[inline]
    pub(super) fn allocate_fragment(&self, shard: usize, size: usize, align: usize) -> Option<NonNull<u8>> {
        let mut st = self.shards[shard].state.lock();
        if st.fit.has_fragments() {
            self.fit_entries(&mut st);
            let granules = size.max(1).div_ceil(GRANULE);
            let (arena, g) = st.fit.allocate_fragment(granules, (align >> GRANULE_SHIFT).max(1))?;
            // A fragment is never a whole arena, so the arena was not empty (not kept).
            debug_assert!(arena.used() > 1);
            self.shards[shard].count(granules * GRANULE, true);
            return NonNull::new(arena.ptr(g));
        }
        None
    }

    /// Grows the pool of the fit index of `st` (a shard's state, locked) when the index
    /// runs low on spare entries and the page source has pages.
    #[inline]
    pub(super) fn fit_entries(&self, st: &mut ShardState) {
        if let Some(entries) = st.fit.wants_entries() {
            self.grow_fit_pool(st, entries);
        }
    }

    #[cold]
    fn grow_fit_pool(&self, st: &mut ShardState, entries: usize) {
        let Some(mem) = self.source.allocate_pages(page_count(entries * ENTRY_BYTES), Order::new(0)) else { return };
        // SAFETY: fresh page-aligned pages from the source, `entries` entries long, the
        // index's alone until it gives them back (here, or in `release_all`).
        if let Some((old, bytes)) = unsafe { st.fit.grow(mem, entries) } {
            // SAFETY: the index's old pool came from this source and is not used any more.
            unsafe { self.source.free_pages(old, page_count(bytes)) };
        }
    }

    /// Lists again the free blocks of the arenas of the shard whose state `st` is locked
    /// that its fit index could not list (its pool was short).
    #[cold]
    fn rescan_fit(&self, shard: usize, st: &mut ShardState) {
        st.fit.rescan_begin();
        self.for_each_live(|_, d| {
            if d.kind.load(Relaxed) == KIND_ARENA && d.shard.load(Relaxed) as usize == shard {
                // SAFETY: a live arena of the shard whose lock is held.
                st.fit.rescan_arena(&unsafe { arena_view(self.source.base_ptr(), d) });
            }
        });
        st.fit.rescan_end();
    }

    /// A new arena for `shard` (whose state `st` is locked) with room for the request,
    /// and the block from it.
    fn grow_fit(
        &self,
        map: &PageMap,
        shard: usize,
        st: &mut ShardState,
        size: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        self.fit_entries(st);
        let need = pages_for(size.max(1).div_ceil(GRANULE) + (align >> GRANULE_SHIFT).max(1) - 1);
        let mut pages = ARENA_PAGES.max(need);
        let (id, start) = loop {
            if let Some(run) = self.new_run(map, pages, PAGE_SHIFT) {
                break run;
            }
            if pages == need {
                return None;
            }
            pages = (pages / 2).max(need);
        };
        let d = self.live(id);
        d.size.store(0, Relaxed);
        d.shard.store(shard as u8, Relaxed);
        // SAFETY: the run is fresh from the source, the heap's alone, and mapped to this
        // descriptor of `shard`, whose lock is held (`st` is borrowed from its guard).
        let arena = unsafe { Arena::init(self.ptr(start), pages) };
        d.kind.store(KIND_ARENA, Release);
        PathCounters::bump(&self.counters.arenas_made);
        st.fit.add_arena(&arena);
        let got = self.take_fit(shard, st, size, align);
        if arena.used() == 0 {
            // The block came from another arena (a free block that a rescan listed again,
            // found before the new one), or from none (the index had no entry left to list
            // the new arena's free block and its pool could not grow). The new arena is
            // empty: kept or given back as an emptied one is.
            self.retire_empty_arena(map, id, &arena, st);
        }
        got
    }

    /// When the page source is dry: a block from the arenas of any shard.
    #[cold]
    pub(super) fn fit_from_any_shard(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align > PAGE_SIZE {
            return None;
        }
        self.shards.iter().enumerate().find_map(|(i, shard)| {
            let mut st = shard.state.lock();
            if st.fit.has_free() { self.take_fit(i, &mut st, size, align) } else { None }
        })
    }

    /// Frees the block at granule `g` of arena `id` (checked, unpinned) of the shard whose
    /// state `st` is locked; keeps the arena when the shard keeps fewer than
    /// [`EMPTY_ARENAS_KEEP`] empty ones, else gives its pages back.
    #[inline]
    pub(super) fn free_fit(&self, map: &PageMap, id: u32, d: &Descriptor, g: usize, shard: usize, st: &mut ShardState) {
        // SAFETY: `d` is a live arena of the shard whose lock is held (`st`).
        let arena = unsafe { arena_view(self.source.base_ptr(), d) };
        let granules = arena.block_granules(g);
        if granules <= QUICK_MAX_GRANULES {
            // Held unmerged for the next request of its size; the oldest quick block
            // makes room and is freed for good.
            if st.quick_len == QUICK_SLOTS {
                let oldest = st.quick[0];
                st.quick.copy_within(1.., 0);
                st.quick_len -= 1;
                self.free_quick(map, oldest, st);
            }
            arena.set_quick(g, true);
            st.quick[st.quick_len] = Quick { arena: id, at: g as u16, granules: granules as u16 };
            st.quick_len += 1;
            self.shards[shard].count(granules * GRANULE, false);
            return;
        }
        self.fit_entries(st);
        let (used, granules) = st.fit.free(&arena, g);
        self.shards[shard].count(granules * GRANULE, false);
        if used == 0 {
            self.retire_empty_arena(map, id, &arena, st);
        }
    }

    /// The newest quick block of `granules` granules at a multiple of `align` granules,
    /// allocated again.
    #[inline]
    fn take_quick(&self, shard: usize, st: &mut ShardState, granules: usize, align: usize) -> Option<NonNull<u8>> {
        let i = st.quick[..st.quick_len]
            .iter()
            .rposition(|q| q.granules as usize == granules && (q.at as usize).is_multiple_of(align))?;
        let q = st.quick[i];
        st.quick.copy_within(i + 1..st.quick_len, i);
        st.quick_len -= 1;
        // SAFETY: a quick block's arena is live (it holds the block) and of this shard,
        // whose lock is held (`st`).
        let arena = unsafe { arena_view(self.source.base_ptr(), self.live(q.arena)) };
        arena.set_quick(q.at as usize, false);
        self.shards[shard].count(granules * GRANULE, true);
        st.quick_reuses += 1;
        NonNull::new(arena.ptr(q.at as usize))
    }

    /// Frees every quick block of the shard whose state `st` is locked for good (merged,
    /// listed, its arena retired if it empties).
    pub(super) fn flush_quick(&self, map: &PageMap, st: &mut ShardState) {
        while st.quick_len > 0 {
            st.quick_len -= 1;
            let q = st.quick[st.quick_len];
            self.free_quick(map, q, st);
        }
    }

    /// Frees quick block `q` (already out of the shard's slots) for good.
    fn free_quick(&self, map: &PageMap, q: Quick, st: &mut ShardState) {
        let d = self.live(q.arena);
        // SAFETY: a quick block's arena is live and of the shard whose lock is held.
        let arena = unsafe { arena_view(self.source.base_ptr(), d) };
        arena.set_quick(q.at as usize, false);
        self.fit_entries(st);
        // Its bytes left the shard's count when it became quick.
        let (used, _) = st.fit.free(&arena, q.at as usize);
        if used == 0 {
            self.retire_empty_arena(map, q.arena, &arena, st);
        }
    }

    /// Keeps the empty arena `id` when its shard (whose state `st` is locked) keeps fewer
    /// than [`EMPTY_ARENAS_KEEP`] empty ones, else gives its pages back.
    fn retire_empty_arena(&self, map: &PageMap, id: u32, arena: &Arena, st: &mut ShardState) {
        debug_assert_eq!(arena.used(), 0);
        if st.empty_arenas < EMPTY_ARENAS_KEEP {
            st.kept_arenas[st.empty_arenas] = id;
            st.empty_arenas += 1;
        } else {
            st.fit.remove_arena(arena);
            self.release_run(map, id);
            PathCounters::bump(&self.counters.arenas_released);
        }
    }
}
