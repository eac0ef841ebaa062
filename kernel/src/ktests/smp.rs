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
