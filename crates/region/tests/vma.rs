//! The address-space operations on a small map, step by step: `protect` splits and merges
//! back and takes away only the rights it must, `remap` grows in place and moves with the
//! frames, a replacing attach detaches what was there, and `regions_in` walks a range.

use memkit_region::mock::MockBacking;
use memkit_region::{AttachRequest, Mmu, RegionMap, Remap, SoftMmu};
use memkit_types::l4::{L4_EADDRNOTAVAIL, L4_ENOENT, L4_EPERM, L4_ERANGE};
use memkit_types::{Access, Frame, PAGE_SIZE, Page, Rights, VirtAddr};

const BASE: usize = 0x4000_0000;
const P: usize = PAGE_SIZE;

fn va(page: usize) -> VirtAddr {
    VirtAddr::new(BASE + page * P)
}

fn pg(page: usize) -> Page {
    Page::containing_address(va(page))
}

fn setup() -> (RegionMap<memkit_region::mock::MockId>, MockBacking, SoftMmu) {
    let mut backing = MockBacking::new(Frame::from_number(0x100));
    backing.tell_sizes(true);
    (RegionMap::new(va(0), 1024 * P), backing, SoftMmu::new())
}

#[test]
fn protect_splits_takes_away_only_what_it_must_and_merges_back() {
    let (mut map, mut b, mut mmu) = setup();
    let ds = b.create(16, Rights::RWX);
    map.attach(&mut b, &mut mmu, &AttachRequest::new(ds, 8 * P, Rights::RW).at(va(0))).unwrap();
    for p in 0..8 {
        map.resolve(&mut b, &mut mmu, va(p), Access::Write).unwrap();
    }
    let frame3 = mmu.translate(pg(3)).unwrap().frame;
    // Read-only in the middle: three regions, the middle pages keep their frames.
    map.protect(&mut b, &mut mmu, va(2), 3 * P, Rights::READ).unwrap().flush(&mmu);
    map.check_invariants();
    assert_eq!(map.region_count(), 3);
    assert_eq!(b.attachments(ds), 3);
    let t = mmu.translate(pg(3)).unwrap();
    assert_eq!((t.frame, t.rights), (frame3, Rights::READ));
    assert_eq!(mmu.translate(pg(1)).unwrap().rights, Rights::RW);
    assert!(map.resolve(&mut b, &mut mmu, va(3), Access::Write).is_err());
    // Back to read-write: one region again; the pages refault lazily.
    map.protect(&mut b, &mut mmu, va(2), 3 * P, Rights::RW).unwrap().flush(&mmu);
    map.check_invariants();
    assert_eq!(map.region_count(), 1);
    assert_eq!(b.attachments(ds), 1);
    assert_eq!(mmu.translate(pg(3)).unwrap().rights, Rights::READ);
    let t = map.resolve(&mut b, &mut mmu, va(3), Access::Write).unwrap();
    assert_eq!((t.frame, t.rights), (frame3, Rights::RW));
    // No right at all unmaps; a hole or rights beyond the handle are refused whole.
    map.protect(&mut b, &mut mmu, va(7), P, Rights::empty()).unwrap().flush(&mmu);
    assert!(mmu.translate(pg(7)).is_none());
    assert_eq!(map.protect(&mut b, &mut mmu, va(6), 4 * P, Rights::READ).unwrap_err().code(), -L4_ENOENT);
    let ro = b.create(4, Rights::READ);
    map.attach(&mut b, &mut mmu, &AttachRequest::new(ro, 4 * P, Rights::READ).at(va(8))).unwrap();
    assert_eq!(map.protect(&mut b, &mut mmu, va(6), 4 * P, Rights::RW).unwrap_err().code(), -L4_EPERM);
    assert_eq!(map.region_count(), 3);
    assert_eq!(map.protect(&mut b, &mut mmu, va(6), 0, Rights::RW).unwrap_err().code(), -memkit_types::l4::L4_EINVAL);
    map.check_invariants();
}

#[test]
fn remap_grows_in_place_moves_with_the_frames_and_shrinks() {
    let (mut map, mut b, mut mmu) = setup();
    let ds = b.create(16, Rights::RW);
    map.attach(&mut b, &mut mmu, &AttachRequest::new(ds, 2 * P, Rights::RW).at(va(10))).unwrap();
    let other = b.create(1, Rights::RW);
    map.attach(&mut b, &mut mmu, &AttachRequest::new(other, P, Rights::RW).at(va(14))).unwrap();
    map.resolve(&mut b, &mut mmu, va(11), Access::Write).unwrap();
    let f = mmu.translate(pg(11)).unwrap().frame;
    // In place up to the neighbour, no further.
    assert_eq!(map.remap(&mut b, &mut mmu, va(10), 2 * P, 4 * P, Remap::InPlace).unwrap(), va(10));
    assert_eq!(
        map.remap(&mut b, &mut mmu, va(10), 4 * P, 5 * P, Remap::InPlace).unwrap_err().code(),
        -L4_EADDRNOTAVAIL
    );
    // Past the dataspace: refused.
    assert_eq!(map.remap(&mut b, &mut mmu, va(10), 4 * P, 17 * P, Remap::MayMove).unwrap_err().code(), -L4_ERANGE);
    // Moved: the frame goes with the page, the old place is empty.
    let to = map.remap(&mut b, &mut mmu, va(10), 4 * P, 8 * P, Remap::MayMove).unwrap();
    map.check_invariants();
    assert_ne!(to, va(10));
    let moved = Page::containing_address(to).checked_add(memkit_types::PageCount::new(1)).unwrap();
    assert_eq!(mmu.translate(moved).unwrap().frame, f);
    assert!(mmu.translate(pg(11)).is_none());
    assert!(map.region_at(va(10)).is_none());
    // Fixed over the other region: it is replaced.
    let to = map.remap(&mut b, &mut mmu, to, 8 * P, 8 * P, Remap::Fixed(va(14))).unwrap();
    assert_eq!(to, va(14));
    assert_eq!(b.attachments(other), 0);
    assert_eq!(mmu.translate(pg(15)).unwrap().frame, f);
    // Shrink: the tail goes.
    map.remap(&mut b, &mut mmu, va(14), 8 * P, 2 * P, Remap::InPlace).unwrap();
    assert_eq!(map.region_at(va(14)).unwrap().size, 2 * P);
    assert_eq!(mmu.translate(pg(15)).unwrap().frame, f);
    assert_eq!(map.remap(&mut b, &mut mmu, va(40), P, 2 * P, Remap::MayMove).unwrap_err().code(), -L4_ENOENT);
    map.check_invariants();
}

#[test]
fn a_replacing_attach_detaches_what_was_there_and_regions_in_walks_a_range() {
    let (mut map, mut b, mut mmu) = setup();
    let a = b.create(8, Rights::RW);
    let c = b.create(8, Rights::RW);
    map.attach(&mut b, &mut mmu, &AttachRequest::new(a, 8 * P, Rights::RW).at(va(0))).unwrap();
    map.resolve(&mut b, &mut mmu, va(3), Access::Write).unwrap();
    // Without replacing, the range is taken; with it, the middle of `a` goes.
    let req = AttachRequest::new(c, 2 * P, Rights::READ).at(va(3));
    assert_eq!(map.attach(&mut b, &mut mmu, &req).unwrap_err().code(), -L4_EADDRNOTAVAIL);
    map.attach(&mut b, &mut mmu, &req.replacing()).unwrap();
    map.check_invariants();
    assert!(mmu.translate(pg(3)).is_none());
    let got: Vec<_> = map.regions_in(va(1), 5 * P).map(|r| (r.start, r.size / P, r.dataspace)).collect();
    assert_eq!(got, [(va(0), 3, a), (va(3), 2, c), (va(5), 3, a)]);
    assert_eq!(b.attachments(a), 2);
    assert_eq!(map.regions_in(va(9), P).count(), 0);
    // An attach beyond its dataspace is refused.
    let big = AttachRequest::new(c, 9 * P, Rights::READ).at(va(20));
    assert_eq!(map.attach(&mut b, &mut mmu, &big).unwrap_err().code(), -L4_ERANGE);
    // Detaching the replacement and putting `a` back where it was: a merge makes one region.
    map.detach_at(&mut b, &mut mmu, va(3)).unwrap();
    map.attach(&mut b, &mut mmu, &AttachRequest::new(a, 2 * P, Rights::RW).at(va(3)).offset(3 * P as u64)).unwrap();
    assert_eq!(map.region_count(), 3);
    assert_eq!(map.merge(&mut b, va(0), 8 * P), 2);
    assert_eq!(map.region_count(), 1);
    assert_eq!(b.attachments(a), 1);
    map.check_invariants();
}
