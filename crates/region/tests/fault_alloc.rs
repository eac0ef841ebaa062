//! The fault path allocates no heap memory: counted with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use memkit_region::mock::MockBacking;
use memkit_region::{AttachRequest, RegionMap, SoftMmu};
use memkit_types::{Access, Frame, PAGE_SIZE, Rights, VirtAddr};

/// Counts the allocations of the threads that ask for it, then lets the system allocator
/// serve every allocation.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. Only the test's own thread counts,
    /// so that the test harness's other threads cannot change the figure.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn resolving_faults_allocates_nothing() {
    const REGIONS: usize = 10_000;
    const PAGES: usize = 4;
    let base = 0x1_0000_0000usize;
    let mut map = RegionMap::new(VirtAddr::new(base), 1 << 36);
    let mut backing = MockBacking::new(Frame::from_number(16));
    let mut mmu = SoftMmu::with_capacity(REGIONS * PAGES);
    let ds = backing.create(REGIONS * PAGES, Rights::RW);
    for i in 0..REGIONS {
        let req = AttachRequest::new(ds, PAGES * PAGE_SIZE, Rights::RW)
            .search(VirtAddr::new(base))
            .offset((i * PAGES * PAGE_SIZE) as u64);
        map.attach(&mut backing, &mut mmu, &req).unwrap();
    }
    COUNTED.set(true);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut mapped = 0;
    for i in 0..REGIONS * PAGES {
        let addr = VirtAddr::new(base + i * PAGE_SIZE + 8);
        let access = if i % 3 == 0 { Access::Write } else { Access::Read };
        let t = map.resolve(&mut backing, &mut mmu, addr, access).unwrap();
        mapped += usize::from(t.rights.allows(access));
    }
    // Faults outside every region and beyond the rights allocate nothing either.
    let outside = map.resolve(&mut backing, &mut mmu, VirtAddr::new(base - PAGE_SIZE), Access::Read);
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTED.set(false);
    assert!(outside.is_err());
    assert_eq!(mapped, REGIONS * PAGES);
    assert_eq!(after - before, 0, "heap allocations on the fault path");
    assert_eq!(mmu.mapped_pages(), REGIONS * PAGES);
}
