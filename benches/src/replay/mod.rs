//! Suite `replay`: malloc traces recorded from real programs (`benches/traces/`, recorded
//! by `tools/malloc-trace/record.sh`) replayed into memkit's default heap (a `Heap` on one
//! shard; the row `memkit exact-fit` always packs, the row `memkit cached` has a thread cache in
//! front, as the malloc family serves each thread), talc, rlsf, mimalloc and the system
//! allocator (glibc's malloc), in the same run.
//!
//! A trace is decoded first (untimed): each pointer the program saw becomes a slot, reused
//! once its block is freed, so that replaying is a walk over an array of operations
//! ([`Op`]). Every allocator then replays every trace, interleaved, for several rounds
//! (median per allocator); each block is touched (its first and last byte written) after
//! an allocation and a reallocation; the blocks still live at the end are freed untimed.
//! A multithreaded program's trace is replayed on one thread, in the order its calls were
//! recorded (the recorder takes one lock per call, so that order is one the program ran).
//!
//! Rows per trace:
//! - `<trace> ns/op`: nanoseconds per operation (malloc, free, realloc, calloc, memalign).
//! - `<trace> held % of peak live`: the most memory the allocator held at once over the peak
//!   of the bytes the program had live (lower is better, so a speedup below 1 is better
//!   for memkit). memkit: pages taken from its page source (metadata included); talc and
//!   rlsf, which manage one region: the highest block end reached in it (what a source
//!   growing on demand, as `sbrk`, would have to give). Not measured for mimalloc and the
//!   system allocator, which share the process with the benchmark.
//! - `<trace> smallest heap % of peak live`: the smallest region (1.1, 1.25, 1.5, 2, 3, 4
//!   times the peak live bytes, metadata included) in which the whole trace runs without a
//!   failed allocation (lower is better). The heaps of the other rows get 8 times the peak
//!   live bytes, at least 64 MiB.
//!
//! # Unsafe
//!
//! The replay hands raw memory to the heaps and touches the blocks they return: each heap
//! gets a fresh, zeroed region of its own that outlives it; a block is written within the
//! size it was allocated with and freed once, with that layout, to the allocator it came
//! from; the counting page source forwards its caller's arguments unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use memkit_heap::{FitPolicy, Heap, HeapStats, PageSource, RegionPageSource, SingleCpu, ThreadCache};
use memkit_types::{Order, PAGE_SIZE, PageCount, VirtAddr};

use crate::{MEMKIT, Options, Report};

mod trace;

pub use trace::{DecodeError, MAGIC, Op, Trace, decode, default_traces, load};

/// Region sizes tried for the smallest heap, as multiples of the peak live bytes.
const SURVIVAL: [f64; 6] = [1.1, 1.25, 1.5, 2.0, 3.0, 4.0];

/// A page source that counts the pages it has handed out, and the most at once.
#[derive(Debug)]
struct Counting<P> {
    inner: P,
    held: AtomicUsize,
    peak: AtomicUsize,
}

// SAFETY: forwards every call to a source that upholds the contract; counting changes
// nothing of what it hands out.
unsafe impl<P: PageSource> PageSource for Counting<P> {
    fn range(&self) -> (VirtAddr, PageCount) {
        self.inner.range()
    }
    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.inner.base_ptr()
    }
    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        let p = self.inner.allocate_pages(count, align)?;
        let held = self.held.fetch_add(count.get(), Ordering::Relaxed) + count.get();
        self.peak.fetch_max(held, Ordering::Relaxed);
        Some(p)
    }
    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        self.held.fetch_sub(count.get(), Ordering::Relaxed);
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { self.inner.free_pages(start, count) }
    }
    fn free_page_count(&self) -> PageCount {
        self.inner.free_page_count()
    }
    fn grow_pages(&self, start: NonNull<u8>, count: PageCount, extra: PageCount) -> bool {
        let grown = self.inner.grow_pages(start, count, extra);
        if grown {
            let held = self.held.fetch_add(extra.get(), Ordering::Relaxed) + extra.get();
            self.peak.fetch_max(held, Ordering::Relaxed);
        }
        grown
    }
}

/// A zeroed region of `bytes`, page-aligned, freed on drop (after the allocator over it).
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn new(bytes: usize) -> Self {
        let layout = Layout::from_size_align(bytes.next_multiple_of(PAGE_SIZE), PAGE_SIZE).expect("region layout");
        // SAFETY: non-zero size; zeroed so that every page is touched before measuring.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).expect("benchmark region");
        // SAFETY: the region is ours and `layout.size()` long: touch every page.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, layout.size()) };
        Region { ptr, layout }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the allocator over it is gone.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

type MemkitHeap = Heap<Counting<RegionPageSource>, SingleCpu>;

/// memkit's default heap with a thread cache in front, as the malloc family serves each
/// thread: a free of a small block keeps it for the next request of its class, which takes
/// it without a lock. For one thread only (the replay's).
struct CachedHeap {
    heap: MemkitHeap,
    cache: core::cell::UnsafeCell<ThreadCache>,
}

impl CachedHeap {
    /// The cache (the replay's one thread, one call at a time: no other reference to it).
    #[allow(clippy::mut_from_ref)]
    fn cache(&self) -> &mut ThreadCache {
        // SAFETY: `CachedHeap` is not `Sync`, its calls do not nest, and each takes this
        // reference for its own duration only.
        unsafe { &mut *self.cache.get() }
    }
}

// SAFETY: blocks come from the heap's `allocate_cached` (16-byte aligned) or its own
// `GlobalAlloc`; each is given back once through `free_cached`, which frees what it does
// not keep, or through the heap's `realloc`.
unsafe impl GlobalAlloc for CachedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= 16 {
            return self
                .heap
                .allocate_cached(self.cache(), layout.size())
                .map_or(core::ptr::null_mut(), NonNull::as_ptr);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { GlobalAlloc::alloc(&self.heap, layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller's contract: a live block of this heap, given up.
            let _ = unsafe { self.heap.free_cached(self.cache(), p) };
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { GlobalAlloc::alloc_zeroed(&self.heap, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on (a live block: not one in the cache).
        unsafe { GlobalAlloc::realloc(&self.heap, ptr, layout, new_size) }
    }
}

impl Drop for CachedHeap {
    fn drop(&mut self) {
        self.heap.flush(self.cache.get_mut());
    }
}

/// An allocator over a region of its own, or the process's own (mimalloc, the system's).
enum Contender {
    Memkit(Box<MemkitHeap>),
    MemkitCached(Box<CachedHeap>),
    Talc(Box<talc::TalcLock<spin::Mutex<()>, talc::source::Claim>>),
    Rlsf(Box<crate::heap::Rlsf>),
    Mimalloc,
    System,
}

/// A contender with its region; the region outlives the allocator (field order).
struct Arena {
    alloc: Contender,
    region: Option<Region>,
}

impl Arena {
    fn new(name: &str, bytes: usize) -> Self {
        let region = Region::new(bytes);
        let (ptr, len) = (region.ptr, region.layout.size());
        let alloc = match name {
            MEMKIT | MEMKIT_EXACT_FIT => {
                // SAFETY: the region is used by nobody else and outlives the heap (`Arena`).
                let inner = unsafe { RegionPageSource::new(ptr, len) }.expect("region");
                let source = Counting { inner, held: AtomicUsize::new(0), peak: AtomicUsize::new(0) };
                let placement = if name == MEMKIT { FitPolicy::default() } else { FitPolicy::ExactFit };
                let heap = Box::new(Heap::with_fit_policy(source, SingleCpu, false, placement));
                heap.init().expect("memkit heap init");
                Contender::Memkit(heap)
            }
            MEMKIT_CACHED => {
                // SAFETY: as above.
                let inner = unsafe { RegionPageSource::new(ptr, len) }.expect("region");
                let source = Counting { inner, held: AtomicUsize::new(0), peak: AtomicUsize::new(0) };
                let heap = Heap::with_fit_policy(source, SingleCpu, false, FitPolicy::default());
                heap.init().expect("memkit heap init");
                Contender::MemkitCached(Box::new(CachedHeap {
                    heap,
                    cache: core::cell::UnsafeCell::new(ThreadCache::new()),
                }))
            }
            "talc" => {
                // SAFETY: the region is used by nobody else and outlives the allocator (`Arena`).
                let claim = unsafe { talc::source::Claim::new(ptr.as_ptr(), len) };
                Contender::Talc(Box::new(talc::TalcLock::new(claim)))
            }
            "rlsf" => Contender::Rlsf(Box::new(crate::heap::Rlsf::over(ptr, len))),
            "mimalloc" => return Arena { alloc: Contender::Mimalloc, region: None },
            _ => return Arena { alloc: Contender::System, region: None },
        };
        Arena { alloc, region: Some(region) }
    }

    fn global(&self) -> &dyn GlobalAlloc {
        match &self.alloc {
            Contender::Memkit(h) => &**h,
            Contender::MemkitCached(h) => &**h,
            Contender::Talc(t) => &**t,
            Contender::Rlsf(r) => &**r,
            Contender::Mimalloc => &mimalloc::MiMalloc,
            Contender::System => &System,
        }
    }

    /// Bytes held at most: pages from the source (memkit), the highest block end in the
    /// region (talc, rlsf, from `high`), unknown for the others.
    fn held(&self, high: usize) -> Option<usize> {
        match &self.alloc {
            // The heap's pages, metadata included, all come from the counting source.
            Contender::Memkit(h) => Some(source_peak(h) * PAGE_SIZE),
            Contender::MemkitCached(h) => Some(source_peak(&h.heap) * PAGE_SIZE),
            Contender::Talc(_) | Contender::Rlsf(_) => {
                let base = self.region.as_ref().map_or(0, |r| r.ptr.as_ptr() as usize);
                Some(high.saturating_sub(base))
            }
            _ => None,
        }
    }
}

fn source_peak(h: &MemkitHeap) -> usize {
    h.source().peak.load(Ordering::Relaxed)
}

/// What a replay saw of reallocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Moves {
    /// Reallocations that moved the block.
    pub moved: usize,
    /// Bytes those moves copied (the smaller of the two sizes).
    pub copied: usize,
    /// The most bytes the allocator held at once, where the replay can tell (see
    /// `held % of peak live`; filled in by [`replay_one`]).
    pub held: Option<usize>,
}

/// Replays `trace` `rounds` times into a fresh `contender` (a name of the suite's rows:
/// `memkit`, `memkit exact-fit`, `talc`, `rlsf`, `mimalloc`, `system`) over a region of
/// `region_bytes` (0: the suite's size), for profiles of one allocator (`cargo run
/// --example replay_one`). Returns the last round's moves, or the index of the operation
/// that failed.
///
/// # Errors
/// The index of the first operation the allocator could not serve.
pub fn replay_one(contender: &str, trace: &Trace, rounds: usize, region_bytes: usize) -> Result<Moves, usize> {
    let bytes = if region_bytes == 0 { (trace.peak_live * 8).max(64 << 20) } else { region_bytes };
    let arena = Arena::new(contender, bytes);
    let mut live = vec![None; trace.slots];
    let mut moves = Moves::default();
    let mut high = 0;
    for _ in 0..rounds.max(1) {
        moves = replay(arena.global(), trace, &mut live, |start, size| high = high.max(start + size))?;
    }
    moves.held = arena.held(high);
    Ok(moves)
}

/// Replays `trace` once into memkit's default heap and returns the most bytes it held from
/// its page source at once, with the heap's statistics at that moment (where those pages
/// went: spans and the empty ones among them, arenas, large blocks, metadata, and the bytes
/// live in spans and arenas), for `replay_one ... peak`.
///
/// # Errors
/// The index of the first operation the heap could not serve.
pub fn peak_composition(trace: &Trace) -> Result<(usize, HeapStats), usize> {
    let arena = Arena::new(MEMKIT, (trace.peak_live * 8).max(64 << 20));
    let Contender::Memkit(heap) = &arena.alloc else { return Err(0) };
    let mut live = vec![None; trace.slots];
    let (mut most, mut then) = (0, HeapStats::default());
    replay(arena.global(), trace, &mut live, |_, _| {
        let held = source_peak(heap);
        if held > most {
            most = held;
            then = heap.stats();
        }
    })?;
    Ok((most * PAGE_SIZE, then))
}

/// Replays `trace` into `alloc`; `each` sees every block after it is placed (its start
/// and size). Returns what reallocations moved, or the index of the first operation that
/// failed, after freeing every block still live.
fn replay(
    alloc: &dyn GlobalAlloc,
    trace: &Trace,
    live: &mut [Option<(NonNull<u8>, Layout)>],
    mut each: impl FnMut(usize, usize),
) -> Result<Moves, usize> {
    let mut moves = Moves::default();
    let mut result = Ok(());
    for (i, op) in trace.ops.iter().enumerate() {
        match *op {
            Op::Alloc { slot, size, align_log2, zeroed } => {
                let Ok(layout) = Layout::from_size_align(size, 1 << align_log2) else {
                    result = Err(i);
                    break;
                };
                let p = if zeroed {
                    // SAFETY: a non-zero size (the decoder makes every size at least 1).
                    unsafe { alloc.alloc_zeroed(layout) }
                } else {
                    // SAFETY: as above.
                    unsafe { alloc.alloc(layout) }
                };
                let Some(p) = NonNull::new(p) else {
                    result = Err(i);
                    break;
                };
                touch(p, size);
                each(p.as_ptr() as usize, size);
                live[slot as usize] = Some((p, layout));
            }
            Op::Free { slot } => {
                if let Some((p, layout)) = live[slot as usize].take() {
                    // SAFETY: the block came from `alloc` with this layout.
                    unsafe { alloc.dealloc(p.as_ptr(), layout) };
                }
            }
            Op::Realloc { slot, size } => {
                let Some((p, layout)) = live[slot as usize] else { continue };
                // SAFETY: the block came from `alloc` with this layout; `size` is non-zero
                // and the decoder's sizes fit `isize` once aligned (Layout checked at
                // allocation).
                let n = unsafe { alloc.realloc(p.as_ptr(), layout, size) };
                let Some(n) = NonNull::new(n) else {
                    result = Err(i);
                    break;
                };
                if n != p {
                    moves.moved += 1;
                    moves.copied += size.min(layout.size());
                }
                touch(n, size);
                each(n.as_ptr() as usize, size);
                live[slot as usize] = Some((n, Layout::from_size_align(size, layout.align()).unwrap_or(layout)));
            }
        }
    }
    for (p, layout) in live.iter_mut().filter_map(Option::take) {
        // SAFETY: the block came from `alloc` with this layout.
        unsafe { alloc.dealloc(p.as_ptr(), layout) };
    }
    result.map(|()| moves)
}

/// Writes the first and the last byte of a fresh block of `size` bytes.
#[inline]
fn touch(p: NonNull<u8>, size: usize) {
    // SAFETY: the block is live and `size >= 1` bytes long.
    unsafe { p.as_ptr().write(1) };
    // SAFETY: as above; `size - 1` is inside it.
    unsafe { p.as_ptr().wrapping_add(size - 1).write(2) };
}

/// The row of memkit with [`FitPolicy::ExactFit`] (the `memkit` row has the default).
const MEMKIT_EXACT_FIT: &str = "memkit exact-fit";
/// The row of memkit's default heap with a thread cache in front (as the malloc family
/// serves a thread).
const MEMKIT_CACHED: &str = "memkit cached";
/// The allocators compared, in the order of the rows; the first four manage a region of
/// their own.
const CONTENDERS: [&str; 7] = [MEMKIT, MEMKIT_EXACT_FIT, MEMKIT_CACHED, "talc", "rlsf", "mimalloc", "system"];
/// The contenders over a region of their own.
const REGION_CONTENDERS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Runs the suite over `options.traces`, or the traces that come with the benchmarks.
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("replay");
    let paths = if options.traces.is_empty() { default_traces() } else { options.traces.clone() };
    let rounds = if options.quick { 3 } else { 9 };
    let mut traces = Vec::new();
    for path in &paths {
        match load(path) {
            Ok(t) => traces.push(t),
            Err(e) => report.note(format!("skipped {e}")),
        }
    }
    let steps = traces.len() as u64 * 2;
    for (k, t) in traces.iter().enumerate() {
        options.progress(&t.name, k as u64 * 2, steps);
        report.note(format!(
            "{}: {} operations ({} malloc, {} free, {} realloc, {} calloc, {} memalign; {} skipped), {} threads, peak live {:.2} MiB in {} blocks at most",
            t.name, t.ops.len(), t.calls[0], t.calls[1], t.calls[2], t.calls[3], t.calls[4], t.skipped, t.threads,
            t.peak_live as f64 / (1 << 20) as f64, t.slots
        ));
        let bytes = (t.peak_live * 8).max(64 << 20);
        let arenas: Vec<Arena> = CONTENDERS.iter().map(|n| Arena::new(n, bytes)).collect();
        let mut live = vec![None; t.slots];
        // Footprint, and a warm-up of every allocator: one untimed replay each.
        let mut failed = [false; CONTENDERS.len()];
        let mut moved = Vec::new();
        for (i, a) in arenas.iter().enumerate() {
            let mut high = 0usize;
            let r = replay(a.global(), t, &mut live, |p, size| high = high.max(p + size));
            failed[i] = r.is_err();
            if let Ok(m) = r {
                moved.push(format!("{} {} ({:.1} MiB)", CONTENDERS[i], m.moved, m.copied as f64 / (1 << 20) as f64));
            }
            if let Some(held) = a.held(high).filter(|_| !failed[i]) {
                report.push(
                    &format!("{} held % of peak live", t.name),
                    CONTENDERS[i],
                    held as f64 * 100.0 / t.peak_live.max(1) as f64,
                );
            }
        }
        report.note(format!("{}: reallocations that moved their block (bytes copied): {}", t.name, moved.join(", ")));
        let mut times = vec![Vec::new(); CONTENDERS.len()];
        for _ in 0..rounds {
            for (i, a) in arenas.iter().enumerate() {
                let start = Instant::now();
                let r = replay(a.global(), t, &mut live, |_, _| {});
                let ns = start.elapsed().as_nanos() as f64 / t.ops.len().max(1) as f64;
                failed[i] |= r.is_err();
                times[i].push(ns);
            }
        }
        for (i, name) in CONTENDERS.iter().enumerate() {
            let ns = if failed[i] { f64::NAN } else { median(&mut times[i]) };
            report.push(&format!("{} ns/op", t.name), name, ns);
        }
        drop(arenas);
        options.progress(&t.name, k as u64 * 2 + 1, steps);
        for name in &CONTENDERS[..REGION_CONTENDERS] {
            let smallest = SURVIVAL.iter().copied().find(|&f| {
                let bytes = ((t.peak_live as f64 * f) as usize).max(4 * PAGE_SIZE);
                let a = Arena::new(name, bytes);
                replay(a.global(), t, &mut live, |_, _| {}).is_ok()
            });
            report.push(
                &format!("{} smallest heap % of peak live", t.name),
                name,
                smallest.map_or(f64::INFINITY, |f| f * 100.0),
            );
        }
    }
    options.progress("done", steps, steps);
    report.note("rows `held % of peak live` and `smallest heap % of peak live`: lower is better, so a speedup above 1 is better for memkit there too (peer / memkit)");
    report.note("targets: ns/op speedup >= 1 over talc, rlsf and system and >= 0.8 over mimalloc; memkit held <= 1.15x peak live above 1 MiB live; every trace runs in 1.25x peak live");
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_traces_decode_and_replay() {
        let paths = default_traces();
        assert!(paths.len() >= 5, "traces: {paths:?}");
        for p in paths {
            let t = load(&p).unwrap();
            assert!(t.ops.len() > 10_000, "{}: {} ops", t.name, t.ops.len());
            let mut live = vec![None; t.slots];
            replay(&System, &t, &mut live, |_, _| {}).unwrap();
        }
    }
}
