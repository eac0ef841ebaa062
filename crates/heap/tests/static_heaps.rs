//! Heaps as `static`s: laid out at compile time by the `const fn` constructors over a page
//! source set once at run time, never built on the stack.

mod common;

use std::ptr::NonNull;

use memkit_heap::{Heap, HeapId, KernelHeaps, PageSource, RegionPageSource, SingleCpu, XmallocError};
use spin::Once;

use common::FreeOwned;

/// A region of `bytes` that lives for the process, as a page source.
fn region(bytes: usize) -> RegionPageSource {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    // SAFETY: the region is leaked: valid for the process, and nobody else uses it.
    unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap()
}

#[test]
fn kernel_heaps_in_a_static() {
    static PAGEABLE: Once<RegionPageSource> = Once::new();
    static PINNED: Once<RegionPageSource> = Once::new();
    static HEAPS: KernelHeaps<'static, Once<RegionPageSource>, SingleCpu> =
        KernelHeaps::new(&PAGEABLE, &PINNED, SingleCpu);
    // Nothing is served before the sources and `init`.
    assert!(HEAPS.xmalloc(64, 0, HeapId::Kernel).is_none());
    assert_eq!(PAGEABLE.free_page_count().get(), 0);
    PAGEABLE.call_once(|| region(4 << 20));
    PINNED.call_once(|| region(4 << 20));
    assert_eq!(HEAPS.init(false), Ok(false));
    let mut blocks = Vec::new();
    for (i, heap) in [HeapId::Kernel, HeapId::Pinned].into_iter().cycle().take(200).enumerate() {
        let size = 16 + (i * 97) % 5000;
        let p = HEAPS.xmalloc(size, 3, heap).unwrap();
        assert!(p.as_ptr().addr().is_multiple_of(8));
        // SAFETY: a fresh block of `size` bytes, owned by the test.
        unsafe { p.as_ptr().write_bytes(i as u8, size) };
        blocks.push((p, heap));
    }
    for (p, heap) in blocks {
        common::xmfree(&HEAPS, p, heap).unwrap();
    }
}

#[test]
fn a_heap_in_a_static() {
    static PAGES: Once<RegionPageSource> = Once::new();
    static HEAP: Heap<&Once<RegionPageSource>> = Heap::new(&PAGES, SingleCpu, false);
    PAGES.call_once(|| region(2 << 20));
    HEAP.init().unwrap();
    let p = HEAP.allocate(100, 4).unwrap();
    assert!(p.as_ptr().addr().is_multiple_of(16));
    HEAP.free_owned(p).unwrap();
}

#[test]
fn a_heap_initialised_before_its_source_is_set_serves_nothing() {
    static PAGES: Once<RegionPageSource> = Once::new();
    static HEAP: Heap<&Once<RegionPageSource>> = Heap::new(&PAGES, SingleCpu, false);
    assert_eq!(HEAP.init(), Err(XmallocError::NoMemory(0)));
    PAGES.call_once(|| region(2 << 20));
    assert!(!HEAP.is_initialised());
    assert!(HEAP.allocate(100, 4).is_err());
}
