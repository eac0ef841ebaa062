//! The C library's malloc family over memkit: `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc` and
//! `malloc_usable_size`, exported from `libmemkit_malloc.so` so that an unmodified program uses
//! them with `LD_PRELOAD`.
//!
//! ```text
//!   malloc ─▶ gate::enter ─(nested: a signal handler inside malloc)─▶ nested: mmap, deferred free
//!                 │ entered
//!                 ▼
//!   memkit_heap::Heap (size classes, shards by CPU) ─▶ Ram: PageSource ─▶ memkit_phys
//!                                                      frame allocator over a reservation
//!                                                      that grows by 64 MiB chunks (ram)
//! ```
//!
//! # C semantics
//! Blocks are aligned to 16 bytes (`max_align_t`), a block `realloc` moves too (a `memalign`
//! block included, as in glibc). `malloc(0)` returns a unique block;
//! failures return null with `errno` `ENOMEM`; `calloc` and `reallocarray` fail with
//! `ENOMEM` when the product overflows; `realloc(p, 0)` frees `p` and returns null (as
//! glibc does); `realloc` that fails keeps the old block. `posix_memalign` returns `EINVAL`
//! for an alignment that is not a power of two multiple of `sizeof(void *)`, `aligned_alloc`
//! fails with `EINVAL` for one that is not a power of two, `memalign` rounds one up to a
//! power of two (as glibc does); alignments beyond 256 MiB fail with `ENOMEM`. `pvalloc`
//! rounds the size up to whole pages. `malloc_usable_size` is at least the size asked for.
//!
//! # What is guaranteed in a real process
//! - **Threads.** The heap is shared; each thread allocates from the shard of the CPU it
//!   runs on (asked every 32 calls), so threads on different CPUs take different locks.
//! - **`fork`.** The prepare handler takes every lock of the heap and of its RAM (as glibc
//!   locks its arenas), so it waits for the operations in progress; the parent and the
//!   child let go of them. The child's heap is whole, whichever threads were allocating
//!   when another forked, and a call pays nothing for it.
//! - **Signals.** A signal handler that calls the family while its thread is inside it
//!   takes the nested path, which takes no lock: its allocations are mappings of their
//!   own, its frees of heap blocks are deferred to the next call that enters the heap, and
//!   it never deadlocks nor corrupts the heap. From such a handler, `realloc` of a heap
//!   block fails (`ENOMEM`, the block kept) and `malloc_usable_size` of one returns 0: both
//!   would need the heap's locks. A handler that runs while its thread is outside the
//!   family takes the ordinary path (another thread holding a lock only makes it wait).
//! - **Start-up.** The first call sets everything up with `mmap` and `mprotect` alone, in
//!   static storage: no allocation, so a call during set-up (a signal) takes the nested
//!   path instead of recursing.
//! - **Foreign pointers.** `free` of a pointer the family did not hand out (from before the
//!   library was loaded, or from the dynamic loader's own allocator) is ignored;
//!   `realloc` of one fails with `ENOMEM`, `malloc_usable_size` of one returns 0. A bad
//!   pointer inside the heap (a double free, a pointer into a block) is refused by the
//!   heap's out-of-band checks and ignored.
//! - **No panics.** Nothing on these paths unwraps or indexes unchecked; the library is
//!   built with `panic = "abort"`, so even a bug could not unwind into C.
//!
//! # Unsafe
//! The exports are `unsafe extern "C"` functions with C's contracts; they copy and clear
//! blocks the heap or the nested path handed out, within their usable sizes.

#![allow(unsafe_code)]

use core::ffi::c_void;
use core::ptr::{NonNull, null_mut};

use memkit_heap::{FitPolicy, Heap, MAX_ALIGN_LOG2};

mod gate;
mod nested;
mod ram;

use gate::{Backoff, Entry, ThisCpu};
use ram::Ram;

/// The alignment of every block (`max_align_t`): 2^4.
const MIN_ALIGN_LOG2: u32 = 4;
const PAGE: usize = 4096;

static PAGES: spin::Once<Ram> = spin::Once::new();
static HEAP: Heap<&'static spin::Once<Ram>, ThisCpu, Backoff> =
    Heap::with_relax(&PAGES, ThisCpu, false, FitPolicy::Adaptive);

/// Registers the fork handlers when the library is loaded (before any fork can happen).
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = constructor;

extern "C" fn constructor() {
    gate::register_fork_handlers();
    gate::register_thread_end(thread_end);
}

/// When a thread that cached blocks ends: gives them back to the heap, and stops caching
/// (a later destructor's calls go straight to the heap).
unsafe extern "C" fn thread_end(_: *mut c_void) {
    if let Entry::Entered(mut inside) = gate::enter() {
        if let Some(cache) = inside.cache() {
            HEAP.flush(cache);
        }
        inside.end_cache();
    }
}

/// The calling thread's `errno`.
fn errno_slot() -> *mut i32 {
    // SAFETY: no arguments; returns the calling thread's errno slot.
    unsafe { libc::__errno_location() }
}

fn set_errno(e: i32) {
    // SAFETY: the calling thread's errno slot, always valid and aligned.
    unsafe { errno_slot().write(e) };
}

fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { errno_slot().read() }
}

/// Whether the heap is ready; sets it up on the first call.
#[inline]
fn ready() -> bool {
    HEAP.is_initialised() || init()
}

#[cold]
fn init() -> bool {
    PAGES.try_call_once(Ram::new).is_ok() && HEAP.init().is_ok()
}

/// Before a fork (the prepare handler, on a thread not inside the family): finishes any
/// set-up in progress, then takes every lock of the heap and of its RAM, the heap's first
/// (an operation holding one of them may take the RAM's) and keeps them. Says whether the
/// RAM was set up (and locked).
fn lock_for_fork() -> bool {
    // Waits for a set-up another thread is doing (the page map and the RAM are `Once`s),
    // so that none is half done in the child.
    let _ = ready();
    HEAP.lock_all();
    let ram = PAGES.get();
    if let Some(ram) = ram {
        ram.lock_all();
    }
    ram.is_some()
}

/// After a fork, in the parent and in the child: lets go of the locks
/// [`lock_for_fork`] took; `ram` is what it returned.
///
/// # Safety
/// This thread called `lock_for_fork` (in the child: the thread that forked) and nothing
/// let go of its locks since.
unsafe fn unlock_after_fork(ram: bool) {
    if ram && let Some(ram) = PAGES.get() {
        // SAFETY: the caller's contract: `lock_for_fork` locked it.
        unsafe { ram.unlock_all() };
    }
    // SAFETY: the caller's contract.
    unsafe { HEAP.unlock_all() };
}

/// Whether `p` lies in the heap's reservation.
#[inline]
fn in_heap(p: usize) -> bool {
    PAGES.get().is_some_and(|r| r.contains(p))
}

/// Frees the blocks whose free a nested call deferred (the caller is inside the heap).
#[inline]
fn drain() {
    nested::drain(|p| {
        if let Some(p) = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(p)) {
            // SAFETY: a block a program freed from a signal handler: it gave it up then.
            // Anything else is refused by the heap's checks and changes nothing.
            let _ = unsafe { HEAP.free(p) };
        }
    });
}

fn fail(e: i32) -> *mut c_void {
    set_errno(e);
    null_mut()
}

/// `size` bytes aligned to 2^`align_log2` (at least 16), or null with `ENOMEM`.
fn allocate(size: usize, align_log2: u32) -> *mut c_void {
    let align_log2 = align_log2.max(MIN_ALIGN_LOG2);
    if align_log2 > MAX_ALIGN_LOG2 {
        return fail(libc::ENOMEM);
    }
    match gate::enter() {
        Entry::Nested => match nested::allocate(size, 1 << align_log2) {
            Some(p) => p.cast(),
            None => fail(libc::ENOMEM),
        },
        Entry::Entered(mut inside) => {
            if !ready() {
                return fail(libc::ENOMEM);
            }
            drain();
            let size = size.max(1);
            let p = match inside.cache() {
                Some(cache) if align_log2 == MIN_ALIGN_LOG2 => HEAP.allocate_cached(cache, size),
                _ => HEAP.allocate(size, align_log2),
            };
            match p {
                Ok(p) => p.as_ptr().cast(),
                Err(_) => fail(libc::ENOMEM),
            }
        }
    }
}

/// Frees `p`: a heap block, a nested block, or nothing of ours (ignored).
fn release(p: *mut c_void) {
    let Some(ptr) = NonNull::new(p.cast::<u8>()) else { return };
    let addr = ptr.as_ptr().expose_provenance();
    match gate::enter() {
        Entry::Nested => {
            if in_heap(addr) {
                nested::defer_free(addr);
            } else {
                nested::free(addr);
            }
        }
        Entry::Entered(mut inside) => {
            drain();
            if in_heap(addr) {
                let _ = match inside.cache() {
                    // SAFETY: `free`'s contract: the program gives the block up. A pointer
                    // that is not a live block start is refused by the heap and changes
                    // nothing (one in the cache already too); the cache holds only the
                    // heap's blocks.
                    Some(cache) => unsafe { HEAP.free_cached(cache, ptr) },
                    // SAFETY: as above.
                    None => unsafe { HEAP.free(ptr) },
                };
            } else {
                nested::free(addr);
            }
        }
    }
}

/// Copies `len` bytes between two distinct live blocks.
fn copy(from: *const u8, to: *mut u8, len: usize) {
    // SAFETY: callers pass two distinct live blocks, each at least `len` bytes long.
    unsafe { core::ptr::copy_nonoverlapping(from, to, len) };
}

fn reallocate(p: *mut c_void, size: usize) -> *mut c_void {
    let Some(ptr) = NonNull::new(p.cast::<u8>()) else { return allocate(size, MIN_ALIGN_LOG2) };
    if size == 0 {
        release(p);
        return null_mut();
    }
    let addr = ptr.as_ptr().expose_provenance();
    if !in_heap(addr) {
        // A nested block moves to a new block (of the heap when the call may enter it);
        // a foreign one cannot: its size is unknown.
        let Some(usable) = nested::usable(addr) else { return fail(libc::ENOMEM) };
        let new = allocate(size, MIN_ALIGN_LOG2);
        if !new.is_null() {
            copy(ptr.as_ptr(), new.cast(), usable.min(size));
            nested::free(addr);
        }
        return new;
    }
    match gate::enter() {
        // The heap block's size needs the heap's locks.
        Entry::Nested => fail(libc::ENOMEM),
        Entry::Entered(_inside) => {
            drain();
            // SAFETY: `realloc`'s contract: the program owns the block and gives it up
            // when it moves. A pointer that is not a live block start is refused. C's
            // `realloc` keeps `max_align_t` alignment only (a `memalign` block that
            // moves is aligned to 16, as glibc's is), which lets a class block move
            // under one lock.
            match unsafe { HEAP.realloc_aligned(ptr, size, MIN_ALIGN_LOG2) } {
                Ok(n) => n.as_ptr().cast(),
                Err(_) => fail(libc::ENOMEM),
            }
        }
    }
}

fn usable_size(p: *mut c_void) -> usize {
    let Some(ptr) = NonNull::new(p.cast::<u8>()) else { return 0 };
    let addr = ptr.as_ptr().expose_provenance();
    if !in_heap(addr) {
        return nested::usable(addr).unwrap_or(0);
    }
    match gate::enter() {
        Entry::Nested => 0,
        Entry::Entered(_inside) => HEAP.block(ptr).map_or(0, |b| b.usable),
    }
}

/// `malloc(3)`.
///
/// # Safety
/// None beyond C's: the block is the caller's until it frees it.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    allocate(size, MIN_ALIGN_LOG2)
}

/// `free(3)`.
///
/// # Safety
/// `p` is null or a block of this family that the caller owns and never uses again.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn free(p: *mut c_void) {
    release(p);
}

/// `calloc(3)`: `n * size` zeroed bytes; `ENOMEM` when the product overflows.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else { return fail(libc::ENOMEM) };
    let p = allocate(total, MIN_ALIGN_LOG2);
    if !p.is_null() {
        // SAFETY: a fresh block of at least `total` bytes.
        unsafe { p.cast::<u8>().write_bytes(0, total) };
    }
    p
}

/// `realloc(3)`: `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)` frees `p` and returns
/// null; on failure the old block is kept.
///
/// # Safety
/// `p` is null or a block of this family that the caller owns; after a non-null result it
/// uses only the result.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    reallocate(p, size)
}

/// `reallocarray(3)`: `realloc(p, n * size)`, `ENOMEM` (the block kept) when the product
/// overflows.
///
/// # Safety
/// As [`realloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => reallocate(p, total),
        None => fail(libc::ENOMEM),
    }
}

/// `posix_memalign(3)`: `EINVAL` for an alignment that is not a power of two multiple of
/// `sizeof(void *)`, `ENOMEM` when no block can be had (`*memptr` untouched then); `errno`
/// is left as it was.
///
/// # Safety
/// `memptr` is valid for a write of a pointer.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = allocate(size, align.trailing_zeros());
    set_errno(saved);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { memptr.write(p) };
    0
}

/// `aligned_alloc(3)`: `EINVAL` for an alignment that is not a power of two.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return fail(libc::EINVAL);
    }
    allocate(size, align.trailing_zeros())
}

/// `memalign(3)`: an alignment that is not a power of two is rounded up to one (as glibc
/// does); one beyond `SIZE_MAX / 2 + 1` is `EINVAL`.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(a) => allocate(size, a.trailing_zeros()),
        None => fail(libc::EINVAL),
    }
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    allocate(size, PAGE.trailing_zeros())
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages (one page for 0).
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE) {
        Some(s) => allocate(s, PAGE.trailing_zeros()),
        None => fail(libc::ENOMEM),
    }
}

/// `malloc_usable_size(3)`: the bytes usable in the block (at least those asked for); 0 for
/// null or a pointer that is not a block of this family.
///
/// # Safety
/// `p` is null or a live block of this family.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    usable_size(p)
}

/// Counters of the malloc family, for tests and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MallocStats {
    /// Bytes of the reservation committed so far (made memory, in 64 MiB chunks).
    pub committed: usize,
    /// Frees from signal handlers dropped because their table was full.
    pub dropped_frees: usize,
}

/// The malloc family's counters now.
#[must_use]
pub fn stats() -> MallocStats {
    MallocStats { committed: PAGES.get().map_or(0, Ram::committed), dropped_frees: nested::dropped() }
}

/// Runs the heap's invariant checker (tests).
#[cfg(test)]
fn check() {
    HEAP.check_invariants();
}

#[cfg(test)]
mod tests;
