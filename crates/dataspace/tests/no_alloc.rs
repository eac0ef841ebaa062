//! The fault path allocates no heap memory: `map` on first touch, on a resident page, on a
//! page shared copy-on-write (read) and breaking copy-on-write (write), counted by a global
//! allocator that watches this test's thread.

use memkit_dataspace::{ClientId, Config, DmFlags, FactoryId, Manager, NoRevoker, PoolId};
use memkit_testkit::ModelFrameSource;
use memkit_testkit::counting::{Counting, counted};
use memkit_types::{Access, Frame, FrameCount, PAGE_SIZE, PhysAddr, PhysMemory, Rights};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// RAM that allocates nothing (the test kit's `SparseRam` boxes frames on write).
struct Discard;

impl PhysMemory for Discard {
    fn zero(&self, _frame: Frame, _count: FrameCount) {}
    fn copy(&self, _src: Frame, _dst: Frame, _count: FrameCount) {}
    fn read(&self, _addr: PhysAddr, buf: &mut [u8]) {
        buf.fill(0);
    }
    fn write(&self, _addr: PhysAddr, _buf: &[u8]) {}
}

#[test]
fn map_allocates_no_heap_memory() {
    let (_, n) = counted(|| std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(n, 1, "the counter sees allocations");
    let owner = ClientId::new(1, 1);
    let page = PAGE_SIZE as u64;
    let mut m = Manager::new(Config::new(1 << 30), Discard);
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x100), FrameCount::new(256)));
    let ds = m.mem_open(FactoryId::ROOT, owner, 16 * page, 0, DmFlags::empty(), "d").unwrap();

    let (first, n) = counted(|| m.map(ds, 0, Access::Write).unwrap());
    assert_eq!(n, 0, "first touch");
    let (again, n) = counted(|| m.map(ds, 10, Access::Read).unwrap());
    assert_eq!((again.frame, n), (first.frame, 0), "resident");
    m.allocate(owner, ds, 0, 16 * page, &mut NoRevoker).unwrap();
    let copy = m.copy(owner, ds, DmFlags::COW, "c", &mut NoRevoker).unwrap();
    let (shared, n) = counted(|| m.map(copy, 0, Access::Read).unwrap());
    assert_eq!((shared.frame, shared.rights, n), (first.frame, Rights::READ | Rights::EXECUTE, 0), "shared read");
    let (broken, n) = counted(|| m.map(copy, 0, Access::Write).unwrap());
    assert_eq!((broken.replaced, n), (Some(first.frame), 0), "copy-on-write break");
    // Breaking every share (down to the last sharer, whose share-count chunk goes away).
    let (_, n) = counted(|| {
        for p in 0..16 {
            let _ = m.map(copy, p * page, Access::Write).unwrap();
            let _ = m.map(ds, p * page, Access::Write).unwrap();
        }
    });
    assert_eq!(n, 0, "breaking every share");
    m.check_invariants();
}
