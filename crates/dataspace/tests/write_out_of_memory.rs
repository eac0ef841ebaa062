//! `Manager::write` with too few frames: it fails for want of memory and no byte of the
//! dataspace changes, not even on the pages before the one that found no frame.

mod common;

use common::{check, read};
use memkit_dataspace::{ClientId, Config, DmFlags, FactoryId, Manager, NoRevoker, PoolId, RangeError};
use memkit_types::testing::{ModelFrameSource, SparseRam};
use memkit_types::{Frame, FrameCount, PAGE_SIZE};

const OWNER: ClientId = ClientId::new(1, 0);
const PAGE: u64 = PAGE_SIZE as u64;

fn manager_with(frames: u64) -> common::Dsm {
    let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x1000), FrameCount::new(frames)));
    m.set_pool(PoolId::ISA_DMA, ModelFrameSource::new(Frame::from_number(0x100), FrameCount::new(16)));
    m
}

#[test]
fn a_write_over_empty_pages_with_one_frame_left_changes_nothing() {
    let mut m = manager_with(2);
    let filler = m.mem_open(FactoryId::ROOT, OWNER, PAGE, 12, DmFlags::empty(), "filler").unwrap();
    m.write(filler, 0, b"x", &mut NoRevoker).unwrap();
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 2 * PAGE, 12, DmFlags::empty(), "w").unwrap();
    let r = m.write(ds, PAGE - 3, b"across", &mut NoRevoker);
    assert!(matches!(r, Err(RangeError::OutOfMemory(_))), "{r:?}");
    check(&mut m);
    assert!(read(&mut m, ds, 0, 2 * PAGE_SIZE).iter().all(|&b| b == 0), "a byte was written");
}

#[test]
fn a_write_breaking_copy_on_write_with_one_frame_left_changes_nothing() {
    let mut m = manager_with(3);
    let ds = m.mem_open(FactoryId::ROOT, OWNER, 2 * PAGE, 12, DmFlags::empty(), "w").unwrap();
    m.write(ds, PAGE - 3, b"before", &mut NoRevoker).unwrap();
    let copy = m.copy(OWNER, ds, DmFlags::COW, "copy", &mut NoRevoker).unwrap();
    let r = m.write(ds, PAGE - 3, b"after!", &mut NoRevoker);
    assert!(matches!(r, Err(RangeError::OutOfMemory(_))), "{r:?}");
    check(&mut m);
    assert_eq!(read(&mut m, ds, PAGE - 3, 6), b"before");
    assert_eq!(read(&mut m, copy, PAGE - 3, 6), b"before");
}
