//! The heap's structural invariants (feature `check`).
//!
//! # Unsafe
//!
//! Arena headers are read through `arena_view` while the arena's shard lock is held.

use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::{PAGE_SHIFT, PAGE_SIZE};

use super::fit::arena_view;
use super::{
    CpuId, EMPTY_ARENAS_KEEP, EMPTY_KEEP, EMPTY_PAGES_KEEP, Heap, KIND_ARENA, KIND_FREE, KIND_LARGE, KIND_SMALL, NONE,
    QUICK_MAX_GRANULES, QUICK_SLOTS, SHARDS,
};
use crate::arena::{GRANULE, MAX_ARENA_PAGES};
use crate::class::CLASSES;
use crate::source::PageSource;

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// Checks every structural invariant; panics with a message naming the first broken one.
    ///
    /// # Invariants
    /// - every page map entry names a live descriptor whose pages cover that page, and
    ///   every page of a live descriptor maps back to it;
    /// - a span's `used` equals its allocated bits, its padding bits are set, and its hint
    ///   has no clear bit before it;
    /// - a span is in its class's partial list iff it has both free and allocated blocks
    ///   (or is empty and first in that list), is one of the class's cached empty spans iff
    ///   it has none allocated (and is not that first one), and otherwise is full; list
    ///   links are consistent;
    /// - the pin table's entries name live blocks, counted in their span's `pinned`;
    /// - the merge table's entries name at least two allocated blocks of a class span,
    ///   counted in its `merged`, and no entry starts inside another;
    /// - a shard's quick slots name exactly its arenas' quick blocks, each once, as they are;
    /// - an arena's blocks tile it after its header, alloc bits only on block starts, its
    ///   summary matches its start bits, no two free blocks are neighbours, its `used`
    ///   counts its allocated blocks, and it is one of its shard's kept empty arenas (once)
    ///   iff none is; a shard keeps at most `EMPTY_ARENAS_KEEP`;
    /// - a shard's fit index lists exactly the free blocks of its arenas, each once, in the
    ///   list of its size, with bitmaps and back links consistent.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let Some(map) = self.page_map() else { return };
        let mut guards: [_; SHARDS] = core::array::from_fn(|i| self.shards[i].state.lock());
        let merges = self.merges.lock();
        let pins = self.pins.lock();
        let mut free_blocks = [0usize; SHARDS];
        let mut unlisted = [0usize; SHARDS];
        let mut in_use = [0usize; SHARDS];
        let mut quick = [0usize; SHARDS];
        for (page, e) in map.entries.iter().enumerate() {
            let id = e.load(Acquire);
            if id == NONE {
                continue;
            }
            let d = self.desc(id).expect("page map names an unknown descriptor");
            assert_ne!(d.kind.load(Relaxed), KIND_FREE, "page map names a free descriptor");
            let start = (d.start.load(Relaxed) - map.base) >> PAGE_SHIFT;
            assert!(page >= start && page < start + d.pages.load(Relaxed) as usize, "page outside its run");
        }
        self.for_each_live(|id, d| {
            let start = d.start.load(Relaxed);
            let pages = d.pages.load(Relaxed) as usize;
            assert!(start.is_multiple_of(PAGE_SIZE));
            for p in 0..pages {
                assert_eq!(map.entries[((start - map.base) >> PAGE_SHIFT) + p].load(Relaxed), id, "unmapped page");
            }
            let shard = d.shard.load(Relaxed) as usize;
            assert!(shard < SHARDS);
            let pinned_here =
                pins.entries.iter().filter(|e| e.1 > 0 && e.0 >= start && e.0 < start + pages * PAGE_SIZE);
            assert_eq!(pinned_here.count(), d.pinned.load(Relaxed) as usize, "pin count of run {id}");
            let merged_here =
                merges.entries.iter().filter(|e| e.1 > 0 && e.0 >= start && e.0 < start + pages * PAGE_SIZE);
            assert_eq!(merged_here.count(), d.merged.load(Relaxed) as usize, "merged blocks of run {id}");
            if d.kind.load(Relaxed) == KIND_LARGE {
                assert_eq!(pages, d.size.load(Relaxed).max(1).div_ceil(PAGE_SIZE));
                in_use[shard] += pages * PAGE_SIZE;
                return;
            }
            if d.kind.load(Relaxed) == KIND_ARENA {
                assert!(pages <= MAX_ARENA_PAGES, "arena {id} too large");
                // SAFETY: a live arena; every shard's lock is held.
                let arena = unsafe { arena_view(self.source.base_ptr(), d) };
                let (used, free, granules, missing) = arena.check(&guards[shard].fit);
                in_use[shard] += granules * GRANULE;
                quick[shard] += arena.quick_blocks();
                let g = &guards[shard];
                let kept = g.kept_arenas[..g.empty_arenas].iter().filter(|&&k| k == id).count();
                assert_eq!(
                    kept,
                    usize::from(used == 0),
                    "empty arena {id} not kept (once), or kept in use ({pages} pages, {missing} free blocks unlisted, {} kept)",
                    g.empty_arenas
                );
                free_blocks[shard] += free;
                unlisted[shard] += missing;
                return;
            }
            let class = d.class.load(Relaxed) as usize;
            let c = CLASSES[class];
            assert_eq!(pages, c.pages as usize);
            assert_eq!(d.size.load(Relaxed), c.size as usize);
            let mut set = 0;
            for (w, word) in d.bitmap.iter().enumerate() {
                let v = word.load(Relaxed);
                let valid = (c.blocks as usize).saturating_sub(w * 64).min(64);
                if valid < 64 {
                    assert_eq!(v | (!0u64 << valid), v, "padding bits of span {id}");
                }
                set += (v & if valid == 64 { !0 } else { !(!0u64 << valid) }).count_ones();
                if w < d.hint.load(Relaxed) as usize {
                    assert_eq!(v, u64::MAX, "hint of span {id} skips a free block");
                }
            }
            let used = d.used.load(Relaxed);
            assert_eq!(set, used, "used count of span {id}");
            in_use[shard] += used as usize * c.size as usize;
            let lists = guards[shard].classes[class];
            let mut in_partial = false;
            let mut cur = lists.partial;
            let mut prev = NONE;
            while cur != NONE {
                let cd = self.live(cur);
                assert_eq!(cd.prev.load(Relaxed), prev, "partial list back link");
                in_partial |= cur == id;
                prev = cur;
                cur = cd.next.load(Relaxed);
            }
            if used == 0 && in_partial {
                // Emptied at the head of the list while the class kept no empty span.
                assert_eq!(lists.partial, id, "empty span {id} listed as partial but not first");
            } else if used == 0 {
                let mut cur = lists.empty;
                while cur != NONE && cur != id {
                    cur = self.live(cur).next.load(Relaxed);
                }
                assert_eq!(cur, id, "empty span {id} is not cached");
            } else if used < c.blocks {
                assert!(in_partial, "partial span {id} is not listed");
            } else {
                assert!(!in_partial, "full span {id} is listed");
            }
        });
        for &(addr, k) in merges.entries.iter().filter(|e| e.1 > 0) {
            let id = map.entries[(addr - map.base) >> PAGE_SHIFT].load(Relaxed);
            let d = self.desc(id).expect("merge table names an unowned block");
            assert_eq!(d.kind.load(Relaxed), KIND_SMALL, "merged block {addr:#x} outside a class span");
            let size = d.size.load(Relaxed);
            let first = (addr - d.start.load(Relaxed)) / size;
            assert!(k >= 2 && first + k as usize <= CLASSES[d.class.load(Relaxed) as usize].blocks as usize);
            assert_eq!(d.start.load(Relaxed) + first * size, addr, "merged block {addr:#x} is not a block start");
            for i in first..first + k as usize {
                assert_eq!(d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1, 1, "merged block {addr:#x} not allocated");
            }
            let inside = |e: &&(usize, u32)| e.1 > 0 && e.0 > addr && e.0 < addr + k as usize * size;
            assert!(!merges.entries.iter().any(|e| inside(&e)), "merged blocks overlap at {addr:#x}");
        }
        for (shard, g) in guards.iter_mut().enumerate() {
            assert_eq!(in_use[shard], self.shards[shard].in_use.load(Relaxed), "bytes in use in shard {shard}");
            // Every quick block is in its shard's slots, once, as it is.
            assert!(g.quick_len <= QUICK_SLOTS && g.quick_len == quick[shard], "quick blocks of shard {shard}");
            for (i, q) in g.quick[..g.quick_len].iter().enumerate() {
                let d = self.desc(q.arena).expect("quick slot names an unknown arena");
                assert_eq!(d.kind.load(Relaxed), KIND_ARENA, "quick slot {i} of shard {shard}");
                assert_eq!(d.shard.load(Relaxed) as usize, shard, "quick slot {i} of shard {shard}");
                // SAFETY: a live arena; every shard's lock is held.
                let arena = unsafe { arena_view(self.source.base_ptr(), d) };
                let at = q.at as usize;
                assert!(arena.is_quick(at), "quick slot {i} of shard {shard} names a block not quick");
                assert_eq!(arena.block_granules(at), q.granules as usize, "quick slot {i} of shard {shard}");
                assert!(q.granules as usize <= QUICK_MAX_GRANULES);
                assert!(!g.quick[..i].contains(q), "quick slot {i} of shard {shard} twice");
            }
            let (listed, bound) = g.fit.check(|addr| {
                let id = map.entries[(addr - map.base) >> PAGE_SHIFT].load(Relaxed);
                let d = self.desc(id).expect("fit index names an unowned block");
                assert_eq!(d.kind.load(Relaxed), KIND_ARENA, "fit index names {addr:#x} outside an arena");
                assert_eq!(d.shard.load(Relaxed) as usize, shard, "fit index names {addr:#x} of another shard");
                // SAFETY: a live arena; every shard's lock is held.
                unsafe { arena_view(self.source.base_ptr(), d) }
            });
            assert_eq!(listed, free_blocks[shard], "free arena blocks of shard {shard} miscounted");
            assert!(unlisted[shard] <= bound, "free arena blocks of shard {shard} lost from its fit index");
            assert!(g.empty_arenas <= EMPTY_ARENAS_KEEP, "kept arena count");
            for (i, &id) in g.kept_arenas.iter().enumerate() {
                assert_eq!(id == NONE, i >= g.empty_arenas, "kept arena slot {i} of shard {shard}");
                if id != NONE {
                    let d = self.desc(id).expect("kept arena unknown");
                    assert_eq!(d.kind.load(Relaxed), KIND_ARENA);
                    assert_eq!(d.shard.load(Relaxed) as usize, shard);
                }
            }
            let mut empty_pages = 0;
            for (class, lists) in g.classes.iter().enumerate() {
                let mut cur = lists.partial;
                while cur != NONE {
                    let d = self.live(cur);
                    assert_eq!(d.kind.load(Relaxed), KIND_SMALL);
                    assert_eq!((d.shard.load(Relaxed) as usize, d.class.load(Relaxed) as usize), (shard, class));
                    cur = d.next.load(Relaxed);
                }
                let (mut cur, mut n) = (lists.empty, 0);
                while cur != NONE {
                    assert_eq!(self.live(cur).used.load(Relaxed), 0);
                    assert_eq!(self.live(cur).kind.load(Relaxed), KIND_SMALL);
                    cur = self.live(cur).next.load(Relaxed);
                    n += 1;
                }
                assert!(n == lists.empties && n <= EMPTY_KEEP, "empty list count");
                empty_pages += (n as usize).saturating_sub(1) * CLASSES[class].pages as usize;
            }
            assert!(
                empty_pages == g.empty_pages && empty_pages <= EMPTY_PAGES_KEEP,
                "empty span pages of shard {shard}"
            );
        }
    }
}
