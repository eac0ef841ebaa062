//! Seed 001 (`L4Re::Rm`), function by function and result by result.

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{
    AddressSpace, AreaInfo, AttachError, AttachRequest, CACHING_SHIFT, DETACH_AGAIN, DETACH_RESULT_MASK, DetachError,
    DetachFlags, DetachResult, FaultError, FindError, Flags, Found, FreeAreaError, Mmu, RegionInfo, RegionMap,
    ReserveError, SoftMmu, cache_bits,
};
use memkit_testkit::SparseRam;
use memkit_types::l4::{L4_EADDRNOTAVAIL, L4_EINVAL, L4_ENOENT, L4_ENOMEM, L4_EPERM, L4_ERANGE};
use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

const BASE: usize = 0x4000_0000;
const WINDOW: usize = 0x100_0000; // 16 MiB

struct World {
    space: AddressSpace<MockId, SoftMmu>,
    backing: MockBacking,
    ram: SparseRam,
}

impl World {
    fn new() -> Self {
        World {
            space: AddressSpace::new(RegionMap::new(VirtAddr::new(BASE), WINDOW), SoftMmu::new()),
            backing: MockBacking::new(Frame::from_number(0x1000)),
            ram: SparseRam::new(),
        }
    }

    fn ds(&mut self, pages: usize, rights: Rights) -> MockId {
        self.backing.create(pages, rights)
    }

    fn attach(&mut self, req: AttachRequest<MockId>) -> Result<VirtAddr, AttachError> {
        let r = self.space.attach(&mut self.backing, &req);
        self.check();
        r
    }

    fn detach(
        &mut self,
        at: usize,
        size: usize,
        flags: DetachFlags,
    ) -> Result<memkit_region::Detached<MockId>, DetachError> {
        let r = self.space.detach(&mut self.backing, va(at), size, flags);
        self.check();
        r
    }

    fn check(&self) {
        self.space.map.check_invariants();
        self.space.mmu.check_invariants();
    }

    fn mapped(&self, at: usize) -> bool {
        self.space.mmu.translate(Page::containing_address(va(at))).is_some()
    }
}

fn va(a: usize) -> VirtAddr {
    VirtAddr::new(a)
}

const P: usize = PAGE_SIZE;

// ---- reserve_area -----------------------------------------------------------------------

#[test]
fn reserve_area_fixed_returns_the_start() {
    let mut w = World::new();
    let a = w.space.map.reserve_area(va(BASE + 4 * P), 8 * P, Flags::empty(), 12).unwrap();
    assert_eq!(a, va(BASE + 4 * P));
    assert_eq!(w.space.map.areas(), vec![AreaInfo { start: a, size: 8 * P, flags: Flags::empty() }]);
    w.check();
}

#[test]
fn reserve_area_rounds_the_size_up_to_pages() {
    let mut w = World::new();
    let a = w.space.map.reserve_area(va(BASE), 1, Flags::empty(), 12).unwrap();
    assert_eq!(w.space.map.areas()[0].size, P);
    assert_eq!(a, va(BASE));
}

#[test]
fn reserve_area_searched_honours_hint_and_alignment() {
    let mut w = World::new();
    w.space.map.reserve_area(va(BASE), 3 * P, Flags::empty(), 12).unwrap();
    // 64 KiB alignment above the hint BASE + P.
    let a = w.space.map.reserve_area(va(BASE + P), 2 * P, Flags::SEARCH_ADDR, 16).unwrap();
    assert_eq!(a, va(BASE + 0x10000));
    let b = w.space.map.reserve_area(va(BASE + P), P, Flags::SEARCH_ADDR, 12).unwrap();
    assert_eq!(b, va(BASE + 3 * P), "first free page at or above the hint");
    w.check();
}

#[test]
fn reserve_area_errors_are_eaddrnotavail() {
    let mut w = World::new();
    w.space.map.reserve_area(va(BASE), 4 * P, Flags::empty(), 12).unwrap();
    let g = w.space.map.generation();
    let e = w.space.map.reserve_area(va(BASE + 3 * P), 2 * P, Flags::empty(), 12).unwrap_err();
    assert_eq!(e, ReserveError::NotAvailable(va(BASE + 3 * P)));
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
    // Outside the window.
    let e = w.space.map.reserve_area(va(BASE + WINDOW - P), 2 * P, Flags::empty(), 12).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
    // Over an attached region.
    let ds = w.ds(4, Rights::RW);
    w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 8 * P))).unwrap();
    let g2 = w.space.map.generation();
    assert_eq!(g2, g + 1);
    let e = w.space.map.reserve_area(va(BASE + 7 * P), 2 * P, Flags::empty(), 12).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
    // A search with no room.
    let e = w.space.map.reserve_area(va(BASE), WINDOW, Flags::SEARCH_ADDR, 12).unwrap_err();
    assert_eq!(e, ReserveError::NoSpace(WINDOW));
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
    assert_eq!(w.space.map.generation(), g2, "failures change nothing");
    assert_eq!(w.space.map.area_count(), 1);
}

#[test]
fn reserve_area_rejects_malformed_arguments() {
    let mut w = World::new();
    let m = &mut w.space.map;
    assert_eq!(m.reserve_area(va(BASE), 0, Flags::empty(), 12), Err(ReserveError::ZeroSize));
    assert_eq!(m.reserve_area(va(BASE + 1), P, Flags::empty(), 12), Err(ReserveError::Unaligned(va(BASE + 1))));
    assert_eq!(m.reserve_area(va(BASE), usize::MAX, Flags::empty(), 12), Err(ReserveError::SizeOverflow(usize::MAX)));
    assert_eq!(m.reserve_area(va(BASE), P, Flags::SEARCH_ADDR, 60), Err(ReserveError::BadAlignment(60)));
    assert_eq!(m.reserve_area(va(BASE), P, Flags::EAGER_MAP, 12), Err(ReserveError::InvalidFlags(Flags::EAGER_MAP)));
    assert_eq!(ReserveError::ZeroSize.code(), -L4_EINVAL);
    assert_eq!(m.area_count(), 0);
}

// ---- free_area --------------------------------------------------------------------------

#[test]
fn free_area_keeps_the_regions_attached_in_it() {
    let mut w = World::new();
    let area = w.space.map.reserve_area(va(BASE), 16 * P, Flags::empty(), 12).unwrap();
    let ds = w.ds(4, Rights::RW);
    let r = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).at(va(BASE + 4 * P)).flags(Flags::IN_AREA)).unwrap();
    let freed = w.space.map.free_area(va(BASE + 9 * P)).unwrap();
    assert_eq!(freed.start, area);
    w.check();
    assert_eq!(w.space.map.area_count(), 0);
    assert_eq!(w.space.map.region_at(r).map(|i| i.start), Some(r), "the region stays");
    // The freed space outside the region is usable again, the region's is not.
    w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE))).unwrap();
    assert_eq!(w.attach(AttachRequest::new(ds, P, Rights::RW).at(r)).unwrap_err().code(), -L4_EADDRNOTAVAIL);
}

/// A map gains its first area after many regions: searches and overlap checks outside
/// areas see both the regions attached before and the area, and keep doing so after the
/// area is freed.
#[test]
fn the_first_area_after_many_regions_is_seen_by_every_search() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    for k in 0..100 {
        w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 2 * k * P))).unwrap();
    }
    let hole = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(hole, va(BASE + P), "the first hole between the regions");
    // A searched area of two pages fits only after the last region.
    let area = w.space.map.reserve_area(va(BASE), 2 * P, Flags::SEARCH_ADDR, 12);
    w.check();
    assert_eq!(area, Ok(va(BASE + 199 * P)));
    assert_eq!(
        w.space.map.reserve_area(va(BASE + 2 * P), P, Flags::empty(), 12),
        Err(ReserveError::NotAvailable(va(BASE + 2 * P))),
        "a region attached before the first area still blocks a fixed area"
    );
    let after = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(after, va(BASE + 201 * P), "a search outside areas skips the area");
    w.space.map.free_area(va(BASE + 199 * P)).unwrap();
    w.check();
    let freed = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(freed, va(BASE + 199 * P), "the freed area's space is free again");
}

#[test]
fn free_area_of_nothing_is_enoent() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::RW);
    w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE))).unwrap();
    let e = w.space.map.free_area(va(BASE)).unwrap_err();
    assert_eq!(e, FreeAreaError::NoArea(va(BASE)));
    assert_eq!(e.code(), -L4_ENOENT);
    assert_eq!(w.space.map.region_count(), 1);
}

// ---- attach -----------------------------------------------------------------------------

#[test]
fn attach_at_a_fixed_address_and_offset() {
    let mut w = World::new();
    let ds = w.ds(8, Rights::RW);
    let a = w.attach(AttachRequest::new(ds, 3 * P, Rights::READ).at(va(BASE + 2 * P)).offset(4 * P as u64)).unwrap();
    assert_eq!(a, va(BASE + 2 * P));
    let Found::Region(r) = w.space.map.find(va(BASE + 3 * P), 1).unwrap() else { panic!("no region") };
    assert_eq!((r.start, r.size, r.offset, r.rights, r.dataspace), (a, 3 * P, 4 * P as u64, Rights::READ, ds));
    assert_eq!(w.backing.attachments(ds), 1);
    // A fault at the second page maps dataspace page 5.
    let t = w.space.resolve(&mut w.backing, va(BASE + 3 * P + 7), Access::Read).unwrap();
    assert_eq!(Some(t.frame), w.backing.frame(ds, 5 * P as u64));
}

#[test]
fn attach_search_addr_finds_the_first_free_aligned_place_at_or_above_the_hint() {
    let mut w = World::new();
    let ds = w.ds(64, Rights::RW);
    w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).at(va(BASE + P))).unwrap();
    let a = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(a, va(BASE), "the hole below the region");
    let b = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(b, va(BASE + 3 * P));
    let c = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE)).align(16)).unwrap();
    assert_eq!(c, va(BASE + 0x10000), "aligned to 64 KiB");
    let d = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE + 0x20001))).unwrap();
    assert_eq!(d, va(BASE + 0x21000), "at or above an unaligned hint");
}

#[test]
fn attach_in_area_places_inside_the_area() {
    let mut w = World::new();
    let area = w.space.map.reserve_area(va(BASE + 16 * P), 4 * P, Flags::empty(), 12).unwrap();
    let ds = w.ds(8, Rights::RW);
    // Without IN_AREA the area is not available.
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(area)).unwrap_err();
    assert_eq!(e, AttachError::NotAvailable(area));
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).search(area)).unwrap();
    assert_eq!(e, va(BASE + 20 * P), "a search outside areas skips the area");
    // With IN_AREA, fixed and searched.
    let a = w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 17 * P)).flags(Flags::IN_AREA)).unwrap();
    assert_eq!(a, va(BASE + 17 * P));
    let b = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).search(area).flags(Flags::IN_AREA)).unwrap();
    assert_eq!(b, va(BASE + 18 * P));
    let c = w.attach(AttachRequest::new(ds, P, Rights::RW).search(area).flags(Flags::IN_AREA)).unwrap();
    assert_eq!(c, area);
    // Full now.
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).search(area).flags(Flags::IN_AREA)).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
    // Sticking out of the area.
    let e =
        w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).at(va(BASE + 19 * P)).flags(Flags::IN_AREA)).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL);
}

#[test]
fn attach_in_area_without_an_area_is_enoent() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::RW);
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE)).flags(Flags::IN_AREA)).unwrap_err();
    assert_eq!(e, AttachError::NoArea(va(BASE)));
    assert_eq!(e.code(), -L4_ENOENT);
}

#[test]
fn reserved_areas_accept_no_attachment() {
    let mut w = World::new();
    let area = w.space.map.reserve_area(va(BASE), 4 * P, Flags::RESERVED, 12).unwrap();
    let ds = w.ds(1, Rights::RW);
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(area).flags(Flags::IN_AREA)).unwrap_err();
    assert_eq!(e, AttachError::ReservedArea(area));
    assert_eq!(e.code(), -L4_EPERM);
    assert_eq!(w.attach(AttachRequest::new(ds, P, Rights::RW).at(area)).unwrap_err().code(), -L4_EADDRNOTAVAIL);
    assert_eq!(w.space.map.region_count(), 0);
}

#[test]
fn attach_rights_never_exceed_the_handle() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::READ);
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE))).unwrap_err();
    assert_eq!(e, AttachError::PermissionDenied { requested: Rights::RW, allowed: Rights::READ });
    assert_eq!(e.code(), -L4_EPERM);
    let e = w.attach(AttachRequest::new(ds, P, Rights::READ | Rights::EXECUTE).at(va(BASE))).unwrap_err();
    assert_eq!(e.code(), -L4_EPERM);
    assert_eq!(w.backing.attachments(ds), 0);
    // The default set of rights is empty, and allowed: every access then faults.
    w.attach(AttachRequest::new(ds, P, Rights::empty()).at(va(BASE))).unwrap();
    let e = w.space.resolve(&mut w.backing, va(BASE), Access::Read).unwrap_err();
    assert_eq!(e.code(), -L4_EPERM);
}

#[test]
fn attach_rejects_bad_input_with_einval_and_changes_nothing() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    let bad = [
        (AttachRequest::new(ds, 0, Rights::RW).at(va(BASE)), AttachError::ZeroSize),
        (AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 5)), AttachError::Unaligned(va(BASE + 5))),
        (AttachRequest::new(ds, P, Rights::RW).at(va(BASE)).offset(3), AttachError::UnalignedOffset(3)),
        (AttachRequest::new(ds, usize::MAX, Rights::RW).at(va(BASE)), AttachError::SizeOverflow(usize::MAX)),
        (AttachRequest::new(ds, P, Rights::RW).search(va(BASE)).align(63), AttachError::BadAlignment(63)),
        (AttachRequest::new(MockId(99), P, Rights::RW).at(va(BASE)), AttachError::UnknownDataspace),
        (
            AttachRequest::new(ds, P, Rights::RW).at(va(BASE)).flags(Flags::RESERVED),
            AttachError::InvalidFlags(Flags::RESERVED),
        ),
    ];
    for (req, want) in bad {
        let e = w.attach(req).unwrap_err();
        assert_eq!(e, want);
        assert_eq!(e.code(), -L4_EINVAL, "{e}");
    }
    // Offset + size past the end of the addressable dataspace range.
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE)).offset(u64::MAX - 0xfff)).unwrap_err();
    assert_eq!(e.code(), -L4_EINVAL);
    assert_eq!((w.space.map.region_count(), w.space.map.generation(), w.backing.attachments(ds)), (0, 0, 0));
}

#[test]
fn attach_over_an_existing_region_is_eaddrnotavail() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).at(va(BASE + P))).unwrap();
    for at in [BASE, BASE + P, BASE + 2 * P] {
        let e = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).at(va(at))).unwrap_err();
        assert_eq!(e, AttachError::NotAvailable(va(at)));
    }
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE + WINDOW))).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL, "outside the window");
    assert_eq!(w.space.map.region_count(), 1);
}

#[test]
fn eager_map_maps_every_page_at_once() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    let a = w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE)).flags(Flags::EAGER_MAP)).unwrap();
    for i in 0..4 {
        let t = w.space.mmu.translate(Page::containing_address(va(a.as_usize() + i * P))).unwrap();
        assert_eq!(Some(t.frame), w.backing.frame(ds, (i * P) as u64));
        assert_eq!(t.rights, Rights::RW);
    }
    let lazy = w.attach(AttachRequest::new(ds, P, Rights::READ).at(va(BASE + 8 * P))).unwrap();
    assert!(!w.mapped(lazy.as_usize()), "without EAGER_MAP nothing is mapped");
}

#[test]
fn eager_map_failure_returns_the_map_error_and_undoes_everything() {
    let mut w = World::new();
    let ds = w.ds(8, Rights::RW);
    w.backing.fail_after(Some(2));
    let e = w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE)).flags(Flags::EAGER_MAP)).unwrap_err();
    assert_eq!(e, AttachError::Backing(memkit_region::BackingError::OutOfMemory));
    assert_eq!(e.code(), -L4_ENOMEM);
    assert_eq!(w.space.mmu.mapped_pages(), 0, "the two mapped pages were unmapped");
    assert_eq!((w.space.map.region_count(), w.backing.attachments(ds)), (0, 0));
    // Past the dataspace's end.
    w.backing.fail_after(None);
    let e =
        w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE)).offset(6 * P as u64).flags(Flags::EAGER_MAP));
    assert_eq!(e.unwrap_err().code(), -L4_ERANGE);
    assert_eq!(w.space.mmu.mapped_pages(), 0);
}

#[test]
fn cache_mode_reaches_the_mmu() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::RW);
    w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE)).cache(CacheMode::Uncached)).unwrap();
    let t = w.space.resolve(&mut w.backing, va(BASE), Access::Write).unwrap();
    assert_eq!(t.cache, CacheMode::Uncached);
    assert_eq!(w.space.map.region_at(va(BASE)).unwrap().cache, CacheMode::Uncached);
    assert_eq!(cache_bits(CacheMode::Uncached) >> CACHING_SHIFT, 2);
    assert_eq!(cache_bits(CacheMode::WriteBack), 0);
}

// ---- detach -----------------------------------------------------------------------------

fn three_regions(w: &mut World) -> MockId {
    let ds = w.ds(16, Rights::RW);
    for (at, pages, off) in [(0, 4, 0), (4, 4, 4), (10, 4, 8)] {
        w.attach(AttachRequest::new(ds, pages * P, Rights::RW).at(va(BASE + at * P)).offset((off * P) as u64)).unwrap();
        for i in 0..pages {
            w.space.resolve(&mut w.backing, va(BASE + (at + i) * P), Access::Write).unwrap();
        }
    }
    ds
}

#[test]
fn detach_by_address_detaches_the_whole_region() {
    let mut w = World::new();
    let ds = three_regions(&mut w);
    let d = w.space.map.detach_at(&mut w.backing, &mut w.space.mmu, va(BASE + 6 * P + 17)).unwrap();
    assert_eq!(
        (d.result, d.again, d.start, d.size, d.offset),
        (DetachResult::DetachedDs, false, va(BASE + 4 * P), 4 * P, 4 * P as u64)
    );
    assert_eq!(d.dataspace, ds);
    assert_eq!(d.code(), 0);
    assert!((4..8).all(|i| !w.mapped(BASE + i * P)), "the detached range is unmapped");
    assert!(w.mapped(BASE + 3 * P) && w.mapped(BASE + 10 * P), "the neighbours stay mapped");
    assert_eq!(w.backing.attachments(ds), 2);
    let e = w.space.map.detach_at(&mut w.backing, &mut w.space.mmu, va(BASE + 8 * P)).unwrap_err();
    assert_eq!(e, DetachError::NoRegion(va(BASE + 8 * P)));
    assert_eq!(e.code(), -L4_ENOENT);
}

#[test]
fn detach_exact_of_the_middle_splits_the_region() {
    let mut w = World::new();
    let ds = three_regions(&mut w);
    let d = w.detach(BASE + P, 2 * P, DetachFlags::EXACT).unwrap();
    assert_eq!(
        (d.result, d.again, d.start, d.size, d.offset),
        (DetachResult::SplitDs, false, va(BASE + P), 2 * P, P as u64)
    );
    assert_eq!(d.code(), 2);
    let regions: Vec<(usize, usize, u64)> =
        w.space.map.regions().iter().map(|r| (r.start.as_usize() - BASE, r.size, r.offset)).collect();
    assert_eq!(regions[..2], [(0, P, 0), (3 * P, P, 3 * P as u64)]);
    assert!(w.mapped(BASE) && !w.mapped(BASE + P) && !w.mapped(BASE + 2 * P) && w.mapped(BASE + 3 * P));
    assert_eq!(w.backing.attachments(ds), 4, "the split adds an attachment");
}

#[test]
fn detach_exact_of_a_head_or_tail_keeps_the_dataspace() {
    let mut w = World::new();
    three_regions(&mut w);
    let d = w.detach(BASE + 4 * P, P, DetachFlags::EXACT).unwrap();
    assert_eq!((d.result, d.start, d.size), (DetachResult::KeptDs, va(BASE + 4 * P), P));
    assert_eq!(d.code(), 1);
    let r = w.space.map.region_at(va(BASE + 5 * P)).unwrap();
    assert_eq!((r.start, r.size, r.offset), (va(BASE + 5 * P), 3 * P, 5 * P as u64), "the head moved, the offset too");
    let d = w.detach(BASE + 7 * P, 3 * P, DetachFlags::EXACT).unwrap();
    assert_eq!((d.result, d.again, d.start, d.size), (DetachResult::KeptDs, false, va(BASE + 7 * P), P));
    assert_eq!(w.space.map.region_at(va(BASE + 5 * P)).unwrap().size, 2 * P);
}

#[test]
fn detach_again_says_more_regions_overlap() {
    let mut w = World::new();
    three_regions(&mut w);
    // EXACT over [2, 12): tail of the first region, then whole second, then head of the third.
    let d = w.detach(BASE + 2 * P, 10 * P, DetachFlags::EXACT).unwrap();
    assert_eq!((d.result, d.again), (DetachResult::KeptDs, true));
    assert_eq!(d.code(), DetachResult::KeptDs as i32 | DETACH_AGAIN);
    assert_eq!(d.code() & DETACH_RESULT_MASK, 1);
    let d = w.detach(BASE + 2 * P, 10 * P, DetachFlags::EXACT).unwrap();
    assert_eq!((d.result, d.again), (DetachResult::DetachedDs, true));
    let d = w.detach(BASE + 2 * P, 10 * P, DetachFlags::EXACT).unwrap();
    assert_eq!((d.result, d.again, d.start, d.size), (DetachResult::KeptDs, false, va(BASE + 10 * P), 2 * P));
    assert_eq!(w.detach(BASE + 2 * P, 10 * P, DetachFlags::EXACT).unwrap_err().code(), -L4_ENOENT);
}

#[test]
fn detach_overlap_takes_whole_regions() {
    let mut w = World::new();
    three_regions(&mut w);
    let d = w.detach(BASE + 3 * P, 2 * P, DetachFlags::OVERLAP).unwrap();
    assert_eq!((d.result, d.again, d.start, d.size), (DetachResult::DetachedDs, true, va(BASE), 4 * P));
    let d = w.detach(BASE + 3 * P, 2 * P, DetachFlags::OVERLAP).unwrap();
    assert_eq!((d.result, d.again, d.start, d.size), (DetachResult::DetachedDs, false, va(BASE + 4 * P), 4 * P));
}

#[test]
fn detach_free_releases_unless_detach_keep() {
    let mut w = World::new();
    let ds = w.ds(8, Rights::RW);
    w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE)).flags(Flags::DETACH_FREE)).unwrap();
    w.detach(BASE, P, DetachFlags::EXACT | DetachFlags::KEEP).unwrap();
    assert_eq!(w.backing.released(ds), 0, "Detach_keep ignores Detach_free");
    w.detach(BASE + P, P, DetachFlags::EXACT).unwrap();
    assert_eq!(w.backing.released(ds), P as u64);
    let d = w.space.map.detach_at(&mut w.backing, &mut w.space.mmu, va(BASE + 3 * P)).unwrap();
    assert_eq!(d.result, DetachResult::DetachedDs);
    assert_eq!(w.backing.released(ds), 3 * P as u64);
    assert_eq!(w.backing.attachments(ds), 0);
}

#[test]
fn detach_rejects_bad_input() {
    let mut w = World::new();
    three_regions(&mut w);
    let g = w.space.map.generation();
    assert_eq!(w.detach(BASE, 0, DetachFlags::EXACT).unwrap_err(), DetachError::ZeroSize);
    assert_eq!(w.detach(BASE, usize::MAX, DetachFlags::EXACT).unwrap_err(), DetachError::SizeOverflow(usize::MAX));
    let e = w.detach(BASE, P, DetachFlags::EXACT | DetachFlags::OVERLAP).unwrap_err();
    assert_eq!(e.code(), -L4_EINVAL);
    assert_eq!(w.space.map.generation(), g);
    assert_eq!(w.space.map.region_count(), 3);
}

#[test]
fn detach_all_reports_every_region_of_a_range() {
    let mut w = World::new();
    let ds = three_regions(&mut w);
    let steps =
        w.space.map.detach_all(&mut w.backing, &mut w.space.mmu, va(BASE + 2 * P), 10 * P, DetachFlags::EXACT).unwrap();
    let got: Vec<(DetachResult, usize, usize)> =
        steps.iter().map(|d| (d.result, d.start.as_usize() - BASE, d.size / P)).collect();
    assert_eq!(
        got,
        vec![(DetachResult::KeptDs, 2 * P, 2), (DetachResult::DetachedDs, 4 * P, 4), (DetachResult::KeptDs, 10 * P, 2)]
    );
    assert!(steps.last().is_some_and(|d| !d.again));
    assert_eq!(w.space.map.regions().len(), 2);
    assert_eq!(w.backing.attachments(ds), 2);
    assert!((2..12).all(|i| !w.mapped(BASE + i * P)));
    w.check();
}

// ---- find -------------------------------------------------------------------------------

#[test]
fn find_returns_the_region_or_the_covering_area() {
    let mut w = World::new();
    let area = w.space.map.reserve_area(va(BASE + 32 * P), 8 * P, Flags::empty(), 12).unwrap();
    let ds = w.ds(8, Rights::RW);
    w.attach(
        AttachRequest::new(ds, 2 * P, Rights::READ)
            .at(va(BASE + 34 * P))
            .offset(2 * P as u64)
            .flags(Flags::IN_AREA | Flags::DETACH_FREE),
    )
    .unwrap();
    let f = w.space.map.find(va(BASE + 35 * P + 9), 1).unwrap();
    assert_eq!(
        f,
        Found::Region(RegionInfo {
            start: va(BASE + 34 * P),
            size: 2 * P,
            offset: 2 * P as u64,
            rights: Rights::READ,
            cache: CacheMode::WriteBack,
            flags: Flags::DETACH_FREE,
            dataspace: ds,
        })
    );
    assert!(!f.flags().contains(Flags::IN_AREA));
    let f = w.space.map.find(va(BASE + 38 * P), 1).unwrap();
    assert_eq!(f, Found::Area(AreaInfo { start: area, size: 8 * P, flags: Flags::empty() }));
    assert!(f.flags().contains(Flags::IN_AREA), "In_area is set for an area");
    // A range that reaches into a region finds it.
    let f = w.space.map.find(va(BASE + 30 * P), 5 * P).unwrap();
    assert_eq!(f.start(), va(BASE + 34 * P));
    let e = w.space.map.find(va(BASE), P).unwrap_err();
    assert_eq!(e, FindError::NotFound(va(BASE)));
    assert_eq!(e.code(), -L4_ENOENT);
    assert_eq!(w.space.map.find(va(BASE), 0).unwrap_err().code(), -L4_EINVAL);
    assert_eq!(w.space.map.find(va(BASE), usize::MAX).unwrap_err().code(), -L4_EINVAL);
}

// ---- get_regions / get_areas ------------------------------------------------------------

#[test]
fn get_regions_pages_through_bounded_batches() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::RW);
    for i in 0..10 {
        w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 2 * i * P))).unwrap();
    }
    let blank = RegionInfo {
        start: va(0),
        size: 0,
        offset: 0,
        rights: Rights::empty(),
        cache: CacheMode::WriteBack,
        flags: Flags::empty(),
        dataspace: ds,
    };
    let mut buf = [blank; 4];
    let mut seen = Vec::new();
    let mut from = va(BASE + P);
    let first = w.space.map.get_regions(from, &mut buf);
    let mut generation = first.generation;
    let mut l = first;
    loop {
        assert!(l.count <= 4);
        assert_eq!(l.generation, generation);
        seen.extend(buf[..l.count].iter().map(|r| (r.start.as_usize() - BASE) / P));
        match l.next {
            Some(n) => from = n,
            None => break,
        }
        l = w.space.map.get_regions(from, &mut buf);
        generation = l.generation;
    }
    assert_eq!(seen, vec![2, 4, 6, 8, 10, 12, 14, 16, 18], "regions starting at or above start, in order");
    // The generation shows a change made while paging.
    let before = w.space.map.get_regions(va(BASE), &mut buf);
    w.detach(BASE, P, DetachFlags::EXACT).unwrap();
    let after = w.space.map.get_regions(before.next.unwrap(), &mut buf);
    assert_ne!(before.generation, after.generation);
    // An empty buffer returns nothing and says where to go on.
    let l = w.space.map.get_regions(va(BASE), &mut []);
    assert_eq!((l.count, l.next), (0, Some(va(BASE + 2 * P))));
}

#[test]
fn get_areas_pages_through_bounded_batches() {
    let mut w = World::new();
    for i in 0..5 {
        let f = if i % 2 == 0 { Flags::RESERVED } else { Flags::empty() };
        w.space.map.reserve_area(va(BASE + 4 * i * P), 2 * P, f, 12).unwrap();
    }
    let mut buf = [AreaInfo { start: va(0), size: 0, flags: Flags::empty() }; 2];
    let l = w.space.map.get_areas(va(BASE + P), &mut buf);
    assert_eq!((l.count, l.next), (2, Some(va(BASE + 12 * P))));
    assert_eq!(buf[0], AreaInfo { start: va(BASE + 4 * P), size: 2 * P, flags: Flags::empty() });
    assert_eq!(buf[1].flags, Flags::RESERVED);
    let l = w.space.map.get_areas(l.next.unwrap(), &mut buf);
    assert_eq!((l.count, l.next), (2, None));
}

// ---- the pager: page faults -------------------------------------------------------------

#[test]
fn page_faults_map_with_the_region_rights() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RWX);
    w.attach(AttachRequest::new(ds, 4 * P, Rights::READ | Rights::EXECUTE).at(va(BASE))).unwrap();
    let t = w.space.resolve(&mut w.backing, va(BASE + P + 3), Access::Execute).unwrap();
    assert_eq!(t.rights, Rights::READ | Rights::EXECUTE);
    assert_eq!(w.space.mmu.translate(Page::containing_address(va(BASE + P))), Some(t));
    let e = w.space.resolve(&mut w.backing, va(BASE + 2 * P), Access::Write).unwrap_err();
    assert!(matches!(e, FaultError::Forbidden { access: Access::Write, .. }));
    assert_eq!(e.code(), -L4_EPERM);
    assert!(!w.mapped(BASE + 2 * P), "a forbidden access maps nothing");
    let e = w.space.resolve(&mut w.backing, va(BASE + 4 * P), Access::Read).unwrap_err();
    assert_eq!(e, FaultError::NoRegion(va(BASE + 4 * P)));
    assert_eq!(e.code(), -L4_ENOENT);
    assert_eq!(w.space.mmu.mapped_pages(), 1);
}

#[test]
fn a_fault_beyond_the_dataspace_maps_nothing() {
    let mut w = World::new();
    let ds = w.ds(2, Rights::RW);
    w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE))).unwrap();
    let e = w.space.resolve(&mut w.backing, va(BASE + 3 * P), Access::Read).unwrap_err();
    assert_eq!(e.code(), -L4_ERANGE);
    assert_eq!(w.space.mmu.mapped_pages(), 0);
}

#[test]
fn a_fault_upgrades_an_existing_mapping() {
    let mut w = World::new();
    let ds = w.ds(1, Rights::RW);
    w.attach(AttachRequest::new(ds, P, Rights::RW).at(va(BASE))).unwrap();
    let frame = w.backing_frame(ds);
    w.space
        .mmu
        .map(Page::containing_address(va(BASE)), frame, PageCount::new(1), Rights::READ, CacheMode::WriteBack)
        .unwrap()
        .ignore();
    let t = w.space.resolve(&mut w.backing, va(BASE), Access::Write).unwrap();
    assert_eq!(t.rights, Rights::RW);
    assert_eq!(w.space.mmu.mapped_pages(), 1);
}

impl World {
    fn backing_frame(&mut self, ds: MockId) -> Frame {
        use memkit_region::Backing;
        self.backing.map(ds, 0, Access::Read).unwrap().0
    }
}

#[test]
fn loads_and_stores_go_through_faults() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    let a = w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).search(va(BASE))).unwrap();
    let at = va(a.as_usize() + P - 3);
    w.space.store(&mut w.backing, &w.ram, at, b"across pages").unwrap();
    let mut buf = [0u8; 12];
    w.space.load(&mut w.backing, &w.ram, at, &mut buf).unwrap();
    assert_eq!(&buf, b"across pages");
    assert_eq!(w.space.mmu.mapped_pages(), 2);
    let e = w.space.load(&mut w.backing, &w.ram, va(a.as_usize() + 4 * P - 1), &mut buf).unwrap_err();
    assert_eq!(e.code(), -L4_ENOENT);
}

// ---- placement at scale and randomised --------------------------------------------------

#[test]
fn searches_honour_an_upper_limit() {
    let mut w = World::new();
    let ds = w.ds(4, Rights::RW);
    w.attach(AttachRequest::new(ds, 4 * P, Rights::RW).at(va(BASE))).unwrap();
    let a = w.attach(AttachRequest::new(ds, 2 * P, Rights::RW).search(va(BASE)).below(va(BASE + 6 * P))).unwrap();
    assert_eq!(a, va(BASE + 4 * P));
    let e = w.attach(AttachRequest::new(ds, P, Rights::RW).search(va(BASE)).below(va(BASE + 6 * P))).unwrap_err();
    assert_eq!(e.code(), -L4_EADDRNOTAVAIL, "no room below the limit");
    let area = w.space.map.reserve_area_below(va(BASE), 2 * P, Flags::SEARCH_ADDR, 12, Some(va(BASE + 8 * P))).unwrap();
    assert_eq!(area, va(BASE + 6 * P));
    let e = w.space.map.reserve_area_below(va(BASE), P, Flags::SEARCH_ADDR, 12, Some(va(BASE + 8 * P))).unwrap_err();
    assert_eq!(e, ReserveError::NoSpace(P));
    w.check();
}

#[test]
fn searches_stay_correct_with_many_regions() {
    let mut map: RegionMap<MockId> = RegionMap::new(VirtAddr::new(BASE), 1 << 36);
    let mut backing = MockBacking::new(Frame::from_number(1));
    let ds = backing.create(1, Rights::RW);
    let mut mmu = SoftMmu::new();
    // 20 000 one-page regions (200 under Miri), each followed by a one-page hole, then fill
    // the holes.
    let n = if cfg!(miri) { 200 } else { 20_000 };
    for i in 0..n {
        map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).at(va(BASE + 2 * i * P))).unwrap();
    }
    let big = map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, 2 * P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(big, va(BASE + (2 * n - 1) * P), "no hole of two pages before the last region's end");
    for i in 0..n - 1 {
        let a = map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).search(va(BASE))).unwrap();
        assert_eq!(a, va(BASE + (2 * i + 1) * P));
    }
    let a = map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).search(va(BASE))).unwrap();
    assert_eq!(a, va(BASE + (2 * n + 1) * P));
    map.check_invariants();
    assert_eq!(map.region_count(), 2 * n + 1);
}

#[test]
fn randomised_placement_is_seeded_and_spread() {
    let run = |seed| {
        let mut map: RegionMap<MockId> = RegionMap::new(VirtAddr::new(BASE), WINDOW);
        map.set_randomized(Some(seed));
        let mut backing = MockBacking::new(Frame::from_number(1));
        let ds = backing.create(1, Rights::RW);
        let mut mmu = SoftMmu::new();
        let v: Vec<VirtAddr> = (0..64)
            .map(|_| {
                map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).search(va(BASE)).align(14))
                    .unwrap()
            })
            .collect();
        map.check_invariants();
        v
    };
    let a = run(7);
    assert_eq!(a, run(7), "the same seed gives the same layout");
    assert_ne!(a, run(8));
    assert!(a.iter().all(|x| x.is_aligned(1 << 14)));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert!(sorted.last().unwrap().as_usize() - sorted[0].as_usize() > WINDOW / 2, "spread over the window");
}
