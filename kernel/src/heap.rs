//! The kernel's `#[global_allocator]`: memkit's xmalloc kernel heaps, once they are built.
//!
//! ```text
//!   Box/Vec/BTreeMap ─▶ KernelAllocator ─▶ KernelHeaps (kernel_heap, pinned_heap; 4K/64K + 16M)
//!                                              └▶ DirectMapPageSource ─▶ KernelFrames (pmallocator)
//!                                                 pages at 0xffff_8000_0000_0000 + frame address
//! ```
//!
//! Until [`init`] runs (after the frame allocator and the direct map exist), every
//! allocation fails (returns null, so `alloc` reports an allocation error): nothing before
//! that point allocates.
//!
//! # Unsafe
//! The heaps' page sources turn frames into pointers through the direct map, which `init`'s
//! caller promises covers all RAM the frame allocator manages; `GlobalAlloc` forwards every
//! call to the installed heaps, and before they exist nothing can have been allocated.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use memkit_heap::{DirectMapPageSource, KernelHeaps, XmallocError};
use memkit_types::{PhysAddr, VirtAddr};

use crate::frames::KernelFrames;
use crate::phys_window::DIRECT_MAP_BASE;
use crate::smp::ThisCpu;

/// The page source of the kernel's heaps.
pub(crate) type Pages = DirectMapPageSource<&'static KernelFrames>;
/// The kernel's heaps, over page sources set once the frames and the direct map exist.
/// Each CPU allocates from its own shard (by its index).
pub(crate) type Heaps = KernelHeaps<'static, spin::Once<Pages>, ThisCpu>;

static PAGEABLE: spin::Once<Pages> = spin::Once::new();
static PINNED: spin::Once<Pages> = spin::Once::new();
/// The heaps themselves (about 150 KiB): laid out at compile time by the `const fn`
/// constructor, so they never pass through the boot stack.
static HEAPS: Heaps = KernelHeaps::new(&PAGEABLE, &PINNED, ThisCpu);

/// Builds the kernel heaps over `frames` through the direct map (covering RAM below
/// `direct_map_end`), with 16 MiB large pages when `large_pages`, and makes them the global
/// allocator. Returns the heaps.
///
/// # Errors
/// [`XmallocError`] when the heaps cannot get their page maps.
///
/// # Safety
/// The direct map is in use and maps all RAM below `direct_map_end`, which holds every
/// frame `frames` hands out.
pub(crate) unsafe fn init(
    frames: &'static KernelFrames,
    direct_map_end: PhysAddr,
    large_pages: bool,
) -> Result<&'static Heaps, XmallocError> {
    let base = VirtAddr::new(DIRECT_MAP_BASE as usize);
    // SAFETY: the caller guarantees the direct map covers the frames; the source owns each
    // frame it takes from the allocator until it gives it back.
    PAGEABLE.call_once(|| unsafe { DirectMapPageSource::new(frames, base, direct_map_end) });
    // SAFETY: as above.
    PINNED.call_once(|| unsafe { DirectMapPageSource::new(frames, base, direct_map_end) });
    HEAPS.init(large_pages)?;
    install(&HEAPS);
    Ok(&HEAPS)
}

/// The heap `alloc` uses once installed.
static HEAP: spin::Once<&'static (dyn GlobalAlloc + Sync)> = spin::Once::new();

/// Forwards to the installed heap.
#[derive(Debug)]
pub(crate) struct KernelAllocator;

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;

/// Makes `heap` the kernel's allocator. Later calls change nothing.
fn install(heap: &'static (dyn GlobalAlloc + Sync)) {
    HEAP.call_once(|| heap);
}

// SAFETY: every call is forwarded to one heap that upholds `GlobalAlloc`'s contract; before
// it exists `alloc` returns null (an allocation failure) and nothing can be deallocated.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match HEAP.get() {
            // SAFETY: the caller's layout contract is forwarded unchanged.
            Some(heap) => unsafe { heap.alloc(layout) },
            None => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(heap) = HEAP.get() {
            // SAFETY: `ptr` came from this allocator, hence from the installed heap.
            unsafe { heap.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match HEAP.get() {
            // SAFETY: as for `dealloc`, with the caller's size contract.
            Some(heap) => unsafe { heap.realloc(ptr, layout, new_size) },
            None => ptr::null_mut(),
        }
    }
}
