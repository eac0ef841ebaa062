//! The kernel heap: memkit's xmalloc heaps as the global allocator.
//!
//! # Unsafe
//! The tests write into heap blocks they allocated and free blocks they no longer use.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;

use memkit_heap::{HeapId, XmallocError, XmfreeError};
use memkit_types::{FrameSource, PAGE_SIZE};

use super::fail;
use crate::frames::KernelFrames;
use crate::heap::Heaps;
use crate::phys_window::DIRECT_MAP_BASE;
use crate::serial::println;
use crate::testing::{Runner, TestResult, check, check_eq};

/// The kernel heap: memkit's xmalloc heaps as the global allocator.
pub(crate) fn heap(runner: &mut Runner, heaps: &'static Heaps, frames: &KernelFrames) {
    runner.run("heap::collections_use_the_global_allocator", || collections_use_the_heap(heaps));
    runner.run("heap::xmalloc_xmfree_and_their_errors", || xmalloc_and_errors(heaps));
    runner.run("heap::pinned_heap_and_pins", || pinned_heap(heaps));
    runner.run("heap::large_blocks_come_from_frames_and_go_back", || large_blocks(heaps, frames));
    let stats = kernel_heap_stats(heaps);
    println!(
        "kernel heap after its tests: {} spans, {} pages for blocks, {} pages of metadata",
        stats.spans, stats.pages, stats.metadata_pages
    );
}

fn collections_use_the_heap(heaps: &Heaps) -> TestResult {
    let before = kernel_heap_stats(heaps);
    let values: Vec<u64> = (0..10_000).collect();
    check_eq!(values.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    let address = values.as_ptr() as u64;
    check!(address >= DIRECT_MAP_BASE);
    let mut map = BTreeMap::new();
    for i in 0..2_000u32 {
        map.insert(i.wrapping_mul(2_654_435_761), Box::new(i));
    }
    check_eq!(map.len(), 2_000);
    check!(map.iter().all(|(k, v)| *k == v.wrapping_mul(2_654_435_761)));
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(if i % 2 == 0 { "mem" } else { "kit" });
    }
    check_eq!(text.len(), 300);
    let during = kernel_heap_stats(heaps);
    check!(during.small_blocks > before.small_blocks + 2_000);
    println!(
        "    heap during: {} small blocks, {} large blocks, {} pages ({} bytes)",
        during.small_blocks,
        during.large_blocks,
        during.pages,
        during.pages * PAGE_SIZE
    );
    drop((values, map, text));
    let after = kernel_heap_stats(heaps);
    check_eq!(after.small_blocks, before.small_blocks);
    check_eq!(after.large_blocks, before.large_blocks);
    heaps.check_invariants();
    Ok(())
}

/// `xmfree` as the heap tests use it.
fn xmfree(heaps: &Heaps, ptr: NonNull<u8>, heap: HeapId) -> Result<(), XmfreeError> {
    // SAFETY: the heap tests free only blocks they took with `xmalloc` themselves and use
    // only as addresses, each once; their bad frees (the wrong heap, inside a block, a
    // block just freed, with no allocation between: the check macros allocate nothing)
    // name no live block, so the heap refuses them.
    unsafe { heaps.xmfree(ptr, heap) }
}

fn xmalloc_and_errors(heaps: &Heaps) -> TestResult {
    let Some(p) = heaps.xmalloc(100, 4, HeapId::Kernel) else { return Err(fail("xmalloc")) };
    check!((p.as_ptr() as usize).is_multiple_of(16));
    // SAFETY: the block is 100 bytes, allocated just above.
    unsafe { p.as_ptr().write_bytes(0xa5, 100) };
    let Some(q) = heaps.palloc(3000, 12) else { return Err(fail("palloc")) };
    check!((q.as_ptr() as usize).is_multiple_of(4096));
    let Some(m) = heaps.malloc(24) else { return Err(fail("malloc")) };
    // The wrong heap, the middle of a block, a double free: errors, nothing changes.
    check!(matches!(xmfree(heaps, p, HeapId::Pinned), Err(XmfreeError::OtherHeap(_) | XmfreeError::NotOwned(_))));
    let inside = NonNull::new(p.as_ptr().wrapping_add(8)).expect("not null");
    check!(matches!(xmfree(heaps, inside, HeapId::Kernel), Err(XmfreeError::NotBlockStart(_))));
    check_eq!(xmfree(heaps, p, HeapId::Kernel), Ok(()));
    check!(matches!(xmfree(heaps, p, HeapId::Kernel), Err(XmfreeError::NotAllocated(_))));
    check_eq!(xmfree(heaps, q, HeapId::Kernel), Ok(()));
    check_eq!(xmfree(heaps, m, HeapId::Kernel), Ok(()));
    check!(matches!(heaps.try_xmalloc(16, 40, HeapId::Kernel), Err(XmallocError::BadAlignment(40))));
    heaps.check_invariants();
    Ok(())
}

fn pinned_heap(heaps: &Heaps) -> TestResult {
    let Some(k) = heaps.xmalloc(512, 3, HeapId::Kernel) else { return Err(fail("xmalloc")) };
    check_eq!(heaps.pin(k, HeapId::Kernel), Ok(1));
    check!(matches!(xmfree(heaps, k, HeapId::Kernel), Err(XmfreeError::StillPinned(_, 1))));
    check_eq!(heaps.unpin(k, HeapId::Kernel), Ok(0));
    check_eq!(xmfree(heaps, k, HeapId::Kernel), Ok(()));
    let Some(p) = heaps.xmalloc(256, 3, HeapId::Pinned) else { return Err(fail("pinned xmalloc")) };
    check!(heaps.unpin(p, HeapId::Pinned).is_err());
    check_eq!(xmfree(heaps, p, HeapId::Pinned), Ok(()));
    heaps.check_invariants();
    Ok(())
}

fn large_blocks(heaps: &Heaps, frames: &KernelFrames) -> TestResult {
    let heap = heaps.regular_heap(HeapId::Kernel4K64K);
    // Two rounds: the first may take metadata (descriptor chunks) the heap keeps; the second
    // must give back exactly what it took.
    let mut after_round = [0; 2];
    for round in &mut after_round {
        let free = frames.free_frames().get();
        let Some(block) = heaps.xmalloc(1 << 20, 12, HeapId::Kernel4K64K) else { return Err(fail("1 MiB block")) };
        check!(frames.free_frames().get() <= free - 256);
        // SAFETY: the block is 1 MiB, just allocated.
        unsafe { block.as_ptr().write_bytes(0x5a, 1 << 20) };
        check!(heap.owns(block));
        check_eq!(xmfree(heaps, block, HeapId::Kernel4K64K), Ok(()));
        heap.trim();
        *round = frames.free_frames().get();
    }
    check_eq!(after_round[0], after_round[1]);
    heaps.check_invariants();
    Ok(())
}

/// Bytes the kernel heaps hold in pages for blocks (all four backing heaps).
pub(crate) fn heap_block_bytes(heaps: &Heaps) -> usize {
    let ids = [HeapId::Kernel4K64K, HeapId::Pinned4K64K];
    let regular: usize = ids.iter().map(|&id| heaps.regular_heap(id).stats().pages).sum();
    let large: usize = ids.iter().map(|&id| heaps.large_heap(id).stats().pages).sum();
    (regular + large) * PAGE_SIZE
}

/// The backing heap `HeapId::Kernel` allocates from (16M when large pages are on).
fn kernel_heap_stats(heaps: &Heaps) -> memkit_heap::HeapStats {
    if heaps.large_pages_enabled() { heaps.large_heap(HeapId::Kernel).stats() } else { kernel_heap_stats(heaps) }
}
