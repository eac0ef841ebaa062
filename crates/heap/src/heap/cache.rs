//! A thread's cache of small blocks: the blocks of the smallest classes a thread freed,
//! kept for its next allocations of their class, so that the common free and allocation
//! take no lock and touch no span (glibc's tcache, jemalloc's and mimalloc's thread
//! caches).
//!
//! ```text
//!   free_cached(p) ─ a live block of a cached class, not in the cache? ─no─▶ free (checks, errors)
//!       │ yes                              (a second free of a cached block: NotAllocated)
//!       ▼
//!   slots[class] full? ─yes─▶ the older half freed under one lock per block
//!       ▼
//!   pushed (the block stays allocated in its span: nothing else can take it)
//!
//!   allocate_cached(size) ─ a cached class with a block? ─yes─▶ the last one pushed
//!       │ no
//!       ▼
//!   allocate (the heap's paths); out of memory with blocks cached ─▶ flush, try again
//! ```
//!
//! A cached block is allocated as far as its span is concerned: the heap's structures
//! (and [`check_invariants`](Heap::check_invariants)) are those of a heap where the thread still holds it, and the
//! page source never gets its span back until the cache lets it go. The cache holds at most
//! [`CACHE_DEPTH`] blocks of each class up to [`CACHE_MAX`] bytes (92 KiB if every class
//! were full), and the owner flushes it when its thread ends.

use core::ptr::NonNull;
use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::PAGE_SHIFT;

use super::descriptors::Descriptor;
use super::{CpuId, Heap, KIND_SMALL, ROOMY_SPAN_MAX};
use crate::class::{CLASSES, class_for};
use crate::error::{XmallocError, XmfreeError};
use crate::source::PageSource;
use memkit_types::VirtAddr;

/// The largest request a cache serves, and the largest block it keeps.
pub const CACHE_MAX: usize = ROOMY_SPAN_MAX;
/// Blocks kept per class at most.
pub const CACHE_DEPTH: usize = 8;
/// Classes of blocks up to [`CACHE_MAX`] bytes (the class table's first ones).
const CACHED_CLASSES: usize = cached_classes();

const fn cached_classes() -> usize {
    let mut i = 0;
    while i < CLASSES.len() && CLASSES[i].size as usize <= CACHE_MAX {
        i += 1;
    }
    i
}

/// One thread's cache of freed small blocks: up to [`CACHE_DEPTH`] blocks of each class up
/// to [`CACHE_MAX`] bytes that its thread freed, taken again (the last freed first) by its
/// next allocations of their class without a lock. A cached block stays allocated in its
/// span. It belongs to one heap: the blocks in it are that heap's, and only
/// [`allocate_cached`](Heap::allocate_cached), [`free_cached`](Heap::free_cached) and
/// [`flush`](Heap::flush) of that heap may be given it; its owner flushes it before it
/// drops it (the blocks would stay allocated).
pub struct ThreadCache {
    /// Blocks of each class, the oldest first.
    slots: [[Option<NonNull<u8>>; CACHE_DEPTH]; CACHED_CLASSES],
    /// Blocks in `slots[class]`.
    counts: [u8; CACHED_CLASSES],
    /// Times a full class gave its older half back, and times an allocation out of memory
    /// flushed the cache and tried again.
    overflows: usize,
    retries: usize,
}

impl ThreadCache {
    /// An empty cache.
    #[must_use]
    pub const fn new() -> Self {
        Self { slots: [[None; CACHE_DEPTH]; CACHED_CLASSES], counts: [0; CACHED_CLASSES], overflows: 0, retries: 0 }
    }

    /// Times a full class gave its older half back to the heap.
    #[must_use]
    pub fn overflows(&self) -> usize {
        self.overflows
    }

    /// Times an allocation that found the heap out of memory flushed the cache and tried
    /// again.
    #[must_use]
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// Blocks in the cache.
    #[must_use]
    pub fn len(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }

    /// Whether the cache holds no block.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Whether `p` is in the cache (as a block of `class`).
    #[inline]
    fn holds(&self, class: usize, p: NonNull<u8>) -> bool {
        self.slots[class][..self.counts[class] as usize].contains(&Some(p))
    }

    /// The block of `class` pushed last.
    #[inline]
    fn pop(&mut self, class: usize) -> Option<NonNull<u8>> {
        let n = self.counts.get(class).copied()?;
        let n = n.checked_sub(1)?;
        self.counts[class] = n;
        self.slots[class][n as usize].take()
    }
}

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ThreadCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ThreadCache")
            .field("blocks", &self.len())
            .field("overflows", &self.overflows)
            .field("retries", &self.retries)
            .finish()
    }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// [`allocate`](Heap::allocate) with 16-byte alignment, from `cache` when it holds a
    /// block of the request's class.
    ///
    /// # Errors
    /// As [`allocate`](Heap::allocate); a cache that holds blocks is flushed and the
    /// request tried again before [`XmallocError::NoMemory`] is returned.
    #[inline]
    pub fn allocate_cached(&self, cache: &mut ThreadCache, size: usize) -> Result<NonNull<u8>, XmallocError> {
        if size <= CACHE_MAX
            && let Some(class) = class_for(size, 16)
            && let Some(p) = cache.pop(class)
        {
            return Ok(p);
        }
        match self.allocate(size, 4) {
            Err(XmallocError::NoMemory(_)) if !cache.is_empty() => {
                cache.retries += 1;
                self.flush(cache);
                self.allocate(size, 4)
            }
            r => r,
        }
    }

    /// [`free`](Heap::free) into `cache` when `ptr` is a live block of a cached class (the
    /// cache's older half goes back to the heap when the class is full); any other pointer
    /// is freed (or refused) as [`free`](Heap::free) does.
    ///
    /// # Errors
    /// As [`free`](Heap::free); [`XmfreeError::NotAllocated`] for a block already in the
    /// cache (a second free).
    ///
    /// # Safety
    /// As [`free`](Heap::free); `cache` holds only blocks of this heap.
    #[inline]
    pub unsafe fn free_cached(&self, cache: &mut ThreadCache, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
        let Some((class, d)) = self.live_small_block(ptr.as_ptr() as usize) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.free(ptr) };
        };
        // Whatever the heap's state now (packing, or the span's merged and pinned blocks,
        // may have changed since the block was cached), a cached block is not freed twice.
        if cache.holds(class, ptr) {
            return Err(XmfreeError::NotAllocated(VirtAddr::new(ptr.as_ptr() as usize)));
        }
        if !self.may_cache(class, d) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.free(ptr) };
        }
        let n = cache.counts[class] as usize;
        let n = if n == CACHE_DEPTH {
            // SAFETY: the cache's blocks are this heap's (the caller's contract), live and
            // given up by their thread.
            unsafe { self.give_back(cache, class, CACHE_DEPTH / 2) };
            cache.overflows += 1;
            CACHE_DEPTH - CACHE_DEPTH / 2
        } else {
            n
        };
        cache.slots[class][n] = Some(ptr);
        cache.counts[class] = (n + 1) as u8;
        Ok(())
    }

    /// Gives every block of `cache` back to the heap.
    pub fn flush(&self, cache: &mut ThreadCache) {
        for class in 0..CACHED_CLASSES {
            let n = cache.counts[class] as usize;
            // SAFETY: the cache's blocks are this heap's live blocks, given up (the
            // contract of `free_cached`, the only way in).
            unsafe { self.give_back(cache, class, n) };
        }
    }

    /// Checks `cache`'s invariants; panics naming the first broken one: each class holds
    /// at most [`CACHE_DEPTH`] blocks, its first `counts` slots full and the rest empty,
    /// and every block in it is a live block of this heap, of that class, in it once (its
    /// span may have merged or pinned blocks since it was cached: those take free or other
    /// blocks, and the cache's block goes back through the general free).
    #[cfg(any(test, feature = "check"))]
    pub fn check_cache(&self, cache: &ThreadCache) {
        for class in 0..CACHED_CLASSES {
            let n = cache.counts[class] as usize;
            assert!(n <= CACHE_DEPTH, "class {class} caches {n} blocks");
            let slots = &cache.slots[class];
            assert!(slots[n..].iter().all(Option::is_none), "class {class} has a block past its count");
            for (i, p) in slots[..n].iter().enumerate() {
                let p = p.expect("an empty slot below the count");
                let found = self.live_small_block(p.as_ptr() as usize).map(|(c, _)| c);
                assert_eq!(found, Some(class), "{p:p} is not a live block of class {class}");
                assert!(!slots[..i].contains(&Some(p)), "{p:p} is cached twice");
            }
        }
    }

    /// Frees the `n` oldest blocks of `class` in `cache` and moves the others down.
    ///
    /// # Safety
    /// The cache's blocks are this heap's live blocks, given up by their owner.
    unsafe fn give_back(&self, cache: &mut ThreadCache, class: usize, n: usize) {
        let count = cache.counts[class] as usize;
        let slots = &mut cache.slots[class];
        for p in slots[..n].iter_mut().filter_map(Option::take) {
            // SAFETY: the caller's contract. A refusal (a block the program freed twice
            // while another thread cached it) changes nothing.
            let _ = unsafe { self.free(p) };
        }
        slots.copy_within(n..count, 0);
        slots[count - n..count].fill(None);
        cache.counts[class] = (count - n) as u8;
    }

    /// Whether a live block of `class` in span `d` may be cached: its span has no merged
    /// and no pinned block, and its class is one the short paths serve. Read without the
    /// shard's lock: a block its caller owns cannot change under it, and anything else that
    /// passes is refused when the cache gives it back.
    #[inline(always)]
    fn may_cache(&self, class: usize, d: &Descriptor) -> bool {
        d.merged.load(Relaxed) == 0
            && d.pinned.load(Relaxed) == 0
            && self.short_path_class(CLASSES[class].size as usize)
    }

    /// The class (up to [`CACHE_MAX`]) and span of the block at `addr` when it is a live
    /// block (a block start, allocated) of a span; read without the shard's lock (see
    /// [`may_cache`](Heap::may_cache)).
    #[inline(always)]
    fn live_small_block(&self, addr: usize) -> Option<(usize, &Descriptor)> {
        let map = self.map.get()?;
        let entry = map.entries.get(addr.wrapping_sub(map.base) >> PAGE_SHIFT)?;
        let d = self.desc(entry.load(Acquire))?;
        if d.kind.load(Acquire) != KIND_SMALL {
            return None;
        }
        let class = d.class.load(Relaxed) as usize;
        if class >= CACHED_CLASSES {
            return None;
        }
        let c = &CLASSES[class];
        let off = addr.wrapping_sub(d.start.load(Relaxed));
        let index = c.index_of(off);
        if off != index * c.size as usize || index >= c.blocks as usize {
            return None;
        }
        (d.bitmap[index / 64].load(Relaxed) & 1 << (index % 64) != 0).then_some((class, d))
    }
}
