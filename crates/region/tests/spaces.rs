//! Several address spaces over one backing store.

use memkit_region::mock::MockBacking;
use memkit_region::{AddressSpace, AttachRequest, DetachFlags, Mmu, RegionMap, SoftMmu};
use memkit_testkit::SparseRam;
use memkit_types::{Frame, PAGE_SIZE, Page, Rights, VirtAddr};

#[test]
fn two_spaces_sharing_a_dataspace_see_each_others_writes() {
    let ram = SparseRam::new();
    let mut backing = MockBacking::new(Frame::from_number(0x40));
    let mut a = AddressSpace::new(RegionMap::new(VirtAddr::new(0x10_0000), 1 << 24), SoftMmu::new());
    let mut b = AddressSpace::new(RegionMap::new(VirtAddr::new(0x7000_0000), 1 << 24), SoftMmu::new());
    let ds = backing.create(8, Rights::RW);
    let at_a =
        a.attach(&mut backing, &AttachRequest::new(ds, 8 * PAGE_SIZE, Rights::RW).search(VirtAddr::new(0))).unwrap();
    // B sees the dataspace from page 2 on, read-only.
    let req = AttachRequest::new(ds, 4 * PAGE_SIZE, Rights::READ)
        .search(VirtAddr::new(0x7000_0000))
        .offset(2 * PAGE_SIZE as u64);
    let at_b = b.attach(&mut backing, &req).unwrap();
    assert_eq!(backing.attachments(ds), 2);

    a.store(&mut backing, &ram, VirtAddr::new(at_a.as_usize() + 3 * PAGE_SIZE + 100), b"hello from A").unwrap();
    let mut buf = [0u8; 12];
    b.load(&mut backing, &ram, VirtAddr::new(at_b.as_usize() + PAGE_SIZE + 100), &mut buf).unwrap();
    assert_eq!(&buf, b"hello from A");
    // Both translations point at the same frame.
    let ta = a.mmu.translate(Page::containing_address(VirtAddr::new(at_a.as_usize() + 3 * PAGE_SIZE))).unwrap();
    let tb = b.mmu.translate(Page::containing_address(VirtAddr::new(at_b.as_usize() + PAGE_SIZE))).unwrap();
    assert_eq!(ta.frame, tb.frame);
    assert_eq!(tb.rights, Rights::READ);
    // B may not write.
    assert!(b.store(&mut backing, &ram, at_b, b"x").is_err());
    // A later write through A shows in B without a new fault.
    a.store(&mut backing, &ram, VirtAddr::new(at_a.as_usize() + 3 * PAGE_SIZE + 100), b"HELLO").unwrap();
    b.load(&mut backing, &ram, VirtAddr::new(at_b.as_usize() + PAGE_SIZE + 100), &mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"HELLO");
    // Detaching in A leaves B's view intact.
    a.detach(&mut backing, at_a, 8 * PAGE_SIZE, DetachFlags::EXACT).unwrap();
    assert_eq!(a.mmu.mapped_pages(), 0);
    b.load(&mut backing, &ram, VirtAddr::new(at_b.as_usize() + PAGE_SIZE + 100), &mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"HELLO");
    assert_eq!(backing.attachments(ds), 1);
    a.map.check_invariants();
    b.map.check_invariants();
}
