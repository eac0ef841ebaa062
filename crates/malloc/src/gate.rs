//! A thread's side of the heap, in one thread-local record: who may enter (one level per
//! thread; a call that finds its thread inside already is nested, from a signal handler),
//! the fork handlers, the thread's cache of freed blocks, its shard, and how it waits for a
//! heap lock ([`Backoff`]).
//!
//! ```text
//!   enter ─ depth > 0 on this thread? ──yes──▶ Nested (the caller takes the nested path)
//!           │ no: depth 1
//!           ▼
//!        Entered (the heap may be used)            drop: depth 0
//!
//!   fork: prepare marks its thread inside (depth 1) and takes every lock of the heap and
//!   of its RAM, in the order their operations nest them: it waits for the operations in
//!   progress, and no other thread can start one. Parent and child let go of the locks;
//!   the child finds no lock held by a thread it does not have, and every structure whole.
//! ```
//!
//! This is what glibc's and jemalloc's prepare handlers do (they lock every arena): a call
//! of the family pays nothing for `fork`, and threads share no line to enter. The forking
//! thread is inside from prepare to release, so a signal handler that allocates on it then,
//! or an atfork handler that runs after ours (registered before it), takes the nested path
//! instead of waiting for the locks its own thread holds.
//!
//! # Unsafe
//! The `pthread_atfork` and `sched_getcpu` calls, an [`Entered`] reaching its own thread's
//! record, and the fork handlers letting go of the locks prepare kept.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*, compiler_fence};

use memkit_heap::{CpuId, ThreadCache};
use spin::RelaxStrategy;

/// Threads that asked for a shard number when the kernel could not say their CPU.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A thread's own state, in one thread-local record: a library loaded with `LD_PRELOAD`
/// reaches thread-locals through `__tls_get_addr`, so each call of the family makes one
/// such lookup rather than one per variable.
struct Local {
    /// 1 while this thread is inside the malloc family (0 outside). Read by a signal
    /// handler that interrupts the thread: an atomic, and compiler fences keep its changes
    /// before and after the calls they bracket.
    depth: AtomicU32,
    /// Whether this thread's prepare handler took the locks (its release lets them go),
    /// and whether the RAM's among them.
    forking: Cell<bool>,
    ram_locked: Cell<bool>,
    /// This thread's number plus one (0: none yet), a shard when the CPU is unknown.
    slot: Cell<usize>,
    /// The CPU this thread ran on when it last asked (`sched_getcpu`), and the calls
    /// since: it asks again every [`CPU_REFRESH`] calls.
    cpu: Cell<usize>,
    calls: Cell<u32>,
    /// The blocks this thread freed last, for its next allocations (reached only through
    /// the thread's one [`Entered`]).
    cache: UnsafeCell<ThreadCache>,
    /// Whether the cache may be used: [`CACHE_NEW`] until the thread's exit handler is
    /// set, [`CACHE_ON`], then [`CACHE_OFF`] once it ran (the thread is ending).
    cache_state: Cell<u8>,
    /// Times this thread waited for a heap lock (see [`Backoff`]).
    waits: Cell<u32>,
}

/// The thread has not cached a block yet: its exit handler is not set.
const CACHE_NEW: u8 = 0;
const CACHE_ON: u8 = 1;
const CACHE_OFF: u8 = 2;

/// The key whose destructor flushes an ending thread's cache, plus one (0: none).
static CACHE_KEY: AtomicUsize = AtomicUsize::new(0);

/// Calls of a thread between two `sched_getcpu`s (which costs about 30 instructions, a fifth
/// of a `malloc`); a thread moved to another CPU keeps its old shard for at most as many.
const CPU_REFRESH: u32 = 32;

thread_local! {
    /// This thread's state.
    static LOCAL: Local = const {
        Local {
            depth: AtomicU32::new(0),
            forking: Cell::new(false),
            ram_locked: Cell::new(false),
            slot: Cell::new(0),
            cpu: Cell::new(0),
            calls: Cell::new(0),
            cache: UnsafeCell::new(ThreadCache::new()),
            cache_state: Cell::new(CACHE_NEW),
            waits: Cell::new(0),
        }
    };
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
    local: *const Local,
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        compiler_fence(SeqCst);
        // SAFETY: the record of this thread (an `Entered` never leaves its thread: it holds
        // a raw pointer, so it is neither `Send` nor `Sync`), which lives as long as it.
        unsafe { (*self.local).depth.store(0, Relaxed) };
    }
}

impl Entered {
    /// This thread's cache of freed blocks, when it may be used: its exit handler is set
    /// (set here on the first need) and has not run.
    #[inline]
    pub(crate) fn cache(&mut self) -> Option<&mut ThreadCache> {
        // SAFETY: the record of this thread, alive as long as the `Entered`.
        let l = unsafe { &*self.local };
        if l.cache_state.get() != CACHE_ON && !cache_on(l) {
            return None;
        }
        // SAFETY: only an `Entered` reaches the cache, one at a time per thread (a nested
        // call gets none), and this one is borrowed mutably for as long as the reference.
        Some(unsafe { &mut *l.cache.get() })
    }

    /// Lets go of the cache for good (the thread is ending): calls after this one free
    /// and allocate without it.
    pub(crate) fn end_cache(&mut self) {
        // SAFETY: as in `cache`.
        unsafe { (*self.local).cache_state.set(CACHE_OFF) };
    }
}

/// Sets the exit handler of the thread whose record is `l` on its first use of the cache;
/// whether the cache may be used.
#[cold]
fn cache_on(l: &Local) -> bool {
    let key = CACHE_KEY.load(Acquire);
    if l.cache_state.get() != CACHE_NEW || key == 0 {
        return false;
    }
    // SAFETY: a key this library created; the value only says the thread has a cache (a
    // call of the family that `pthread_setspecific` may make takes the nested path).
    if unsafe { libc::pthread_setspecific((key - 1) as libc::pthread_key_t, core::ptr::dangling::<u8>().cast()) } != 0 {
        return false;
    }
    l.cache_state.set(CACHE_ON);
    true
}

/// Creates the key whose destructor runs `end` when a thread that cached blocks ends
/// (once, from the library's constructor); without it, no thread caches.
pub(crate) fn register_thread_end(end: unsafe extern "C" fn(*mut libc::c_void)) {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the key; `end` lives as long as the process.
    if unsafe { libc::pthread_key_create(&raw mut key, Some(end)) } == 0 {
        CACHE_KEY.store(key as usize + 1, Release);
    }
}

/// This thread's number, given on its first need.
fn slot_of(l: &Local) -> usize {
    let s = l.slot.get();
    if s != 0 {
        return s - 1;
    }
    let s = NEXT_SLOT.fetch_add(1, Relaxed);
    l.slot.set(s + 1);
    s
}

/// Enters the heap, or reports that this thread is inside the malloc family already.
#[inline]
pub(crate) fn enter() -> Entry {
    LOCAL.with(|l| {
        if l.depth.load(Relaxed) != 0 {
            return Entry::Nested;
        }
        l.depth.store(1, Relaxed);
        // A signal handler that interrupts what follows sees the thread inside.
        compiler_fence(SeqCst);
        Entry::Entered(Entered { local: core::ptr::from_ref(l) })
    })
}

extern "C" fn prepare() {
    let took = LOCAL.with(|l| {
        if l.depth.load(Relaxed) != 0 {
            // A fork from a signal handler that interrupted this thread inside malloc: the
            // heap's state is this thread's own, half-changed, and it may hold a lock;
            // nothing can be waited for.
            return false;
        }
        l.depth.store(1, Relaxed);
        l.forking.set(true);
        true
    });
    compiler_fence(SeqCst);
    if took {
        let ram = crate::lock_for_fork();
        LOCAL.with(|l| l.ram_locked.set(ram));
    }
}

extern "C" fn release() {
    LOCAL.with(|l| {
        if l.forking.replace(false) {
            // SAFETY: this thread's prepare took the locks (in the child: the thread that
            // forked, which is this one) and nothing has let go of them since.
            unsafe { crate::unlock_after_fork(l.ram_locked.get()) };
            compiler_fence(SeqCst);
            l.depth.store(0, Relaxed);
        }
    });
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

/// How the heap's locks wait for their holder in a process: spin (the holder runs on
/// another CPU and lets go within a few hundred instructions), and every
/// [`YIELD_EVERY`]th time give the CPU up (`sched_yield`). A process often has more
/// threads than CPUs; a holder preempted inside the heap needs a CPU to finish, and a
/// waiter that only spins keeps it from one for the rest of its time slice (a test
/// program of five threads on two CPUs spent nine tenths of its time in the heap's
/// general paths spinning).
#[derive(Debug)]
pub(crate) struct Backoff;

/// Spins between two yields of a waiting thread (of 8, 64 and 1024, the threaded test
/// program ran fastest with 1024: 0.22 s against 0.24 s and 0.28 s, glibc 0.18 s).
const YIELD_EVERY: u32 = 1024;

impl RelaxStrategy for Backoff {
    #[inline]
    fn relax() {
        let waits = LOCAL.with(|l| {
            let n = l.waits.get().wrapping_add(1);
            l.waits.set(n);
            n
        });
        if waits.is_multiple_of(YIELD_EVERY) {
            // SAFETY: no arguments, no memory touched.
            unsafe { libc::sched_yield() };
        } else {
            core::hint::spin_loop();
        }
    }
}
