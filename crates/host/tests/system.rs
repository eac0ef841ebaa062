//! The whole hosted stack with real faults: the dataspace manager behind region maps over
//! windows. Copy-on-write isolation, sharing, demand-zero, resize.

use std::sync::Arc;

use memkit_dataspace::{ClientId, Config, DmFlags, FactoryId, Manager, PoolId};
use memkit_host::{DEFAULT_FAULT_AROUND, HostRam, HostSpaceId, RamRef, System, SystemError, Window, WindowError};
use memkit_region::{AttachRequest, BackingError, DetachFlags, FaultError, Flags};
use memkit_testkit::ModelFrameSource;
use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Rights, VirtAddr};

const OWNER: ClientId = ClientId::new(1, 0);

fn system(frames: u64) -> System<ModelFrameSource> {
    let ram = Arc::new(HostRam::new(frames * PAGE_SIZE as u64).unwrap());
    let mut manager = Manager::new(Config::new(frames * PAGE_SIZE as u64), RamRef(Arc::clone(&ram)));
    manager.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0), FrameCount::new(frames)));
    System::new(ram, manager)
}

fn attach(
    sys: &System<ModelFrameSource>,
    space: HostSpaceId,
    ds: memkit_dataspace::DataspaceId,
    size: usize,
) -> VirtAddr {
    sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(ds, size, Rights::RW).search(start)).unwrap().unwrap()
    })
}

fn get(sys: &System<ModelFrameSource>, space: HostSpaceId, addr: VirtAddr) -> u8 {
    let mut b = [0u8];
    sys.load(space, addr, &mut b).unwrap();
    b[0]
}

fn put(sys: &System<ModelFrameSource>, space: HostSpaceId, addr: VirtAddr, v: u8) {
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

// ---- coherence as SpaceSet keeps it ----

fn open(sys: &System<ModelFrameSource>, size: usize, name: &str) -> memkit_dataspace::DataspaceId {
    sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, size as u64, 12, DmFlags::empty(), name)).unwrap()
}

fn cow_copy(sys: &System<ModelFrameSource>, ds: memkit_dataspace::DataspaceId) -> memkit_dataspace::DataspaceId {
    sys.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.copy(OWNER, ds, DmFlags::COW, "copy", &mut r)
    })
    .unwrap()
}

fn bytes(sys: &System<ModelFrameSource>, space: HostSpaceId, addr: VirtAddr, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    sys.load(space, addr, &mut b).unwrap();
    b
}

#[test]
fn a_copy_on_write_break_reaches_a_second_region_of_the_same_space() {
    // Two regions of one space show the same dataspace; a copy-on-write copy is taken; a
    // store through the first region breaks copy-on-write and must be seen through the
    // second (which mapped the old, now shared, frame).
    for fault_around in [1, DEFAULT_FAULT_AROUND] {
        let sys = system(64);
        sys.set_fault_around(fault_around).unwrap();
        let space = sys.create_space(1 << 20).unwrap();
        let ds = open(&sys, PAGE_SIZE, "o");
        let r1 = attach(&sys, space, ds, PAGE_SIZE);
        let r2 = attach(&sys, space, ds, PAGE_SIZE);
        sys.store(space, r1, b"old").unwrap();
        assert_eq!(bytes(&sys, space, r2, 3), b"old");
        let copy = cow_copy(&sys, ds);
        sys.store(space, r1, b"new").unwrap();
        assert_eq!(bytes(&sys, space, r2, 3), b"new", "fault-around {fault_around}");
        assert_eq!(bytes(&sys, space, r1, 3), b"new");
        let rc = attach(&sys, space, copy, PAGE_SIZE);
        assert_eq!(bytes(&sys, space, rc, 3), b"old");
        sys.check_invariants();
    }
}

#[test]
fn detach_free_clears_the_detached_part_of_the_dataspace() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 2 * PAGE_SIZE, "f");
    let keep = attach(&sys, space, ds, 2 * PAGE_SIZE);
    let freed = sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        let req = AttachRequest::new(ds, 2 * PAGE_SIZE, Rights::RW).search(start).flags(Flags::DETACH_FREE);
        s.attach(space, &req).unwrap().unwrap()
    });
    sys.store(space, at(keep, 10), b"first").unwrap();
    sys.store(space, at(keep, PAGE_SIZE + 10), b"second").unwrap();
    assert_eq!(bytes(&sys, space, at(freed, PAGE_SIZE + 10), 6), b"second");
    sys.check_invariants();
    // Detach the second page of the DETACH_FREE region: that page of the dataspace is freed.
    sys.lock(|s| s.detach(space, at(freed, PAGE_SIZE), PAGE_SIZE, DetachFlags::EXACT)).unwrap().unwrap();
    sys.check_invariants();
    let mut buf = [0u8; 6];
    sys.lock(|s| s.manager.read(ds, PAGE_SIZE as u64 + 10, &mut buf)).unwrap();
    assert_eq!(buf, [0; 6], "the manager still holds the detached part");
    assert_eq!(bytes(&sys, space, at(keep, PAGE_SIZE + 10), 6), [0; 6], "another region still sees it");
    assert_eq!(bytes(&sys, space, at(keep, 10), 5), b"first");
    // KEEP keeps the memory.
    sys.lock(|s| s.detach(space, freed, PAGE_SIZE, DetachFlags::EXACT | DetachFlags::KEEP)).unwrap().unwrap();
    assert_eq!(bytes(&sys, space, at(keep, 10), 5), b"first");
    sys.check_invariants();
}

#[test]
fn a_region_split_after_close_keeps_the_dataspace_alive() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 4 * PAGE_SIZE, "c");
    let a = attach(&sys, space, ds, 4 * PAGE_SIZE);
    sys.store(space, at(a, 3 * PAGE_SIZE), b"tail").unwrap();
    sys.lock(|s| s.manager.close(OWNER, ds)).unwrap();
    // Split the region in three, then detach the head: the tail still shows the dataspace.
    sys.lock(|s| s.detach(space, at(a, PAGE_SIZE), PAGE_SIZE, DetachFlags::EXACT)).unwrap().unwrap();
    sys.check_invariants();
    sys.lock(|s| s.detach(space, a, PAGE_SIZE, DetachFlags::EXACT)).unwrap().unwrap();
    sys.check_invariants();
    assert_eq!(bytes(&sys, space, at(a, 3 * PAGE_SIZE), 4), b"tail");
    sys.store(space, at(a, 2 * PAGE_SIZE), b"more").unwrap();
    assert_eq!(bytes(&sys, space, at(a, 2 * PAGE_SIZE), 4), b"more");
    // The last detach frees it.
    sys.lock(|s| s.detach(space, at(a, 2 * PAGE_SIZE), 2 * PAGE_SIZE, DetachFlags::OVERLAP)).unwrap().unwrap();
    assert_eq!(sys.lock(|s| s.attachments(ds)), 0);
    assert_eq!(sys.lock(|s| s.manager.pool(PoolId::DEFAULT).unwrap().free_frames()), FrameCount::new(64));
    sys.check_invariants();
}

// ---- running out of frames at fault time ----

/// Takes every free frame of the default pool.
fn exhaust(sys: &System<ModelFrameSource>) {
    sys.lock(|s| {
        let pool = s.manager.pool(PoolId::DEFAULT).unwrap();
        while pool.allocate(FrameCount::new(1), Order::ZERO, None).is_ok() {}
    });
}

fn out_of_memory(e: SystemError) -> bool {
    matches!(e, SystemError::Fault { error: FaultError::Backing(BackingError::OutOfMemory), .. }) && e.code() == -12
}

#[test]
fn a_store_with_no_frame_left_is_an_out_of_memory_error_and_changes_nothing() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 4 * PAGE_SIZE, "d");
    let a = attach(&sys, space, ds, 4 * PAGE_SIZE);
    sys.set_fault_around(1).unwrap();
    sys.store(space, a, b"kept").unwrap();
    exhaust(&sys);
    // A fresh page: no frame.
    let e = sys.store(space, at(a, PAGE_SIZE), &[1]).unwrap_err();
    assert!(out_of_memory(e), "{e}");
    assert!(e.to_string().contains("out of memory") || e.to_string().contains("memory"), "{e}");
    assert!(sys.load(space, at(a, 2 * PAGE_SIZE), &mut [0u8]).is_err());
    // A store across a mapped page and a fresh one writes nothing.
    let e = sys.store(space, at(a, PAGE_SIZE - 2), b"xxxx").unwrap_err();
    assert!(out_of_memory(e), "{e}");
    assert_eq!(bytes(&sys, space, at(a, PAGE_SIZE - 2), 2), [0, 0]);
    assert_eq!(bytes(&sys, space, a, 4), b"kept");
    assert!(!sys.would_resolve(space, at(a, 3 * PAGE_SIZE), memkit_types::Access::Write));
    sys.check_invariants();
}

#[test]
fn a_copy_on_write_break_with_no_frame_left_is_an_error_and_both_sides_keep_their_bytes() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, PAGE_SIZE, "d");
    let a = attach(&sys, space, ds, PAGE_SIZE);
    sys.store(space, a, b"shared").unwrap();
    let copy = cow_copy(&sys, ds);
    let c = attach(&sys, space, copy, PAGE_SIZE);
    exhaust(&sys);
    let e = sys.store(space, a, b"broken").unwrap_err();
    assert!(out_of_memory(e), "{e}");
    let e = sys.store(space, c, b"broken").unwrap_err();
    assert!(out_of_memory(e), "{e}");
    assert_eq!(bytes(&sys, space, a, 6), b"shared");
    assert_eq!(bytes(&sys, space, c, 6), b"shared");
    sys.check_invariants();
}

#[test]
fn a_grown_dataspace_with_no_frame_left_is_an_error_on_its_new_pages() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, PAGE_SIZE, "g");
    let a = attach(&sys, space, ds, 4 * PAGE_SIZE);
    sys.store(space, a, b"one").unwrap();
    exhaust(&sys);
    sys.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.resize(OWNER, ds, 4 * PAGE_SIZE as u64, &mut r)
    })
    .unwrap();
    let e = sys.store(space, at(a, 2 * PAGE_SIZE), b"two").unwrap_err();
    assert!(out_of_memory(e), "{e}");
    assert_eq!(bytes(&sys, space, a, 3), b"one");
    sys.check_invariants();
}

#[test]
fn loads_and_stores_report_refusals_as_errors() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, PAGE_SIZE, "r");
    let a = sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(ds, 2 * PAGE_SIZE, Rights::READ).search(start)).unwrap().unwrap()
    });
    let e = sys.store(space, a, &[1]).unwrap_err();
    assert!(matches!(e, SystemError::Fault { error: FaultError::Forbidden { .. }, .. }), "{e}");
    let e = sys.load(space, at(a, PAGE_SIZE), &mut [0u8]).unwrap_err();
    assert!(matches!(e, SystemError::Fault { error: FaultError::Backing(BackingError::OutOfRange(_)), .. }), "{e}");
    let e = sys.load(space, at(a, 4 * PAGE_SIZE), &mut [0u8]).unwrap_err();
    assert!(matches!(e, SystemError::Fault { error: FaultError::NoRegion(_), .. }), "{e}");
    let e = sys.load(space, at(a, (1 << 20) - 1), &mut [0u8; 2]).unwrap_err();
    assert!(matches!(e, SystemError::OutsideWindow(_)), "{e}");
    assert_eq!(bytes(&sys, space, a, 1), [0]);
    sys.check_invariants();
}

// ---- using the system from inside its own lock ----

#[test]
fn using_the_system_inside_its_own_lock_is_an_error_not_a_deadlock() {
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, PAGE_SIZE, "l");
    let a = attach(&sys, space, ds, PAGE_SIZE);
    let (store, load, create, destroy) = sys.lock(|_| {
        (
            sys.store(space, a, &[1]),
            sys.load(space, a, &mut [0u8]),
            sys.create_space(1 << 20).map(|_| ()),
            sys.destroy_space(space),
        )
    });
    for e in [store, load, create, destroy] {
        assert_eq!(e, Err(SystemError::Reentered));
    }
    assert!(!sys.lock(|_| sys.would_resolve(space, a, memkit_types::Access::Read)));
    let nested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sys.lock(|_| sys.lock(|_| ()))));
    assert!(nested.is_err());
    // The lock was released by the unwinding: the system still works.
    sys.store(space, a, &[7]).unwrap();
    assert_eq!(bytes(&sys, space, a, 1), [7]);
    // Another system's lock is no obstacle, and its ids are not this system's.
    let other = system(16);
    let o = other.create_space(1 << 20).unwrap();
    assert_eq!(o.index(), space.index());
    assert_eq!(sys.load(o, a, &mut [0u8]), Err(SystemError::NoSpace(o)));
    assert_eq!(other.destroy_space(space), Err(SystemError::NoSpace(space)));
    let od = open(&other, PAGE_SIZE, "o");
    let oa = attach(&other, o, od, PAGE_SIZE);
    sys.lock(|_| other.store(o, oa, &[9])).unwrap();
    assert_eq!(bytes(&other, o, oa, 1), [9]);
}

// ---- bounded bookkeeping, would_resolve agreeing with faults ----

#[test]
fn a_huge_window_is_refused_with_an_error() {
    let sys = system(16);
    let e = sys.create_space(0xc00_0000_0000).unwrap_err();
    assert_eq!(e, SystemError::Window(WindowError::TooLarge(0xc00_0000_0000)));
    assert_eq!(e.code(), -22);
    assert!(e.to_string().contains("largest window"), "{e}");
    assert!(sys.create_space(Window::MAX_LEN).is_ok());
}

#[test]
fn would_resolve_agrees_with_what_an_access_does() {
    use memkit_types::Access;
    let sys = system(64);
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, PAGE_SIZE + 100, "w");
    let other = open(&sys, PAGE_SIZE, "x");
    let rw = attach(&sys, space, ds, 3 * PAGE_SIZE);
    let ro = sys.lock(|s| {
        let start = s.region_map(space).unwrap().window_start();
        s.attach(space, &AttachRequest::new(other, PAGE_SIZE, Rights::READ).search(start)).unwrap().unwrap()
    });
    let cases = |sys: &System<ModelFrameSource>| {
        let mut seen = Vec::new();
        for (addr, what) in [
            (rw, "first page"),
            (at(rw, PAGE_SIZE + 50), "partial last page"),
            (at(rw, 2 * PAGE_SIZE), "past the size"),
            (ro, "read-only"),
            (at(rw, 8 * PAGE_SIZE), "no region"),
        ] {
            for access in [Access::Read, Access::Write] {
                // A real fault through the handler first (a probe returns instead of ending
                // the process when the fault is not served).
                // SAFETY: window memory; no reference covers it.
                let faulted = unsafe { memkit_host::access::probe(addr, access == Access::Write) };
                let predicted = sys.would_resolve(space, addr, access);
                assert_eq!(faulted, predicted, "{what} {access:?}: the fault and would_resolve disagree");
                let done = match access {
                    Access::Write => sys.store(space, addr, &[5]).is_ok(),
                    _ => sys.load(space, addr, &mut [0u8]).is_ok(),
                };
                assert_eq!(predicted, done, "{what} {access:?}");
                seen.push(done);
            }
        }
        seen
    };
    let open_ds = cases(&sys);
    assert_eq!(open_ds, [true, true, true, true, false, false, true, false, false, false]);
    // After close the regions still show the dataspaces (they hold references): the same.
    sys.lock(|s| s.manager.close(OWNER, ds)).unwrap();
    sys.lock(|s| s.manager.close(OWNER, other)).unwrap();
    assert_eq!(cases(&sys), open_ds);
    assert_eq!(bytes(&sys, space, rw, 1), [5]);
    sys.check_invariants();
}

// ---- concurrency ----

#[test]
fn destroying_a_space_while_another_thread_stores_lands_no_write_outside() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const PAGES: usize = 64;
    for _round in 0..5 {
        let sys = Arc::new(system(512));
        let space = sys.create_space(1 << 22).unwrap();
        let ds = open(&sys, PAGES * PAGE_SIZE, "d");
        let a = attach(&sys, space, ds, PAGES * PAGE_SIZE);
        let stores = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (sys, stores) = (Arc::clone(&sys), Arc::clone(&stores));
            std::thread::spawn(move || {
                let buf = vec![0xabu8; PAGES * PAGE_SIZE];
                loop {
                    match sys.store(space, a, &buf) {
                        Ok(()) => stores.fetch_add(1, Ordering::Relaxed),
                        Err(e) => return e,
                    };
                }
            })
        };
        while stores.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        sys.destroy_space(space).unwrap();
        // Reuse the addresses: plain memory and new spaces (the first one takes the slot).
        let vecs: Vec<Vec<u8>> = (0..16).map(|_| vec![0u8; PAGES * PAGE_SIZE]).collect();
        let fresh = sys.create_space(1 << 22).unwrap();
        let d2 = open(&sys, PAGES * PAGE_SIZE, "e");
        let b = attach(&sys, fresh, d2, PAGES * PAGE_SIZE);
        let e = writer.join().unwrap();
        assert_eq!(e, SystemError::NoSpace(space));
        assert_eq!(fresh.index(), space.index(), "the slot is reused, the id is not");
        for v in &vecs {
            assert!(v.iter().all(|&x| x == 0), "a store landed in unrelated memory");
        }
        let mut seen = vec![0u8; PAGES * PAGE_SIZE];
        sys.load(fresh, b, &mut seen).unwrap();
        assert!(seen.iter().all(|&x| x == 0), "a store landed in the new space");
        assert_eq!(sys.store(space, a, &[1]), Err(SystemError::NoSpace(space)));
        assert_eq!(sys.destroy_space(space), Err(SystemError::NoSpace(space)));
        sys.check_invariants();
    }
}

#[test]
fn threads_faulting_the_same_pages_with_raw_accesses_lose_no_update() {
    // Real faults through the handler, from several threads at once, while another thread
    // keeps taking copy-on-write copies (write-protecting the pages under the writers).
    const PAGES: usize = 32;
    const ROUNDS: u64 = 200;
    for fault_around in [1, DEFAULT_FAULT_AROUND] {
        let sys = Arc::new(system(1024));
        sys.set_fault_around(fault_around).unwrap();
        let space = sys.create_space(1 << 22).unwrap();
        let ds = open(&sys, PAGES * PAGE_SIZE, "t");
        let a = attach(&sys, space, ds, PAGES * PAGE_SIZE);
        let writers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        for p in 0..PAGES {
                            // SAFETY: an aligned word of a read-write region of a registered
                            // window; no thread holds the system's lock while touching it.
                            unsafe { memkit_host::access::fetch_add_u64(at(a, p * PAGE_SIZE + 64), 1) };
                        }
                    }
                })
            })
            .collect();
        let copier = {
            let sys = Arc::clone(&sys);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let c = cow_copy(&sys, ds);
                    sys.lock(|s| s.manager.close(OWNER, c)).unwrap();
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        copier.join().unwrap();
        for p in 0..PAGES {
            let mut w = [0u8; 8];
            sys.load(space, at(a, p * PAGE_SIZE + 64), &mut w).unwrap();
            assert_eq!(u64::from_le_bytes(w), 3 * ROUNDS, "page {p}, fault-around {fault_around}");
        }
        sys.check_invariants();
    }
}

// ---- raw accesses that cannot be served, in a child process ----

const CHILD: &str = "MEMKIT_HOST_SYSTEM_CHILD";

fn run_child(case: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap()
}

fn is_child(case: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|c| c == case)
}

fn signal_of(out: &std::process::Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

#[test]
fn a_raw_store_with_no_frame_left_ends_with_sigbus_and_a_message() {
    const CASE: &str = "a_raw_store_with_no_frame_left_ends_with_sigbus_and_a_message";
    if is_child(CASE) {
        let sys = system(64);
        sys.set_fault_around(1).unwrap();
        let space = sys.create_space(1 << 20).unwrap();
        let ds = open(&sys, 4 * PAGE_SIZE, "d");
        let a = attach(&sys, space, ds, 4 * PAGE_SIZE);
        exhaust(&sys);
        // SAFETY: deliberately not servable: this child process must end here.
        unsafe { memkit_host::access::store_u8(at(a, 2 * PAGE_SIZE + 5), 1) };
        unreachable!("the store was served with no frame left");
    }
    let out = run_child(CASE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(signal_of(&out), Some(libc::SIGBUS), "{:?} {stderr}", out.status);
    assert!(stderr.contains("memkit: unresolved write fault at 0x"), "{stderr}");
    assert!(stderr.contains("out of memory"), "{stderr}");
}

#[test]
fn a_raw_access_inside_the_systems_lock_aborts_with_a_message() {
    const CASE: &str = "a_raw_access_inside_the_systems_lock_aborts_with_a_message";
    if is_child(CASE) {
        let sys = system(64);
        let space = sys.create_space(1 << 20).unwrap();
        let ds = open(&sys, PAGE_SIZE, "d");
        let a = attach(&sys, space, ds, PAGE_SIZE);
        // SAFETY: deliberately wrong (window memory touched inside the lock): the process
        // must end here instead of deadlocking.
        let _ = sys.lock(|_| unsafe { memkit_host::access::load_u8(a) });
        unreachable!("the load inside the lock returned");
    }
    let out = run_child(CASE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "{:?} {stderr}", out.status);
    assert!(stderr.contains("memkit: unresolved read fault at 0x"), "{stderr}");
    assert!(stderr.contains("holds the lock"), "{stderr}");
}

#[test]
fn a_raw_store_into_a_read_only_region_still_ends_with_sigsegv() {
    const CASE: &str = "a_raw_store_into_a_read_only_region_still_ends_with_sigsegv";
    if is_child(CASE) {
        let sys = system(64);
        let space = sys.create_space(1 << 20).unwrap();
        let ds = open(&sys, PAGE_SIZE, "d");
        let a = sys.lock(|s| {
            let start = s.region_map(space).unwrap().window_start();
            s.attach(space, &AttachRequest::new(ds, PAGE_SIZE, Rights::READ).search(start)).unwrap().unwrap()
        });
        // SAFETY: deliberately refused: this child process must end here.
        unsafe { memkit_host::access::store_u8(a, 1) };
        unreachable!("the store into a read-only region was served");
    }
    let out = run_child(CASE);
    assert_eq!(signal_of(&out), Some(libc::SIGSEGV), "{:?}", out.status);
}

#[test]
fn first_touches_through_store_and_load_are_real_faults() {
    let sys = system(64);
    sys.set_fault_around(1).unwrap();
    let space = sys.create_space(1 << 20).unwrap();
    let ds = open(&sys, 4 * PAGE_SIZE, "f");
    let a = attach(&sys, space, ds, 4 * PAGE_SIZE);
    let before = memkit_host::faults_resolved();
    sys.store(space, a, &[1]).unwrap();
    sys.load(space, at(a, PAGE_SIZE), &mut [0u8]).unwrap();
    // Other tests of this binary fault too: at least these two.
    assert!(memkit_host::faults_resolved() >= before + 2);
    sys.check_invariants();
}

#[test]
fn concurrent_stores_copies_resizes_and_space_churn_keep_the_system_sound() {
    // Writers store a pattern through their own space while other threads take copies,
    // resize the dataspace, and destroy and create spaces. Nothing may crash, every error
    // must be a clean one, the invariants must hold, and the writers' final bytes must be
    // theirs.
    use std::sync::atomic::{AtomicBool, Ordering};
    const PAGES: usize = 16;
    let sys = Arc::new(system(2048));
    let ds = open(&sys, PAGES * PAGE_SIZE, "shared");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let (sys, stop) = (Arc::clone(&sys), Arc::clone(&stop));
            std::thread::spawn(move || {
                let space = sys.create_space(1 << 20).unwrap();
                let a = attach(&sys, space, ds, PAGES * PAGE_SIZE);
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) || rounds < 20 {
                    for p in 0..PAGES {
                        // A shrink may have cut the page off: a clean error, then it grows back.
                        match sys.store(space, at(a, p * PAGE_SIZE + usize::from(w)), &[w + 1]) {
                            Ok(()) => {}
                            Err(SystemError::Fault { .. }) => {}
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                    rounds += 1;
                }
                (space, a)
            })
        })
        .collect();
    let copier = {
        let (sys, stop) = (Arc::clone(&sys), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let c = cow_copy(&sys, ds);
                sys.lock(|s| s.manager.close(OWNER, c)).unwrap();
                let size = if n % 2 == 0 { PAGES / 2 } else { PAGES } * PAGE_SIZE;
                sys.lock(|s| {
                    let (m, mut r) = s.manager_and_revoker();
                    m.resize(OWNER, ds, size as u64, &mut r)
                })
                .unwrap();
                n += 1;
            }
            sys.lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.resize(OWNER, ds, (PAGES * PAGE_SIZE) as u64, &mut r)
            })
            .unwrap();
        })
    };
    let churn = {
        let (sys, stop) = (Arc::clone(&sys), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let space = sys.create_space(1 << 20).unwrap();
                let a = attach(&sys, space, ds, PAGES * PAGE_SIZE);
                let _ = sys.load(space, a, &mut [0u8; 64]);
                sys.destroy_space(space).unwrap();
                assert_eq!(sys.load(space, a, &mut [0u8]), Err(SystemError::NoSpace(space)));
                n += 1;
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    copier.join().unwrap();
    churn.join().unwrap();
    let ends: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    sys.check_invariants();
    // One more pass now that nothing else runs: every writer's byte is in place.
    for (w, &(space, a)) in ends.iter().enumerate() {
        for p in 0..PAGES {
            sys.store(space, at(a, p * PAGE_SIZE + w), &[w as u8 + 1]).unwrap();
        }
    }
    for &(space, a) in &ends {
        for p in 0..PAGES {
            assert_eq!(bytes(&sys, space, at(a, p * PAGE_SIZE), 2), [1, 2], "page {p}");
        }
    }
    sys.check_invariants();
}

#[test]
fn an_eager_attach_that_breaks_copy_on_write_on_several_pages_unmaps_every_old_frame() {
    let sys = system(256);
    let (s1, s2) = (sys.create_space(1 << 20).unwrap(), sys.create_space(1 << 20).unwrap());
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, 2 * PAGE_SIZE as u64, 12, DmFlags::empty(), "e"));
    let ds = ds.unwrap();
    let a = attach(&sys, s1, ds, 2 * PAGE_SIZE);
    put(&sys, s1, a, b'0');
    put(&sys, s1, at(a, PAGE_SIZE), b'1');
    sys.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.copy(OWNER, ds, DmFlags::COW, "copy", &mut r)
    })
    .unwrap();
    assert_eq!(get(&sys, s1, a), b'0');
    assert_eq!(get(&sys, s1, at(a, PAGE_SIZE)), b'1');
    // The second space's eager attach maps both pages writable: each gets a frame of its
    // own, and the first space's mappings of both old frames must go.
    let b = sys.lock(|s| {
        let start = s.region_map(s2).unwrap().window_start();
        let req = AttachRequest::new(ds, 2 * PAGE_SIZE, Rights::RW).search(start).flags(Flags::EAGER_MAP);
        s.attach(s2, &req).unwrap().unwrap()
    });
    sys.check_invariants();
    put(&sys, s2, b, b'B');
    put(&sys, s2, at(b, PAGE_SIZE), b'C');
    assert_eq!(get(&sys, s1, a), b'B');
    assert_eq!(get(&sys, s1, at(a, PAGE_SIZE)), b'C');
}

#[test]
fn shrinking_a_superpage_dataspace_unmaps_the_pages_past_its_new_size() {
    let sys = system(1024);
    let (s1, s2) = (sys.create_space(1 << 20).unwrap(), sys.create_space(1 << 20).unwrap());
    let size = 2 * PAGE_SIZE;
    let ds = sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, size as u64, 0, DmFlags::SUPERPAGES, "sp"));
    let ds = ds.unwrap();
    let (a, b) = (attach(&sys, s1, ds, size), attach(&sys, s2, ds, size));
    put(&sys, s1, at(a, PAGE_SIZE), 0x77);
    assert_eq!(get(&sys, s2, at(b, PAGE_SIZE)), 0x77);
    sys.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.resize(OWNER, ds, 0xc8, &mut r)
    })
    .unwrap();
    for (space, base) in [(s1, a), (s2, b)] {
        let e = sys.load(space, at(base, PAGE_SIZE), &mut [0u8]).unwrap_err();
        assert!(matches!(e, SystemError::Fault { error: FaultError::Backing(BackingError::OutOfRange(_)), .. }), "{e}");
        assert_eq!(get(&sys, space, at(base, 0xc8)), 0);
    }
    sys.check_invariants();
}
