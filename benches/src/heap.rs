//! Suite `heap`: memkit's kernel heap against talc, rlsf, linked_list_allocator,
//! buddy_system_allocator's heap, mimalloc and the system allocator, in the same run.
//!
//! Every allocator gets its own region (64 MiB), touched once before any measurement.
//! memkit runs twice: `memkit` with its default placement ([`FitPolicy::Adaptive`]: size
//! classes while its page source has room, which it has here in every case but the
//! usable one), and `memkit exact-fit`, always packing ([`FitPolicy::ExactFit`]): that row
//! is what the default costs once its source runs short.
//!
//! Cases:
//! - `random 1 thread`: a precomputed sequence of random actions over 1024 slots — an empty
//!   slot is filled by an allocation of 8 B–30 KB (log-uniform) with a skewed alignment
//!   (mostly 8, sometimes 16–4096), a full slot is freed; ns per action.
//! - `random 2 threads`: the same, one sequence per thread on one shared allocator; ns per
//!   action of the pair (wall time / all actions), so half the one-thread figure is 2×.
//! - `producer/consumer`: one thread allocates and sends batches of pointers to a second
//!   thread that frees them; ns per block.
//! - `usable % at first OOM`: a 16 MiB heap (memkit: a 16 MiB region, its metadata
//!   included) filled by random allocations and frees until the first failure; the live
//!   requested bytes in percent of the heap (higher is better; speedup < 1 means memkit
//!   keeps less usable).
//!
//! # Unsafe
//!
//! The heaps compared take raw memory and hand out raw pointers: each heap gets a fresh,
//! zeroed heap block of its own that outlives it, and a block is freed once, with the layout
//! it was allocated with, to the allocator it came from; `GlobalAlloc` wrappers forward the
//! caller's arguments unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use memkit_heap::{CpuId, FitPolicy, HeapId, KernelHeaps, RegionPageSource};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{MEMKIT, Options, Report, interleaved};

/// The row of memkit with [`FitPolicy::ExactFit`] (the `memkit` row has the default).
const MEMKIT_EXACT_FIT: &str = "memkit exact-fit";
const SLOTS: usize = 1024;
const HEAP_BYTES: usize = 64 << 20;
const OOM_HEAP_BYTES: usize = 16 << 20;

/// One thread's number, from a process-wide counter: memkit's shard hint.
#[derive(Debug, Clone, Copy)]
struct ThreadNumber;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl CpuId for ThreadNumber {
    #[inline]
    fn current_cpu(&self) -> usize {
        THREAD.with(|t| {
            let mut n = t.get();
            if n == usize::MAX {
                n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
                t.set(n);
            }
            n
        })
    }
}

/// memkit's kernel heap as a `GlobalAlloc` (malloc/palloc and xmfree).
struct Memkit {
    heaps: KernelHeaps<'static, RegionPageSource, ThreadNumber>,
}

impl Memkit {
    fn new(bytes: usize, fit_policy: FitPolicy) -> Self {
        let source: &'static RegionPageSource = Box::leak(Box::new(region_source(bytes)));
        let heaps = KernelHeaps::with_fit_policy(source, source, ThreadNumber, fit_policy);
        heaps.init(false).expect("memkit heap init");
        Memkit { heaps }
    }
}

fn region_source(bytes: usize) -> RegionPageSource {
    let mem = leak_region(bytes);
    // SAFETY: leaked memory, used by nobody else, valid for 'static.
    unsafe { RegionPageSource::new(mem, bytes) }.expect("region")
}

/// A region for one allocator, leaked, with every page touched once so that no
/// allocator pays the kernel's first-touch faults inside a measurement.
fn leak_region(bytes: usize) -> NonNull<u8> {
    let layout = Layout::from_size_align(bytes, 4096).expect("layout");
    // SAFETY: non-zero size; the memory is never freed (leaked on purpose).
    let mem = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("benchmark region");
    // SAFETY: the region is ours and `bytes` long.
    unsafe { std::ptr::write_bytes(mem.as_ptr(), 0, bytes) };
    mem
}

// SAFETY: forwards to memkit's kernel heap, whose blocks are fitting, aligned and disjoint.
unsafe impl GlobalAlloc for Memkit {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.heaps.palloc(layout.size(), layout.align().trailing_zeros()).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `GlobalAlloc`'s contract: the block was allocated here and the
            // caller gives it up.
            let _ = unsafe { self.heaps.xmfree(p, HeapId::Kernel) };
        }
    }
}

type TalcHeap = talc::TalcLock<spin::Mutex<()>, talc::source::Claim>;

fn talc_heap(bytes: usize) -> TalcHeap {
    let mem = leak_region(bytes);
    // SAFETY: leaked memory, used only by this allocator.
    TalcHeap::new(unsafe { talc::source::Claim::new(mem.as_ptr(), bytes) })
}

/// rlsf's TLSF behind a spin lock.
pub(crate) struct Rlsf(spin::Mutex<rlsf::Tlsf<'static, u32, u32, 28, 32>>);

impl Rlsf {
    fn new(bytes: usize) -> Self {
        Rlsf::over(leak_region(bytes), bytes)
    }

    /// A TLSF over `bytes` at `mem`, which must stay valid and unused by anyone else
    /// while the allocator and its blocks live (the caller drops it before the memory).
    pub(crate) fn over(mem: NonNull<u8>, bytes: usize) -> Self {
        let mut tlsf = rlsf::Tlsf::new();
        // SAFETY: the memory is the allocator's alone while it lives (the caller's duty
        // above); rlsf's lifetime is not checked past that.
        unsafe { tlsf.insert_free_block_ptr(NonNull::slice_from_raw_parts(mem, bytes)) };
        Rlsf(spin::Mutex::new(tlsf))
    }
}

// SAFETY: forwards to rlsf under a lock.
unsafe impl GlobalAlloc for Rlsf {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate(layout).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `p` came from this allocator with this layout's alignment.
            unsafe { self.0.lock().deallocate(p, layout.align()) };
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (Some(p), Ok(new)) = (NonNull::new(ptr), Layout::from_size_align(new_size, layout.align())) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `p` came from this allocator with this layout's alignment (the caller's
        // contract), which `new` keeps.
        unsafe { self.0.lock().reallocate(p, new) }.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
}

fn linked_list_heap(bytes: usize) -> linked_list_allocator::LockedHeap {
    let heap = linked_list_allocator::LockedHeap::empty();
    let mem = leak_region(bytes);
    // SAFETY: leaked memory, used only by this allocator.
    unsafe { heap.lock().init(mem.as_ptr(), bytes) };
    heap
}

fn buddy_heap(bytes: usize) -> buddy_system_allocator::LockedHeap<32> {
    let heap = buddy_system_allocator::LockedHeap::<32>::new();
    let mem = leak_region(bytes);
    // SAFETY: leaked memory, used only by this allocator.
    unsafe { heap.lock().init(mem.as_ptr() as usize, bytes) };
    heap
}

/// One precomputed action: fill or empty `slot`.
#[derive(Debug, Clone, Copy)]
struct Op {
    slot: u16,
    layout: Layout,
}

fn random_layout(rng: &mut SmallRng) -> Layout {
    let size = (8.0 * (30_000.0f64 / 8.0).powf(rng.random::<f64>())) as usize;
    let align = match rng.random_range(0..100) {
        0..80 => 8,
        80..90 => 16,
        90..95 => 64,
        95..99 => 512,
        _ => 4096,
    };
    Layout::from_size_align(size, align).expect("layout")
}

fn ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|_| Op { slot: rng.random_range(0..SLOTS as u16), layout: random_layout(&mut rng) }).collect()
}

/// Slots of live blocks, emptied on drop.
struct Slots<'a, A: GlobalAlloc + ?Sized> {
    alloc: &'a A,
    live: Vec<Option<(NonNull<u8>, Layout)>>,
}

impl<'a, A: GlobalAlloc + ?Sized> Slots<'a, A> {
    fn new(alloc: &'a A) -> Self {
        Slots { alloc, live: vec![None; SLOTS] }
    }

    #[inline]
    fn step(&mut self, op: Op) {
        let slot = &mut self.live[op.slot as usize];
        match slot.take() {
            // SAFETY: the block came from `alloc` with this layout.
            Some((p, layout)) => unsafe { self.alloc.dealloc(p.as_ptr(), layout) },
            None => {
                // SAFETY: a non-zero size.
                let p = unsafe { self.alloc.alloc(op.layout) };
                if let Some(p) = NonNull::new(p) {
                    // SAFETY: a fresh block of at least one byte.
                    unsafe { p.as_ptr().write(op.slot as u8) };
                    *slot = Some((p, op.layout));
                }
            }
        }
    }
}

impl<A: GlobalAlloc + ?Sized> Drop for Slots<'_, A> {
    fn drop(&mut self) {
        for (p, layout) in self.live.iter_mut().filter_map(Option::take) {
            // SAFETY: the block came from `alloc` with this layout.
            unsafe { self.alloc.dealloc(p.as_ptr(), layout) };
        }
    }
}

/// The allocators measured, each with its own heap.
struct Contenders {
    memkit: Memkit,
    memkit_exact_fit: Memkit,
    talc: TalcHeap,
    rlsf: Rlsf,
    linked_list: linked_list_allocator::LockedHeap,
    buddy: buddy_system_allocator::LockedHeap<32>,
}

impl Contenders {
    fn new(bytes: usize) -> Self {
        Contenders {
            memkit: Memkit::new(bytes, FitPolicy::default()),
            memkit_exact_fit: Memkit::new(bytes, FitPolicy::ExactFit),
            talc: talc_heap(bytes),
            rlsf: Rlsf::new(bytes),
            linked_list: linked_list_heap(bytes),
            buddy: buddy_heap(bytes),
        }
    }

    fn all(&self) -> Vec<(&'static str, &(dyn GlobalAlloc + Sync))> {
        vec![
            (MEMKIT, &self.memkit),
            (MEMKIT_EXACT_FIT, &self.memkit_exact_fit),
            ("talc", &self.talc),
            ("rlsf", &self.rlsf),
            ("linked_list_allocator", &self.linked_list),
            ("buddy_system_allocator", &self.buddy),
            ("mimalloc", &mimalloc::MiMalloc),
            ("system", &System),
        ]
    }
}

fn two_threads(alloc: &(dyn GlobalAlloc + Sync), seqs: &[Vec<Op>; 2], rounds: u32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        std::thread::scope(|s| {
            for seq in seqs {
                s.spawn(move || {
                    let mut slots = Slots::new(alloc);
                    for &op in seq {
                        slots.step(op);
                    }
                });
            }
        });
        let ns = start.elapsed().as_nanos() as f64 / (seqs[0].len() + seqs[1].len()) as f64;
        best = best.min(ns);
    }
    best
}

fn producer_consumer(alloc: &(dyn GlobalAlloc + Sync), seq: &[Op], rounds: u32) -> f64 {
    const BATCH: usize = 64;
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(usize, Layout)>>(8);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                for op in seq {
                    // SAFETY: a non-zero size.
                    let p = unsafe { alloc.alloc(op.layout) };
                    if !p.is_null() {
                        batch.push((p as usize, op.layout));
                    }
                    if batch.len() == BATCH {
                        let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                    }
                }
                let _ = tx.send(batch);
            });
            s.spawn(move || {
                for batch in rx {
                    for (p, layout) in batch {
                        // SAFETY: the block came from `alloc` with this layout; the
                        // producer handed it over and never touches it again.
                        unsafe { alloc.dealloc(p as *mut u8, layout) };
                    }
                }
            });
        });
        best = best.min(start.elapsed().as_nanos() as f64 / seq.len() as f64);
    }
    best
}

/// CPU time the calling thread has used, in nanoseconds (Linux `schedstat`), if known.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU nanoseconds per action with one thread per sequence: equal figures for one and two
/// threads mean the threads do not slow each other down, whatever cores are free.
fn cpu_per_action(alloc: &(dyn GlobalAlloc + Sync), seqs: &[Vec<Op>]) -> f64 {
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for seq in seqs {
            let total = &total;
            s.spawn(move || {
                let start = thread_cpu_ns();
                let mut slots = Slots::new(alloc);
                for &op in seq {
                    slots.step(op);
                }
                drop(slots);
                if let (Some(a), Some(b)) = (start, thread_cpu_ns()) {
                    total.fetch_add((b - a) as usize, Ordering::Relaxed);
                }
            });
        }
    });
    total.load(Ordering::Relaxed) as f64 / seqs.iter().map(Vec::len).sum::<usize>() as f64
}

/// Random allocations (2 of 3 actions) and frees until the first failure; live requested
/// bytes in percent of `heap_bytes`.
fn usable_percent(alloc: &dyn GlobalAlloc, heap_bytes: usize) -> f64 {
    let mut rng = SmallRng::seed_from_u64(0x00ff_00ff);
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    let mut bytes = 0usize;
    let percent = loop {
        if live.is_empty() || rng.random_range(0..3) < 2 {
            let layout = random_layout(&mut rng);
            // SAFETY: a non-zero size.
            match NonNull::new(unsafe { alloc.alloc(layout) }) {
                Some(p) => {
                    bytes += layout.size();
                    live.push((p, layout));
                }
                None => break bytes as f64 * 100.0 / heap_bytes as f64,
            }
        } else {
            let (p, layout) = live.swap_remove(rng.random_range(0..live.len()));
            bytes -= layout.size();
            // SAFETY: the block came from `alloc` with this layout.
            unsafe { alloc.dealloc(p.as_ptr(), layout) };
        }
    };
    for (p, layout) in live {
        // SAFETY: as above.
        unsafe { alloc.dealloc(p.as_ptr(), layout) };
    }
    percent
}

/// Runs the suite.
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("heap");
    let (n, rounds) = if options.quick { (200_000, 3) } else { (1_000_000, 5) };
    let contenders = Contenders::new(HEAP_BYTES);
    let all = contenders.all();

    options.progress("random 1 thread", 0, 4);
    let seq = ops(1, n);
    let mut slots: Vec<Slots<'_, dyn GlobalAlloc + Sync>> = all.iter().map(|(_, a)| Slots::new(*a)).collect();
    let mut closures: Vec<Box<dyn FnMut(u64) + '_>> = slots
        .iter_mut()
        .map(|s| {
            let seq = &seq;
            Box::new(move |i: u64| s.step(seq[i as usize % seq.len()])) as Box<dyn FnMut(u64)>
        })
        .collect();
    let mut impls: Vec<(&str, &mut dyn FnMut(u64))> =
        all.iter().zip(closures.iter_mut()).map(|((name, _), c)| (*name, &mut **c as &mut dyn FnMut(u64))).collect();
    let one: Vec<(String, f64)> = interleaved(rounds, n as u64, &mut impls);
    drop(impls);
    drop(closures);
    drop(slots);
    for (name, ns) in &one {
        report.push("random 1 thread", name, *ns);
    }

    options.progress("random 2 threads", 1, 4);
    let seqs = [ops(2, n), ops(3, n)];
    let mut two = Vec::new();
    for _ in 0..rounds {
        for (i, (name, a)) in all.iter().enumerate() {
            let ns = two_threads(*a, &seqs, 1);
            if two.len() <= i {
                two.push((*name, ns));
            } else {
                two[i].1 = two[i].1.min(ns);
            }
        }
    }
    for (name, ns) in &two {
        report.push("random 2 threads", name, *ns);
    }

    options.progress("producer/consumer", 2, 4);
    let seq = ops(4, n / 2);
    let mut pc = Vec::new();
    for _ in 0..rounds {
        for (i, (name, a)) in all.iter().enumerate() {
            let ns = producer_consumer(*a, &seq, 1);
            if pc.len() <= i {
                pc.push((*name, ns));
            } else {
                pc[i].1 = pc[i].1.min(ns);
            }
        }
    }
    for (name, ns) in &pc {
        report.push("producer/consumer", name, *ns);
    }

    options.progress("usable at first OOM", 3, 4);
    let small = Contenders::new(OOM_HEAP_BYTES);
    for (name, a) in small.all().into_iter().filter(|(n, _)| *n != "mimalloc" && *n != "system") {
        report.push("usable % at first OOM", name, usable_percent(a, OOM_HEAP_BYTES));
    }
    options.progress("done", 4, 4);

    let ns = |rows: &[(String, f64)], who: &str| rows.iter().find(|(n, _)| n == who).map_or(f64::NAN, |r| r.1);
    for (who, memkit) in [(MEMKIT, &contenders.memkit), (MEMKIT_EXACT_FIT, &contenders.memkit_exact_fit)] {
        let m1 = ns(&one, who);
        let m2 = two.iter().find(|(n, _)| *n == who).map_or(f64::NAN, |r| r.1);
        report.note(format!(
            "{who} one thread: {:.2}x talc's throughput (target >= 1), {:.2}x mimalloc's (target >= 0.67)",
            ns(&one, "talc") / m1,
            ns(&one, "mimalloc") / m1
        ));
        let st = memkit.heaps.regular_heap(HeapId::Kernel).stats();
        report.note(format!(
            "{who} spans, arenas and large blocks taken from its page source over the run: {} ({} pages held at the end; started packing {} times)",
            st.runs_created, st.pages, st.packings
        ));
        report.note(format!("{who} two threads: {:.2}x its one-thread throughput (target >= 1.6)", m1 / m2));
    }
    for (name, a) in all.iter().filter(|(n, _)| *n == MEMKIT || *n == MEMKIT_EXACT_FIT || *n == "mimalloc") {
        let one_cpu = cpu_per_action(*a, &seqs[..1]);
        let two_cpu = cpu_per_action(*a, &seqs);
        let reading = if two_cpu > one_cpu * 1.1 {
            "a rise: the threads slow each other (locks, cache lines, or cores shared in hardware)"
        } else {
            "no rise: the threads do not slow each other"
        };
        report.note(format!(
            "{name} CPU time per action: {one_cpu:.1} ns with one thread, {two_cpu:.1} ns with two ({reading})"
        ));
    }
    for who in [MEMKIT, MEMKIT_EXACT_FIT] {
        let usable = report.results.iter().find(|r| r.case.starts_with("usable") && r.implementation == who);
        report.note(format!(
            "{who} usable at first OOM: {:.1} % of a {} MiB heap (target >= 95 %); on that row a speedup below 1 is better for memkit",
            usable.map_or(f64::NAN, |r| r.ns_per_op),
            OOM_HEAP_BYTES >> 20
        ));
    }
    report
}
