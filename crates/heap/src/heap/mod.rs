//! One backing heap: size-class spans over a page source, with out-of-band metadata.
//!
//! ```text
//!   page map (one u32 per page of the source's range) ──▶ descriptor id
//!        │                                                    │
//!        ▼                                                    ▼
//!   ┌ span: pages of one class ───────────────┐   descriptor: start, pages, class,
//!   │ block 0 │ block 1 │ ... │ block n-1 │tail│   shard, used, 512-bit allocation bitmap,
//!   └─────────────────────────────────────────┘   partial-list links, pinned blocks
//!   large block: whole pages, its own descriptor (kind Large)
//!   arena (a packing heap): pages of one shard, blocks of any size in 64-byte granules,
//!   start and alloc bits in its header, free blocks in the shard's fit index, whose
//!   entries live in a pool of pages of their own (see `arena`)
//!   merged block (source dry): neighbouring free blocks of a span taken as one;
//!   the merge table records (first block, blocks) and the span counts its entries
//! ```
//!
//! Nothing is ever stored inside a block, live or free (an arena's free lists are entries
//! in its shard's pool): a free recovers the block from the page map, the descriptor, the
//! arena header or (for a merged block) the merge table, and checks it (owned, a block
//! start, allocated, not pinned) before changing anything. Descriptors live in chunks
//! (the first of 64 descriptors, each next one twice as large) that are never given back
//! while the heap lives, so a stale id read by a racing bad free still names valid memory.
//!
//! Fit policy: a heap places by size class (fast) or packs (exact fit in arenas for
//! requests above 256 B, and arena fragments for smaller ones); [`FitPolicy::Adaptive`],
//! the default, places classes up to 1 KiB in spans and larger requests in arenas while
//! the page source has room, and packs as its headroom shrinks.
//!
//! Scalability: spans belong to one of [`SHARDS`] shards, each with its own lock and its
//! own per-class lists; a thread allocates from the shard its [`CpuId`] names, and a free
//! locks the shard that owns the span. Only span creation and release reach the page
//! source and the descriptor pool, which have their own locks.
//!
//! This file holds the heap, its shards and its entry points (`init`, `allocate`, `free`,
//! `block`, `trim`, `release_all`); the parts live one per file: `fit_policy`,
//! `descriptors` (and the page map), `spans` (size classes and merged blocks), `fit`
//! (arenas), `large` (runs of whole pages), `realloc` (in place or moved), `pinning`,
//! `stats` and `check`.
//!
//! # Unsafe
//!
//! This module and `descriptors`, `fit`, `large`, `realloc`, `stats` and `check` may use `unsafe` (the
//! other parts deny it). They rely on: the page map, descriptor chunks and fit-index pools are
//! pages the heap took from its source and keeps until [`Heap::release_all`], so `'static`
//! slices over them stay valid while the heap lives; an arena is viewed (`arena_view`) only
//! through a live arena descriptor while its shard's lock is held; pages go back to the
//! source only when nothing in them is live or reachable; and [`Heap::free`],
//! [`Heap::realloc`] and [`Heap::release_all`] are `unsafe fn` whose callers promise not to
//! use a block after giving it back.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering::*};

use memkit_types::{Order, PAGE_SHIFT, PAGE_SIZE, PageCount, VirtAddr};
use spin::mutex::Mutex;
use spin::{Once, RelaxStrategy, Spin};

use self::descriptors::{Descriptor, PageMap, Pool, chunk_pages};
use self::fit::arena_view;
use self::pinning::PinTable;
use self::spans::{ClassLists, MergeTable};
use self::stats::PathCounters;
use crate::arena::{FitIndex, GRANULE, MAX_ARENA_PAGES};
use crate::class::{CLASS_COUNT, CLASSES, MAX_BLOCKS, MAX_SMALL, class_for};
use crate::error::{XmallocError, XmfreeError};
use crate::source::PageSource;

mod cache;
#[cfg(any(test, feature = "check"))]
mod check;
mod descriptors;
mod fit;
#[deny(unsafe_code)]
mod fit_policy;
mod large;
#[deny(unsafe_code)]
mod pinning;
mod realloc;
#[deny(unsafe_code)]
mod spans;
mod stats;
#[cfg(test)]
mod tests;

pub use cache::{CACHE_DEPTH, CACHE_MAX, ThreadCache};
pub use fit_policy::{FitPolicy, PACK_HEADROOM};
pub use memkit_types::{CpuId, SingleCpu};
pub use stats::HeapStats;

/// Shards (independent locks and span lists) per heap.
pub const SHARDS: usize = 8;
/// The largest alignment a request may ask for: 2^28 bytes (256 MiB).
pub const MAX_ALIGN_LOG2: u32 = 28;
/// Descriptors of the first chunk (8 KiB); chunk `k` holds `FIRST_CHUNK << k`, so a small
/// heap spends two pages on descriptors and a large one at most as much again as it uses.
const FIRST_CHUNK: usize = 64;
/// Chunks per heap at most: about 2^21 spans or large blocks.
const MAX_CHUNKS: usize = 15;
/// Blocks pinned at once per heap at most.
pub const MAX_PINNED_BLOCKS: usize = 128;
/// Merged blocks (taken when the page source is dry) live at once per heap at most.
const MAX_MERGED_BLOCKS: usize = 256;

const NONE: u32 = 0;
/// Empty spans kept per class and shard: one always (so that a class whose last span
/// empties and fills again does not bounce it with the page source), up to this many while
/// the shard keeps at most [`EMPTY_PAGES_KEEP`] pages of them.
const EMPTY_KEEP: u32 = 4;
/// Pages of empty spans a shard keeps beyond one per class (so that a heap of many shards
/// does not sit on spans of large classes, and a small heap holds little beyond its live
/// blocks).
const EMPTY_PAGES_KEEP: usize = 64;
/// Empty arenas kept per shard (so that arenas do not bounce with the page source).
const EMPTY_ARENAS_KEEP: usize = 1;
const KIND_FREE: u8 = 0;
const KIND_SMALL: u8 = 1;
const KIND_LARGE: u8 = 2;
const KIND_ARENA: u8 = 3;
const BITMAP_WORDS: usize = MAX_BLOCKS / 64;
/// In a packing heap, requests whose class is larger than this (and at most the largest
/// class) take a block of their exact size (in 64-byte granules) from an arena; smaller
/// ones an arena fragment that holds them, else a class block of a span.
const EXACT_FIT_ABOVE: usize = 256;
/// A roomy [`FitPolicy::Adaptive`] heap serves requests of classes up to this size from
/// spans and larger ones (up to the largest class) from arenas.
const ROOMY_SPAN_MAX: usize = 1024;
/// Pages of an arena when the page source has them (fewer when it is short).
const ARENA_PAGES: usize = 32;
/// A packing heap serves requests of classes at least this large from arena fragments
/// (free blocks under 16 granules, left by splits and alignment, which no request above
/// [`EXACT_FIT_ABOVE`] can use) when it has some.
const FRAGMENT_MIN: usize = 64;
const _: () = assert!(ARENA_PAGES <= MAX_ARENA_PAGES);
/// Quick arena blocks a shard holds at most: freed arena blocks kept unmerged for the next
/// request of their size, which takes one without the fit index (real programs free and
/// allocate the same sizes in turn; the threaded trace of `memkit-bench replay` reuses a
/// block freed among the last eight 97 % of the time).
const QUICK_SLOTS: usize = 8;
/// Granules of a quick block at most (8 KiB): the slots hold at most 64 KiB a shard.
const QUICK_MAX_GRANULES: usize = 128;

struct ShardState {
    classes: [ClassLists; CLASS_COUNT],
    /// Free blocks of the shard's arenas.
    fit: FitIndex,
    /// Empty arenas kept (up to [`EMPTY_ARENAS_KEEP`], the first `empty_arenas` of
    /// them), so that arenas do not bounce with the page source; they stay in the fit
    /// index and serve requests like any other arena.
    kept_arenas: [u32; EMPTY_ARENAS_KEEP],
    empty_arenas: usize,
    /// Pages of the empty spans kept (at most [`EMPTY_PAGES_KEEP`]).
    empty_pages: usize,
    /// Arena blocks freed by their owners and held, unmerged, for the next request of
    /// their size (the first `quick_len`, oldest first): see `fit::free_fit`.
    quick: [Quick; QUICK_SLOTS],
    quick_len: usize,
    /// Quick blocks taken again (counted here, under the lock, not with an atomic).
    quick_reuses: usize,
    /// Class blocks of this shard moved by `realloc`'s short path (counted likewise).
    realloc_short_moves: usize,
}

/// A quick arena block: its arena's descriptor, its first granule and its granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quick {
    arena: u32,
    at: u16,
    granules: u16,
}

impl ShardState {
    const EMPTY: ShardState = ShardState {
        classes: [ClassLists { partial: NONE, empty: NONE, empties: 0, head_reuses: 0 }; CLASS_COUNT],
        fit: FitIndex::EMPTY,
        kept_arenas: [NONE; EMPTY_ARENAS_KEEP],
        empty_arenas: 0,
        empty_pages: 0,
        quick: [Quick { arena: NONE, at: 0, granules: 0 }; QUICK_SLOTS],
        quick_len: 0,
        quick_reuses: 0,
        realloc_short_moves: 0,
    };
}

#[repr(align(128))]
struct Shard<R> {
    state: Mutex<ShardState, R>,
    /// Bytes of the shard's live blocks (usable sizes), for [`FitPolicy::Adaptive`];
    /// written only under the lock, read by anyone.
    in_use: AtomicUsize,
}

impl<R> Shard<R> {
    /// Counts `bytes` more (`grow`) or fewer in use; the caller holds the lock.
    #[inline]
    fn count(&self, bytes: usize, grow: bool) {
        let v = self.in_use.load(Relaxed);
        self.in_use.store(if grow { v + bytes } else { v - bytes }, Relaxed);
    }
}

/// A block found from a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its first byte.
    pub start: NonNull<u8>,
    /// Its usable size (the class size, or whole pages for a large block).
    pub usable: usize,
    /// Its alignment (log2): at least the one it was allocated with.
    pub align_log2: u32,
    /// Times it is pinned (for a heap with pageable memory).
    pub pins: u32,
}

/// One backing heap over a page source `P`, sharded by `C`, whose locks wait for their
/// holder as `R` says (spinning, the default: a kernel's holder runs on another CPU; a
/// process of more threads than CPUs gives the CPU up, as the malloc library does).
///
/// Create it with [`Heap::new`] (a `const fn`, so it can be a `static`) and make it usable
/// with [`Heap::init`]; until then every allocation fails with
/// [`XmallocError::NotInitialised`].
pub struct Heap<P, C = SingleCpu, R = Spin> {
    source: P,
    cpu: C,
    pinned: bool,
    fit_policy: FitPolicy,
    /// Requests of classes larger than this (up to [`MAX_SMALL`]) go to arenas: fixed by
    /// the placement, or moved by [`FitPolicy::Adaptive`] (see [`Heap::adapt`]).
    span_max: AtomicUsize,
    map: Once<PageMap>,
    shards: [Shard<R>; SHARDS],
    pool: Mutex<Pool, R>,
    /// Descriptor chunks: chunk `k`'s first descriptor (it holds `FIRST_CHUNK << k`), null
    /// until made; each is made once (under the pool's lock) and kept until
    /// [`Heap::release_all`].
    chunks: [AtomicPtr<Descriptor>; MAX_CHUNKS],
    chunk_count: AtomicUsize,
    counters: PathCounters,
    pins: Mutex<PinTable, R>,
    merges: Mutex<MergeTable, R>,
}

impl<P, C, R> fmt::Debug for Heap<P, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("pinned", &self.pinned)
            .field("fit_policy", &self.fit_policy)
            .field("initialised", &self.map.is_completed())
            .finish_non_exhaustive()
    }
}

#[inline]
fn page_count(bytes: usize) -> PageCount {
    PageCount::new(bytes.div_ceil(PAGE_SIZE))
}

impl<P: PageSource, C: CpuId> Heap<P, C> {
    /// An uninitialised heap with the default [`FitPolicy`], whose locks spin. `pinned`
    /// marks a heap whose memory is always pinned (the pinned heaps):
    /// [`unpin`](Heap::unpin) of its memory is an error.
    pub const fn new(source: P, cpu: C, pinned: bool) -> Self {
        Self::with_fit_policy(source, cpu, pinned, FitPolicy::Adaptive)
    }

    /// An uninitialised heap placing requests by `fit_policy`; otherwise as
    /// [`new`](Heap::new).
    pub const fn with_fit_policy(source: P, cpu: C, pinned: bool, fit_policy: FitPolicy) -> Self {
        Heap::with_relax(source, cpu, pinned, fit_policy)
    }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// An uninitialised heap placing requests by `fit_policy`, whose locks wait for their
    /// holder by `R`'s [`relax`](RelaxStrategy::relax) (a hosted heap of a process with
    /// more threads than CPUs gives the CPU up, rather than spin while a holder that was
    /// preempted waits for it); otherwise as [`new`](Heap::new).
    pub const fn with_relax(source: P, cpu: C, pinned: bool, fit_policy: FitPolicy) -> Self {
        Heap {
            source,
            cpu,
            pinned,
            fit_policy,
            span_max: AtomicUsize::new(fit_policy.span_max()),
            map: Once::new(),
            shards: [const { Shard { state: Mutex::new(ShardState::EMPTY), in_use: AtomicUsize::new(0) } }; SHARDS],
            pool: Mutex::new(Pool { free_head: NONE, fresh: 1 }),
            chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS],
            chunk_count: AtomicUsize::new(0),
            counters: PathCounters::new(),
            pins: Mutex::new(PinTable { entries: [(0, 0); MAX_PINNED_BLOCKS] }),
            merges: Mutex::new(MergeTable { entries: [(0, 0); MAX_MERGED_BLOCKS] }),
        }
    }

    /// Allocates the page map (4 bytes per page of the source's range) from the page
    /// source. Calling it again does nothing.
    ///
    /// # Errors
    /// [`XmallocError::NoMemory`] when the source cannot give the map's pages.
    pub fn init(&self) -> Result<(), XmallocError> {
        let mut failed = false;
        self.map.call_once(|| {
            let (base, pages) = self.source.range();
            let bytes = pages.get().saturating_mul(4);
            let own = page_count(bytes.max(1));
            let Some(mem) = self.source.allocate_pages(own, Order::new(0)) else {
                failed = true;
                return PageMap { base: base.as_usize(), entries: &[], own_pages: 0 };
            };
            let ptr = mem.as_ptr().cast::<AtomicU32>();
            if !self.source.is_zeroed(mem, own) {
                // SAFETY: the source gave us `own` pages (at least `pages` u32s), page-aligned.
                unsafe { core::ptr::write_bytes(ptr, 0, pages.get()) };
            }
            // SAFETY: initialised just above; the pages stay ours until `release_all`, after which
            // the slice is never used.
            let entries: &'static [AtomicU32] = unsafe { core::slice::from_raw_parts(ptr, pages.get()) };
            PageMap { base: base.as_usize(), entries, own_pages: own.get() }
        });
        if failed || self.map.get().is_some_and(|m| m.own_pages == 0) {
            return Err(XmallocError::NoMemory(0));
        }
        Ok(())
    }

    /// Whether [`init`](Heap::init) succeeded.
    #[inline]
    pub fn is_initialised(&self) -> bool {
        self.map.get().is_some_and(|m| m.own_pages > 0)
    }

    /// Whether this heap's memory is always pinned.
    pub fn is_pinned_heap(&self) -> bool {
        self.pinned
    }

    /// How this heap places requests.
    pub fn fit_policy(&self) -> FitPolicy {
        self.fit_policy
    }

    /// The page source behind.
    pub fn source(&self) -> &P {
        &self.source
    }

    /// Takes every lock of the heap and keeps it, so that no other thread uses the heap
    /// until [`unlock_all`](Heap::unlock_all): what a `fork` handler does before the fork,
    /// so that the child finds no lock held by a thread it does not have and every
    /// structure whole. The locks are taken in the order the heap's operations nest them
    /// (the shards in index order, then the merge table, the pin table and the descriptor
    /// pool), so this waits for operations in progress and deadlocks none. The page source
    /// is not locked: an operation that holds one of these locks may take the source's, so
    /// its locks come after (the caller takes them). The calling thread must not use the
    /// heap before it unlocks: its own call would wait forever.
    pub fn lock_all(&self) {
        for shard in &self.shards {
            core::mem::forget(shard.state.lock());
        }
        core::mem::forget(self.merges.lock());
        core::mem::forget(self.pins.lock());
        core::mem::forget(self.pool.lock());
    }

    /// Lets go of the locks [`lock_all`](Heap::lock_all) took.
    ///
    /// # Safety
    /// Every lock is held by a call of `lock_all` on this heap (by this thread, or, in a
    /// child process, by the thread that forked it) that no other `unlock_all` undid: no
    /// guard of them is alive, so nobody else believes it holds them.
    pub unsafe fn unlock_all(&self) {
        // SAFETY: the caller's contract: `lock_all` holds it and forgot its guard.
        unsafe { self.pool.force_unlock() };
        // SAFETY: as above.
        unsafe { self.pins.force_unlock() };
        // SAFETY: as above.
        unsafe { self.merges.force_unlock() };
        for shard in self.shards.iter().rev() {
            // SAFETY: as above.
            unsafe { shard.state.force_unlock() };
        }
    }

    /// Allocates `size` bytes aligned to 2^`align_log2`.
    ///
    /// # Errors
    /// [`XmallocError::NotInitialised`] before [`init`](Heap::init),
    /// [`XmallocError::BadAlignment`] beyond [`MAX_ALIGN_LOG2`],
    /// [`XmallocError::TooLarge`] for a size no page source could hold,
    /// [`XmallocError::NoMemory`] when the page source is exhausted.
    #[inline]
    pub fn allocate(&self, size: usize, align_log2: u32) -> Result<NonNull<u8>, XmallocError> {
        // The common request: at most 16-byte alignment, a class served from spans, a
        // partial span of it in this shard. (A heap packing hard tries arena fragments
        // first for classes of at least FRAGMENT_MIN: the general path.)
        if align_log2 <= 4
            && size <= MAX_SMALL
            && let Some(class) = class_for(size, 16)
            && self.short_path_class(CLASSES[class].size as usize)
            && let Some(p) = self.allocate_small_fast(self.cpu.current_cpu() % SHARDS, class)
        {
            return Ok(p);
        }
        self.allocate_general(size, align_log2)
    }

    /// [`allocate`](Heap::allocate) when the common case does not hold.
    #[inline(never)]
    fn allocate_general(&self, size: usize, align_log2: u32) -> Result<NonNull<u8>, XmallocError> {
        let Some(map) = self.page_map() else { return Err(XmallocError::NotInitialised) };
        if align_log2 > MAX_ALIGN_LOG2 {
            return Err(XmallocError::BadAlignment(align_log2));
        }
        let align = 1usize << align_log2;
        if align <= PAGE_SIZE
            && let Some(class) = class_for(size, align)
        {
            let shard = self.cpu.current_cpu() % SHARDS;
            let span_max = self.span_max.load(Relaxed);
            if align > 16
                && let Some(natural) = class_for(size, 1)
                && natural != class
                && CLASSES[natural].size as usize <= span_max
                && let Some(p) = self.allocate_aligned_below(map, shard, natural, class, align)
            {
                return Ok(p);
            }
            if CLASSES[class].size as usize > span_max {
                // A packing adaptive heap still fills the holes of the class's spans (made
                // before it packed), so that they empty and go back.
                if span_max != self.fit_policy.span_max()
                    && let Some(p) = self.allocate_small(map, shard, class, false)
                {
                    return Ok(p);
                }
                return self.allocate_fit(map, shard, size, class, align_log2);
            }
            if span_max <= EXACT_FIT_ABOVE
                && CLASSES[class].size as usize >= FRAGMENT_MIN
                && let Some(p) = self.allocate_fragment(shard, size, align)
            {
                return Ok(p);
            }
            if let Some(p) = self.allocate_small(map, shard, class, true) {
                return Ok(p);
            }
            self.trim();
            if let Some(p) = self.allocate_small(map, shard, class, true) {
                return Ok(p);
            }
            // Dry: holes of larger classes, free ranges of arenas, else just the pages the
            // block needs.
            PathCounters::bump(&self.counters.dry_requests);
            return self
                .allocate_from_larger_class(map, size, class, align)
                .or_else(|| self.fit_from_any_shard(size, align))
                .or_else(|| self.allocate_large(map, size, align_log2))
                .or_else(|| self.allocate_merged(size, align))
                .ok_or(XmallocError::NoMemory(size));
        }
        if size > isize::MAX as usize - PAGE_SIZE {
            return Err(XmallocError::TooLarge(size));
        }
        if let Some(p) = self.allocate_large(map, size, align_log2) {
            return Ok(p);
        }
        self.trim();
        PathCounters::bump(&self.counters.dry_requests);
        self.allocate_large(map, size, align_log2)
            .or_else(|| if align <= PAGE_SIZE { self.allocate_merged(size, align) } else { None })
            .ok_or(XmallocError::NoMemory(size))
    }

    /// Gives every cached empty span and arena back to the page source.
    pub fn trim(&self) {
        let Some(map) = self.page_map() else { return };
        for shard in &self.shards {
            let mut st = shard.state.lock();
            self.flush_quick(map, &mut st);
            while st.empty_arenas > 0 {
                st.empty_arenas -= 1;
                let last = st.empty_arenas;
                let id = core::mem::replace(&mut st.kept_arenas[last], NONE);
                // SAFETY: a kept empty arena of the shard is live and its lock is held.
                st.fit.remove_arena(&unsafe { arena_view(self.source.base_ptr(), self.live(id)) });
                self.release_run(map, id);
                PathCounters::bump(&self.counters.arenas_released);
                PathCounters::bump(&self.counters.trimmed_runs);
            }
            for lists in st.classes.iter_mut() {
                if lists.partial != NONE && self.live(lists.partial).used.load(Relaxed) == 0 {
                    let id = lists.partial;
                    self.unlink(lists, id);
                    self.release_run(map, id);
                    PathCounters::bump(&self.counters.trimmed_runs);
                }
                while lists.empty != NONE {
                    let id = lists.empty;
                    lists.empty = self.live(id).next.load(Relaxed);
                    lists.empties -= 1;
                    self.release_run(map, id);
                    PathCounters::bump(&self.counters.trimmed_runs);
                }
            }
            st.empty_pages = 0;
        }
    }

    /// Finds the descriptor owning `addr` and locks its shard; re-checks ownership under
    /// the lock.
    #[inline(always)]
    fn locate(
        &self,
        addr: usize,
    ) -> Result<(&PageMap, u32, &Descriptor, usize, spin::MutexGuard<'_, ShardState>), XmfreeError> {
        let va = VirtAddr::try_new(addr).map_err(|_| XmfreeError::NonCanonical(addr))?;
        let not_owned = XmfreeError::NotOwned(va);
        let map = self.page_map().ok_or(not_owned)?;
        let page = addr.checked_sub(map.base).ok_or(not_owned)? >> PAGE_SHIFT;
        let entry = map.entries.get(page).ok_or(not_owned)?;
        let id = entry.load(Acquire);
        let d = self.desc(id).ok_or(not_owned)?;
        let shard = d.shard.load(Relaxed) as usize % SHARDS;
        let st = self.shards[shard].state.lock();
        if entry.load(Acquire) != id || d.kind.load(Acquire) == KIND_FREE || d.shard.load(Relaxed) as usize != shard {
            return Err(not_owned);
        }
        Ok((map, id, d, shard, st))
    }

    /// Checks that `addr` is a live block start of `d` (whose shard lock the caller holds);
    /// returns its index in the span (its granule in an arena, 0 for a large block).
    #[inline(always)]
    fn block_index(&self, d: &Descriptor, addr: usize) -> Result<usize, XmfreeError> {
        let start = d.start.load(Relaxed);
        let va = VirtAddr::new(addr);
        match d.kind.load(Relaxed) {
            KIND_LARGE => return if addr == start { Ok(0) } else { Err(XmfreeError::NotBlockStart(va)) },
            // SAFETY: `d` is live (`locate` checked it) and its shard's lock is held.
            KIND_ARENA => return unsafe { arena_view(self.source.base_ptr(), d) }.allocated_block(addr),
            _ => {}
        }
        let c = &CLASSES[d.class.load(Relaxed) as usize];
        let off = addr - start;
        let index = c.index_of(off);
        if off != index * c.size as usize || index >= c.blocks as usize {
            return Err(XmfreeError::NotBlockStart(va));
        }
        if d.bitmap[index / 64].load(Relaxed) >> (index % 64) & 1 == 0 {
            return Err(XmfreeError::NotAllocated(va));
        }
        Ok(index)
    }

    /// Frees the block at `ptr`.
    ///
    /// The heap checks `ptr` against its out-of-band metadata before it changes anything,
    /// so a pointer that is not a live block start is refused. What it cannot check is who
    /// owns a live block: `&Heap` is an [`Allocator`](allocator_api2::alloc::Allocator), so
    /// a `Box` may hold the block `ptr` names, and freeing it under the box would let the
    /// next allocation hand the same memory out twice. Hence the contract:
    ///
    /// ```compile_fail,E0133
    /// # use core::ptr::NonNull;
    /// # use allocator_api2::boxed::Box;
    /// # use memkit_heap::{Heap, RegionPageSource, SingleCpu};
    /// # let mem: &'static mut [u8] = vec![0u8; 1 << 20].leak();
    /// # let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    /// # let h = Heap::new(src, SingleCpu, false);
    /// # h.init().unwrap();
    /// let a = Box::new_in(1u64, &h);
    /// // Freeing a block a `Box` owns is not possible from safe code.
    /// h.free(NonNull::from(&*a).cast());
    /// ```
    ///
    /// # Errors
    /// [`XmfreeError::NotOwned`] when `ptr` is in no page of this heap,
    /// [`XmfreeError::NotBlockStart`] when it points inside a block or into a span's tail,
    /// [`XmfreeError::NotAllocated`] when the block is free (a double free),
    /// [`XmfreeError::StillPinned`] when the block is pinned. Nothing changes then.
    ///
    /// # Safety
    /// If `ptr` is the start of a live block of this heap, the caller owns that block and
    /// gives it up: it was handed to the caller by [`allocate`](Heap::allocate) (or passed
    /// on to it with the duty to free it), nothing else frees it (a block a `Box` or a
    /// collection holds through the [`Allocator`](allocator_api2::alloc::Allocator)
    /// implementation is theirs to free), and nothing reads or writes it once this call
    /// has returned `Ok`. Any other pointer (outside the heap, inside a block, to a free
    /// block) is refused with an error and changes nothing: passing one is sound.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
        if self.free_small_fast(ptr.as_ptr() as usize).is_some() {
            return Ok(());
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.free_general(ptr) }
    }

    /// [`free`](Heap::free) when the common case does not hold (or a check failed: this
    /// path checks again and names the error).
    ///
    /// # Safety
    /// As [`free`](Heap::free).
    #[inline(never)]
    unsafe fn free_general(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
        let addr = ptr.as_ptr() as usize;
        let (map, id, d, shard, mut st) = self.locate(addr)?;
        let (index, k) = self.block_at(d, addr)?;
        if !self.pinned {
            let pins = self.pin_count(d, addr);
            if pins > 0 {
                return Err(XmfreeError::StillPinned(VirtAddr::new(addr), pins));
            }
        }
        match d.kind.load(Relaxed) {
            KIND_LARGE => {
                // Uncounted and released under the shard's lock, for the same reason.
                self.shards[shard].count(d.pages.load(Relaxed) as usize * PAGE_SIZE, false);
                self.release_run(map, id);
                drop(st);
                return Ok(());
            }
            KIND_ARENA => {
                self.free_fit(map, id, d, index, shard, &mut st);
                return Ok(());
            }
            _ => {}
        }
        if k > 1 {
            let mut merges = self.merges.lock();
            if let Some(e) = merges.entries.iter_mut().find(|e| e.0 == addr && e.1 > 0) {
                *e = (0, 0);
            }
            d.merged.store(d.merged.load(Relaxed) - 1, Relaxed);
        }
        let class = d.class.load(Relaxed) as usize;
        let blocks = CLASSES[class].blocks;
        for i in index..index + k {
            let w = i / 64;
            d.bitmap[w].store(d.bitmap[w].load(Relaxed) & !(1 << (i % 64)), Relaxed);
        }
        let w = index / 64;
        if (w as u8) < d.hint.load(Relaxed) {
            d.hint.store(w as u8, Relaxed);
        }
        let used = d.used.load(Relaxed);
        d.used.store(used - k as u32, Relaxed);
        self.shards[shard].count(k * CLASSES[class].size as usize, false);
        let st = &mut *st;
        let lists = &mut st.classes[class];
        if used == blocks {
            self.push(lists, id);
        }
        if used == k as u32 && !lists.keeps_emptied_head(id) {
            self.unlink(lists, id);
            // An emptied head is the class's one empty span kept whatever the pages: it
            // joins the empty list as that one, and this span counts as a further one.
            if lists.empties == 0
                && let Some(head) = self.desc(lists.partial)
                && head.used.load(Relaxed) == 0
            {
                let h = lists.partial;
                self.unlink(lists, h);
                head.next.store(lists.empty, Relaxed);
                lists.empty = h;
                lists.empties = 1;
            }
            let pages = CLASSES[class].pages as usize;
            if lists.empties == 0 {
                d.next.store(lists.empty, Relaxed);
                lists.empty = id;
                lists.empties = 1;
            } else if lists.empties < EMPTY_KEEP && st.empty_pages + pages <= EMPTY_PAGES_KEEP {
                d.next.store(lists.empty, Relaxed);
                lists.empty = id;
                lists.empties += 1;
                st.empty_pages += pages;
            } else {
                self.release_run(map, id);
            }
        }
        Ok(())
    }

    /// The block at `ptr`: its start, usable size, alignment and pins.
    ///
    /// # Errors
    /// As [`free`](Heap::free), except `StillPinned`.
    pub fn block(&self, ptr: NonNull<u8>) -> Result<BlockInfo, XmfreeError> {
        let addr = ptr.as_ptr() as usize;
        let (_, _, d, _, _st) = self.locate(addr)?;
        let (index, k) = self.block_at(d, addr)?;
        let kind = d.kind.load(Relaxed);
        let (usable, align_log2) = if kind == KIND_LARGE {
            (d.pages.load(Relaxed) as usize * PAGE_SIZE, u32::from(d.align_log2.load(Relaxed)).max(PAGE_SHIFT))
        } else if kind == KIND_ARENA {
            // SAFETY: `d` is live (`locate` checked it) and its shard's lock is held (`_st`).
            let granules = unsafe { arena_view(self.source.base_ptr(), d) }.block_granules(index);
            (granules * GRANULE, addr.trailing_zeros().min(PAGE_SHIFT))
        } else {
            // A block sits at a multiple of its size, or (taken for an aligned request) at
            // an offset aligned to more: its address tells.
            let size = d.size.load(Relaxed);
            (size * k, size.trailing_zeros().max(addr.trailing_zeros()).min(PAGE_SHIFT))
        };
        Ok(BlockInfo { start: ptr, usable, align_log2, pins: self.pin_count(d, addr) })
    }

    /// Whether `ptr` lies in a page this heap holds (spans or large blocks).
    #[inline]
    pub fn owns(&self, ptr: NonNull<u8>) -> bool {
        let addr = ptr.as_ptr() as usize;
        self.page_map().is_some_and(|m| {
            addr.checked_sub(m.base)
                .and_then(|o| m.entries.get(o >> PAGE_SHIFT))
                .is_some_and(|e| e.load(Acquire) != NONE)
        })
    }
}

impl<P: PageSource, C, R: RelaxStrategy> Heap<P, C, R> {
    /// A pointer to `addr` (inside the source's range), with the provenance of the memory
    /// the source hands out. Compiles to the address itself.
    #[inline]
    fn ptr(&self, addr: usize) -> *mut u8 {
        self.source.base_ptr().with_addr(addr)
    }

    /// Gives every page (live blocks, spans, metadata) back to the page source and leaves
    /// the heap uninitialised-like: every later call fails or reports `NotOwned`.
    ///
    /// # Safety
    /// No block of the heap is used any more, and no other thread uses the heap during or
    /// after the call.
    pub unsafe fn release_all(&mut self) {
        let Some(map) = self.map.get() else { return };
        if map.own_pages == 0 {
            return;
        }
        let fresh = self.pool.get_mut().fresh;
        for id in 1..fresh {
            let Some(d) = self.desc(id) else { continue };
            if d.kind.load(Relaxed) != KIND_FREE
                && let Some(mem) = NonNull::new(self.ptr(d.start.load(Relaxed)))
            {
                d.kind.store(KIND_FREE, Relaxed);
                // SAFETY: the run came from the source; nobody uses it (caller's contract).
                unsafe { self.source.free_pages(mem, PageCount::new(d.pages.load(Relaxed) as usize)) };
            }
        }
        for e in map.entries {
            e.store(NONE, Relaxed);
        }
        for (k, c) in self.chunks.iter_mut().enumerate() {
            if let Some(ptr) = NonNull::new(core::mem::replace(c.get_mut(), core::ptr::null_mut()).cast::<u8>()) {
                // SAFETY: the chunk's pages came from the source and no descriptor is read
                // any more (caller's contract; the slot was just cleared).
                unsafe { self.source.free_pages(ptr, chunk_pages(k)) };
            }
        }
        let map_ptr = NonNull::from(map.entries).cast::<u8>();
        let own = PageCount::new(map.own_pages);
        self.map = Once::new();
        // SAFETY: the page map's pages came from the source; the map was just forgotten.
        unsafe { self.source.free_pages(map_ptr, own) };
        *self.pool.get_mut() = Pool { free_head: NONE, fresh: 1 };
        self.chunk_count.store(0, Relaxed);
        for s in &mut self.shards {
            let st = s.state.get_mut();
            if let Some((pool, bytes)) = st.fit.pool() {
                // SAFETY: the index's pool came from the source; the index is reset below.
                unsafe { self.source.free_pages(pool, page_count(bytes)) };
            }
            *st = ShardState::EMPTY;
            *s.in_use.get_mut() = 0;
        }
        self.span_max = AtomicUsize::new(self.fit_policy.span_max());
        *self.pins.get_mut() = PinTable { entries: [(0, 0); MAX_PINNED_BLOCKS] };
        *self.merges.get_mut() = MergeTable { entries: [(0, 0); MAX_MERGED_BLOCKS] };
    }
}
