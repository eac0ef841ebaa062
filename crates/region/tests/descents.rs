//! How many tree searches each address-space operation takes on its common paths, in a map
//! of a few thousand regions: descents (walks from a root to a leaf) and lookups a leaf hint
//! answered, at most two in all (one for `find` and for an attach at a free address). The bound is part of the behaviour, so a
//! change that adds a search fails here (timings belong in the benchmarks).
//!
//! Each operation works on a region created just before it at a free spot among the
//! others, as most `mprotect`, `munmap` and `mremap` calls of real programs do; every
//! operation is repeated at many places and the largest count is kept.

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{AttachRequest, DetachFlags, Flags, RegionMap, Remap, SoftMmu};
use memkit_types::{Frame, PAGE_SIZE, Rights, VirtAddr};

const BASE: usize = 0x4000_0000;
const P: usize = PAGE_SIZE;
/// Regions in the map before the operations: one page every [`STRIDE`] pages.
const REGIONS: usize = 3000;
/// Pages from one region to the next: a gap of seven pages after each.
const STRIDE: usize = 8;

fn va(page: usize) -> VirtAddr {
    VirtAddr::new(BASE + page * P)
}

struct World {
    map: RegionMap<MockId>,
    backing: MockBacking,
    mmu: SoftMmu,
}

fn world() -> World {
    let mut backing = MockBacking::new(Frame::from_number(0x100));
    backing.tell_sizes(true);
    let mut w = World { map: RegionMap::new(va(0), REGIONS * STRIDE * 2 * P), backing, mmu: SoftMmu::new() };
    for k in 0..REGIONS {
        let ds = w.backing.create(1, Rights::RW);
        w.map.attach(&mut w.backing, &mut w.mmu, &AttachRequest::new(ds, P, Rights::RW).at(va(k * STRIDE))).unwrap();
    }
    w.map.check_invariants();
    w
}

/// A fresh region of `pages` pages, read-write, one page after region `slot`.
fn fresh(w: &mut World, slot: usize, pages: usize) -> VirtAddr {
    let ds = w.backing.create(8, Rights::RW);
    let at = va(slot * STRIDE + 1);
    w.map.attach(&mut w.backing, &mut w.mmu, &AttachRequest::new(ds, pages * P, Rights::RW).at(at)).unwrap();
    at
}

/// The largest number of descents `op` takes over many places, each on a fresh region of
/// `pages` pages (none: at a free spot), checking the map after every operation.
fn most(pages: Option<usize>, mut op: impl FnMut(&mut World, usize, VirtAddr)) -> (u64, u64) {
    let mut w = world();
    let mut most = (0, 0);
    for rep in 0..200 {
        let slot = (rep * 37 + 11) % REGIONS;
        let at = match pages {
            Some(n) => fresh(&mut w, slot, n),
            None => va(slot * STRIDE + 1),
        };
        let before = (w.map.descents(), w.map.hinted_lookups());
        op(&mut w, slot, at);
        let (d, h) = (w.map.descents() - before.0, w.map.hinted_lookups() - before.1);
        most = (most.0.max(d), most.1.max(d + h));
        w.map.check_invariants();
        // Clear the spot for the next round (not counted).
        let _ =
            w.map.detach_range(&mut w.backing, &mut w.mmu, va(slot * STRIDE + 1), 7 * P, DetachFlags::EXACT, |_| {});
    }
    most
}

#[test]
fn common_operations_take_at_most_their_descents() {
    let unmap = |w: &mut World, at: VirtAddr, size: usize| {
        let steps = w.map.detach_range(&mut w.backing, &mut w.mmu, at, size, DetachFlags::EXACT, |_| {}).unwrap();
        assert_eq!(steps, 1);
    };
    let protect = |w: &mut World, at: VirtAddr, size: usize| {
        w.map.protect(&mut w.backing, &mut w.mmu, at, size, Rights::READ).unwrap().ignore();
    };
    let remap = |w: &mut World, at: VirtAddr, old: usize, new: usize| {
        assert_eq!(w.map.remap(&mut w.backing, &mut w.mmu, at, old, new, Remap::InPlace).unwrap(), at);
    };
    let table = [
        (
            "mmap at a free spot",
            most(None, |w, _, at| {
                let ds = w.backing.create(4, Rights::RW);
                w.map.attach(&mut w.backing, &mut w.mmu, &AttachRequest::new(ds, 4 * P, Rights::RW).at(at)).unwrap();
            }),
            1,
        ),
        (
            "mmap, searched",
            most(None, |w, _, at| {
                let ds = w.backing.create(4, Rights::RW);
                let req = AttachRequest::new(ds, 4 * P, Rights::RW).flags(Flags::SEARCH_ADDR).search(at);
                assert_eq!(w.map.attach(&mut w.backing, &mut w.mmu, &req).unwrap(), at);
            }),
            2,
        ),
        (
            "mmap replacing a region's middle",
            most(Some(4), |w, _, at| {
                let ds = w.backing.create(2, Rights::RW);
                let mid = VirtAddr::new(at.as_usize() + P);
                let req = AttachRequest::new(ds, 2 * P, Rights::READ).at(mid).replacing();
                w.map.attach(&mut w.backing, &mut w.mmu, &req).unwrap();
            }),
            2,
        ),
        ("munmap of a whole region", most(Some(4), |w, _, at| unmap(w, at, 4 * P)), 2),
        ("munmap of a region's head", most(Some(4), |w, _, at| unmap(w, at, P)), 2),
        ("munmap of a region's tail", most(Some(4), |w, _, at| unmap(w, VirtAddr::new(at.as_usize() + 3 * P), P)), 2),
        ("mprotect of a whole region", most(Some(4), |w, _, at| protect(w, at, 4 * P)), 2),
        ("mprotect of a sub-range", most(Some(4), |w, _, at| protect(w, VirtAddr::new(at.as_usize() + P), 2 * P)), 2),
        ("mremap grow in place", most(Some(4), |w, _, at| remap(w, at, 4 * P, 6 * P)), 2),
        ("mremap shrink in place", most(Some(4), |w, _, at| remap(w, at, 4 * P, 2 * P)), 2),
        (
            "find",
            most(Some(4), |w, _, at| {
                assert!(w.map.find(VirtAddr::new(at.as_usize() + P), 1).is_ok());
            }),
            1,
        ),
    ];
    std::eprintln!("{:<32} descents  searches (hinted included)", "operation");
    for (name, (d, s), _) in &table {
        std::eprintln!("{name:<32} {d:>8}  {s:>8}");
    }
    for (name, (d, searches), bound) in &table {
        assert!(searches <= bound, "{name}: {searches} searches ({d} descents), at most {bound} expected");
    }
}
