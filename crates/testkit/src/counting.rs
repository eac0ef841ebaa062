//! A counting global allocator, for the tests that show a path allocates no heap memory.
//!
//! A test binary installs [`Counting`] as its global allocator and wraps the code it watches
//! in [`counted`]: only the calling thread's allocations (and reallocations) inside the
//! closure are counted, so the test harness's other threads cannot change the figure. Every
//! call is served by the system allocator.
//!
//! ```
//! use memkit_testkit::counting::{Counting, counted};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! fn main() {
//!     let (v, n) = counted(|| std::hint::black_box(Vec::<u8>::with_capacity(8)));
//!     assert_eq!(n, 1, "the counter sees allocations");
//!     let (_, n) = counted(|| v.len());
//!     assert_eq!(n, 0, "a path that allocates nothing");
//! }
//! ```
//!
//! [`counted`] counts nothing when [`Counting`] is not the global allocator; a test first
//! counts an allocation it knows of, as above, to show that it is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the allocations of the threads inside [`counted`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// This thread's counted allocations.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread's allocations while its locals are being torn down are not counted.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract (a non-zero-sized layout).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc_zeroed`'s contract (a non-zero-sized layout).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the number of heap allocations and reallocations this
/// thread made meanwhile (0 when [`Counting`] is not the global allocator).
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let was = COUNTED.with(|c| c.replace(true));
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    let after = ALLOCATIONS.with(Cell::get);
    COUNTED.with(|c| c.set(was));
    (r, after - before)
}
