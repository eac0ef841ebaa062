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
//! Placement: a heap places by size class (fast) or packs (exact fit in arenas for
//! requests above 256 B, and arena fragments for smaller ones); [`Placement::Adaptive`],
//! the default, switches between the two as the page source's headroom shrinks and grows.
//!
//! Scalability: spans belong to one of [`SHARDS`] shards, each with its own lock and its
//! own per-class lists; a thread allocates from the shard its [`CpuId`] names, and a free
//! locks the shard that owns the span. Only span creation and release reach the page
//! source and the descriptor pool, which have their own locks.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use memkit_types::{Order, PAGE_SHIFT, PAGE_SIZE, PageCount, VirtAddr};
use spin::{Mutex, Once};

use crate::arena::{Arena, ENTRY_BYTES, FitIndex, GRANULE, GRANULE_SHIFT, MAX_ARENA_PAGES, pages_for};
use crate::class::{CLASS_COUNT, CLASSES, MAX_BLOCKS, MAX_SMALL, class_for};
use crate::error::{PinError, UnpinError, XmallocError, XmfreeError};
use crate::source::PageSource;

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
/// does not sit on spans of large classes: a span of the largest class is 45 pages).
const EMPTY_PAGES_KEEP: usize = 256;
/// Empty arenas kept per shard (so that arenas do not bounce with the page source).
const EMPTY_ARENAS_KEEP: usize = 4;
const KIND_FREE: u8 = 0;
const KIND_SMALL: u8 = 1;
const KIND_LARGE: u8 = 2;
const KIND_ARENA: u8 = 3;
const BITMAP_WORDS: usize = MAX_BLOCKS / 64;
/// In a packing heap, requests whose class is larger than this (and at most the largest
/// class) take a block of their exact size (in 64-byte granules) from an arena; smaller
/// ones an arena fragment that holds them, else a class block of a span.
const EXACT_FIT_ABOVE: usize = 256;
/// Pages of an arena when the page source has them (fewer when it is short).
const ARENA_PAGES: usize = 64;
/// A packing heap serves requests of classes at least this large from arena fragments
/// (free blocks under 16 granules, left by splits and alignment, which no request above
/// [`EXACT_FIT_ABOVE`] can use) when it has some.
const FRAGMENT_MIN: usize = 64;
const _: () = assert!(ARENA_PAGES <= MAX_ARENA_PAGES);

/// Where a heap places requests up to the largest size class (32 KiB); larger ones always
/// take whole pages. Chosen when the heap is made ([`Heap::with_placement`]).
///
/// Usable share of a 16 MiB heap at its first failure in the benchmark's random fill (12
/// seeds, mean and lowest): size classes 91.4 % / 90.5 %, exact fit 97.3 % / 96.6 %,
/// adaptive 95.7 % / 95.0 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Placement {
    /// A block of the request's size class (8 classes per doubling) from a span: the
    /// fastest placement; rounding up to the class (about 6.5 % of the heap) and partly
    /// used spans are what it gives up.
    SizeClasses,
    /// Packs, always: a request above 256 B takes a block of its size rounded up to 64
    /// bytes from an arena (a two-level segregated fit with immediate merging of free
    /// neighbours, see `arena`); a smaller one an arena fragment that holds it, else a
    /// class block. The most usable placement, at about half the speed of size classes.
    ExactFit,
    /// [`SizeClasses`](Placement::SizeClasses) while the page source has room,
    /// [`ExactFit`](Placement::ExactFit) once it runs short: when the source's free memory
    /// falls below [`PACK_HEADROOM`] times the bytes the heap has in use
    /// ([`Heap::bytes_in_use`]), rounding to classes would cost a share of what is left,
    /// so the heap packs; it places by class again when the headroom comes back. The heap
    /// looks each time it takes or gives back a run of pages. Blocks keep the placement
    /// they were made with (a free finds either kind); packing, it still fills the holes
    /// of existing spans before it makes arena blocks of their class.
    ///
    /// Blocks placed by class before the switch keep their rounding, which is why this
    /// keeps less of a full heap usable than [`ExactFit`](Placement::ExactFit).
    #[default]
    Adaptive,
}

/// [`Placement::Adaptive`] packs (places by exact fit) while the page source has less
/// free memory than this many times the bytes the heap has in use.
pub const PACK_HEADROOM: usize = 4;

impl Placement {
    /// The largest class size a span serves at first: requests of larger classes go to
    /// arenas.
    const fn span_max(self) -> usize {
        match self {
            Placement::SizeClasses | Placement::Adaptive => MAX_SMALL,
            Placement::ExactFit => EXACT_FIT_ABOVE,
        }
    }
}

/// Which shard the calling thread should use: a CPU number, a thread number, any small
/// integer that differs between threads running at the same time.
pub trait CpuId {
    /// The current CPU (or thread) number; any value, it is taken modulo [`SHARDS`].
    fn current(&self) -> usize;
}

/// A [`CpuId`] for a single CPU: every thread uses shard 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleCpu;

impl CpuId for SingleCpu {
    #[inline]
    fn current(&self) -> usize {
        0
    }
}

impl<C: CpuId + ?Sized> CpuId for &C {
    #[inline]
    fn current(&self) -> usize {
        (**self).current()
    }
}

/// The out-of-band record of one span, arena or large block. All fields are atomics so
/// that a racing reader never sees torn memory; writers hold the owning shard's lock (or
/// the pool's lock for free descriptors) and use plain loads and stores.
#[repr(C, align(128))]
struct Descriptor {
    /// Set bit = block allocated; bits at and beyond the span's block count are set.
    bitmap: [AtomicU64; BITMAP_WORDS],
    start: AtomicUsize,
    /// Block size (small) or requested size (large).
    size: AtomicUsize,
    pages: AtomicU32,
    /// Blocks allocated (spans; 1 for a large block; an arena counts in its header).
    used: AtomicU32,
    prev: AtomicU32,
    next: AtomicU32,
    /// Blocks of this span or arena in the pin table.
    pinned: AtomicU32,
    /// Merged blocks of this span in the merge table.
    merged: AtomicU32,
    kind: AtomicU8,
    class: AtomicU8,
    shard: AtomicU8,
    /// First bitmap word that may have a clear bit.
    hint: AtomicU8,
    /// Large blocks: the alignment asked for.
    align_log2: AtomicU8,
}

/// The chunk of descriptor index `i` (its id less one) and its slot there.
#[inline]
const fn chunk_slot(i: usize) -> (usize, usize) {
    let k = (i / FIRST_CHUNK + 1).ilog2() as usize;
    (k, i - FIRST_CHUNK * ((1 << k) - 1))
}

/// Pages of chunk `k`.
fn chunk_pages(k: usize) -> PageCount {
    page_count((FIRST_CHUNK << k) * size_of::<Descriptor>())
}

#[derive(Clone, Copy)]
struct ClassLists {
    /// Spans with at least one allocated and one free block (doubly linked).
    partial: u32,
    /// Empty spans kept (up to [`EMPTY_KEEP`], singly linked by `next`) so that a class
    /// does not bounce spans with the page source.
    empty: u32,
    empties: u32,
}

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
}

impl ShardState {
    const EMPTY: ShardState = ShardState {
        classes: [ClassLists { partial: NONE, empty: NONE, empties: 0 }; CLASS_COUNT],
        fit: FitIndex::EMPTY,
        kept_arenas: [NONE; EMPTY_ARENAS_KEEP],
        empty_arenas: 0,
        empty_pages: 0,
    };
}

#[repr(align(128))]
struct Shard {
    state: Mutex<ShardState>,
    /// Bytes of the shard's live blocks (usable sizes), for [`Placement::Adaptive`];
    /// written only under the lock, read by anyone.
    in_use: AtomicUsize,
}

impl Shard {
    /// Counts `bytes` more (`grow`) or fewer in use; the caller holds the lock.
    #[inline]
    fn count(&self, bytes: usize, grow: bool) {
        let v = self.in_use.load(Relaxed);
        self.in_use.store(if grow { v + bytes } else { v - bytes }, Relaxed);
    }
}

struct Pool {
    free_head: u32,
    /// Ids below this one have been handed out at least once.
    fresh: u32,
}

struct PinTable {
    entries: [(usize, u32); MAX_PINNED_BLOCKS],
}

/// Merged blocks: (first block's address, blocks merged), `(0, 0)` when unused.
struct MergeTable {
    entries: [(usize, u32); MAX_MERGED_BLOCKS],
}

struct PageMap {
    base: usize,
    entries: &'static [AtomicU32],
    own_pages: usize,
}

/// Where a merged block may be taken: blocks `first .. first + blocks` of span `id`, of
/// `class`, in `shard`.
#[derive(Debug, Clone, Copy)]
struct MergeSite {
    shard: usize,
    class: usize,
    id: u32,
    first: usize,
    blocks: usize,
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
    /// Spans and large blocks taken from the page source since the heap was created.
    pub runs_created: usize,
    /// Times a [`Placement::Adaptive`] heap started packing.
    pub packings: usize,
    /// Times a [`Placement::Adaptive`] heap went back to placing by size class.
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
    /// Cached empty spans and arenas given back by [`Heap::trim`].
    pub trimmed_runs: usize,
}

/// The cumulative counters of [`HeapStats`], bumped on cold paths only.
struct PathCounters {
    runs_created: AtomicUsize,
    packings: AtomicUsize,
    unpackings: AtomicUsize,
    dry_requests: AtomicUsize,
    larger_class_blocks: AtomicUsize,
    merged_blocks: AtomicUsize,
    arenas_made: AtomicUsize,
    arenas_released: AtomicUsize,
    span_reuses: AtomicUsize,
    trimmed_runs: AtomicUsize,
}

impl PathCounters {
    const fn new() -> PathCounters {
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
        }
    }

    #[inline]
    fn bump(counter: &AtomicUsize) {
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
    }
}

/// One backing heap over a page source `P`, sharded by `C`.
///
/// Create it with [`Heap::new`] (a `const fn`, so it can be a `static`) and make it usable
/// with [`Heap::init`]; until then every allocation fails with
/// [`XmallocError::NotInitialised`].
pub struct Heap<P, C = SingleCpu> {
    source: P,
    cpu: C,
    pinned: bool,
    placement: Placement,
    /// Requests of classes larger than this (up to [`MAX_SMALL`]) go to arenas: fixed by
    /// the placement, or moved by [`Placement::Adaptive`] (see [`Heap::adapt`]).
    span_max: AtomicUsize,
    map: Once<PageMap>,
    shards: [Shard; SHARDS],
    pool: Mutex<Pool>,
    /// Descriptor chunks, each handed out once and kept until [`Heap::release_all`].
    chunks: [Once<&'static [Descriptor]>; MAX_CHUNKS],
    chunk_count: AtomicUsize,
    counters: PathCounters,
    pins: Mutex<PinTable>,
    merges: Mutex<MergeTable>,
}

impl<P, C> fmt::Debug for Heap<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("pinned", &self.pinned)
            .field("placement", &self.placement)
            .field("initialised", &self.map.is_completed())
            .finish_non_exhaustive()
    }
}

/// The arena of descriptor `d`, reached from `base` (the page source's
/// [`base_ptr`](PageSource::base_ptr)).
///
/// # Safety
/// `d` is a live arena (kind [`KIND_ARENA`]) and the caller holds the lock of its shard
/// while the view lives.
#[inline]
unsafe fn arena_view(base: *mut u8, d: &Descriptor) -> Arena {
    debug_assert_eq!(d.kind.load(Relaxed), KIND_ARENA);
    let start = base.with_addr(d.start.load(Relaxed));
    // SAFETY: a live arena's pages are the heap's, set up by `Arena::init`; the lock is
    // the caller's contract.
    unsafe { Arena::new(start, d.pages.load(Relaxed) as usize) }
}

fn page_count(bytes: usize) -> PageCount {
    PageCount::new(bytes.div_ceil(PAGE_SIZE))
}

impl<P: PageSource, C: CpuId> Heap<P, C> {
    /// An uninitialised heap with the default [`Placement`]. `pinned` marks a heap whose
    /// memory is always pinned (the pinned heaps): [`unpin`](Heap::unpin) of its memory is
    /// an error.
    pub const fn new(source: P, cpu: C, pinned: bool) -> Self {
        Self::with_placement(source, cpu, pinned, Placement::Adaptive)
    }

    /// An uninitialised heap placing requests by `placement`; otherwise as
    /// [`new`](Heap::new).
    pub const fn with_placement(source: P, cpu: C, pinned: bool, placement: Placement) -> Self {
        Heap {
            source,
            cpu,
            pinned,
            placement,
            span_max: AtomicUsize::new(placement.span_max()),
            map: Once::new(),
            shards: [const { Shard { state: Mutex::new(ShardState::EMPTY), in_use: AtomicUsize::new(0) } }; SHARDS],
            pool: Mutex::new(Pool { free_head: NONE, fresh: 1 }),
            chunks: [const { Once::new() }; MAX_CHUNKS],
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
            // SAFETY: the source gave us `own` pages (at least `pages` u32s), page-aligned.
            unsafe { core::ptr::write_bytes(ptr, 0, pages.get()) };
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
    pub fn is_initialised(&self) -> bool {
        self.map.get().is_some_and(|m| m.own_pages > 0)
    }

    /// Whether this heap's memory is always pinned.
    pub fn is_pinned_heap(&self) -> bool {
        self.pinned
    }

    /// How this heap places requests.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The page source behind.
    pub fn source(&self) -> &P {
        &self.source
    }

    fn page_map(&self) -> Option<&PageMap> {
        self.map.get().filter(|m| m.own_pages > 0)
    }

    #[inline]
    fn desc(&self, id: u32) -> Option<&Descriptor> {
        let i = (id as usize).checked_sub(1)?;
        let (k, slot) = chunk_slot(i);
        self.chunks.get(k)?.get()?.get(slot)
    }

    /// The descriptor of an id this heap handed out (panics otherwise: an internal bug).
    #[inline]
    fn live(&self, id: u32) -> &Descriptor {
        match self.desc(id) {
            Some(d) => d,
            None => panic!("descriptor {id} was never allocated"),
        }
    }

    fn new_descriptor(&self) -> Option<u32> {
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
        if !self.chunks[chunk].is_completed() {
            let len = FIRST_CHUNK << chunk;
            let mem = self.source.allocate_pages(chunk_pages(chunk), Order::new(0))?;
            let ptr = mem.as_ptr().cast::<Descriptor>();
            // SAFETY: the source gave us enough page-aligned bytes for `len` descriptors;
            // all-zero atomics are valid descriptors.
            unsafe { core::ptr::write_bytes(ptr, 0, len) };
            // SAFETY: initialised above; kept until `release_all`, after which it is never used.
            let chunk_ref: &'static [Descriptor] = unsafe { core::slice::from_raw_parts(ptr, len) };
            self.chunks[chunk].call_once(|| chunk_ref);
            self.chunk_count.store(chunk + 1, Release);
        }
        pool.fresh += 1;
        Some(id)
    }

    fn release_descriptor(&self, id: u32) {
        let mut pool = self.pool.lock();
        self.live(id).next.store(pool.free_head, Relaxed);
        pool.free_head = id;
    }

    fn map_pages(&self, map: &PageMap, start: usize, pages: usize, id: u32) {
        let first = (start - map.base) >> PAGE_SHIFT;
        for e in &map.entries[first..first + pages] {
            e.store(id, Release);
        }
    }

    /// Takes pages for a span or a large block and records them under a new descriptor.
    fn new_run(&self, map: &PageMap, pages: usize, align_log2: u32) -> Option<(u32, usize)> {
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
    fn release_run(&self, map: &PageMap, id: u32) {
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

    /// Bytes of live blocks (their usable sizes), as last counted by each shard.
    pub fn bytes_in_use(&self) -> usize {
        self.shards.iter().map(|s| s.in_use.load(Relaxed)).sum::<usize>()
    }

    /// [`Placement::Adaptive`]: packs (arenas for requests above 256 B) while the page
    /// source has less than [`PACK_HEADROOM`] times the bytes in use free, else places
    /// by size class. Called whenever the heap takes or gives back a run.
    #[inline]
    fn adapt(&self) {
        if self.placement == Placement::Adaptive {
            let free = self.source.free_page_count().get().saturating_mul(PAGE_SIZE);
            let short = free < PACK_HEADROOM.saturating_mul(self.bytes_in_use());
            let was = self.span_max.swap(if short { EXACT_FIT_ABOVE } else { MAX_SMALL }, Relaxed);
            if short && was == MAX_SMALL {
                PathCounters::bump(&self.counters.packings);
            } else if !short && was == EXACT_FIT_ABOVE {
                PathCounters::bump(&self.counters.unpackings);
            }
        }
    }

    fn unlink(&self, lists: &mut ClassLists, id: u32) {
        let d = self.live(id);
        let (prev, next) = (d.prev.load(Relaxed), d.next.load(Relaxed));
        if prev == NONE {
            lists.partial = next;
        } else {
            self.live(prev).next.store(next, Relaxed);
        }
        if next != NONE {
            self.live(next).prev.store(prev, Relaxed);
        }
        d.prev.store(NONE, Relaxed);
        d.next.store(NONE, Relaxed);
    }

    fn push(&self, lists: &mut ClassLists, id: u32) {
        let d = self.live(id);
        d.prev.store(NONE, Relaxed);
        d.next.store(lists.partial, Relaxed);
        if lists.partial != NONE {
            self.live(lists.partial).prev.store(id, Relaxed);
        }
        lists.partial = id;
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
        let Some(map) = self.page_map() else { return Err(XmallocError::NotInitialised) };
        if align_log2 > MAX_ALIGN_LOG2 {
            return Err(XmallocError::BadAlignment(align_log2));
        }
        let align = 1usize << align_log2;
        if align <= PAGE_SIZE
            && let Some(class) = class_for(size, align)
        {
            let shard = self.cpu.current() % SHARDS;
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
                if span_max != self.placement.span_max()
                    && let Some(p) = self.allocate_small(map, shard, class, false)
                {
                    return Ok(p);
                }
                return self.allocate_fit(map, shard, size, class, align_log2);
            }
            if span_max < MAX_SMALL
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

    /// A block of `class` from a partial span of `shard`, else (if `fresh`) from an empty
    /// one.
    #[inline]
    fn allocate_small(&self, map: &PageMap, shard: usize, class: usize, fresh: bool) -> Option<NonNull<u8>> {
        let mut st = self.shards[shard].state.lock();
        let c = CLASSES[class];
        let id = if st.classes[class].partial != NONE {
            st.classes[class].partial
        } else if fresh {
            self.fresh_span(map, &mut st, shard, class)?
        } else {
            return None;
        };
        let lists = &mut st.classes[class];
        let d = self.live(id);
        let mut w = d.hint.load(Relaxed) as usize;
        loop {
            let v = d.bitmap[w].load(Relaxed);
            if v != u64::MAX {
                let bit = (!v).trailing_zeros() as usize;
                d.bitmap[w].store(v | 1 << bit, Relaxed);
                d.hint.store(w as u8, Relaxed);
                let used = d.used.load(Relaxed) + 1;
                d.used.store(used, Relaxed);
                if used == c.blocks {
                    self.unlink(lists, id);
                }
                self.shards[shard].count(c.size as usize, true);
                let addr = d.start.load(Relaxed) + (w * 64 + bit) * c.size as usize;
                return NonNull::new(self.ptr(addr));
            }
            w += 1;
            if w == BITMAP_WORDS {
                // The hint never passes a clear bit, and a listed span has one.
                panic!("span {id} is listed as partial but has no free block");
            }
        }
    }

    /// An empty span of `class` for `shard` (a cached one, else new pages), put on the
    /// partial list.
    fn fresh_span(&self, map: &PageMap, st: &mut ShardState, shard: usize, class: usize) -> Option<u32> {
        let c = CLASSES[class];
        let lists = &mut st.classes[class];
        let id = if lists.empty != NONE {
            let id = lists.empty;
            lists.empty = self.live(id).next.load(Relaxed);
            if lists.empties > 1 {
                st.empty_pages -= c.pages as usize;
            }
            lists.empties -= 1;
            PathCounters::bump(&self.counters.span_reuses);
            id
        } else {
            let (id, _) = self.new_run(map, c.pages as usize, PAGE_SHIFT)?;
            let d = self.live(id);
            for (w, word) in d.bitmap.iter().enumerate() {
                let first = w * 64;
                let valid = (c.blocks as usize).saturating_sub(first).min(64);
                word.store(if valid == 64 { 0 } else { !0u64 << valid }, Relaxed);
            }
            d.size.store(c.size as usize, Relaxed);
            d.class.store(class as u8, Relaxed);
            d.shard.store(shard as u8, Relaxed);
            d.kind.store(KIND_SMALL, Release);
            id
        };
        self.push(lists, id);
        Some(id)
    }

    /// A block of `class` (whose size is not a multiple of `align`) at an offset aligned to
    /// `align`: a free block at such an index in one of the first partial spans, else the
    /// first block of a fresh span (spans start on a page). This keeps an aligned request
    /// from rounding up to a class that is a multiple of its alignment.
    fn allocate_aligned(&self, map: &PageMap, shard: usize, class: usize, align: usize) -> Option<NonNull<u8>> {
        const SEARCH: usize = 8;
        let c = CLASSES[class];
        let stride = align >> (c.size.trailing_zeros().min(align.trailing_zeros()));
        let mut st = self.shards[shard].state.lock();
        let lists = &mut st.classes[class];
        let mut id = lists.partial;
        let mut searched = 0;
        while id != NONE && searched < SEARCH {
            if let Some(p) = self.take_at_stride(lists, id, stride) {
                return Some(p);
            }
            id = self.live(id).next.load(Relaxed);
            searched += 1;
        }
        let _ = map;
        None
    }

    /// A block for a request whose natural class is `natural` and whose alignment would
    /// round it up to class `class`: an aligned free block of the natural class, else of a
    /// power-of-two class between (more of their blocks are aligned), in listed spans.
    fn allocate_aligned_below(
        &self,
        map: &PageMap,
        shard: usize,
        natural: usize,
        class: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        if let Some(p) = self.allocate_aligned(map, shard, natural, align) {
            return Some(p);
        }
        let mut pow = (CLASSES[natural].size as usize).next_power_of_two();
        let span_max = self.span_max.load(Relaxed);
        while pow < CLASSES[class].size as usize && pow < align && pow <= span_max {
            if let Some(c) = class_for(pow, 1)
                && c != natural
                && let Some(p) = self.allocate_aligned(map, shard, c, align)
            {
                return Some(p);
            }
            pow *= 2;
        }
        None
    }

    /// A free block of span `id` (of `lists`' class) whose index is a multiple of `stride`.
    fn take_at_stride(&self, lists: &mut ClassLists, id: u32, stride: usize) -> Option<NonNull<u8>> {
        let d = self.live(id);
        let c = CLASSES[d.class.load(Relaxed) as usize];
        let index =
            (0..c.blocks as usize).step_by(stride).find(|&i| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 0)?;
        let w = index / 64;
        d.bitmap[w].store(d.bitmap[w].load(Relaxed) | 1 << (index % 64), Relaxed);
        let used = d.used.load(Relaxed) + 1;
        d.used.store(used, Relaxed);
        if used == c.blocks {
            self.unlink(lists, id);
        }
        // The caller holds the lock of the span's shard.
        self.shards[d.shard.load(Relaxed) as usize % SHARDS].count(c.size as usize, true);
        NonNull::new(self.ptr(d.start.load(Relaxed) + index * c.size as usize))
    }

    /// When the page source is dry: a free block of a larger class (of any shard), so that
    /// holes left in other classes' spans are used. A class whose size keeps the alignment
    /// serves any of its free blocks; any other class a free block at an aligned offset
    /// (every span's first block is page-aligned).
    #[cold]
    fn allocate_from_larger_class(
        &self,
        map: &PageMap,
        size: usize,
        class: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let first = class_for(size, 1).unwrap_or(class);
        // Every class may have spans (an adaptive heap made some before it packed).
        for (larger, c) in CLASSES.iter().enumerate().skip(first) {
            if larger == class {
                continue;
            }
            let block = c.size as usize;
            if block.is_multiple_of(align) {
                for shard in 0..SHARDS {
                    let has_free = {
                        let st = self.shards[shard].state.lock();
                        st.classes[larger].partial != NONE || st.classes[larger].empty != NONE
                    };
                    if has_free && let Some(p) = self.allocate_small(map, shard, larger, true) {
                        PathCounters::bump(&self.counters.larger_class_blocks);
                        return Some(p);
                    }
                }
            } else {
                // Blocks at multiples of `stride` start at multiples of `align`.
                let stride = align >> block.trailing_zeros().min(align.trailing_zeros());
                for shard in 0..SHARDS {
                    if let Some(p) = self.allocate_at_stride(shard, larger, stride) {
                        PathCounters::bump(&self.counters.larger_class_blocks);
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// A free block of a partial span of `class` in `shard` whose index is a multiple of
    /// `stride`.
    #[cold]
    fn allocate_at_stride(&self, shard: usize, class: usize, stride: usize) -> Option<NonNull<u8>> {
        let mut st = self.shards[shard].state.lock();
        let lists = &mut st.classes[class];
        let mut id = lists.partial;
        while id != NONE {
            if let Some(p) = self.take_at_stride(lists, id, stride) {
                return Some(p);
            }
            id = self.live(id).next.load(Relaxed);
        }
        None
    }

    /// When the page source is dry: consecutive free blocks of one span, taken as one
    /// block and recorded in the merge table (the span's bitmap marks each of them), in the
    /// span and class that waste the least.
    #[cold]
    fn allocate_merged(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let found = self.find_merge(size, align)?;
        self.take_merge(found)
    }

    /// The best place for a merged block of `size` bytes aligned to `align`, found shard
    /// by shard; the shards' locks are not held across the search, so the caller re-checks
    /// it under the lock ([`take_merge`](Heap::take_merge)).
    fn find_merge(&self, size: usize, align: usize) -> Option<MergeSite> {
        // (waste, site)
        let mut best: Option<(usize, MergeSite)> = None;
        for shard in 0..SHARDS {
            let st = self.shards[shard].state.lock();
            for (class, lists) in st.classes.iter().enumerate() {
                let c = CLASSES[class];
                let bsize = c.size as usize;
                let k = size.div_ceil(bsize).max(2);
                if k > c.blocks as usize || best.is_some_and(|b| b.0 <= k * bsize - size) {
                    continue;
                }
                let mut id = lists.partial;
                while id != NONE {
                    let d = self.live(id);
                    let free = |i: usize| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 0;
                    let mut run = 0;
                    for i in 0..c.blocks as usize {
                        run = if free(i) { run + 1 } else { 0 };
                        if run >= k && ((i + 1 - k) * bsize).is_multiple_of(align) {
                            let site = MergeSite { shard, class, id, first: i + 1 - k, blocks: k };
                            best = Some((k * bsize - size, site));
                            break;
                        }
                    }
                    if best.is_some_and(|b| b.1.id == id) {
                        break;
                    }
                    id = d.next.load(Relaxed);
                }
            }
        }
        best.map(|b| b.1)
    }

    /// Takes the merged block `site` names, if it is still free in a partial span of its
    /// class and shard.
    fn take_merge(&self, site: MergeSite) -> Option<NonNull<u8>> {
        let MergeSite { shard, class, id, first, blocks: k } = site;
        // Locks in the order a free takes them: the shard, then the merge table.
        let mut st = self.shards[shard].state.lock();
        let mut merges = self.merges.lock();
        let slot = merges.entries.iter().position(|e| e.1 == 0)?;
        let d = self.live(id);
        let c = CLASSES[class];
        // Re-check under the lock: since the search, other threads may have taken blocks of
        // the span, or freed its last one (it is then a cached empty span, linked into the
        // class's empty list, or given back and its descriptor made anew). Only a span on
        // its class's partial list (some blocks allocated) may take a merged block: a cached
        // empty span would be given back by `trim` with the block live.
        let used = d.used.load(Relaxed);
        if d.kind.load(Relaxed) != KIND_SMALL
            || d.class.load(Relaxed) as usize != class
            || d.shard.load(Relaxed) as usize != shard
            || used == 0
            || (first..first + k).any(|i| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 1)
        {
            return None;
        }
        for i in first..first + k {
            d.bitmap[i / 64].store(d.bitmap[i / 64].load(Relaxed) | 1 << (i % 64), Relaxed);
        }
        let used = used + k as u32;
        d.used.store(used, Relaxed);
        if used == c.blocks {
            self.unlink(&mut st.classes[class], id);
        }
        let addr = d.start.load(Relaxed) + first * c.size as usize;
        merges.entries[slot] = (addr, k as u32);
        self.shards[shard].count(k * c.size as usize, true);
        d.merged.store(d.merged.load(Relaxed) + 1, Relaxed);
        PathCounters::bump(&self.counters.merged_blocks);
        NonNull::new(self.ptr(addr))
    }

    /// Checks that `addr` is a live block start of span or large block `d` (whose shard
    /// lock the caller holds); returns its index and the span blocks it takes (more than
    /// one for a merged block).
    fn block_at(&self, d: &Descriptor, addr: usize) -> Result<(usize, usize), XmfreeError> {
        let index = self.block_index(d, addr)?;
        if d.merged.load(Relaxed) == 0 {
            return Ok((index, 1));
        }
        let (size, span) = (d.size.load(Relaxed), d.start.load(Relaxed));
        let span_end = span + d.pages.load(Relaxed) as usize * PAGE_SIZE;
        let merges = self.merges.lock();
        for &(start, k) in merges.entries.iter().filter(|e| e.1 > 0 && (span..span_end).contains(&e.0)) {
            if start == addr {
                return Ok((index, k as usize));
            }
            if addr > start && addr < start + k as usize * size {
                return Err(XmfreeError::NotBlockStart(VirtAddr::new(addr)));
            }
        }
        Ok((index, 1))
    }

    /// A block of `size` bytes aligned to 2^`align_log2` (at most a page; its class is
    /// `class`) from the arenas of `shard`, else from a new arena; when the page source is
    /// dry, from the arenas of any shard, aligned holes of class spans, whole pages, or
    /// merged blocks of a span.
    #[inline]
    fn allocate_fit(
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
        self.fit_entries(st);
        let granules = size.max(1).div_ceil(GRANULE);
        let align = (align >> GRANULE_SHIFT).max(1);
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
    fn allocate_fragment(&self, shard: usize, size: usize, align: usize) -> Option<NonNull<u8>> {
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
    fn fit_entries(&self, st: &mut ShardState) {
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
        self.take_fit(shard, st, size, align)
    }

    /// When the page source is dry: a block from the arenas of any shard.
    #[cold]
    fn fit_from_any_shard(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
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
    fn free_fit(&self, map: &PageMap, id: u32, d: &Descriptor, g: usize, shard: usize, st: &mut ShardState) {
        // SAFETY: `d` is a live arena of the shard whose lock is held (`st`).
        let arena = unsafe { arena_view(self.source.base_ptr(), d) };
        self.fit_entries(st);
        let (used, granules) = st.fit.free(&arena, g);
        self.shards[shard].count(granules * GRANULE, false);
        if used == 0 {
            if st.empty_arenas < EMPTY_ARENAS_KEEP {
                st.kept_arenas[st.empty_arenas] = id;
                st.empty_arenas += 1;
            } else {
                st.fit.remove_arena(&arena);
                self.release_run(map, id);
                PathCounters::bump(&self.counters.arenas_released);
            }
        }
    }

    fn allocate_large(&self, map: &PageMap, size: usize, align_log2: u32) -> Option<NonNull<u8>> {
        let pages = size.max(1).div_ceil(PAGE_SIZE);
        let shard = self.cpu.current() % SHARDS;
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

    /// Gives every cached empty span and arena back to the page source.
    pub fn trim(&self) {
        let Some(map) = self.page_map() else { return };
        for shard in &self.shards {
            let mut st = shard.state.lock();
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
    fn locate(
        &self,
        addr: usize,
    ) -> Result<(&PageMap, u32, &Descriptor, usize, spin::MutexGuard<'_, ShardState>), XmfreeError> {
        let not_owned = XmfreeError::NotOwned(VirtAddr::new(addr));
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

    fn pin_count(&self, d: &Descriptor, addr: usize) -> u32 {
        if d.pinned.load(Relaxed) == 0 {
            return 0;
        }
        self.pins.lock().entries.iter().find(|e| e.0 == addr && e.1 > 0).map_or(0, |e| e.1)
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
        if used == k as u32 {
            self.unlink(lists, id);
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
    pub fn owns(&self, ptr: NonNull<u8>) -> bool {
        let addr = ptr.as_ptr() as usize;
        self.page_map().is_some_and(|m| {
            addr.checked_sub(m.base)
                .and_then(|o| m.entries.get(o >> PAGE_SHIFT))
                .is_some_and(|e| e.load(Acquire) != NONE)
        })
    }

    /// Pins the block at `ptr` once more (pageable heaps); on a pinned heap its memory is
    /// always pinned and this does nothing.
    ///
    /// # Errors
    /// [`PinError::Invalid`] when `ptr` is not a live block start of this heap,
    /// [`PinError::NoMemory`] when [`MAX_PINNED_BLOCKS`] blocks are pinned already.
    pub fn pin(&self, ptr: NonNull<u8>) -> Result<u32, PinError> {
        let addr = ptr.as_ptr() as usize;
        let (_, _, d, _, _st) = self.locate(addr).map_err(PinError::Invalid)?;
        self.block_at(d, addr).map_err(PinError::Invalid)?;
        if self.pinned {
            return Ok(1);
        }
        let mut pins = self.pins.lock();
        if let Some(e) = pins.entries.iter_mut().find(|e| e.0 == addr && e.1 > 0) {
            e.1 = e.1.checked_add(1).ok_or(PinError::NoMemory(VirtAddr::new(addr)))?;
            return Ok(e.1);
        }
        let e = pins.entries.iter_mut().find(|e| e.1 == 0).ok_or(PinError::NoMemory(VirtAddr::new(addr)))?;
        *e = (addr, 1);
        d.pinned.store(d.pinned.load(Relaxed) + 1, Relaxed);
        Ok(1)
    }

    /// Unpins the block at `ptr` once; returns the pins left.
    ///
    /// # Errors
    /// [`UnpinError::Invalid`] when `ptr` is not a live block start of this heap,
    /// [`UnpinError::NotPinned`] when it is not pinned,
    /// [`UnpinError::PinnedHeap`] on a pinned heap (its memory must stay pinned).
    pub fn unpin(&self, ptr: NonNull<u8>) -> Result<u32, UnpinError> {
        let addr = ptr.as_ptr() as usize;
        let va = VirtAddr::new(addr);
        let (_, _, d, _, _st) = self.locate(addr).map_err(UnpinError::Invalid)?;
        self.block_at(d, addr).map_err(UnpinError::Invalid)?;
        if self.pinned {
            return Err(UnpinError::PinnedHeap(va));
        }
        let mut pins = self.pins.lock();
        let e = pins.entries.iter_mut().find(|e| e.0 == addr && e.1 > 0).ok_or(UnpinError::NotPinned(va))?;
        e.1 -= 1;
        if e.1 == 0 {
            *e = (0, 0);
            d.pinned.store(d.pinned.load(Relaxed) - 1, Relaxed);
            return Ok(0);
        }
        Ok(e.1)
    }

    /// Reallocates the block at `ptr` to `new_size` bytes with the alignment the block has
    /// (at least the one it was asked with). The block stays in place when its usable size
    /// already fits and it would not waste more than half.
    ///
    /// # Errors
    /// [`ReallocError::Free`](crate::ReallocError::Free) when `ptr` is not a live, unpinned
    /// block of this heap, [`ReallocError::Allocate`](crate::ReallocError::Allocate) when
    /// no new block can be had (the old block is kept then).
    ///
    /// # Safety
    /// As for [`free`](Heap::free): if `ptr` is a live block, the caller owns it. Nobody
    /// reads or writes the block while it is copied, and nobody uses `ptr` after a
    /// successful call that moved it.
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Result<NonNull<u8>, crate::ReallocError> {
        let info = self.block(ptr).map_err(crate::ReallocError::Free)?;
        if info.pins > 0 && !self.pinned {
            return Err(crate::ReallocError::Free(XmfreeError::StillPinned(
                VirtAddr::new(ptr.as_ptr() as usize),
                info.pins,
            )));
        }
        if new_size <= info.usable && new_size.max(16) * 2 > info.usable {
            return Ok(ptr);
        }
        let new = self.allocate(new_size, info.align_log2).map_err(crate::ReallocError::Allocate)?;
        // SAFETY: both blocks are live and distinct, each at least `min(..)` bytes long;
        // nobody touches the old one meanwhile (caller's contract).
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), new_size.min(info.usable)) };
        // SAFETY: the caller owns the block and gives it up on success (the contract of
        // `realloc`); its contents are copied.
        unsafe { self.free(ptr) }.map_err(crate::ReallocError::Free)?;
        Ok(new)
    }

    fn for_each_live(&self, mut f: impl FnMut(u32, &Descriptor)) {
        let fresh = self.pool.lock().fresh;
        for id in 1..fresh {
            if let Some(d) = self.desc(id)
                && d.kind.load(Acquire) != KIND_FREE
            {
                f(id, d);
            }
        }
    }

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
        self.for_each_live(|_, d| {
            s.pages += d.pages.load(Relaxed) as usize;
            let kind = d.kind.load(Relaxed);
            if kind == KIND_LARGE {
                s.large_blocks += 1;
            } else if kind == KIND_ARENA {
                s.arenas += 1;
                // SAFETY: a live arena; every shard's lock is held.
                s.small_blocks += unsafe { arena_view(self.source.base_ptr(), d) }.used();
            } else {
                s.spans += 1;
                s.small_blocks += d.used.load(Relaxed) as usize;
            }
        });
        s
    }

    /// Checks every structural invariant; panics with a message naming the first broken one.
    ///
    /// # Invariants
    /// - every page map entry names a live descriptor whose pages cover that page, and
    ///   every page of a live descriptor maps back to it;
    /// - a span's `used` equals its allocated bits, its padding bits are set, and its hint
    ///   has no clear bit before it;
    /// - a span is in its class's partial list iff it has both free and allocated blocks,
    ///   is the class's cached empty span iff it has none allocated, and otherwise is full;
    ///   list links are consistent;
    /// - the pin table's entries name live blocks, counted in their span's `pinned`;
    /// - the merge table's entries name at least two allocated blocks of a class span,
    ///   counted in its `merged`, and no entry starts inside another;
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
                let g = &guards[shard];
                let kept = g.kept_arenas[..g.empty_arenas].iter().filter(|&&k| k == id).count();
                assert_eq!(kept, usize::from(used == 0), "empty arena {id} not kept (once), or kept in use");
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
            if used == 0 {
                let mut cur = lists.empty;
                while cur != NONE && cur != id {
                    cur = self.live(cur).next.load(Relaxed);
                }
                assert_eq!(cur, id, "empty span {id} is not cached");
                assert!(!in_partial);
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

impl<P: PageSource, C> Heap<P, C> {
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
            let (k, slot) = chunk_slot(id as usize - 1);
            let Some(chunk) = self.chunks[k].get() else { continue };
            let d = &chunk[slot];
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
            if let Some(chunk) = c.get() {
                let ptr = NonNull::from(*chunk).cast::<u8>();
                *c = Once::new();
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
        self.span_max = AtomicUsize::new(self.placement.span_max());
        *self.pins.get_mut() = PinTable { entries: [(0, 0); MAX_PINNED_BLOCKS] };
        *self.merges.get_mut() = MergeTable { entries: [(0, 0); MAX_MERGED_BLOCKS] };
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::source::RegionPageSource;

    fn heap(bytes: usize) -> Heap<RegionPageSource> {
        heap_placed(bytes, Placement::SizeClasses)
    }

    fn heap_placed(bytes: usize, placement: Placement) -> Heap<RegionPageSource> {
        let mem: &'static mut [u8] = vec![0u8; bytes].leak();
        // SAFETY: leaked memory, used only by this source, valid for 'static.
        let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
        let heap = Heap::with_placement(src, SingleCpu, false, placement);
        heap.init().unwrap();
        heap
    }

    impl<P: PageSource, C: CpuId> Heap<P, C> {
        /// [`Heap::free`] for the tests, which use blocks only as addresses (never through
        /// the `Allocator` implementation) and free each of their blocks once.
        fn free_owned(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
            // SAFETY: a test's live block is its own and unused after the free; any other
            // pointer is refused.
            unsafe { self.free(ptr) }
        }
    }

    fn addr(p: NonNull<u8>) -> usize {
        p.as_ptr().addr()
    }

    #[test]
    fn an_aligned_request_takes_an_aligned_block_of_its_own_class() {
        let h = heap(1 << 20);
        let first: Vec<_> = (0..3).map(|_| h.allocate(40, 0).unwrap()).collect();
        let size = h.block(first[0]).unwrap().usable;
        assert_eq!(size, 48);
        // Blocks 1 and 2 are 48 bytes apart; the next 64-aligned free one is block 4.
        let p = h.allocate(40, 6).unwrap();
        assert_eq!(addr(p), addr(first[0]) + 4 * size);
        let info = h.block(p).unwrap();
        assert_eq!(info.usable, size);
        assert!(info.align_log2 >= 6);
        h.check_invariants();
        // The next 40-byte block without alignment fills the gap before it.
        assert_eq!(addr(h.allocate(40, 0).unwrap()), addr(first[0]) + 3 * size);
        h.check_invariants();
    }

    /// The search for a merged block does not hold the shards' locks while it takes it;
    /// meanwhile another thread may free the span's last block, so that the span becomes
    /// a cached empty span (or goes back to the source). Taking the merged block from it
    /// then left a live block in a span `trim` gave back: frees of live blocks were
    /// refused and the merge table named pages of other runs.
    #[test]
    fn a_merged_block_is_not_taken_from_a_span_emptied_since_the_search() {
        let h = heap(256 << 10);
        let mut live = Vec::new();
        while let Ok(p) = h.allocate(1000, 0) {
            live.push(p);
        }
        let span_of = |p: NonNull<u8>| h.locate(addr(p)).map(|found| found.1).unwrap();
        let id = span_of(live[0]);
        let (mine, rest): (Vec<_>, Vec<_>) = live.into_iter().partition(|&p| span_of(p) == id);
        assert!(mine.len() >= 3);
        for &p in &mine[1..] {
            h.free_owned(p).unwrap();
        }
        let size = h.block(mine[0]).unwrap().usable;
        let site = h.find_merge(2 * size, 1).expect("two free neighbours");
        assert_eq!(site.id, id);
        // The span's last block is freed between the search and the taking.
        h.free_owned(mine[0]).unwrap();
        assert_eq!(h.take_merge(site), None);
        h.check_invariants();
        h.trim();
        h.check_invariants();
        for p in rest {
            h.free_owned(p).unwrap();
        }
        h.check_invariants();
        h.trim();
        assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
    }

    #[test]
    fn a_dry_heap_merges_neighbouring_free_blocks_of_a_span() {
        let h = heap(256 << 10);
        let mut live = Vec::new();
        while let Ok(p) = h.allocate(1000, 0) {
            live.push(p);
        }
        assert_eq!(h.source().free_page_count().get(), 0);
        let size = h.block(live[0]).unwrap().usable;
        // Two neighbours in one span, freed: a request for both is served from them.
        let i = (0..live.len()).find(|&i| live.contains(&NonNull::new(live[i].as_ptr().wrapping_add(size)).unwrap()));
        let first = live.swap_remove(i.unwrap());
        let second = NonNull::new(first.as_ptr().wrapping_add(size)).unwrap();
        live.retain(|&p| p != second);
        h.free_owned(first).unwrap();
        h.free_owned(second).unwrap();
        h.check_invariants();
        let p = h.allocate(size + 100, 0).unwrap();
        assert_eq!(p, first);
        h.check_invariants();
        let info = h.block(p).unwrap();
        assert_eq!(info.usable, 2 * size);
        // The second block is inside the merged one now.
        assert_eq!(h.free_owned(second), Err(XmfreeError::NotBlockStart(VirtAddr::new(addr(second)))));
        assert!(h.pin(second).is_err());
        assert_eq!(h.block(second), Err(XmfreeError::NotBlockStart(VirtAddr::new(addr(second)))));
        // SAFETY: the block is live and nobody else uses it.
        unsafe { p.as_ptr().write_bytes(0xa5, info.usable) };
        h.free_owned(p).unwrap();
        assert_eq!(h.free_owned(p), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(p)))));
        assert_eq!(h.free_owned(second), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(second)))));
        h.check_invariants();
        // Both halves serve single blocks again.
        let again = [h.allocate(1000, 0).unwrap(), h.allocate(1000, 0).unwrap()];
        assert!(again.contains(&first) && again.contains(&second));
        h.check_invariants();
        for p in live.into_iter().chain(again) {
            h.free_owned(p).unwrap();
        }
        h.check_invariants();
        assert_eq!(h.stats().small_blocks, 0);
    }

    #[test]
    fn a_dry_heap_serves_an_aligned_request_from_a_page_aligned_hole() {
        let h = heap(256 << 10);
        let mut live = Vec::new();
        while let Ok(p) = h.allocate(100, 0) {
            live.push(p);
        }
        assert_eq!(h.source().free_page_count().get(), 0);
        assert!(h.allocate(50, 12).is_err());
        h.check_invariants();
        // A span's first block starts a page: once free, it serves a page-aligned request.
        let i = live.iter().position(|p| addr(*p).is_multiple_of(PAGE_SIZE)).unwrap();
        let hole = live.swap_remove(i);
        h.free_owned(hole).unwrap();
        let p = h.allocate(50, 12).unwrap();
        assert_eq!(p, hole);
        assert_eq!(h.block(p).unwrap().align_log2, PAGE_SHIFT);
        h.check_invariants();
        for p in live {
            h.free_owned(p).unwrap();
        }
        h.free_owned(p).unwrap();
        h.check_invariants();
    }

    #[test]
    fn a_freed_arena_block_merges_with_both_neighbours() {
        let h = heap_placed(1 << 20, Placement::ExactFit);
        let blocks: Vec<_> = (0..4).map(|_| h.allocate(3000, 0).unwrap()).collect();
        let usable = h.block(blocks[0]).unwrap().usable;
        assert_eq!(usable, 3008);
        for w in blocks.windows(2) {
            assert_eq!(addr(w[1]), addr(w[0]) + usable);
        }
        assert_eq!(h.stats().arenas, 1);
        h.free_owned(blocks[0]).unwrap();
        h.free_owned(blocks[2]).unwrap();
        h.check_invariants();
        h.free_owned(blocks[1]).unwrap();
        h.check_invariants();
        // The three make one free block: a request for all of them takes the first's place.
        let p = h.allocate(3 * usable, 0).unwrap();
        assert_eq!(p, blocks[0]);
        assert_eq!(h.block(p).unwrap().usable, 3 * usable);
        h.check_invariants();
        h.free_owned(p).unwrap();
        h.free_owned(blocks[3]).unwrap();
        h.check_invariants();
        // The empty arena is kept until a trim gives it back.
        assert_eq!(h.stats().arenas, 1);
        h.trim();
        assert_eq!((h.stats().arenas, h.stats().pages), (0, 0));
        h.check_invariants();
    }

    #[test]
    fn a_shard_keeps_a_few_empty_arenas_until_a_trim() {
        let h = heap_placed(8 << 20, Placement::ExactFit);
        let big = 30 << 10;
        let mut blocks = Vec::new();
        while h.stats().arenas < EMPTY_ARENAS_KEEP + 2 {
            blocks.push(h.allocate(big, 0).unwrap());
        }
        for p in &blocks {
            h.free_owned(*p).unwrap();
            h.check_invariants();
        }
        assert_eq!(h.stats().arenas, EMPTY_ARENAS_KEEP);
        // A kept arena serves the next request and is no longer counted as empty.
        let p = h.allocate(big, 0).unwrap();
        h.check_invariants();
        assert_eq!(h.stats().arenas, EMPTY_ARENAS_KEEP);
        h.trim();
        assert_eq!(h.stats().arenas, 1);
        assert_eq!(h.block(p).unwrap().usable, big);
        h.free_owned(p).unwrap();
        h.check_invariants();
        h.trim();
        assert_eq!((h.stats().arenas, h.stats().pages), (0, 0));
        h.check_invariants();
    }

    #[test]
    fn a_bad_pointer_into_an_arena_changes_nothing() {
        let h = heap_placed(1 << 20, Placement::ExactFit);
        let p = h.allocate(5000, 0).unwrap();
        let q = h.allocate(2000, 6).unwrap();
        let before = h.stats();
        let arena_start = addr(p) & !(PAGE_SIZE - 1);
        let bad = |a: usize| NonNull::new(p.as_ptr().with_addr(a)).unwrap();
        for (a, want) in [
            (addr(p) + 64, XmfreeError::NotBlockStart(VirtAddr::new(addr(p) + 64))),
            (addr(p) + 8, XmfreeError::NotBlockStart(VirtAddr::new(addr(p) + 8))),
            (arena_start, XmfreeError::NotBlockStart(VirtAddr::new(arena_start))),
            (addr(q) + 2048, XmfreeError::NotAllocated(VirtAddr::new(addr(q) + 2048))),
        ] {
            assert_eq!(h.free_owned(bad(a)), Err(want));
            assert!(h.pin(bad(a)).is_err());
            assert_eq!(h.block(bad(a)), Err(want));
        }
        assert_eq!(h.stats(), before);
        h.check_invariants();
        assert_eq!(h.pin(q), Ok(1));
        assert_eq!(h.free_owned(q), Err(XmfreeError::StillPinned(VirtAddr::new(addr(q)), 1)));
        assert_eq!(h.unpin(q), Ok(0));
        h.free_owned(q).unwrap();
        assert_eq!(h.free_owned(q), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(q)))));
        h.free_owned(p).unwrap();
        assert_eq!(h.free_owned(p), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(p)))));
        h.check_invariants();
    }

    #[test]
    fn a_dry_heap_serves_from_a_free_range_of_an_arena() {
        let h = heap_placed(512 << 10, Placement::ExactFit);
        let mut live = Vec::new();
        while let Ok(p) = h.allocate(3000, 0) {
            live.push(p);
        }
        assert!(h.source().free_page_count().get() < 2);
        h.check_invariants();
        let usable = h.block(live[0]).unwrap().usable;
        let i = (1..live.len()).find(|&i| addr(live[i]) == addr(live[i - 1]) + usable).unwrap();
        let (first, second) = (live[i - 1], live[i]);
        live.retain(|&p| p != first && p != second);
        h.free_owned(second).unwrap();
        h.free_owned(first).unwrap();
        h.check_invariants();
        let p = h.allocate(2 * usable, 0).unwrap();
        assert_eq!(p, first);
        // A small request when no span can be had takes an arena's free range too.
        h.free_owned(p).unwrap();
        let mut small = Vec::new();
        while let Ok(q) = h.allocate(16, 0) {
            small.push(q);
        }
        h.check_invariants();
        assert!(small.iter().any(|&q| addr(q) >= addr(first) && addr(q) < addr(first) + 2 * usable));
        for q in small.into_iter().chain(live) {
            h.free_owned(q).unwrap();
        }
        h.check_invariants();
    }

    #[test]
    fn an_adaptive_heap_packs_when_its_source_runs_short_and_unpacks_when_it_recovers() {
        let h = heap_placed(4 << 20, Placement::Adaptive);
        // 3000 bytes: a 3072-byte class block in a span, 3008 bytes (47 granules) in an arena.
        let (size, class_block, fit_block) = (3000, 3072, 3008);
        let short = |h: &Heap<RegionPageSource>| {
            h.source().free_page_count().get() * PAGE_SIZE < PACK_HEADROOM * h.bytes_in_use()
        };
        let mut blocks = Vec::new();
        loop {
            let p = h.allocate(size, 0).unwrap();
            h.check_invariants();
            blocks.push(p);
            let usable = h.block(p).unwrap().usable;
            if usable == fit_block {
                break;
            }
            assert_eq!(usable, class_block);
            assert!(blocks.len() < 1000, "the heap never packed");
        }
        assert!(short(&h), "packed with room to spare");
        assert_eq!(h.stats().packings, 1);
        assert!(blocks.len() > 100, "packed too early: {} blocks", blocks.len());
        // Packed, the holes of the class's last span are still used before any arena.
        for _ in 0..20 {
            blocks.push(h.allocate(size, 0).unwrap());
            h.check_invariants();
        }
        assert_eq!(h.block(*blocks.last().unwrap()).unwrap().usable, fit_block);
        for p in blocks.drain(..) {
            h.free_owned(p).unwrap();
            h.check_invariants();
        }
        h.trim();
        assert!(!short(&h));
        let p = h.allocate(size, 0).unwrap();
        assert_eq!(h.block(p).unwrap().usable, class_block, "still packing after the heap emptied");
        h.free_owned(p).unwrap();
        h.check_invariants();
    }

    #[test]
    fn a_packing_heap_fills_arena_fragments_with_small_requests() {
        let h = heap_placed(1 << 20, Placement::ExactFit);
        // No fragment yet: a small request takes a class block of a span.
        let s = h.allocate(100, 0).unwrap();
        assert_eq!(h.stats().spans, 1);
        let a = h.allocate(2048, 0).unwrap();
        let b = h.allocate(2048, 0).unwrap();
        assert_eq!(addr(b), addr(a) + 2048);
        h.free_owned(a).unwrap();
        // 1100 bytes (18 granules) from a's 32: a fragment of 14 granules stays.
        let c = h.allocate(1100, 0).unwrap();
        assert_eq!(c, a);
        h.check_invariants();
        // A small request that fits in the fragment goes there, not to a span.
        let d = h.allocate(200, 6).unwrap();
        h.check_invariants();
        assert_eq!(addr(d), addr(c) + 1152);
        assert_eq!(h.block(d).unwrap().usable, 256);
        assert_eq!((h.stats().spans, h.stats().small_blocks), (1, 4));
        for p in [s, b, c, d] {
            h.free_owned(p).unwrap();
            h.check_invariants();
        }
        assert_eq!(h.stats().small_blocks, 0);
    }

    #[test]
    fn a_shard_keeps_one_empty_span_per_class_and_a_few_pages_more() {
        let h = heap(64 << 20);
        let sizes = [30_000, 25_000, 20_000];
        let mut blocks = Vec::new();
        let mut one_each = 0;
        for size in sizes {
            let c = CLASSES[class_for(size, 1).unwrap()];
            one_each += c.pages as usize;
            for _ in 0..5 * c.blocks {
                blocks.push(h.allocate(size, 0).unwrap());
            }
        }
        assert_eq!(h.stats().spans, 15);
        for p in blocks {
            h.free_owned(p).unwrap();
            h.check_invariants();
        }
        let st = h.stats();
        assert!(st.spans >= sizes.len(), "{st:?}");
        assert!(st.pages > one_each && st.pages <= one_each + EMPTY_PAGES_KEEP, "{st:?}");
        h.trim();
        assert_eq!(h.stats().pages, 0);
    }
}
