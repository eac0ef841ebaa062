//! `Manager::map_run`: a run of empty pages gets one run of contiguous zeroed frames, exactly
//! as page-by-page `map` would give them, and nothing changes when it cannot.

use memkit_testkit::dataspace::fixture as common;

use common::{check, mmu, read, used};
use memkit_dataspace::{ClientId, DmFlags, FactoryId, MapError, NoRevoker, PoolId};
use memkit_types::{Access, FrameCount, PAGE_SIZE, PhysAddr, Rights};

const OWNER: ClientId = ClientId::new(1, 0);
const PAGE: u64 = PAGE_SIZE as u64;

#[test]
fn run_of_empty_pages_gets_consecutive_zeroed_frames() {
    let mut m = mmu();
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 40 * PAGE, 12, DmFlags::empty(), "run").unwrap();
    // Dirty frames first, so that a missing zeroing shows.
    let dirty = m.mem_open(FactoryId::ROOT, OWNER, 64 * PAGE, 12, DmFlags::empty(), "dirty").unwrap();
    m.write(dirty, 0, &vec![0xAB; 64 * PAGE_SIZE], &mut NoRevoker).unwrap();
    m.close(OWNER, dirty).unwrap();
    check(&mut m);

    let first = m.map_run(ds, 16 * PAGE, 16).unwrap().expect("all 16 pages were empty");
    check(&mut m);
    assert_eq!(used(&m, PoolId::DEFAULT), 16, "one frame per page of the run, nothing else");
    for i in 0..16 {
        let got = m.map(ds, (16 + i) * PAGE, Access::Write).unwrap();
        assert_eq!(got.frame.number(), first.number() + i, "page {i} of the run");
        assert_eq!((got.rights, got.replaced), (Rights::RWX, None));
    }
    assert_eq!(used(&m, PoolId::DEFAULT), 16, "map found the run's frames");
    assert_eq!(read(&mut m, ds, 16 * PAGE, 16 * PAGE_SIZE), vec![0; 16 * PAGE_SIZE], "zero-filled");
    m.write(ds, 20 * PAGE + 5, &[7], &mut NoRevoker).unwrap();
    let byte = m.memory().read_byte(PhysAddr::new(first.start_address().as_u64() + 4 * PAGE + 5));
    assert_eq!(byte, 7, "page 20 is frame first + 4");
    m.close(OWNER, ds).unwrap();
    check(&mut m);
    assert_eq!(used(&m, PoolId::DEFAULT), 0, "closing gives the run back");
}

#[test]
fn populated_page_in_range_changes_nothing() {
    let mut m = mmu();
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 32 * PAGE, 12, DmFlags::empty(), "run").unwrap();
    let taken = m.map(ds, 7 * PAGE, Access::Read).unwrap().frame;
    assert_eq!(m.map_run(ds, 0, 16), Ok(None));
    assert_eq!(m.map_run(ds, 7 * PAGE, 1), Ok(None));
    assert_eq!(m.map_run(ds, 0, 0), Ok(None), "an empty run");
    check(&mut m);
    assert_eq!(used(&m, PoolId::DEFAULT), 1);
    assert_eq!(m.map(ds, 7 * PAGE, Access::Read).unwrap().frame, taken);
    assert!(m.map_run(ds, 16 * PAGE, 16).unwrap().is_some(), "the other half is still empty");
    check(&mut m);
}

#[test]
fn copy_on_write_still_isolates_run_pages() {
    let mut m = mmu();
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 16 * PAGE, 12, DmFlags::empty(), "run").unwrap();
    let first = m.map_run(ds, 0, 16).unwrap().unwrap();
    m.write(ds, 3 * PAGE, &[1], &mut NoRevoker).unwrap();
    let copy = m.copy(OWNER, ds, DmFlags::empty(), "copy", &mut NoRevoker).unwrap();
    m.write(copy, 3 * PAGE, &[2], &mut NoRevoker).unwrap();
    let (a, b) = (m.map(ds, 3 * PAGE, Access::Write).unwrap(), m.map(copy, 3 * PAGE, Access::Write).unwrap());
    assert_ne!(a.frame, b.frame, "the written page has a frame of its own on each side");
    assert!(a.frame.number() == first.number() + 3 || b.frame.number() == first.number() + 3);
    assert_eq!(read(&mut m, ds, 3 * PAGE, 1), vec![1], "the source keeps its byte");
    assert_eq!(read(&mut m, copy, 3 * PAGE, 1), vec![2]);
    check(&mut m);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut m = mmu();
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 10 * PAGE, 12, DmFlags::empty(), "run").unwrap();
    assert_eq!(m.map_run(ds, 0, 11), Err(MapError::OffsetOutOfRange(10 * PAGE, 10 * PAGE)));
    assert_eq!(m.map_run(ds, 8 * PAGE, u64::MAX), Err(MapError::OffsetOutOfRange(u64::MAX, 10 * PAGE)));
    let gone = m.mem_open(FactoryId::ROOT, OWNER, PAGE, 12, DmFlags::empty(), "gone").unwrap();
    m.close(OWNER, gone).unwrap();
    assert_eq!(m.map_run(gone, 0, 1), Err(MapError::InvalidId(gone)));
    // A dataspace larger than its pool is refused (its pages could never have frames); one as
    // large as the pool cannot get a run of all its frames once one of them is taken.
    let over = common::POOL0_FRAMES + 1;
    assert!(m.mem_open(FactoryId::ROOT, OWNER, over * PAGE, 12, DmFlags::empty(), "over").is_err());
    let huge = common::POOL0_FRAMES;
    let big = m.mem_open(FactoryId::ROOT, OWNER, huge * PAGE, 12, DmFlags::empty(), "big").unwrap();
    let taken = m.mem_open(FactoryId::ROOT, OWNER, PAGE, 12, DmFlags::empty(), "taken").unwrap();
    let _ = m.map(taken, 0, Access::Write).unwrap();
    assert!(m.resize(OWNER, taken, over * PAGE, &mut NoRevoker).is_err(), "grown past its pool");
    assert_eq!(m.map_run(big, 0, huge), Err(MapError::OutOfMemory(FrameCount::new(huge))));
    check(&mut m);
    assert_eq!(used(&m, PoolId::DEFAULT), 1, "nothing allocated by a refused run");
}
