//! `GlobalAlloc` and `allocator_api2::Allocator` over a heap, so Rust code can allocate
//! from it.
//!
//! `dealloc` of a pointer the heap refuses (a bug in the caller) is ignored in release
//! builds and caught by a debug assertion: the heap's metadata is never corrupted by it.
//!
//! # Unsafe
//!
//! Implementing `GlobalAlloc` and `Allocator` is `unsafe`: they rely on a heap's blocks
//! fitting the layout, being aligned and staying disjoint while allocated, and on every free
//! going back to the heap, which checks the pointer before it changes anything.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use spin::RelaxStrategy;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::heap::{CpuId, Heap};
use crate::source::PageSource;
use crate::xmalloc::{HeapId, KernelHeaps};

#[inline]
fn align_log2(layout: Layout) -> u32 {
    layout.align().trailing_zeros()
}

// SAFETY: `allocate` returns blocks of at least `size` bytes aligned to the layout's
// alignment, disjoint from every live block, or null; `free` only frees live blocks.
unsafe impl<P: PageSource, C: CpuId, R: RelaxStrategy> GlobalAlloc for Heap<P, C, R> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout.size(), align_log2(layout)).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `GlobalAlloc`'s contract: the block was allocated here and the
            // caller gives it up.
            let r = unsafe { self.free(p) };
            debug_assert!(r.is_ok(), "dealloc: {r:?}");
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else { return ptr::null_mut() };
        // SAFETY: the caller owns the block (GlobalAlloc's contract) and does not touch it
        // during the call.
        let r = unsafe { Heap::realloc_aligned(self, p, new_size, align_log2(layout)) };
        debug_assert!(r.as_ref().map_or(true, |n| (n.as_ptr() as usize).is_multiple_of(layout.align())));
        r.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

// SAFETY: as for `GlobalAlloc`: blocks are fitting, aligned and disjoint, and stay valid
// until deallocated (the heap and its source outlive the borrow).
unsafe impl<P: PageSource, C: CpuId, R: RelaxStrategy> Allocator for &Heap<P, C, R> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling, aligned pointer: zero-sized blocks take no memory.
            let p = NonNull::new(ptr::without_provenance_mut(layout.align())).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        let p = Heap::allocate(self, layout.size(), align_log2(layout)).map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: `Allocator`'s contract: the block is currently allocated by this
            // allocator and the caller gives it up.
            let r = unsafe { self.free(ptr) };
            debug_assert!(r.is_ok(), "deallocate: {r:?}");
        }
    }
}

// SAFETY: the kernel heap's blocks, as for `Heap`.
unsafe impl<P: PageSource, C: CpuId + Copy> GlobalAlloc for KernelHeaps<'_, P, C> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.try_xmalloc(layout.size(), align_log2(layout), HeapId::Kernel).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `GlobalAlloc`'s contract: the block was allocated here and the
            // caller gives it up.
            let r = unsafe { self.xmfree(p, HeapId::Kernel) };
            debug_assert!(r.is_ok(), "dealloc: {r:?}");
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else { return ptr::null_mut() };
        // SAFETY: the caller owns the block (GlobalAlloc's contract) and does not touch it
        // during the call; the backing heap that owns it resizes it in place or moves it
        // aligned to the layout's alignment.
        let r = unsafe { KernelHeaps::realloc_aligned(self, p, new_size, align_log2(layout), HeapId::Kernel) };
        debug_assert!(r.as_ref().map_or(true, |n| (n.as_ptr() as usize).is_multiple_of(layout.align())));
        r.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}
