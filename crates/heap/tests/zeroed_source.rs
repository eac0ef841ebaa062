//! A page source whose fresh pages read as zero (`PageSource::is_zeroed`): the heap leaves
//! its page map as the source gave it, and works as over any other source.

mod common;
use common::FreeOwned;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use memkit_heap::{Heap, PageSource, RegionPageSource, SingleCpu};
use memkit_types::{Order, PAGE_SIZE, PageCount, VirtAddr};

/// A region source over a zeroed buffer that reports its first run as zeroed, and counts
/// how often it was asked.
struct FreshRegion {
    inner: RegionPageSource,
    asked: AtomicUsize,
    /// Where the canary was written (0: nowhere).
    canary: AtomicUsize,
}

const CANARY: u64 = 0x5a5a_5a5a_a5a5_a5a5;

// SAFETY: forwards to a region source over a zeroed buffer; only the first run it hands out
// (never written before: the buffer is fresh) is reported as zeroed.
unsafe impl PageSource for FreshRegion {
    fn range(&self) -> (VirtAddr, PageCount) {
        self.inner.range()
    }
    fn base_ptr(&self) -> *mut u8 {
        self.inner.base_ptr()
    }
    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        self.inner.allocate_pages(count, align)
    }
    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.free_pages(start, count) }
    }
    fn free_page_count(&self) -> PageCount {
        self.inner.free_page_count()
    }
    fn is_zeroed(&self, start: NonNull<u8>, count: PageCount) -> bool {
        let first = self.asked.fetch_add(1, Ordering::Relaxed) == 0;
        let map_bytes = self.inner.range().1.get() * 4;
        if first && count.get() * PAGE_SIZE >= map_bytes + 8 {
            // A canary past the page map's last entry (the map takes whole pages), to show
            // that the heap did not clear the run it was told is zeroed.
            let end = start.as_ptr().wrapping_add(count.get() * PAGE_SIZE - 8).cast::<u64>();
            // SAFETY: the last 8 bytes of the run the source just handed out, past the map's
            // entries, 8-aligned (the run is page-aligned).
            unsafe { end.write(CANARY) };
            self.canary.store(end.addr(), Ordering::Relaxed);
        }
        first
    }
}

#[test]
fn a_heap_trusts_a_zeroed_page_map_and_works() {
    // 4000 pages: the page map (4 bytes a page) leaves room for the canary in its last page.
    let pages = 4000;
    let mem = vec![0u8; (pages + 1) * PAGE_SIZE].leak();
    // SAFETY: leaked, so valid and used by nobody else for 'static.
    let inner = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    let src = FreshRegion { inner, asked: AtomicUsize::new(0), canary: AtomicUsize::new(0) };
    let heap = Heap::new(&src, SingleCpu, false);
    heap.init().unwrap();
    assert!(src.asked.load(Ordering::Relaxed) >= 1, "the heap asks whether its page map is zeroed");
    let canary = src.canary.load(Ordering::Relaxed);
    assert_ne!(canary, 0);
    heap.check_invariants();
    let blocks: Vec<NonNull<u8>> = (0..300).map(|i| heap.allocate(24 + i * 53, 4).unwrap()).collect();
    heap.check_invariants();
    for b in blocks {
        heap.free_owned(b).unwrap();
        heap.check_invariants();
    }
    // SAFETY: the canary lies in the page map's pages, which the heap keeps while it lives.
    let left = unsafe { src.base_ptr().with_addr(canary).cast::<u64>().read() };
    assert_eq!(left, CANARY, "the heap cleared a run its source said was zeroed");
}
