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
//! The `pthread_atfork` and `sched_getcpu` calls, and an [`Entered`] reaching its own
//! thread's record.

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

/// A thread's own state, in one thread-local record: a library loaded with `LD_PRELOAD`
/// reaches thread-locals through `__tls_get_addr`, so each call of the family makes one
/// such lookup rather than one per variable.
struct Local {
    /// 1 while this thread is inside the malloc family (0 outside).
    depth: Cell<u32>,
    /// This thread's slot plus one (0: none yet).
    slot: Cell<usize>,
    /// The CPU this thread ran on when it last asked (`sched_getcpu`), and the calls
    /// since: it asks again every [`CPU_REFRESH`] calls.
    cpu: Cell<usize>,
    calls: Cell<u32>,
}

/// Calls of a thread between two `sched_getcpu`s (which costs about 30 instructions, a fifth
/// of a `malloc`); a thread moved to another CPU keeps its old shard for at most as many.
const CPU_REFRESH: u32 = 32;

thread_local! {
    /// This thread's state; its address also names the thread ([`me`]).
    static LOCAL: Local =
        const { Local { depth: Cell::new(0), slot: Cell::new(0), cpu: Cell::new(0), calls: Cell::new(0) } };
}

/// This thread's identity: the address of its own thread-local record, never 0.
#[inline]
fn me() -> usize {
    LOCAL.with(|l| core::ptr::from_ref(l) as usize)
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

/// A thread inside the heap (on this thread only: it holds the thread's record).
#[derive(Debug)]
pub(crate) struct Entered {
    slot: usize,
    local: *const Local,
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        INSIDE[self.slot % SLOTS].0.fetch_sub(1, Release);
        // SAFETY: the record of this thread (an `Entered` never leaves its thread: it holds
        // a raw pointer, so it is neither `Send` nor `Sync`), which lives as long as it.
        unsafe { (*self.local).depth.set(0) };
    }
}

/// The slot of the thread whose record is `l`, given on its first call.
#[inline]
fn slot_of(l: &Local) -> usize {
    let s = l.slot.get();
    if s != 0 {
        return s - 1;
    }
    let s = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
    l.slot.set(s + 1);
    s
}

/// Enters the heap, or reports that this thread is inside the malloc family already.
#[inline]
pub(crate) fn enter() -> Entry {
    LOCAL.with(|l| {
        if l.depth.get() != 0 {
            return Entry::Nested;
        }
        l.depth.set(1);
        let slot = slot_of(l);
        wait_for_fork(slot, l);
        Entry::Entered(Entered { slot, local: core::ptr::from_ref(l) })
    })
}

/// Counts this thread (record `l`, counter `slot`) inside the heap, once no other thread
/// is forking.
#[inline]
fn wait_for_fork(slot: usize, l: &Local) {
    let counter = &INSIDE[slot % SLOTS];
    loop {
        counter.0.fetch_add(1, SeqCst);
        let forker = FORKING.load(SeqCst);
        if forker == 0 || forker == core::ptr::from_ref(l) as usize {
            return;
        }
        counter.0.fetch_sub(1, SeqCst);
        while FORKING.load(Relaxed) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Whether this thread is inside the malloc family now.
pub(crate) fn inside() -> bool {
    LOCAL.with(|l| l.depth.get() != 0)
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

/// The heap's shard: the CPU the thread runs on (`sched_getcpu`, asked every
/// [`CPU_REFRESH`] calls of the thread and kept in its record), or its slot when the kernel
/// cannot tell. Shards by CPU rather than by thread: each shard keeps spans and an arena of
/// its own, so a process of many threads holds as many shards' worth as it has CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThisCpu;

impl CpuId for ThisCpu {
    #[inline]
    fn current_cpu(&self) -> usize {
        LOCAL.with(|l| {
            let calls = l.calls.get();
            l.calls.set(calls.wrapping_add(1));
            if calls % CPU_REFRESH == 0 {
                // SAFETY: no arguments, no memory touched.
                let cpu = unsafe { libc::sched_getcpu() };
                l.cpu.set(usize::try_from(cpu).unwrap_or_else(|_| slot_of(l)));
            }
            l.cpu.get()
        })
    }
}
