//! A heap over a frame source reached through a direct map: pages are frames, and whole
//! empty pages go back to the frame source.

mod common;
use common::FreeOwned;

use std::ptr::NonNull;

use memkit_heap::{DirectMapPageSource, Heap, PageSource, SingleCpu};
use memkit_testkit::ModelFrameSource;
use memkit_types::{Frame, FrameCount, FrameSource, PAGE_SIZE, PhysAddr, VirtAddr};

#[test]
fn heap_over_frames_through_a_direct_map() {
    const FRAMES: u64 = 1024;
    // "Physical memory": a buffer aligned to 64 KiB but not to 128 KiB (so that no larger
    // alignment can be had by chance); physical address p is at base + p.
    let layout = std::alloc::Layout::from_size_align(FRAMES as usize * PAGE_SIZE + (1 << 16), 1 << 17).unwrap();
    // SAFETY: a non-zero size; leaked on purpose.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!raw.is_null());
    let base_ptr = raw.wrapping_add(1 << 16);
    let base = base_ptr.addr();
    let frames = ModelFrameSource::new(Frame::from_number(0), FrameCount::new(FRAMES));
    let free0 = frames.free_frames().get();
    // SAFETY: every physical address below FRAMES pages is the leaked buffer at base + p,
    // used only through this source.
    let source = unsafe { DirectMapPageSource::from_ptr(&frames, base_ptr, PhysAddr::new(FRAMES * PAGE_SIZE as u64)) };
    assert_eq!(source.range(), (VirtAddr::new(base), memkit_types::PageCount::new(FRAMES as usize)));
    let heap = Heap::new(source, SingleCpu, false);
    heap.init().unwrap();
    let blocks: Vec<NonNull<u8>> = (0..200).map(|i| heap.allocate(100 + i * 37, 4).unwrap()).collect();
    for &b in &blocks {
        let phys = b.as_ptr() as usize - base;
        assert!(frames.is_allocated(Frame::containing_address(PhysAddr::new(phys as u64))));
        assert_eq!(b.as_ptr() as usize % 16, 0);
    }
    let big = heap.allocate(100_000, 14).unwrap();
    assert_eq!(big.as_ptr() as usize % (1 << 14), 0);
    // Beyond the direct map's own alignment (64 KiB here) a run cannot be aligned.
    assert!(heap.allocate(100_000, 20).is_err());
    assert!(frames.free_frames().get() < free0);
    for b in blocks {
        heap.free_owned(b).unwrap();
    }
    heap.free_owned(big).unwrap();
    heap.check_invariants();
    heap.trim();
    let s = heap.stats();
    assert_eq!(s.pages, 0);
    // Only the heap's metadata (page map, descriptors) stays allocated.
    assert_eq!(frames.free_frames().get(), free0 - s.metadata_pages as u64);
}
