//! What the tests share: freeing a block they own.

use std::ptr::NonNull;

use memkit_heap::{CpuId, Heap, HeapId, KernelHeaps, PageSource, XmfreeError};

/// Frees blocks the tests own. The tests use blocks only as addresses (through raw
/// pointers, never through the `Allocator` or `GlobalAlloc` implementations) and free a
/// live block once; every other pointer they pass (inside a block, freed already, foreign,
/// of the other heap) names no live block and is refused.
#[allow(dead_code, reason = "not every test file frees single heaps")]
pub(crate) trait FreeOwned {
    /// [`Heap::free`] of a block the test owns (or of a bad pointer).
    fn free_owned(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError>;
}

impl<P: PageSource, C: CpuId> FreeOwned for Heap<P, C> {
    fn free_owned(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
        // SAFETY: the tests' blocks are theirs (see the trait).
        unsafe { self.free(ptr) }
    }
}

/// [`KernelHeaps::xmfree`] of a block the test owns (or of a bad pointer).
#[allow(dead_code, reason = "not every test file frees through the kernel heaps")]
pub(crate) fn xmfree<P: PageSource, C: CpuId + Copy>(
    heaps: &KernelHeaps<'_, P, C>,
    ptr: NonNull<u8>,
    heap: HeapId,
) -> Result<(), XmfreeError> {
    // SAFETY: the tests' blocks are theirs (see `FreeOwned`).
    unsafe { heaps.xmfree(ptr, heap) }
}
