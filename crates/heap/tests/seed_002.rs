//! Seed 002 (AIX `xmalloc` kernel service), function by function.

mod common;

use std::ptr::NonNull;

use memkit_heap::{
    EINVAL, ENOMEM, HeapId, KernelHeaps, LARGE_PAGE_PAGES, PinError, RegionPageSource, SingleCpu, UnpinError,
    XmallocError, XmfreeError,
};
use memkit_types::{PAGE_SIZE, VirtAddr};

/// A region of `bytes` (leaked: tests are short-lived) as a page source.
fn source(bytes: usize) -> &'static RegionPageSource {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    // SAFETY: leaked memory, used only by this source, valid for 'static.
    let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    Box::leak(Box::new(src))
}

fn heaps(bytes: usize, large: bool) -> KernelHeaps<'static, RegionPageSource, SingleCpu> {
    let src = source(bytes);
    let h = KernelHeaps::new(src, src, SingleCpu);
    assert_eq!(h.init(large).unwrap(), large);
    h
}

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

#[test]
fn xmalloc_allocates_size_bytes_aligned_to_two_to_the_align() {
    let h = heaps(8 << 20, false);
    // The seed's example: xmalloc(128, 3, kernel_heap) is a double-word aligned 128-byte area.
    let p = h.xmalloc(128, 3, HeapId::Kernel).unwrap();
    assert_eq!(addr(p) % 8, 0);
    assert!(h.regular_heap(HeapId::Kernel).block(p).unwrap().usable >= 128);
    // "Aligner de 4 demande une limite de 2^4 (16) octets."
    for align in 0..=16u32 {
        for size in [1usize, 7, 100, 4000, 40_000] {
            let p = h.xmalloc(size, align, HeapId::Kernel).unwrap();
            assert_eq!(addr(p) % (1 << align), 0, "size {size} align {align}");
            // SAFETY: a fresh block of `size` bytes.
            unsafe { std::ptr::write_bytes(p.as_ptr(), 0xa5, size) };
            common::xmfree(&h, p, HeapId::Kernel).unwrap();
        }
    }
    common::xmfree(&h, p, HeapId::Kernel).unwrap();
    h.check_invariants();
}

#[test]
fn xmalloc_returns_null_when_the_heap_is_not_initialised() {
    let src = source(1 << 20);
    let h = KernelHeaps::new(src, src, SingleCpu);
    assert_eq!(h.xmalloc(64, 3, HeapId::Kernel), None);
    assert_eq!(h.xmalloc(64, 3, HeapId::Pinned), None);
    assert_eq!(h.malloc(64), None);
    let e = h.try_xmalloc(64, 0, HeapId::Kernel4K64K).unwrap_err();
    assert_eq!(e, XmallocError::NotInitialised);
    assert_eq!(e.code(), ENOMEM);
    h.init(false).unwrap();
    assert!(h.malloc(64).is_some());
}

#[test]
fn xmalloc_returns_null_when_the_memory_cannot_be_allocated() {
    let h = heaps(4 << 20, false);
    assert_eq!(h.xmalloc(64 << 20, 0, HeapId::Kernel), None);
    let e = h.try_xmalloc(64 << 20, 0, HeapId::Kernel).unwrap_err();
    assert_eq!(e, XmallocError::NoMemory(64 << 20));
    assert_eq!(e.code(), ENOMEM);
    let e = h.try_xmalloc(64, 40, HeapId::Kernel).unwrap_err();
    assert_eq!(e, XmallocError::BadAlignment(40));
    assert_eq!(e.code(), EINVAL);
    assert_eq!(h.try_xmalloc(usize::MAX, 0, HeapId::Kernel).unwrap_err().code(), EINVAL);
}

#[test]
fn memory_not_freed_with_xmfree_makes_later_allocations_fail_and_xmfree_gives_it_back() {
    let h = heaps(4 << 20, false);
    let mut blocks = Vec::new();
    while let Some(p) = h.xmalloc(3000, 3, HeapId::Kernel) {
        blocks.push(p);
    }
    assert!(blocks.len() > 1000, "{}", blocks.len());
    assert_eq!(h.xmalloc(3000, 3, HeapId::Kernel), None);
    for p in blocks.drain(..) {
        common::xmfree(&h, p, HeapId::Kernel).unwrap();
    }
    h.check_invariants();
    // Whole empty pages went back: a large block of most of the region fits again.
    let big = h.xmalloc(3 << 20, 12, HeapId::Kernel).unwrap();
    common::xmfree(&h, big, HeapId::Kernel).unwrap();
}

#[test]
fn malloc_and_palloc_are_xmalloc_on_the_kernel_heap() {
    let h = heaps(8 << 20, false);
    let m = h.malloc(200).unwrap();
    let p = h.palloc(200, 9).unwrap();
    assert_eq!(addr(p) % 512, 0);
    // Both belong to kernel_heap: the pinned heap refuses them, the kernel heap frees them.
    assert_eq!(common::xmfree(&h, m, HeapId::Pinned), Err(XmfreeError::OtherHeap(VirtAddr::new(addr(m)))));
    common::xmfree(&h, m, HeapId::Kernel).unwrap();
    common::xmfree(&h, p, HeapId::Kernel).unwrap();
}

#[test]
fn pinned_heap_memory_is_pinned_and_must_not_be_unpinned() {
    let h = heaps(8 << 20, false);
    let p = h.xmalloc(512, 4, HeapId::Pinned).unwrap();
    assert!(h.regular_heap(HeapId::Pinned).is_pinned_heap());
    assert_eq!(h.pin(p, HeapId::Pinned), Ok(1));
    let e = h.unpin(p, HeapId::Pinned).unwrap_err();
    assert_eq!(e, UnpinError::PinnedHeap(VirtAddr::new(addr(p))));
    assert_eq!(e.code(), EINVAL);
    common::xmfree(&h, p, HeapId::Pinned).unwrap();
}

#[test]
fn kernel_heap_memory_is_pinned_for_a_while_and_unpinned_before_it_is_freed() {
    let h = heaps(8 << 20, false);
    let p = h.xmalloc(1000, 3, HeapId::Kernel).unwrap();
    let va = VirtAddr::new(addr(p));
    assert_eq!(h.unpin(p, HeapId::Kernel), Err(UnpinError::NotPinned(va)));
    assert_eq!(h.pin(p, HeapId::Kernel), Ok(1));
    assert_eq!(h.pin(p, HeapId::Kernel), Ok(2));
    let e = common::xmfree(&h, p, HeapId::Kernel).unwrap_err();
    assert_eq!(e, XmfreeError::StillPinned(va, 2));
    assert_eq!(e.code(), -1);
    h.check_invariants();
    assert_eq!(h.unpin(p, HeapId::Kernel), Ok(1));
    assert_eq!(common::xmfree(&h, p, HeapId::Kernel), Err(XmfreeError::StillPinned(va, 1)));
    assert_eq!(h.unpin(p, HeapId::Kernel), Ok(0));
    common::xmfree(&h, p, HeapId::Kernel).unwrap();
    // A pointer that is no block cannot be pinned.
    let inside = NonNull::new(p.as_ptr().wrapping_add(8)).unwrap();
    assert!(matches!(h.pin(inside, HeapId::Kernel), Err(PinError::Invalid(_))));
    h.check_invariants();
}

#[test]
fn the_pin_table_fills_up_cleanly() {
    let h = heaps(8 << 20, false);
    let blocks: Vec<_> = (0..=memkit_heap::MAX_PINNED_BLOCKS).map(|_| h.malloc(64).unwrap()).collect();
    for &p in &blocks[..memkit_heap::MAX_PINNED_BLOCKS] {
        assert_eq!(h.pin(p, HeapId::Kernel), Ok(1));
    }
    let last = blocks[memkit_heap::MAX_PINNED_BLOCKS];
    let e = h.pin(last, HeapId::Kernel).unwrap_err();
    assert_eq!(e.code(), ENOMEM);
    h.check_invariants();
    for &p in &blocks[..memkit_heap::MAX_PINNED_BLOCKS] {
        assert_eq!(h.unpin(p, HeapId::Kernel), Ok(0));
    }
    for p in blocks {
        common::xmfree(&h, p, HeapId::Kernel).unwrap();
    }
}

#[test]
fn kernel_heap_points_at_the_16m_heap_when_large_pages_are_enabled() {
    let h = heaps(80 << 20, true);
    assert!(h.large_pages_enabled());
    for id in [HeapId::Kernel, HeapId::Kernel16M, HeapId::Pinned, HeapId::Pinned16M] {
        let p = h.xmalloc(100, 3, id).unwrap();
        assert!(h.large_heap(id).owns(p), "{id:?}");
        assert!(!h.regular_heap(id).owns(p), "{id:?}");
        common::xmfree(&h, p, id).unwrap();
    }
    for id in [HeapId::Kernel4K64K, HeapId::Pinned4K64K] {
        let p = h.xmalloc(100, 3, id).unwrap();
        assert!(h.regular_heap(id).owns(p), "{id:?}");
        common::xmfree(&h, p, id).unwrap();
    }
    // The 16M heap's pages lie inside 16 MiB large pages.
    let p = h.xmalloc(50_000, 0, HeapId::Kernel16M).unwrap();
    let large = h.large_heap(HeapId::Kernel).source();
    assert!(large.large_pages_held() >= 1);
    common::xmfree(&h, p, HeapId::Kernel).unwrap();
    h.check_invariants();
}

#[test]
fn without_large_pages_every_heap_is_the_default_heap() {
    let h = heaps(8 << 20, false);
    for id in [HeapId::Kernel, HeapId::Kernel16M, HeapId::Kernel4K64K] {
        let p = h.xmalloc(100, 3, id).unwrap();
        assert!(h.regular_heap(id).owns(p), "{id:?}");
        common::xmfree(&h, p, HeapId::Kernel).unwrap();
    }
    // Large pages asked for but no 16 MiB page to be had: they stay disabled.
    let src = source(8 << 20);
    let small = KernelHeaps::new(src, src, SingleCpu);
    assert!(!small.init(true).unwrap());
    let p = small.xmalloc(100, 3, HeapId::Pinned16M).unwrap();
    assert!(small.regular_heap(HeapId::Pinned).owns(p));
}

#[test]
fn the_16m_heap_falls_back_to_the_default_heap_when_no_large_page_is_left() {
    // Room for the two 16M heaps' first large pages and little more.
    let h = heaps(2 * LARGE_PAGE_PAGES * PAGE_SIZE + (20 << 20), true);
    let mut from_default = 0;
    let mut blocks = Vec::new();
    for _ in 0..25 {
        let p = h.xmalloc(1 << 20, 12, HeapId::Kernel16M).unwrap();
        from_default += usize::from(h.regular_heap(HeapId::Kernel).owns(p));
        blocks.push(p);
    }
    assert!(from_default > 0 && from_default < 25, "{from_default}");
    for p in blocks {
        common::xmfree(&h, p, HeapId::Kernel16M).unwrap();
    }
    h.check_invariants();
}

#[test]
fn xmfree_recovers_the_size_and_refuses_what_it_does_not_own() {
    let h = heaps(8 << 20, false);
    let p = h.xmalloc(777, 3, HeapId::Kernel).unwrap();
    let q = h.xmalloc(100_000, 3, HeapId::Kernel).unwrap();
    let info = h.regular_heap(HeapId::Kernel).block(q).unwrap();
    assert_eq!(info.usable, 100_000usize.div_ceil(PAGE_SIZE) * PAGE_SIZE);
    let on_stack = 0u64;
    let stack = NonNull::from(&on_stack).cast::<u8>();
    assert_eq!(common::xmfree(&h, stack, HeapId::Kernel), Err(XmfreeError::NotOwned(VirtAddr::new(addr(stack)))));
    let inside = NonNull::new(p.as_ptr().wrapping_add(16)).unwrap();
    assert_eq!(
        common::xmfree(&h, inside, HeapId::Kernel),
        Err(XmfreeError::NotBlockStart(VirtAddr::new(addr(inside))))
    );
    let inside_large = NonNull::new(q.as_ptr().wrapping_add(PAGE_SIZE)).unwrap();
    assert!(matches!(common::xmfree(&h, inside_large, HeapId::Kernel), Err(XmfreeError::NotBlockStart(_))));
    assert_eq!(common::xmfree(&h, p, HeapId::Pinned), Err(XmfreeError::OtherHeap(VirtAddr::new(addr(p)))));
    // A pointer no address space can hold: refused with its own error, never a panic.
    let wild_addr = 0x0000_8000_0000_0000usize;
    let wild = NonNull::new(std::ptr::without_provenance_mut(wild_addr)).unwrap();
    for heap in [HeapId::Kernel, HeapId::Pinned] {
        assert_eq!(common::xmfree(&h, wild, heap), Err(XmfreeError::NonCanonical(wild_addr)));
    }
    assert!(h.pin(wild, HeapId::Kernel).is_err());
    assert!(h.unpin(wild, HeapId::Kernel).is_err());
    let keep = h.xmalloc(777, 3, HeapId::Kernel).unwrap();
    common::xmfree(&h, p, HeapId::Kernel).unwrap();
    assert_eq!(common::xmfree(&h, p, HeapId::Kernel), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(p)))));
    common::xmfree(&h, q, HeapId::Kernel).unwrap();
    assert!(common::xmfree(&h, q, HeapId::Kernel).is_err());
    common::xmfree(&h, keep, HeapId::Kernel).unwrap();
    h.check_invariants();
}

#[test]
fn realloc_keeps_the_alignment_and_the_contents() {
    let h = heaps(8 << 20, false);
    for align in [3u32, 6, 9, 12, 14] {
        let p = h.xmalloc(100, align, HeapId::Kernel).unwrap();
        // SAFETY: a fresh 100-byte block.
        unsafe { std::ptr::write_bytes(p.as_ptr(), align as u8, 100) };
        let mut cur = p;
        for size in [5000, 60_000, 300, 40] {
            // SAFETY: the block is ours and untouched meanwhile.
            cur = unsafe { h.realloc(cur, size, HeapId::Kernel) }.unwrap();
            assert_eq!(addr(cur) % (1 << align), 0, "align {align} size {size}");
            // SAFETY: at least 40 bytes are live.
            let head = unsafe { std::slice::from_raw_parts(cur.as_ptr(), 40) };
            assert!(head.iter().all(|&b| b == align as u8));
        }
        common::xmfree(&h, cur, HeapId::Kernel).unwrap();
    }
    h.check_invariants();
}
