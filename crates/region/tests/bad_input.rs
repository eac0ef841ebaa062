//! Bad and extreme arguments: zero and huge sizes, addresses at the ends of the canonical
//! halves, alignments beyond the address width, offsets and ends that overflow, windows at
//! the end of the address space. Every call returns (no panic), every invariant holds
//! after it, and a call that fails changes nothing.

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{
    AttachError, AttachRequest, DetachFlags, Flags, Mmu, RegionInfo, RegionMap, ReserveError, SoftMmu, WindowError,
};
use memkit_testkit::SparseRam;
use memkit_types::l4::L4_EINVAL;
use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

const P: usize = PAGE_SIZE;
/// One past the last address of the lower canonical half.
const LOWER_END: usize = 1 << 47;

fn va(a: usize) -> VirtAddr {
    VirtAddr::new(a)
}

/// What a failed call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    generation: u64,
    regions: Vec<RegionInfo<MockId>>,
    areas: Vec<memkit_region::AreaInfo>,
    mapped: usize,
}

fn snapshot(map: &RegionMap<MockId>, mmu: &SoftMmu) -> Snapshot {
    Snapshot { generation: map.generation(), regions: map.regions(), areas: map.areas(), mapped: mmu.mapped_pages() }
}

#[test]
fn windows_at_the_ends_of_the_address_space() {
    // The last page of the address space cannot be in a window: its end is not a number.
    for (start, size) in [(0xffff_ffff_ffff_f000, P), (0xffff_ffff_ffff_0000, 16 * P), (0xffff_8000_0000_0000, 1 << 47)]
    {
        assert_eq!(
            RegionMap::<MockId>::try_new(va(start), size).err(),
            Some(WindowError::OutOfRange { start: va(start), size })
        );
    }
    // Leaving the lower half.
    let e = RegionMap::<MockId>::try_new(va(LOWER_END - P), 2 * P).err();
    assert_eq!(e, Some(WindowError::OutOfRange { start: va(LOWER_END - P), size: 2 * P }));
    assert_eq!(RegionMap::<MockId>::try_new(va(0), 0).err(), Some(WindowError::Empty));
    assert!(matches!(RegionMap::<MockId>::try_new(va(0x1001), P), Err(WindowError::Unaligned { .. })));
    assert!(matches!(RegionMap::<MockId>::try_new(va(0x1000), P + 1), Err(WindowError::Unaligned { .. })));
    assert_eq!(WindowError::Empty.code(), -L4_EINVAL);
    // Windows up to the end of each half's representable range work.
    for (start, size) in [(0, LOWER_END), (LOWER_END - P, P), (0xffff_8000_0000_0000, (1 << 47) - P)] {
        let map = RegionMap::<MockId>::try_new(va(start), size).expect("a valid window");
        map.check_invariants();
        assert_eq!(map.window_size(), size);
    }
}

#[test]
#[should_panic(expected = "reaches the end of the address space")]
fn new_names_a_window_at_the_end_of_the_address_space() {
    let _ = RegionMap::<MockId>::new(va(0xffff_ffff_ffff_f000), P);
}

#[test]
fn regions_and_areas_at_the_end_of_a_window() {
    let mut map = RegionMap::new(va(LOWER_END - 16 * P), 16 * P);
    let (mut mmu, mut backing) = (SoftMmu::new(), MockBacking::new(Frame::from_number(0x100)));
    let ds = backing.create(16, Rights::RW);
    // The last page, fixed and searched.
    let last = LOWER_END - P;
    assert_eq!(map.attach(&mut backing, &mut mmu, &AttachRequest::new(ds, P, Rights::RW).at(va(last))), Ok(va(last)));
    let req = AttachRequest::new(ds, P, Rights::RW).search(va(last - P));
    assert_eq!(map.attach(&mut backing, &mut mmu, &req), Ok(va(last - P)));
    let r = map.resolve(&mut backing, &mut mmu, va(LOWER_END - 1), Access::Write);
    assert!(r.is_ok(), "{r:?}");
    // Nothing more fits above.
    let req = AttachRequest::new(ds, 2 * P, Rights::RW).search(va(last - P));
    assert_eq!(map.attach(&mut backing, &mut mmu, &req), Err(AttachError::NoSpace(2 * P)));
    let req = AttachRequest::new(ds, 2 * P, Rights::RW).at(va(last));
    assert_eq!(map.attach(&mut backing, &mut mmu, &req), Err(AttachError::NotAvailable(va(last))));
    // An area filling the rest; then a search for another finds nothing.
    assert_eq!(map.reserve_area(va(LOWER_END - 16 * P), 14 * P, Flags::empty(), 12), Ok(va(LOWER_END - 16 * P)));
    assert_eq!(map.reserve_area(va(0), P, Flags::SEARCH_ADDR, 12), Err(ReserveError::NoSpace(P)));
    map.check_invariants();
    // The last bytes of the half, through the MMU; protect of the last page.
    let ram = SparseRam::new();
    assert_eq!(mmu.store(&ram, va(LOWER_END - 3), b"end"), Ok(()));
    let mut buf = [0; 3];
    assert_eq!(mmu.load(&ram, va(LOWER_END - 3), &mut buf), Ok(()));
    assert_eq!(&buf, b"end");
    assert!(mmu.protect(Page::containing_address(va(last)), PageCount::new(1), Rights::READ).is_ok());
    assert!(mmu.store(&ram, va(LOWER_END - 1), b"x").is_err());
    let e = map.detach(&mut backing, &mut mmu, va(last), usize::MAX, DetachFlags::EXACT).err();
    assert_eq!(e.map(|e| e.code()), Some(-L4_EINVAL), "a size that overflows when rounded to pages");
    // The detach unmaps the last page.
    assert_eq!(map.detach(&mut backing, &mut mmu, va(last), P, DetachFlags::EXACT).map(|d| d.start), Ok(va(last)));
    map.check_invariants();
    assert_eq!(mmu.translate(Page::containing_address(va(last))), None);
}

/// Every combination of extreme arguments on maps whose windows lie at the ends of the
/// canonical halves and at the bottom of the address space.
#[test]
fn extreme_arguments_fail_cleanly_and_change_nothing() {
    let windows = [(0, LOWER_END), (0x1000, 16 * P), (LOWER_END - 16 * P, 16 * P), (0xffff_8000_0000_0000, 16 * P)];
    let addrs =
        [0, 1, 0xfff, 0x1000, 0x5000, LOWER_END - P, LOWER_END - 1, 0xffff_8000_0000_0000, !0xfff_usize, usize::MAX];
    let sizes = [0, 1, P, P + 1, 16 * P, 1 << 47, usize::MAX - 0xffe, usize::MAX - P, usize::MAX];
    let aligns = [0u8, 12, 13, 47, 48, 63, 64, 255];
    let offsets = [0u64, 0x1000, 0x1001, !0xfff_u64, 1 << 63];
    let limits = [None, Some(va(0)), Some(va(0x3000)), Some(va(!0xfff_usize))];
    // Under Miri a few of each.
    let (windows, aligns, offsets, limits) = if cfg!(miri) {
        (&windows[2..3], &aligns[..2], &offsets[..1], &limits[..1])
    } else {
        (&windows[..], &aligns[..], &offsets[..], &limits[..])
    };
    let (mut calls, mut failures) = (0u64, 0u64);
    for &(ws, wsize) in windows {
        let mut map = RegionMap::new(va(ws), wsize);
        let (mut mmu, mut backing) = (SoftMmu::new(), MockBacking::new(Frame::from_number(0x100)));
        let ds = backing.create(16, Rights::RWX);
        let mut check = |map: &RegionMap<MockId>, mmu: &SoftMmu, before: Snapshot, failed: bool| {
            map.check_invariants();
            mmu.check_invariants();
            calls += 1;
            if failed {
                failures += 1;
                assert_eq!(snapshot(map, mmu), before, "a failed call changed the map");
            }
        };
        for a in addrs.into_iter().filter_map(|a| VirtAddr::try_new(a).ok()) {
            for size in sizes {
                for flags in [
                    Flags::empty(),
                    Flags::SEARCH_ADDR,
                    Flags::IN_AREA,
                    Flags::SEARCH_ADDR | Flags::IN_AREA,
                    Flags::EAGER_MAP,
                    Flags::RESERVED,
                ] {
                    for &align in aligns {
                        for &offset in offsets {
                            for &limit in limits {
                                let req = AttachRequest {
                                    replace: false,
                                    start: a,
                                    size,
                                    flags,
                                    rights: Rights::RW,
                                    cache: CacheMode::WriteBack,
                                    dataspace: ds,
                                    offset,
                                    align,
                                    limit,
                                };
                                let before = snapshot(&map, &mmu);
                                let r = map.attach(&mut backing, &mut mmu, &req);
                                if let Err(e) = r {
                                    assert!(e.code() < 0);
                                }
                                check(&map, &mmu, before, r.is_err());
                            }
                        }
                    }
                    for &align in aligns {
                        for &limit in limits {
                            let before = snapshot(&map, &mmu);
                            let r = map.reserve_area_below(a, size, flags, align, limit);
                            if let Err(e) = r {
                                assert!(e.code() < 0);
                            }
                            check(&map, &mmu, before, r.is_err());
                        }
                    }
                }
                for flags in [
                    DetachFlags::EXACT,
                    DetachFlags::OVERLAP,
                    DetachFlags::KEEP,
                    DetachFlags::OVERLAP | DetachFlags::KEEP,
                ] {
                    // Only every other address detaches, so that the map keeps regions.
                    if a.as_usize() & P == 0 {
                        let before = snapshot(&map, &mmu);
                        let r = map.detach(&mut backing, &mut mmu, a, size, flags);
                        check(&map, &mmu, before, r.is_err());
                    }
                }
                let before = snapshot(&map, &mmu);
                let _ = map.find(a, size);
                map.revoke(&mut mmu, ds, a.as_u64(), size as u64, Rights::READ).ok();
                map.unmap_stale(&mut mmu, ds, (size as u64).wrapping_mul(3), Frame::from_number(0x100));
                check(&map, &mmu, before, false);
            }
            for access in [Access::Read, Access::Write, Access::Execute] {
                let before = snapshot(&map, &mmu);
                let r = map.resolve(&mut backing, &mut mmu, a, access);
                // A resolved fault only maps; a refused one changes nothing.
                check(&map, &mmu, before, r.is_err());
            }
            let mut out = [RegionInfo {
                start: va(0),
                size: 0,
                offset: 0,
                rights: Rights::empty(),
                cache: CacheMode::WriteBack,
                flags: Flags::empty(),
                dataspace: ds,
            }; 3];
            let listing = map.get_regions(a, &mut out);
            assert!(listing.count <= 3);
            assert_eq!(map.get_regions(a, &mut []).count, 0);
            if a.as_usize() & (2 * P) != 0 {
                let before = snapshot(&map, &mmu);
                let r = map.free_area(a);
                check(&map, &mmu, before, r.is_err());
            }
        }
        assert!(map.region_count() + map.area_count() > 0, "nothing ever succeeded in window {ws:#x}");
    }
    assert!(failures > 100 && calls > failures, "{calls} calls, {failures} failures");
}
