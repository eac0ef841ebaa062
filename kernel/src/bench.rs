//! The kernel's `bench` boot mode (`-append bench`): what memkit costs on several CPUs, in
//! counts and in ratios within one boot (under QEMU's emulation absolute times say little).
//!
//! - TLB shootdowns per detach of 1, 32 and 1 024 pages with the space active on every CPU,
//!   and per operation across 8 regions (a copy-on-write copy, a protect, a shrink: one
//!   round each);
//! - page faults per million cycles with 1, 2, 4 … CPUs each faulting its own pages of one
//!   space (under the set's one lock), and the shootdown rounds they cost;
//! - frame allocation throughput on 1, 2, 4 … CPUs at once, through the per-CPU caches and
//!   straight from the pool, in frames per million TSC cycles and as a ratio to one CPU;
//! - the cost of page faults per MiB touched (one store per 4 KiB page) of a superpage
//!   dataspace mapped with 2 MiB entries and with 4 KiB ones: faults, TSC cycles, and the
//!   ratio of the two within this boot.
//!
//! # Unsafe
//! Reading the time-stamp counter.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memkit_phys::DEFAULT_POOL;
use memkit_types::{Frame, FrameCount, FrameSource, Order};

use crate::frames::KernelFrames;
use crate::serial::println;
use crate::{FRAMES, ktests, smp};

/// Frames each CPU takes and gives back per round, and the rounds.
const BURST: usize = 32;
const ROUNDS: usize = 500;

static CPUS_IN_USE: AtomicUsize = AtomicUsize::new(0);
static THROUGH_CACHE: AtomicUsize = AtomicUsize::new(1);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// The time-stamp counter.
pub(crate) fn cycles() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    unsafe { _rdtsc() }
}

/// Takes and gives back `BURST` frames `ROUNDS` times on each CPU below the count in use.
fn churn(cpu: usize, _: usize) {
    if cpu >= CPUS_IN_USE.load(Ordering::SeqCst) {
        return;
    }
    let cached = THROUGH_CACHE.load(Ordering::SeqCst) == 1;
    let pool = FRAMES.pool(DEFAULT_POOL);
    let source: &dyn FrameSource = if cached { &FRAMES } else { &pool };
    let mut held = [Frame::from_number(0); BURST];
    for _ in 0..ROUNDS {
        for slot in &mut held {
            match source.allocate(FrameCount::new(1), Order::new(0), None) {
                Ok(frame) => *slot = frame,
                Err(_) => {
                    FAILED.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
        for &frame in &held {
            if source.free(frame, FrameCount::new(1)).is_err() {
                FAILED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Runs the benchmarks and prints their figures.
pub(crate) fn run(frames: &'static KernelFrames, kernel_root: Frame) {
    println!("bench: {} CPUs", smp::online());
    println!("| detach | rounds of IPIs | IPIs | pages flushed one by one | full flushes |");
    println!("|---|---|---|---|---|");
    for pages in [1usize, 32, 1024] {
        match ktests::detach_shootdown(frames, kernel_root, pages) {
            Ok([rounds, ipis, single, full]) => println!("| {pages} pages | {rounds} | {ipis} | {single} | {full} |"),
            Err(e) => println!("| {pages} pages | failed: {} (line {}) | | | |", e.what, e.line),
        }
    }
    println!(
        "| one operation across {} regions | rounds of IPIs | IPIs | pages flushed one by one | full flushes |",
        ktests::REGIONS
    );
    println!("|---|---|---|---|---|");
    for op in [ktests::Across::CowCopy, ktests::Across::Protect, ktests::Across::Shrink] {
        match ktests::across_regions_shootdown(frames, kernel_root, op) {
            Ok([rounds, ipis, single, full]) => println!("| {} | {rounds} | {ipis} | {single} | {full} |", op.name()),
            Err(e) => println!("| {} | failed: {} (line {}) | | | |", op.name(), e.what, e.line),
        }
    }
    println!(
        "| CPUs faulting ({} pages each, one space, one lock) | faults per Gcycle | vs 1 CPU | rounds of IPIs (whole run) |",
        ktests::FAULT_PAGES
    );
    println!("|---|---|---|---|");
    let mut one = 0.0f64;
    let mut n = 1;
    while n <= smp::online() {
        match ktests::fault_rate(frames, kernel_root, n) {
            Ok((rate, rounds)) => {
                if n == 1 {
                    one = rate;
                }
                println!("| {n} | {:.0} | {:.2}x | {rounds} |", rate * 1e3, rate / one);
            }
            Err(e) => println!("| {n} | failed: {} (line {}) | | |", e.what, e.line),
        }
        n *= 2;
    }
    println!("| frames from | CPUs | frames per Mcycle | vs 1 CPU |");
    println!("|---|---|---|---|");
    for cached in [true, false] {
        THROUGH_CACHE.store(usize::from(cached), Ordering::SeqCst);
        let mut one = 0.0f64;
        let mut n = 1;
        while n <= smp::online() {
            CPUS_IN_USE.store(n, Ordering::SeqCst);
            let start = cycles();
            smp::run_on_all(churn, 0);
            let spent = cycles() - start;
            let frames_moved = (n * ROUNDS * BURST * 2) as f64;
            let rate = frames_moved * 1e6 / spent.max(1) as f64;
            if n == 1 {
                one = rate;
            }
            let from = if cached { "per-CPU caches" } else { "pool (one lock)" };
            println!("| {from} | {n} | {rate:.0} | {:.2}x |", rate / one);
            n *= 2;
        }
    }
    println!("bench: {} failed allocations", FAILED.load(Ordering::SeqCst));
    fault_cost(frames, kernel_root);
}

/// MiB touched per run of the fault-cost table.
const FAULT_MIB: usize = 8;

/// Prints the fault cost per MiB touched with 2 MiB and with 4 KiB entries.
fn fault_cost(frames: &'static KernelFrames, kernel_root: Frame) {
    println!("| entries | MiB touched | faults | faults per MiB | Mcycles per MiB | vs 2 MiB |");
    println!("|---|---|---|---|---|---|");
    let mut per_mib_large = 0.0f64;
    for (large, name) in [(true, "2 MiB"), (false, "4 KiB")] {
        match ktests::fault_cost(frames, kernel_root, large, FAULT_MIB) {
            Ok((spent, faults)) => {
                let per_mib = spent as f64 / FAULT_MIB as f64;
                if large {
                    per_mib_large = per_mib;
                }
                println!(
                    "| {name} | {FAULT_MIB} | {faults} | {} | {:.3} | {:.1}x |",
                    faults as f64 / FAULT_MIB as f64,
                    per_mib / 1e6,
                    per_mib / per_mib_large.max(1.0)
                );
            }
            Err(e) => println!("| {name} | failed: {} (line {}) | | | | |", e.what, e.line),
        }
    }
}
