//! Who may enter the heap: one level per thread (a call that finds its thread inside
//! already is nested, from a signal handler), and the fork gate.
//!
//! ```text
//!   enter ─ depth > 0 on this thread? ──yes──▶ Nested (the caller takes the nested path)
//!           │ no
//!           ├─ count in one of SLOTS counters ─ fork pending? ─yes─▶ uncount, wait, retry
//!           ▼ no
//!        Entered (the heap may be used)            drop: uncount, depth 0
//!
//!   fork: prepare closes the gate and waits until every counter is zero: no thread is
//!   inside the heap, so every lock below it (shards, page source, frame allocator) is free;
//!   parent and child open it again, and the child's heap is whole.
//! ```
//!
//! The counters are spread over [`SLOTS`] cache lines (a thread keeps the slot it was given
//! first), so threads entering at once do not share one line. The thread that forks may
//! enter while the gate is closed (the atfork handlers registered before ours run after our
//! prepare and may allocate): it is the only one inside then. The gate holds the forking
//! thread's identity in one word, so that a signal handler that allocates on that thread
//! at any point of prepare or release sees either the gate closed by its own thread (and
//! enters) or the gate open: two words (closed, and who closed it) left a moment in
//! release where the handler found the gate closed by nobody it knew and waited forever.
//!
//! # Unsafe
//! `pthread_atfork` and `sched_getcpu` calls.

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering::*};

use memkit_heap::CpuId;

/// Counters of threads inside the heap.
pub(crate) const SLOTS: usize = 32;

#[repr(align(128))]
struct Slot(AtomicUsize);

static INSIDE: [Slot; SLOTS] = [const { Slot(AtomicUsize::new(0)) }; SLOTS];
/// The forking thread's identity ([`me`]) while the gate is closed, 0 while it is open.
static FORKING: AtomicUsize = AtomicUsize::new(0);
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// 1 while this thread is inside the malloc family (0 outside).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// This thread's slot plus one (0: none yet).
    static SLOT: Cell<usize> = const { Cell::new(0) };
    /// A byte whose address names this thread ([`me`]).
    static ME: u8 = const { 0 };
}

/// This thread's identity: the address of its own thread-local byte, never 0.
#[inline]
fn me() -> usize {
    ME.with(|b| core::ptr::from_ref(b) as usize)
}

/// The outcome of [`enter`].
#[derive(Debug)]
pub(crate) enum Entry {
    /// The thread is inside the heap until this is dropped.
    Entered(Entered),
    /// The thread is inside the malloc family already (a signal handler interrupted it):
    /// the heap must not be touched.
    Nested,
}

/// A thread inside the heap.
#[derive(Debug)]
pub(crate) struct Entered {
    slot: usize,
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        INSIDE[self.slot % SLOTS].0.fetch_sub(1, Release);
        DEPTH.set(0);
    }
}

#[inline]
fn my_slot() -> usize {
    let s = SLOT.get();
    if s != 0 {
        return s - 1;
    }
    let s = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
    SLOT.set(s + 1);
    s
}

/// Enters the heap, or reports that this thread is inside the malloc family already.
#[inline]
pub(crate) fn enter() -> Entry {
    if DEPTH.get() != 0 {
        return Entry::Nested;
    }
    DEPTH.set(1);
    let slot = my_slot();
    let counter = &INSIDE[slot % SLOTS];
    loop {
        counter.0.fetch_add(1, SeqCst);
        let forker = FORKING.load(SeqCst);
        if forker == 0 || forker == me() {
            return Entry::Entered(Entered { slot });
        }
        counter.0.fetch_sub(1, SeqCst);
        while FORKING.load(Relaxed) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Whether this thread is inside the malloc family now.
pub(crate) fn inside() -> bool {
    DEPTH.get() != 0
}

extern "C" fn prepare() {
    if inside() {
        // A fork from a signal handler that interrupted this thread inside malloc: the
        // heap's state is this thread's own, half-changed; nothing can be waited for.
        return;
    }
    let me = me();
    while FORKING.compare_exchange(0, me, SeqCst, Relaxed).is_err() {
        core::hint::spin_loop();
    }
    for s in &INSIDE {
        while s.0.load(SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}

extern "C" fn release() {
    // One compare-exchange: a signal handler on this thread sees the gate either closed by
    // its own thread or open.
    let _ = FORKING.compare_exchange(me(), 0, SeqCst, Relaxed);
}

/// Registers the fork handlers (once, from the library's constructor).
pub(crate) fn register_fork_handlers() {
    // SAFETY: the handlers are plain functions that live as long as the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}

/// The heap's shard: the CPU the thread runs on (`sched_getcpu`, which reads the kernel's
/// per-thread record without a system call), or this thread's slot when the kernel cannot
/// tell.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThisCpu;

impl CpuId for ThisCpu {
    #[inline]
    fn current_cpu(&self) -> usize {
        // SAFETY: no arguments, no memory touched.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).unwrap_or_else(|_| my_slot())
    }
}
