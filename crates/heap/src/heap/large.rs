//! Runs of whole pages: the pages of a span or a large block taken from the page source under
//! a new descriptor and given back, and large blocks (requests above the largest class).
//!
//! # Unsafe
//!
//! A run's pages go back to the source only once no block of it is live and its page-map
//! entries are clear, so nothing can reach them any more.

use core::ptr::NonNull;
use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::{Order, PAGE_SHIFT, PAGE_SIZE, PageCount};

use super::descriptors::PageMap;
use super::stats::PathCounters;
use super::{CpuId, Heap, KIND_FREE, KIND_LARGE, NONE, SHARDS};
use crate::source::PageSource;

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// Takes pages for a span or a large block and records them under a new descriptor.
    pub(super) fn new_run(&self, map: &PageMap, pages: usize, align_log2: u32) -> Option<(u32, usize)> {
        let order = Order::new(align_log2.saturating_sub(PAGE_SHIFT) as u8);
        let id = self.new_descriptor()?;
        let Some(mem) = self.source.allocate_pages(PageCount::new(pages), order) else {
            self.release_descriptor(id);
            return None;
        };
        let start = mem.as_ptr() as usize;
        PathCounters::bump(&self.counters.runs_created);
        self.adapt();
        let d = self.live(id);
        d.start.store(start, Relaxed);
        d.pages.store(pages as u32, Relaxed);
        d.used.store(0, Relaxed);
        d.prev.store(NONE, Relaxed);
        d.next.store(NONE, Relaxed);
        d.pinned.store(0, Relaxed);
        d.merged.store(0, Relaxed);
        d.hint.store(0, Relaxed);
        self.map_pages(map, start, pages, id);
        Some((id, start))
    }

    /// Gives a span's or a large block's pages back and frees its descriptor.
    pub(super) fn release_run(&self, map: &PageMap, id: u32) {
        let d = self.live(id);
        let start = d.start.load(Relaxed);
        let pages = d.pages.load(Relaxed) as usize;
        self.map_pages(map, start, pages, NONE);
        d.kind.store(KIND_FREE, Release);
        if let Some(mem) = NonNull::new(self.ptr(start)) {
            // SAFETY: the run came from this source, and no block of it is live any more
            // (its last one was just freed) nor reachable (its page map entries are clear).
            unsafe { self.source.free_pages(mem, PageCount::new(pages)) };
        }
        self.adapt();
        self.release_descriptor(id);
    }

    pub(super) fn allocate_large(&self, map: &PageMap, size: usize, align_log2: u32) -> Option<NonNull<u8>> {
        let pages = size.max(1).div_ceil(PAGE_SIZE);
        let shard = self.cpu.current_cpu() % SHARDS;
        // Made live and counted in its shard under the shard's lock, so that a checker
        // (which holds every lock) never sees its pages mapped to a descriptor not yet
        // live, nor the block live and not counted.
        let _st = self.shards[shard].state.lock();
        let (id, start) = self.new_run(map, pages, align_log2.max(PAGE_SHIFT))?;
        let d = self.live(id);
        d.size.store(size, Relaxed);
        d.align_log2.store(align_log2 as u8, Relaxed);
        d.shard.store(shard as u8, Relaxed);
        d.used.store(1, Relaxed);
        self.shards[shard].count(pages * PAGE_SIZE, true);
        d.kind.store(KIND_LARGE, Release);
        NonNull::new(self.ptr(start))
    }
}
