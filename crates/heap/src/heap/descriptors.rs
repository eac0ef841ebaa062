//! Descriptors (the out-of-band record of each span, arena and large block), their chunks and
//! free list, and the page map that names each page's descriptor.
//!
//! # Unsafe
//!
//! A descriptor chunk is pages taken from the source, zeroed (all-zero atomics are valid
//! descriptors) and then published (a pointer to its first descriptor, stored with Release
//! under the pool's lock); a descriptor is read through a shared reference into it. Chunks
//! are never given back while the heap lives, only by `release_all`, after which nothing
//! reads them.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use spin::RelaxStrategy;

use memkit_types::{Order, PAGE_SHIFT, PageCount};

use super::{BITMAP_WORDS, CpuId, FIRST_CHUNK, Heap, KIND_FREE, MAX_CHUNKS, NONE, page_count};
use crate::source::PageSource;

/// The out-of-band record of one span, arena or large block. All fields are atomics so
/// that a racing reader never sees torn memory; writers hold the owning shard's lock (or
/// the pool's lock for free descriptors) and use plain loads and stores.
#[repr(C, align(128))]
pub(super) struct Descriptor {
    /// Set bit = block allocated; bits at and beyond the span's block count are set.
    pub(super) bitmap: [AtomicU64; BITMAP_WORDS],
    pub(super) start: AtomicUsize,
    /// Block size (small) or requested size (large).
    pub(super) size: AtomicUsize,
    pub(super) pages: AtomicU32,
    /// Blocks allocated (spans; 1 for a large block; an arena counts in its header).
    pub(super) used: AtomicU32,
    pub(super) prev: AtomicU32,
    pub(super) next: AtomicU32,
    /// Blocks of this span or arena in the pin table.
    pub(super) pinned: AtomicU32,
    /// Merged blocks of this span in the merge table.
    pub(super) merged: AtomicU32,
    pub(super) kind: AtomicU8,
    pub(super) class: AtomicU8,
    pub(super) shard: AtomicU8,
    /// First bitmap word that may have a clear bit.
    pub(super) hint: AtomicU8,
    /// Large blocks: the alignment asked for.
    pub(super) align_log2: AtomicU8,
}

/// The chunk of descriptor index `i` (its id less one) and its slot there.
#[inline]
pub(super) const fn chunk_slot(i: usize) -> (usize, usize) {
    let k = (i / FIRST_CHUNK + 1).ilog2() as usize;
    (k, i - FIRST_CHUNK * ((1 << k) - 1))
}

/// Pages of chunk `k`.
#[inline]
pub(super) fn chunk_pages(k: usize) -> PageCount {
    page_count((FIRST_CHUNK << k) * size_of::<Descriptor>())
}

pub(super) struct Pool {
    pub(super) free_head: u32,
    /// Ids below this one have been handed out at least once.
    pub(super) fresh: u32,
}

pub(super) struct PageMap {
    pub(super) base: usize,
    pub(super) entries: &'static [AtomicU32],
    pub(super) own_pages: usize,
}

impl<P, C, R> Heap<P, C, R> {
    #[inline(always)]
    pub(super) fn desc(&self, id: u32) -> Option<&Descriptor> {
        let i = (id as usize).checked_sub(1)?;
        let (k, slot) = chunk_slot(i);
        let first = self.chunks.get(k)?.load(Acquire);
        if first.is_null() {
            return None;
        }
        // SAFETY: chunk `k` holds `FIRST_CHUNK << k` descriptors from `first` and `slot` is
        // below that (`chunk_slot`).
        let d = unsafe { first.add(slot) };
        // SAFETY: they were zeroed (a valid descriptor) before `first` was published with
        // Release; the chunk is kept until `release_all`, after which nothing reads it.
        Some(unsafe { &*d })
    }

    /// The descriptor of an id this heap handed out (panics otherwise: an internal bug).
    #[inline]
    pub(super) fn live(&self, id: u32) -> &Descriptor {
        match self.desc(id) {
            Some(d) => d,
            None => panic!("descriptor {id} was never allocated"),
        }
    }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    #[inline]
    pub(super) fn page_map(&self) -> Option<&PageMap> {
        self.map.get().filter(|m| m.own_pages > 0)
    }

    pub(super) fn new_descriptor(&self) -> Option<u32> {
        let mut pool = self.pool.lock();
        if pool.free_head != NONE {
            let id = pool.free_head;
            pool.free_head = self.live(id).next.load(Relaxed);
            return Some(id);
        }
        let id = pool.fresh;
        let (chunk, _) = chunk_slot(id as usize - 1);
        if chunk >= MAX_CHUNKS {
            return None;
        }
        if self.chunks[chunk].load(Acquire).is_null() {
            let len = FIRST_CHUNK << chunk;
            let mem = self.source.allocate_pages(chunk_pages(chunk), Order::new(0))?;
            let ptr = mem.as_ptr().cast::<Descriptor>();
            // SAFETY: the source gave us enough page-aligned bytes for `len` descriptors;
            // all-zero atomics are valid descriptors.
            unsafe { core::ptr::write_bytes(ptr, 0, len) };
            // Made under the pool's lock, so once; kept until `release_all`.
            self.chunks[chunk].store(ptr, Release);
            self.chunk_count.store(chunk + 1, Release);
        }
        pool.fresh += 1;
        Some(id)
    }

    #[inline]
    pub(super) fn release_descriptor(&self, id: u32) {
        let mut pool = self.pool.lock();
        self.live(id).next.store(pool.free_head, Relaxed);
        pool.free_head = id;
    }

    #[inline]
    pub(super) fn map_pages(&self, map: &PageMap, start: usize, pages: usize, id: u32) {
        let first = (start - map.base) >> PAGE_SHIFT;
        for e in &map.entries[first..first + pages] {
            e.store(id, Release);
        }
    }

    pub(super) fn for_each_live(&self, mut f: impl FnMut(u32, &Descriptor)) {
        let fresh = self.pool.lock().fresh;
        for id in 1..fresh {
            if let Some(d) = self.desc(id)
                && d.kind.load(Acquire) != KIND_FREE
            {
                f(id, d);
            }
        }
    }
}
