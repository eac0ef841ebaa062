//! The region suite: memkit's region map against a `BTreeMap` of ranges (the plain
//! baseline, with L4Re's linear first fit) and the `memory_set` crate, at 100, 10 000 and
//! 100 000 regions, plus the software page-fault path.
//!
//! Cases (n = regions in the map; one-page regions with a one-page hole after each, a
//! fragmented address space):
//! - `find n=N`: the region containing a random address; ns per lookup. At 100 000 regions
//!   every structure here pays cache misses on most levels, which no O(log n) bound hides.
//!   Each timed round follows a quarter round untimed, so that a structure's round does not
//!   start with the caches full of the previous one's.
//! - `find in order n=N`: addresses walking the regions in order (a fault stream with
//!   locality); the lookup path stays cached and the algorithmic cost shows.
//! - `search-attach n=N`: find a free place for two pages from the bottom of the window (no
//!   hole is large enough, so first fit must reach the end), insert it, remove it again;
//!   ns per attach+detach. memkit's gap tree skips the full subtrees; the peers scan.
//!   As for `find`, each timed round follows a quarter round untimed: a peer's scan of
//!   100 000 entries evicts the caches, and memkit's round (300 operations in a quick run)
//!   would otherwise pay for refilling them.
//! - `fault`: [`RegionMap::resolve`] of a fresh page (find the region, ask the backing for
//!   the frame, map it in a [`SoftMmu`] with room reserved) among 10 000 regions; ns per
//!   fault, and the heap allocations on that path counted by a counting global allocator;
//!   pages visited scattered (cache misses in the tree, the backing and the page table) and
//!   in address order.
//!
//! - `dependent load, N MiB`: the machine's own reference, no map involved: a chain of
//!   loads, each from a random cache line of an `N`-MiB array named by the one before; ns
//!   per load. A random `find` among 100 000 regions must leave the caches at least once,
//!   so its cost at 100 000 is bounded below by this figure for the map's size.
//!
//! Targets: find and search-attach at 100 000 regions within 2x their time at 100; a fault
//! in 100 ns or less with no heap allocation.
//!
//! # Unsafe
//!
//! Only the counting global allocator: every method forwards its arguments unchanged to the
//! system allocator, so `GlobalAlloc`'s contract holds as it does for `System`. (The test
//! kit's `counting` allocator does the same for tests; the benchmarks do not take the test
//! kit, which would build the libraries with their `check` feature and is not published.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{AttachRequest, RegionMap, SoftMmu};
use memkit_types::{Access, Frame, PAGE_SIZE, Rights, VirtAddr};
use memory_set::{MappingBackend, MemoryArea, MemorySet};

use crate::{MEMKIT, Options, Report, interleaved_warm, time_per_op};

/// Counts heap allocations (and reallocations) of a thread that asks for it, then lets
/// the system allocator serve every allocation. One thread-local read per allocation, and
/// a relaxed atomic add while counting.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (only the fault loop's thread, so that
    /// a progress bar's thread cannot change the figure).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        count();
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BASE: usize = 0x1000_0000;
const P: usize = PAGE_SIZE;
const BTREE: &str = "BTreeMap";
const MEMORY_SET: &str = "memory_set";

/// `memory_set` with nothing behind it: the map's own bookkeeping is what is measured.
#[derive(Clone)]
struct NoBackend;

impl MappingBackend for NoBackend {
    type Addr = memory_addr::VirtAddr;
    type Flags = u8;
    type PageTable = ();
    fn map(&self, _: Self::Addr, _: usize, _: u8, _: &mut ()) -> bool {
        true
    }
    fn unmap(&self, _: Self::Addr, _: usize, _: &mut ()) -> bool {
        true
    }
    fn protect(&self, _: Self::Addr, _: usize, _: u8, _: &mut ()) -> bool {
        true
    }
}

/// The baseline: start → end in a `BTreeMap`, first fit by walking the gaps in order.
struct Baseline(BTreeMap<usize, usize>);

impl Baseline {
    fn find(&self, addr: usize) -> Option<(usize, usize)> {
        self.0.range(..=addr).next_back().filter(|(_, e)| addr < **e).map(|(s, e)| (*s, *e))
    }

    fn first_fit(&self, lo: usize, hi: usize, size: usize) -> Option<usize> {
        let mut at = lo;
        for (&s, &e) in self.0.range(..) {
            if e <= at {
                continue;
            }
            if s >= at + size {
                break;
            }
            at = e;
        }
        (at + size <= hi).then_some(at)
    }
}

struct Maps {
    memkit: RegionMap<MockId>,
    backing: MockBacking,
    ds: MockId,
    mmu: SoftMmu,
    baseline: Baseline,
    memory_set: MemorySet<NoBackend>,
    window: usize,
}

fn build(n: usize) -> Maps {
    let window = (2 * n + 64) * P;
    let mut memkit = RegionMap::new(VirtAddr::new(BASE), window);
    let mut backing = MockBacking::new(Frame::from_number(1));
    let ds = backing.create(4, Rights::RW);
    let mut mmu = SoftMmu::new();
    let mut baseline = Baseline(BTreeMap::new());
    let mut memory_set = MemorySet::new();
    for i in 0..n {
        let at = BASE + 2 * i * P;
        memkit
            .attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).at(VirtAddr::new(at)))
            .expect("free");
        baseline.0.insert(at, at + P);
        memory_set.map(MemoryArea::new(at.into(), P, 3, NoBackend), &mut (), false).expect("free");
    }
    Maps { memkit, backing, ds, mmu, baseline, memory_set, window }
}

/// A cheap deterministic address stream.
fn addr(i: u64, n: usize) -> usize {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    BASE + (x as usize % (2 * n)) * P + (i as usize & 0xfff)
}

/// Addresses walking the regions in order, one page per step (a fault stream with
/// locality): the lookup path stays in the caches, so the algorithm's cost shows.
fn addr_in_order(i: u64, n: usize) -> usize {
    BASE + (i as usize % (2 * n)) * P + 8
}

fn find_case(report: &mut Report, n: usize, maps: &Maps, rounds: u32, iterations: u64) {
    for (case, pick) in [
        (format!("find n={n}"), addr as fn(u64, usize) -> usize),
        (format!("find in order n={n}"), addr_in_order as fn(u64, usize) -> usize),
    ] {
        let rows = interleaved_warm(
            rounds,
            iterations / 4,
            iterations,
            &mut [
                (MEMKIT, &mut |i| {
                    black_box(maps.memkit.find(VirtAddr::new(pick(i, n)), 1).ok());
                }),
                (BTREE, &mut |i| {
                    black_box(maps.baseline.find(pick(i, n)));
                }),
                (MEMORY_SET, &mut |i| {
                    black_box(maps.memory_set.find(pick(i, n).into()).map(MemoryArea::start));
                }),
            ],
        );
        for (name, ns) in rows {
            report.push(&case, &name, ns);
        }
    }
}

fn search_case(report: &mut Report, n: usize, maps: &mut Maps, rounds: u32, iterations: u64) {
    let case = format!("search-attach n={n}");
    let size = 2 * P;
    let want = BASE + 2 * n * P - P;
    let Maps { memkit, backing, ds, mmu, baseline, memory_set, window } = maps;
    let (ds, hi) = (*ds, BASE + *window);
    let rows = interleaved_warm(
        rounds,
        iterations / 4,
        iterations,
        &mut [
            (MEMKIT, &mut |_| {
                let req = AttachRequest::new(ds, size, Rights::RW).search(VirtAddr::new(BASE));
                let at = memkit.attach(backing, mmu, &req).expect("room at the end");
                debug_assert_eq!(at.as_usize(), want);
                memkit.detach_at(backing, mmu, at).expect("attached");
            }),
            (BTREE, &mut |_| {
                let at = baseline.first_fit(BASE, hi, size).expect("room at the end");
                debug_assert_eq!(at, want);
                baseline.0.insert(at, at + size);
                baseline.0.remove(&at);
            }),
            (MEMORY_SET, &mut |_| {
                let limit = memory_addr::VirtAddrRange::from_start_size(BASE.into(), hi - BASE);
                let at = memory_set.find_free_area(BASE.into(), size, limit, P).expect("room at the end");
                debug_assert_eq!(at.as_usize(), want);
                memory_set.map(MemoryArea::new(at, size, 3, NoBackend), &mut (), false).expect("free");
                memory_set.unmap(at, size, &mut ()).expect("mapped");
            }),
        ],
    );
    for (name, ns) in rows {
        report.push(&case, &name, ns);
    }
}

/// Resolves `faults` fresh pages among 10 000 four-page regions; returns (ns per fault,
/// heap allocations during the timed loop).
fn fault_case(faults: usize, in_order: bool) -> (f64, u64) {
    const REGIONS: usize = 10_000;
    let pages = faults.div_ceil(REGIONS).max(1);
    let mut map = RegionMap::new(VirtAddr::new(BASE), 1 << 40);
    let mut backing = MockBacking::new(Frame::from_number(1));
    let mut mmu = SoftMmu::with_capacity(REGIONS * pages);
    let ds = backing.create(REGIONS * pages, Rights::RW);
    for r in 0..REGIONS {
        let req =
            AttachRequest::new(ds, pages * P, Rights::RW).search(VirtAddr::new(BASE)).offset((r * pages * P) as u64);
        map.attach(&mut backing, &mut mmu, &req).expect("room");
    }
    // Visit the pages in a scattered order: region by region would flatter the caches.
    let total = REGIONS * pages;
    COUNTED.set(true);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let ns = time_per_op(faults as u64, |i| {
        let a = if in_order {
            VirtAddr::new(BASE + i as usize * P)
        } else {
            let k = (i as usize).wrapping_mul(7919) % total;
            let (region, page) = (k % REGIONS, k / REGIONS);
            VirtAddr::new(BASE + (region * pages + page) * P)
        };
        black_box(map.resolve(&mut backing, &mut mmu, a, Access::Write).expect("in a region"));
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNTED.set(false);
    (ns, allocations)
}

/// ns per dependent load from a random cache line of a `mib`-MiB array (a random cyclic
/// chain through every line, so that no prefetcher guesses the next one).
fn dependent_load_ns(mib: usize, loads: u64, rounds: u32) -> f64 {
    const WORDS_PER_LINE: usize = 8;
    let lines = (mib << 20) / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; lines * WORDS_PER_LINE];
    for (k, &line) in order.iter().enumerate() {
        next[line * WORDS_PER_LINE] = order[(k + 1) % lines] * WORDS_PER_LINE;
    }
    let mut at = 0;
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        best = best.min(time_per_op(loads, |_| at = next[at]));
    }
    black_box(at);
    best
}

/// Runs the suite.
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("region");
    let sizes = [100usize, 10_000, 100_000];
    let (rounds, find_iters, search_iters) =
        if options.quick { (3, 200_000u64, 300u64) } else { (7, 1_000_000, 2_000) };
    for (k, &n) in sizes.iter().enumerate() {
        options.progress("region maps", k as u64, sizes.len() as u64 + 1);
        let mut maps = build(n);
        find_case(&mut report, n, &maps, rounds, find_iters);
        search_case(&mut report, n, &mut maps, rounds, search_iters);
        maps.memkit.check_invariants();
    }
    options.progress("fault", sizes.len() as u64, sizes.len() as u64 + 1);
    let faults = if options.quick { 10_000 } else { 40_000 };
    let (mut best, mut best_in_order) = (f64::INFINITY, f64::INFINITY);
    let mut allocations = 0;
    for _ in 0..rounds {
        let (ns, a) = fault_case(faults, false);
        best = best.min(ns);
        allocations += a;
        let (ns, a) = fault_case(faults, true);
        best_in_order = best_in_order.min(ns);
        allocations += a;
    }
    report.push("fault resolve (n=10000, SoftMmu)", MEMKIT, best);
    report.push("fault resolve in order (n=10000, SoftMmu)", MEMKIT, best_in_order);
    for mib in [4, 64] {
        report.push(&format!("dependent load, {mib} MiB"), "machine", dependent_load_ns(mib, 1_000_000, rounds));
    }
    report.push(
        "fault heap allocations per fault",
        MEMKIT,
        allocations as f64 / (2.0 * faults as f64 * f64::from(rounds)),
    );
    for case in ["find", "find in order", "search-attach"] {
        let ns = |n: usize| {
            report
                .results
                .iter()
                .find(|r| r.case == format!("{case} n={n}") && r.implementation == MEMKIT)
                .map_or(f64::NAN, |r| r.ns_per_op)
        };
        report.note(format!("{case}: memkit at 100 000 regions / at 100 = {:.2} (target <= 2)", ns(100_000) / ns(100)));
    }
    report.note(format!(
        "fault: {best:.1} ns per fault scattered, {best_in_order:.1} in order (target <= 50 scattered); {allocations} heap \
         allocations on the path (target 0)"
    ));
    report
}
