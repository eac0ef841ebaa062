//! Fault-around with real loads and stores: a fault whose aligned block is still empty maps
//! the block with one frame run; everything else stays one page per fault.

use std::sync::Arc;

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, NoRevoker, PoolId};
use memkit_host::{DEFAULT_FAULT_AROUND, FaultAroundError, HostRam, HostSpaceId, MAX_FAULT_AROUND, RamRef, System};
use memkit_region::AttachRequest;
use memkit_testkit::ModelFrameSource;
use memkit_types::{Frame, FrameCount, FrameSource, PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysMemory, Rights, VirtAddr};

const OWNER: ClientId = ClientId::new(1, 0);
const BLOCK: usize = DEFAULT_FAULT_AROUND;

type Sys = System<ModelFrameSource>;

fn system(frames: u64) -> Sys {
    let ram = Arc::new(HostRam::new(frames * PAGE_SIZE as u64).unwrap());
    let mut manager = Manager::new(Config::new(frames * PAGE_SIZE as u64), RamRef(Arc::clone(&ram)));
    manager.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0), FrameCount::new(frames)));
    System::new(ram, manager)
}

fn open(sys: &Sys, pages: usize) -> DataspaceId {
    sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, (pages * PAGE_SIZE) as u64, 12, DmFlags::empty(), "f"))
        .unwrap()
}

fn attach(sys: &Sys, space: HostSpaceId, ds: DataspaceId, pages: usize, rights: Rights) -> VirtAddr {
    sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(ds, pages * PAGE_SIZE, rights).search(start)).unwrap().unwrap()
    })
}

fn at(a: VirtAddr, page: usize, byte: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + page * PAGE_SIZE + byte)
}

fn get(sys: &Sys, space: HostSpaceId, addr: VirtAddr) -> u8 {
    let mut b = [0u8];
    sys.load(space, addr, &mut b).unwrap();
    b[0]
}

fn put(sys: &Sys, space: HostSpaceId, addr: VirtAddr, v: u8) {
    sys.store(space, addr, &[v]).unwrap();
}

fn mapped(sys: &Sys, space: HostSpaceId) -> usize {
    sys.lock(|s| {
        let mmu = &s.space(space).unwrap().mmu;
        mmu.check_invariants();
        mmu.mapped_pages()
    })
}

fn held(sys: &Sys) -> u64 {
    sys.lock(|s| {
        let pool = s.manager.pool(PoolId::DEFAULT).unwrap();
        pool.total_frames().get() - pool.free_frames().get()
    })
}

/// The pages `lo .. hi` (indices into the region of `pages` pages at `a`) that a fault on
/// page `p` maps when everything around it is empty.
fn block_of(a: VirtAddr, pages: usize, p: usize) -> (usize, usize) {
    let first = a.as_usize() >> PAGE_SHIFT;
    let n = first + p;
    let lo = (n & !(BLOCK - 1)).max(first) - first;
    let hi = ((n | (BLOCK - 1)) + 1).min(first + pages) - first;
    (lo, hi)
}

fn phys(sys: &Sys, ds: DataspaceId, page: usize) -> PhysAddr {
    sys.lock(|s| s.manager.phys_addr(ds, (page * PAGE_SIZE) as u64)).unwrap().0
}

#[test]
fn a_fault_maps_its_empty_block_whose_pages_read_zero_and_keep_their_stores() {
    let sys = system(256);
    assert_eq!(sys.lock(|s| s.fault_around()), BLOCK, "on by default");
    let space = sys.create_space(1 << 20).unwrap();
    let pages = 40;
    let ds = open(&sys, pages);
    let a = attach(&sys, space, ds, pages, Rights::RW);
    let (lo, hi) = block_of(a, pages, 5);
    put(&sys, space, at(a, 5, 7), 0xee);
    assert_eq!((mapped(&sys, space), held(&sys)), (hi - lo, (hi - lo) as u64), "one fault, the whole block");
    for p in lo..hi {
        assert_eq!(get(&sys, space, at(a, p, 7)), if p == 5 { 0xee } else { 0 }, "page {p} reads zero");
        put(&sys, space, at(a, p, 7), p as u8 + 1);
    }
    // The block's pages have consecutive frames.
    let first = phys(&sys, ds, lo);
    for p in lo..hi {
        assert_eq!(phys(&sys, ds, p).as_u64(), first.as_u64() + ((p - lo) * PAGE_SIZE) as u64, "page {p}");
    }
    // Every page of the region, in and out of the first block.
    for p in 0..pages {
        put(&sys, space, at(a, p, 9), 0x80 | p as u8);
    }
    assert_eq!(mapped(&sys, space), pages);
    assert_eq!(held(&sys), pages as u64, "no frame beyond the dataspace");
    for p in 0..pages {
        let mut buf = [0u8; 2];
        sys.ram().read(PhysAddr::new(phys(&sys, ds, p).as_u64() + 7), &mut buf[..1]);
        sys.ram().read(PhysAddr::new(phys(&sys, ds, p).as_u64() + 9), &mut buf[1..]);
        let seven = if (lo..hi).contains(&p) { p as u8 + 1 } else { 0 };
        assert_eq!(buf, [seven, 0x80 | p as u8], "page {p}'s stores are in its own frame");
    }
}

#[test]
fn fault_around_off_maps_one_page_per_fault() {
    let sys = system(64);
    sys.set_fault_around(1).unwrap();
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 32);
    let a = attach(&sys, space, ds, 32, Rights::RW);
    put(&sys, space, at(a, 5, 0), 1);
    assert_eq!(get(&sys, space, at(a, 6, 0)), 0);
    assert_eq!((mapped(&sys, space), held(&sys)), (2, 2));
}

#[test]
fn a_block_with_a_populated_page_maps_one_page() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 64);
    let a = attach(&sys, space, ds, 64, Rights::RW);
    let (lo, hi) = block_of(a, 64, 20);
    // A page of the block got a frame without being mapped here.
    let other = if lo == 20 { 21 } else { lo };
    sys.lock(|s| s.manager.write(ds, (other * PAGE_SIZE) as u64, &[3], &mut NoRevoker)).unwrap();
    assert!(hi - lo > 1);
    put(&sys, space, at(a, 20, 0), 4);
    assert_eq!((mapped(&sys, space), held(&sys)), (1, 2), "the fault stays on its page");
    assert_eq!(get(&sys, space, at(a, other, 0)), 3);
    assert_eq!(get(&sys, space, at(a, 20, 0)), 4);
}

#[test]
fn a_block_is_cut_at_the_end_of_the_dataspace_and_the_region() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    // A dataspace of 3 pages and a bit, attached over 4 pages.
    let ds = sys
        .lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, 3 * PAGE_SIZE as u64 + 1, 12, DmFlags::empty(), "e"))
        .unwrap();
    let a = attach(&sys, space, ds, 4, Rights::RW);
    put(&sys, space, at(a, 3, 0), 1);
    let (lo, hi) = block_of(a, 4, 3);
    assert_eq!(mapped(&sys, space), hi - lo);
    assert_eq!(held(&sys), (hi - lo) as u64);
    for p in 0..4 {
        assert_eq!(get(&sys, space, at(a, p, 100)), 0);
    }
    assert_eq!(held(&sys), 4, "nothing outside the region");
}

#[test]
fn copy_on_write_stays_isolated_across_spaces_with_fault_around() {
    let sys = system(512);
    let (s1, s2) = (sys.create_space(1 << 21).unwrap(), sys.create_space(1 << 21).unwrap());
    let pages = 48;
    let ds = open(&sys, pages);
    let a = attach(&sys, s1, ds, pages, Rights::RW);
    // The source has frames in its first half only.
    for p in 0..pages / 2 {
        put(&sys, s1, at(a, p, 0), 10 + p as u8);
    }
    let copy = sys
        .lock(|s| {
            let (m, mut r) = s.manager_and_revoker();
            m.copy(OWNER, ds, DmFlags::COW, "copy", &mut r)
        })
        .unwrap();
    let b = attach(&sys, s2, copy, pages, Rights::RW);
    // Both write every page, in both orders: shared pages break copy-on-write one by one,
    // empty pages fault around on each side separately.
    for p in 0..pages {
        if p % 2 == 0 {
            put(&sys, s1, at(a, p, 1), 100 + p as u8);
            put(&sys, s2, at(b, p, 1), 200u8.wrapping_add(p as u8));
        } else {
            put(&sys, s2, at(b, p, 1), 200u8.wrapping_add(p as u8));
            put(&sys, s1, at(a, p, 1), 100 + p as u8);
        }
    }
    for p in 0..pages {
        let old = if p < pages / 2 { 10 + p as u8 } else { 0 };
        assert_eq!(get(&sys, s1, at(a, p, 0)), old, "source page {p}");
        assert_eq!(get(&sys, s2, at(b, p, 0)), old, "copy page {p}");
        assert_eq!(get(&sys, s1, at(a, p, 1)), 100 + p as u8, "source page {p}");
        assert_eq!(get(&sys, s2, at(b, p, 1)), 200u8.wrapping_add(p as u8), "copy page {p}");
        assert_ne!(phys(&sys, ds, p), phys(&sys, copy, p), "page {p} has a frame of its own on each side");
    }
    assert_eq!(held(&sys), 2 * pages as u64);
}

#[test]
fn fault_around_runs_merge_into_few_kernel_mappings_within_the_budget() {
    let sys = system(512);
    let space = sys.create_space(1 << 21).unwrap();
    let pages = 8 * BLOCK;
    let ds = open(&sys, pages);
    let a = attach(&sys, space, ds, pages, Rights::RW);
    let budget = memkit_host::MappingBudget::system();
    for p in 0..pages {
        put(&sys, space, at(a, p, 0), p as u8);
    }
    let mappings = sys.lock(|s| {
        let mmu = &s.space(space).unwrap().mmu;
        mmu.check_invariants();
        mmu.mappings()
    });
    // The model pool hands out the lowest free run: every block continues the last, and the
    // whole region is one run of frames, one kernel mapping.
    let contiguous =
        (1..pages).all(|p| phys(&sys, ds, p).as_u64() == phys(&sys, ds, p - 1).as_u64() + PAGE_SIZE as u64);
    assert!(contiguous, "frames in order");
    assert_eq!(mappings, 3, "one run of frames is one kernel mapping");
    assert!(budget.used() <= budget.limit());
    sys.destroy_space(space).unwrap();
}

#[test]
fn bad_block_sizes_are_refused_and_change_nothing() {
    let sys = system(16);
    for bad in [0, 3, 24, 2 * MAX_FAULT_AROUND] {
        let e = sys.set_fault_around(bad).unwrap_err();
        assert_eq!(e, FaultAroundError::BadSize(bad));
        assert_eq!(e.code(), -22);
        assert!(e.to_string().contains(&bad.to_string()));
    }
    assert_eq!(sys.lock(|s| s.fault_around()), DEFAULT_FAULT_AROUND);
    sys.set_fault_around(MAX_FAULT_AROUND).unwrap();
    assert_eq!(sys.lock(|s| s.fault_around()), MAX_FAULT_AROUND);
}

#[test]
fn a_read_only_region_maps_its_block_read_only() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ro = open(&sys, 32);
    let a = attach(&sys, space, ro, 32, Rights::READ);
    let (lo, hi) = block_of(a, 32, 9);
    assert_eq!(get(&sys, space, at(a, 9, 0)), 0);
    assert_eq!(mapped(&sys, space), hi - lo);
    sys.lock(|s| {
        let mmu = &s.space(space).unwrap().mmu;
        for p in lo..hi {
            let page = memkit_types::Page::containing_address(at(a, p, 0));
            assert_eq!(memkit_region::Mmu::translate(mmu, page).map(|t| t.rights), Some(Rights::READ), "page {p}");
        }
    });
    assert!(!sys.would_resolve(space, at(a, 9, 0), memkit_types::Access::Write));
    assert_eq!(held(&sys), (hi - lo) as u64);
}
