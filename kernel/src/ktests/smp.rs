//! Several CPUs: every processor the firmware lists comes online, knows its own index, and
//! the frame allocator and the heap stay right when all CPUs use them at once.
//!
//! The jobs run on every CPU at the same time ([`smp::run_on_all`]); each writes what it
//! saw into its own row of a static table, and the test checks the rows afterwards.
//!
//! # Unsafe
//! A job writes a pattern into the frames it was handed (through the direct map) and reads
//! it back before it frees them.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SIZE};

use crate::firmware::Processors;
use crate::frames::KernelFrames;
use crate::smp::{self, MAX_CPUS};
use crate::testing::{Runner, TestResult, check, check_eq};
use crate::{FRAMES, phys_window};

const FRAMES_PER_CPU: usize = 48;
const ROUNDS: usize = 8;

static SEEN_INDEX: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
static HELD: [[AtomicU64; FRAMES_PER_CPU]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; FRAMES_PER_CPU] }; MAX_CPUS];
static FAILURES: AtomicUsize = AtomicUsize::new(0);

/// The tests of several CPUs, run once the heap exists.
pub(crate) fn smp(runner: &mut Runner, processors: &Processors, frames: &KernelFrames) {
    runner.run("smp::every_listed_processor_is_online", || {
        check_eq!(smp::online(), processors.apic_ids().len());
        for (index, &apic_id) in processors.apic_ids().iter().enumerate() {
            check_eq!(smp::apic_id(index), usize::from(apic_id));
        }
        Ok(())
    });
    runner.run("smp::each_cpu_runs_a_job_and_knows_its_index", each_cpu_knows_its_index);
    runner.run("smp::frames_taken_on_all_cpus_at_once_are_never_handed_out_twice", || frames_on_all_cpus(frames));
    runner.run("smp::frames_parked_in_cpu_caches_are_served_when_the_pool_runs_dry", || caches_drain(frames));
    runner.run("smp::heap_blocks_on_all_cpus_at_once_keep_their_contents", heap_on_all_cpus);
}

fn each_cpu_knows_its_index() -> TestResult {
    SEEN_INDEX.iter().for_each(|s| s.store(usize::MAX, Ordering::SeqCst));
    smp::run_on_all(|cpu, _| SEEN_INDEX[cpu].store(smp::current(), Ordering::SeqCst), 0);
    for (cpu, seen) in SEEN_INDEX.iter().enumerate().take(smp::online()) {
        check_eq!(seen.load(Ordering::SeqCst), cpu);
    }
    check!(SEEN_INDEX.iter().skip(smp::online()).all(|s| s.load(Ordering::SeqCst) == usize::MAX));
    Ok(())
}

fn pattern(cpu: usize, frame: Frame) -> u64 {
    0x5a5a_0000_0000_0000 | ((cpu as u64) << 40) | frame.number()
}

fn frame_word(frame: Frame) -> *mut u64 {
    phys_window::current().ptr(frame.start_address(), PAGE_SIZE).cast::<u64>()
}

/// Each CPU takes frames one at a time, writes its mark into each, and the marks must all
/// survive: a frame handed to two CPUs would carry the other's mark.
fn take_frames(cpu: usize, _: usize) {
    for slot in &HELD[cpu] {
        match FRAMES.allocate(FrameCount::new(1), Order::new(0), None) {
            Ok(frame) => {
                // SAFETY: the frame was just allocated to this CPU; nothing else uses it.
                unsafe { frame_word(frame).write_volatile(pattern(cpu, frame)) };
                slot.store(frame.number(), Ordering::SeqCst);
            }
            Err(_) => {
                FAILURES.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn give_back_frames(cpu: usize, _: usize) {
    for slot in &HELD[cpu] {
        let number = slot.swap(0, Ordering::SeqCst);
        if number == 0 {
            continue;
        }
        let frame = Frame::from_number(number);
        // SAFETY: this CPU allocated the frame and still owns it.
        let mark = unsafe { frame_word(frame).read_volatile() };
        if mark != pattern(cpu, frame) || FRAMES.free(frame, FrameCount::new(1)).is_err() {
            FAILURES.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn frames_on_all_cpus(frames: &KernelFrames) -> TestResult {
    let free_before = frames.free_frames();
    FAILURES.store(0, Ordering::SeqCst);
    for _ in 0..ROUNDS {
        smp::run_on_all(take_frames, 0);
        let mut numbers: Vec<u64> =
            HELD.iter().take(smp::online()).flatten().map(|s| s.load(Ordering::SeqCst)).collect();
        check_eq!(numbers.len(), smp::online() * FRAMES_PER_CPU);
        numbers.sort_unstable();
        let len = numbers.len();
        numbers.dedup();
        check_eq!(numbers.len(), len);
        smp::run_on_all(give_back_frames, 0);
        // The frames went back into the freeing CPUs' caches, and count as free.
        check!(frames.cached_frames().get() > 0);
        frames.check_invariants();
    }
    check_eq!(FAILURES.load(Ordering::SeqCst), 0);
    check_eq!(frames.free_frames(), free_before);
    Ok(())
}

/// Each CPU allocates blocks of many sizes from the global allocator (the xmalloc heap),
/// fills them with its mark, and checks the marks before it frees them.
fn heap_job(cpu: usize, _: usize) {
    let mut blocks: Vec<Vec<u64>> = Vec::new();
    for round in 0..200usize {
        let len = 1 + (round * 37 + cpu * 11) % 700;
        let mark = ((cpu as u64) << 32) | round as u64;
        blocks.push(alloc::vec![mark; len]);
        if round % 3 == 2 {
            let block = blocks.swap_remove((round / 3) % blocks.len());
            if block.iter().any(|&w| w >> 32 != cpu as u64) {
                FAILURES.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    for block in blocks {
        if block.first().is_none_or(|&w| w >> 32 != cpu as u64) || block.windows(2).any(|w| w[0] != w[1]) {
            FAILURES.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn heap_on_all_cpus() -> TestResult {
    FAILURES.store(0, Ordering::SeqCst);
    for _ in 0..4 {
        smp::run_on_all(heap_job, 0);
    }
    check_eq!(FAILURES.load(Ordering::SeqCst), 0);
    Ok(())
}

static SERVED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static DRY_HELD: spin::Mutex<Vec<u64>> = spin::Mutex::new(Vec::new());

/// Each CPU takes single frames until none is left (at most `room`: the lists are sized
/// before the pool runs dry, as the heap may have no page left then), keeping them in one
/// shared list.
fn take_until_dry(cpu: usize, room: usize) {
    let mut mine = Vec::with_capacity(room);
    while mine.len() < room
        && let Ok(frame) = FRAMES.allocate(FrameCount::new(1), Order::new(0), None)
    {
        mine.push(frame.number());
    }
    SERVED[cpu].store(mine.len(), Ordering::SeqCst);
    DRY_HELD.lock().extend(mine);
}

/// Every CPU parks frames in its cache; then the pool itself is emptied; then every CPU
/// asks for single frames until none is left: the parked frames of all caches are served,
/// each once, and all come back.
fn caches_drain(frames: &KernelFrames) -> TestResult {
    let free_before = frames.free_frames();
    smp::run_on_all(take_frames, 0);
    smp::run_on_all(give_back_frames, 0);
    let parked = frames.cached_frames().get();
    check!(parked > 0);
    let room = parked as usize + 1;
    DRY_HELD.lock().clear();
    DRY_HELD.lock().reserve(room * smp::online());
    // Empty the pool behind the caches, largest runs first.
    let pool = frames.pool(memkit_phys::DEFAULT_POOL);
    let mut runs: Vec<(Frame, u64)> = Vec::new();
    for order in (0..=12u32).rev() {
        let count = 1u64 << order;
        while let Ok(run) = pool.allocate(FrameCount::new(count), Order::new(0), None) {
            runs.push((run, count));
        }
    }
    check_eq!(pool.free_frames().get(), 0);
    smp::run_on_all(take_until_dry, room);
    let mut held = core::mem::take(&mut *DRY_HELD.lock());
    let served: usize = SERVED.iter().take(smp::online()).map(|s| s.load(Ordering::SeqCst)).sum();
    check_eq!(served, held.len());
    check_eq!(held.len() as u64, parked);
    check_eq!(frames.cached_frames().get(), 0);
    held.sort_unstable();
    let len = held.len();
    held.dedup();
    check_eq!(held.len(), len);
    for number in held {
        check!(FRAMES.free(Frame::from_number(number), FrameCount::new(1)).is_ok());
    }
    for (run, count) in runs {
        check!(pool.free(run, FrameCount::new(count)).is_ok());
    }
    frames.check_invariants();
    check_eq!(frames.free_frames(), free_before);
    Ok(())
}
