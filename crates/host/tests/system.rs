//! The whole hosted stack with real faults: the dataspace manager behind region maps over
//! windows. Copy-on-write isolation, sharing, demand-zero, resize.

use std::sync::Arc;

use memkit_dataspace::{ClientId, Config, DmFlags, FactoryId, Manager, PoolId};
use memkit_host::{HostRam, RamRef, SpaceId, System};
use memkit_region::AttachRequest;
use memkit_types::testing::ModelFrameSource;
use memkit_types::{Frame, FrameCount, PAGE_SIZE, Rights, VirtAddr};

const OWNER: ClientId = ClientId::new(1, 0);

fn system(frames: u64) -> System<ModelFrameSource> {
    let ram = Arc::new(HostRam::new(frames * PAGE_SIZE as u64).unwrap());
    let mut manager = Manager::new(Config::new(frames * PAGE_SIZE as u64), RamRef(Arc::clone(&ram)));
    manager.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0), FrameCount::new(frames)));
    System::new(ram, manager)
}

fn attach(sys: &System<ModelFrameSource>, space: SpaceId, ds: memkit_dataspace::DataspaceId, size: usize) -> VirtAddr {
    sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(ds, size, Rights::RW).search(start)).unwrap().unwrap()
    })
}

fn get(sys: &System<ModelFrameSource>, space: SpaceId, addr: VirtAddr) -> u8 {
    let mut b = [0u8];
    sys.load(space, addr, &mut b).unwrap();
    b[0]
}

fn put(sys: &System<ModelFrameSource>, space: SpaceId, addr: VirtAddr, v: u8) {
    sys.store(space, addr, &[v]).unwrap();
}

fn at(a: VirtAddr, off: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + off)
}

#[test]
fn demand_zero_then_stores_reach_the_dataspace() {
    let sys = system(256);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, 8 * PAGE_SIZE as u64, 12, DmFlags::empty(), "a"));
    let ds = ds.unwrap();
    let a = attach(&sys, space, ds, 8 * PAGE_SIZE);
    for p in 0..8 {
        assert_eq!(get(&sys, space, at(a, p * PAGE_SIZE + 9)), 0);
        put(&sys, space, at(a, p * PAGE_SIZE + 9), p as u8 + 1);
    }
    let mut buf = [0u8; 1];
    sys.lock(|s| s.manager.read(ds, 5 * PAGE_SIZE as u64 + 9, &mut buf)).unwrap();
    assert_eq!(buf[0], 6);
    assert!(sys.lock(|s| s.space(space).unwrap().mmu.mapped_pages()) >= 8);
}

#[test]
fn two_spaces_sharing_a_dataspace_see_each_others_stores() {
    let sys = system(256);
    let (s1, s2) = (sys.create_space(1 << 20).unwrap(), sys.create_space(1 << 20).unwrap());
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, 4 * PAGE_SIZE as u64, 12, DmFlags::empty(), "s"));
    let ds = ds.unwrap();
    let (a, b) = (attach(&sys, s1, ds, 4 * PAGE_SIZE), attach(&sys, s2, ds, 4 * PAGE_SIZE));
    put(&sys, s1, at(a, 100), 0xaa);
    assert_eq!(get(&sys, s2, at(b, 100)), 0xaa);
    put(&sys, s2, at(b, 3 * PAGE_SIZE + 1), 0x55);
    assert_eq!(get(&sys, s1, at(a, 3 * PAGE_SIZE + 1)), 0x55);
}

#[test]
fn a_copy_on_write_copy_in_a_second_space_stays_isolated_while_both_write() {
    let sys = system(256);
    let (s1, s2) = (sys.create_space(1 << 20).unwrap(), sys.create_space(1 << 20).unwrap());
    let size = 4 * PAGE_SIZE;
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, size as u64, 12, DmFlags::empty(), "o")).unwrap();
    let a = attach(&sys, s1, ds, size);
    for p in 0..4 {
        put(&sys, s1, at(a, p * PAGE_SIZE), 10 + p as u8);
    }
    let copy = sys
        .lock(|s| {
            let (m, mut r) = s.manager_and_revoker();
            m.copy(OWNER, ds, DmFlags::COW, "copy", &mut r)
        })
        .unwrap();
    let b = attach(&sys, s2, copy, size);
    assert_eq!(get(&sys, s2, at(b, 2 * PAGE_SIZE)), 12);
    // Both sides write the same pages, in both orders.
    put(&sys, s1, at(a, 2 * PAGE_SIZE), 42);
    put(&sys, s2, at(b, 2 * PAGE_SIZE), 99);
    put(&sys, s2, at(b, 3 * PAGE_SIZE), 77);
    put(&sys, s1, at(a, 3 * PAGE_SIZE), 43);
    for _ in 0..2 {
        assert_eq!(get(&sys, s1, at(a, 2 * PAGE_SIZE)), 42);
        assert_eq!(get(&sys, s2, at(b, 2 * PAGE_SIZE)), 99);
        assert_eq!(get(&sys, s1, at(a, 3 * PAGE_SIZE)), 43);
        assert_eq!(get(&sys, s2, at(b, 3 * PAGE_SIZE)), 77);
        assert_eq!(get(&sys, s2, at(b, 0)), 10);
        assert_eq!(get(&sys, s1, at(a, PAGE_SIZE)), 11);
    }
}

#[test]
fn threads_faulting_through_the_stack_lose_no_write() {
    let sys = Arc::new(system(512));
    let space = sys.create_space(1 << 22).unwrap();
    let pages = 64;
    let ds =
        sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, (pages * PAGE_SIZE) as u64, 12, DmFlags::empty(), "t"));
    let a = attach(&sys, space, ds.unwrap(), pages * PAGE_SIZE);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sys = Arc::clone(&sys);
            std::thread::spawn(move || {
                for p in 0..pages {
                    sys.store(space, at(a, p * PAGE_SIZE + t), &[t as u8 + 1]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for p in 0..pages {
        for t in 0..4 {
            assert_eq!(get(&sys, space, at(a, p * PAGE_SIZE + t)), t as u8 + 1);
        }
    }
}

#[test]
fn would_resolve_predicts_refusals() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, PAGE_SIZE as u64, 12, DmFlags::empty(), "r"));
    let a = sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(ds.unwrap(), PAGE_SIZE, Rights::READ).search(start)).unwrap().unwrap()
    });
    assert!(sys.would_resolve(space, a, memkit_types::Access::Read));
    assert!(!sys.would_resolve(space, a, memkit_types::Access::Write));
    assert!(!sys.would_resolve(space, at(a, PAGE_SIZE), memkit_types::Access::Read));
    assert_eq!(get(&sys, space, a), 0);
    sys.destroy_space(space).unwrap();
    assert!(sys.load(space, a, &mut [0u8]).is_err());
}
