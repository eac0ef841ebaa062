//! Counters: what a heap holds now, and how often it took each structural path.
//!
//! # Unsafe
//!
//! Arena headers are read through `arena_view` while the arena's shard lock is held.

use core::sync::atomic::{AtomicUsize, Ordering::*};
use spin::RelaxStrategy;

use super::descriptors::chunk_pages;
use super::fit::arena_view;
use super::{CpuId, Heap, KIND_ARENA, KIND_LARGE, SHARDS, page_count};
use crate::arena::GRANULE;
use crate::source::PageSource;

/// Counters of one heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Spans (of every class) the heap holds.
    pub spans: usize,
    /// Large blocks (whole pages) live.
    pub large_blocks: usize,
    /// Blocks live in spans and arenas.
    pub small_blocks: usize,
    /// Arenas (runs of pages serving requests by exact size) the heap holds.
    pub arenas: usize,
    /// Pages held for blocks (spans and large blocks).
    pub pages: usize,
    /// Pages held for metadata (page map, descriptor chunks and the fit indexes' pools).
    pub metadata_pages: usize,
    /// Pages of spans (where the held pages go: this and the five after it).
    pub span_pages: usize,
    /// Pages of the empty spans among them (cached, or kept first in their class's list).
    pub empty_span_pages: usize,
    /// Bytes of the blocks live in spans (whole blocks of their class).
    pub span_live_bytes: usize,
    /// Pages of arenas.
    pub arena_pages: usize,
    /// Bytes of the blocks live in arenas (whole granules; quick blocks not counted).
    pub arena_live_bytes: usize,
    /// Pages of large blocks.
    pub large_pages: usize,
    /// Spans and large blocks taken from the page source since the heap was created.
    pub runs_created: usize,
    /// Times a [`FitPolicy::Adaptive`](crate::FitPolicy::Adaptive) heap started packing.
    pub packings: usize,
    /// Times a [`FitPolicy::Adaptive`](crate::FitPolicy::Adaptive) heap went back to placing by size class.
    pub unpackings: usize,
    /// Requests that found the page source dry and took a dry path (holes of other
    /// classes, other shards' arenas, just the pages needed, merged blocks).
    pub dry_requests: usize,
    /// Blocks taken from the holes of larger classes' spans while the source was dry.
    pub larger_class_blocks: usize,
    /// Merged blocks (neighbouring free blocks of a span taken as one) made.
    pub merged_blocks: usize,
    /// Arenas made.
    pub arenas_made: usize,
    /// Arenas given back to the page source.
    pub arenas_released: usize,
    /// Cached empty spans used again.
    pub span_reuses: usize,
    /// Quick arena blocks (freed, held unmerged) taken again by a request of their size.
    pub quick_reuses: usize,
    /// Spans emptied first in their class's list (kept there) that a request took a block
    /// of again.
    pub head_reuses: usize,
    /// Class blocks [`Heap::realloc_aligned`] moved to a block of another class under one
    /// lock (its short path).
    pub realloc_short_moves: usize,
    /// Cached empty spans and arenas given back by [`Heap::trim`].
    pub trimmed_runs: usize,
    /// Large blocks grown in place by [`Heap::realloc`] (the page source had the pages
    /// after them).
    pub large_grown: usize,
}

/// The cumulative counters of [`HeapStats`], bumped on cold paths only.
pub(super) struct PathCounters {
    pub(super) runs_created: AtomicUsize,
    pub(super) packings: AtomicUsize,
    pub(super) unpackings: AtomicUsize,
    pub(super) dry_requests: AtomicUsize,
    pub(super) larger_class_blocks: AtomicUsize,
    pub(super) merged_blocks: AtomicUsize,
    pub(super) arenas_made: AtomicUsize,
    pub(super) arenas_released: AtomicUsize,
    pub(super) span_reuses: AtomicUsize,
    pub(super) trimmed_runs: AtomicUsize,
    pub(super) large_grown: AtomicUsize,
}

impl PathCounters {
    pub(super) const fn new() -> PathCounters {
        PathCounters {
            runs_created: AtomicUsize::new(0),
            packings: AtomicUsize::new(0),
            unpackings: AtomicUsize::new(0),
            dry_requests: AtomicUsize::new(0),
            larger_class_blocks: AtomicUsize::new(0),
            merged_blocks: AtomicUsize::new(0),
            arenas_made: AtomicUsize::new(0),
            arenas_released: AtomicUsize::new(0),
            span_reuses: AtomicUsize::new(0),
            trimmed_runs: AtomicUsize::new(0),
            large_grown: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(super) fn bump(counter: &AtomicUsize) {
        counter.fetch_add(1, Relaxed);
    }

    fn fill(&self, s: &mut HeapStats) {
        s.runs_created = self.runs_created.load(Relaxed);
        s.packings = self.packings.load(Relaxed);
        s.unpackings = self.unpackings.load(Relaxed);
        s.dry_requests = self.dry_requests.load(Relaxed);
        s.larger_class_blocks = self.larger_class_blocks.load(Relaxed);
        s.merged_blocks = self.merged_blocks.load(Relaxed);
        s.arenas_made = self.arenas_made.load(Relaxed);
        s.arenas_released = self.arenas_released.load(Relaxed);
        s.span_reuses = self.span_reuses.load(Relaxed);
        s.trimmed_runs = self.trimmed_runs.load(Relaxed);
        s.large_grown = self.large_grown.load(Relaxed);
    }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// Counters: spans, blocks and pages held.
    pub fn stats(&self) -> HeapStats {
        let mut s = HeapStats {
            metadata_pages: self.page_map().map_or(0, |m| m.own_pages)
                + (0..self.chunk_count.load(Acquire)).map(|k| chunk_pages(k).get()).sum::<usize>(),
            ..HeapStats::default()
        };
        self.counters.fill(&mut s);
        let guards: [_; SHARDS] = core::array::from_fn(|i| self.shards[i].state.lock());
        s.metadata_pages +=
            guards.iter().filter_map(|g| g.fit.pool()).map(|(_, bytes)| page_count(bytes).get()).sum::<usize>();
        // Quick blocks count as allocated in their arenas' headers; they are not live.
        let quick = guards.iter().map(|g| g.quick_len).sum::<usize>();
        s.quick_reuses = guards.iter().map(|g| g.quick_reuses).sum::<usize>();
        s.head_reuses = guards.iter().map(|g| g.classes.iter().map(|l| l.head_reuses).sum::<usize>()).sum::<usize>();
        s.realloc_short_moves = guards.iter().map(|g| g.realloc_short_moves).sum::<usize>();
        self.for_each_live(|_, d| {
            let pages = d.pages.load(Relaxed) as usize;
            s.pages += pages;
            let kind = d.kind.load(Relaxed);
            if kind == KIND_LARGE {
                s.large_blocks += 1;
                s.large_pages += pages;
            } else if kind == KIND_ARENA {
                s.arenas += 1;
                s.arena_pages += pages;
                // SAFETY: a live arena; every shard's lock is held.
                let arena = unsafe { arena_view(self.source.base_ptr(), d) };
                s.small_blocks += arena.used();
                s.arena_live_bytes += arena.live_granules() * GRANULE;
            } else {
                let used = d.used.load(Relaxed) as usize;
                s.spans += 1;
                s.span_pages += pages;
                s.small_blocks += used;
                s.span_live_bytes += used * d.size.load(Relaxed);
                if used == 0 {
                    s.empty_span_pages += pages;
                }
            }
        });
        s.small_blocks -= quick;
        s
    }
}
