//! The fault path allocates no heap memory: counted with a counting global allocator.

use memkit_region::mock::MockBacking;
use memkit_region::{AttachRequest, RegionMap, SoftMmu};
use memkit_testkit::counting::{Counting, counted};
use memkit_types::{Access, Frame, PAGE_SIZE, Rights, VirtAddr};

/// Counts the allocations of the thread inside `counted` (so that the test harness's other
/// threads cannot change the figure), then lets the system allocator serve every allocation.
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
    let (_, n) = counted(|| std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(n, 1, "the counter sees allocations");
    let ((mapped, outside), allocations) = counted(|| {
        let mut mapped = 0;
        for i in 0..REGIONS * PAGES {
            let addr = VirtAddr::new(base + i * PAGE_SIZE + 8);
            let access = if i % 3 == 0 { Access::Write } else { Access::Read };
            let t = map.resolve(&mut backing, &mut mmu, addr, access).unwrap();
            mapped += usize::from(t.rights.allows(access));
        }
        // Faults outside every region and beyond the rights allocate nothing either.
        let outside = map.resolve(&mut backing, &mut mmu, VirtAddr::new(base - PAGE_SIZE), Access::Read);
        (mapped, outside)
    });
    assert!(outside.is_err());
    assert_eq!(mapped, REGIONS * PAGES);
    assert_eq!(allocations, 0, "heap allocations on the fault path");
    assert_eq!(mmu.mapped_pages(), REGIONS * PAGES);
}
