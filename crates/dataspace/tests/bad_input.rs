//! Bad input to every operation: a clear error, and nothing changed (quota, frames, sizes,
//! contents).

mod common;

use common::{POOL0_START, check, mmu, read, used};
use memkit_dataspace::{
    ClientId, CloseError, CopyError, CopyLength, CreateError, DataspaceId, DmFlags, FactoryError, FactoryId, InfoError,
    MAX_ALIGN_SHIFT, MapError, MemAllocFlags, NoRevoker, PhysAddrError, Placement, PoolId, RangeError, RefError,
    ResizeError,
};
use memkit_types::{Access, PAGE_SIZE, PhysAddr};

const OWNER: ClientId = ClientId::new(1, 1);
const STRANGER: ClientId = ClientId::new(2, 1);
const PAGE: u64 = PAGE_SIZE as u64;
const F: FactoryId = FactoryId::ROOT;

/// Everything observable that a failed operation must leave as it was.
fn snapshot(m: &mut common::Dsm, ds: DataspaceId) -> (u64, u64, u32, Vec<u8>) {
    let size = m.info(ds).map_or(0, |i| i.size);
    let data = read(m, ds, 0, size as usize);
    (m.quota(F).unwrap().used, used(m, PoolId::DEFAULT), m.live(), data)
}

#[test]
fn every_operation_rejects_bad_input_and_changes_nothing() {
    let mut m = mmu();
    let ds = m.mem_open(F, OWNER, 3 * PAGE + 1, 0, DmFlags::empty(), "d").unwrap();
    m.write(ds, 0, &[0x5a; 3 * PAGE_SIZE + 1], &mut NoRevoker).unwrap();
    let closed = m.mem_open(F, OWNER, PAGE, 0, DmFlags::empty(), "x").unwrap();
    m.close(OWNER, closed).unwrap();
    let unknown = DataspaceId::from_u64(u64::MAX);
    let before = snapshot(&mut m, ds);
    let z = PhysAddr::zero();

    for id in [closed, unknown] {
        assert_eq!(m.info(id), Err(InfoError::InvalidId(id)));
        assert_eq!(m.close(OWNER, id), Err(CloseError::InvalidId(id)));
        assert_eq!(m.resize(OWNER, id, PAGE, &mut NoRevoker), Err(ResizeError::InvalidId(id)));
        assert_eq!(m.map(id, 0, Access::Write), Err(MapError::InvalidId(id)));
        assert_eq!(m.phys_addr(id, 0), Err(PhysAddrError::InvalidId(id)));
        assert_eq!(m.inc_ref(id), Err(RefError::InvalidId(id)));
        assert_eq!(m.dec_ref(id), Err(RefError::InvalidId(id)));
        assert_eq!(m.clear(OWNER, id, 0, 1, &mut NoRevoker), Err(RangeError::InvalidId(id)));
        assert_eq!(m.allocate(OWNER, id, 0, 1, &mut NoRevoker), Err(RangeError::InvalidId(id)));
        assert_eq!(m.write(id, 0, b"x", &mut NoRevoker), Err(RangeError::InvalidId(id)));
        assert_eq!(m.copy(OWNER, id, DmFlags::COW, "c", &mut NoRevoker), Err(CopyError::InvalidId(id)));
    }
    // A foreign owner.
    assert_eq!(m.close(STRANGER, ds), Err(CloseError::PermissionDenied(ds, STRANGER)));
    assert_eq!(m.resize(STRANGER, ds, 1, &mut NoRevoker), Err(ResizeError::PermissionDenied(ds, STRANGER)));
    assert_eq!(m.clear(STRANGER, ds, 0, 1, &mut NoRevoker), Err(RangeError::PermissionDenied(ds, STRANGER)));
    assert_eq!(
        m.copy(STRANGER, ds, DmFlags::empty(), "c", &mut NoRevoker),
        Err(CopyError::PermissionDenied(ds, STRANGER))
    );
    // Offsets past the end and overflowing ranges.
    let size = 3 * PAGE + 1;
    assert_eq!(m.map(ds, size, Access::Read), Err(MapError::OffsetOutOfRange(size, size)));
    assert_eq!(m.map(ds, u64::MAX, Access::Read), Err(MapError::OffsetOutOfRange(u64::MAX, size)));
    assert_eq!(m.phys_addr(ds, size), Err(PhysAddrError::OffsetOutOfRange(size, size)));
    assert_eq!(m.write(ds, size, b"x", &mut NoRevoker), Err(RangeError::OutOfRange(size, 1)));
    assert_eq!(m.write(ds, u64::MAX, b"xy", &mut NoRevoker), Err(RangeError::OutOfRange(u64::MAX, 2)));
    let mut buf = [0u8; 2];
    assert_eq!(m.read(ds, u64::MAX - 1, &mut buf), Err(RangeError::OutOfRange(u64::MAX - 1, 2)));
    assert_eq!(m.clear(OWNER, ds, 1, u64::MAX, &mut NoRevoker), Err(RangeError::OutOfRange(1, u64::MAX)));
    assert_eq!(m.allocate(OWNER, ds, size, 1, &mut NoRevoker), Err(RangeError::OutOfRange(size, 1)));
    let long = CopyLength::Bytes(u64::MAX);
    assert_eq!(
        m.copy_long(OWNER, ds, 1, 0, long, DmFlags::COW, "c", &mut NoRevoker),
        Err(CopyError::SourceOutOfRange(1, u64::MAX))
    );
    let e = m.copy_long(OWNER, ds, size + 1, 0, CopyLength::WholeDataspace, DmFlags::COW, "c", &mut NoRevoker);
    assert_eq!(e, Err(CopyError::SourceOutOfRange(size + 1, 0)));
    let e = m.copy_long(OWNER, ds, 0, u64::MAX, CopyLength::Bytes(1), DmFlags::COW, "c", &mut NoRevoker);
    assert_eq!(e, Err(CopyError::DestinationOutOfRange(u64::MAX, 1)));
    // Sizes.
    assert_eq!(m.resize(OWNER, ds, u64::MAX, &mut NoRevoker), Err(ResizeError::SizeNotSupported(u64::MAX)));
    assert_eq!(
        m.mem_open(F, OWNER, u64::MAX, 0, DmFlags::empty(), "h"),
        Err(CreateError::SizeNotSupported(u64::MAX.into()))
    );
    assert_eq!(
        m.alloc(F, OWNER, i64::MIN, MemAllocFlags::empty(), 0, z),
        Err(CreateError::SizeNotSupported(i64::MIN.into()))
    );
    // Alignment.
    let e = m.mem_open(F, OWNER, PAGE, MAX_ALIGN_SHIFT + 1, DmFlags::CONTIGUOUS, "a");
    assert_eq!(e, Err(CreateError::AlignmentOutOfRange(MAX_ALIGN_SHIFT + 1)));
    let e = m.mem_open(F, OWNER, PAGE, u32::MAX, DmFlags::empty(), "a");
    assert_eq!(e, Err(CreateError::AlignmentOutOfRange(u32::MAX)));
    // Pools.
    let e = m.memphys_open(F, OWNER, u32::MAX, Placement::AnyAddr, PAGE, 0, DmFlags::empty(), "p");
    assert_eq!(e, Err(CreateError::PoolOutOfRange(u32::MAX)));
    let e = m.memphys_open(F, OWNER, 5, Placement::AnyAddr, PAGE, 0, DmFlags::empty(), "p");
    assert_eq!(e, Err(CreateError::PoolMissing(PoolId::new(5).unwrap())));
    // Fixed addresses: reserved (outside the pool), overflowing, misaligned.
    let e = m.memphys_open(F, OWNER, 0, Placement::Fixed(PhysAddr::new(0x1000)), PAGE, 0, DmFlags::empty(), "f");
    assert_eq!(e, Err(CreateError::AddressOutOfPool(PhysAddr::new(0x1000))));
    let top = PhysAddr::new(PhysAddr::LIMIT - PAGE);
    let e = m.memphys_open(F, OWNER, 0, Placement::Fixed(top), 2 * PAGE, 0, DmFlags::empty(), "f");
    assert_eq!(e, Err(CreateError::AddressOutOfPool(top)));
    let odd = PhysAddr::new(POOL0_START * PAGE + 1);
    let e = m.memphys_open(F, OWNER, 0, Placement::Fixed(odd), PAGE, 0, DmFlags::empty(), "f");
    assert_eq!(e, Err(CreateError::MisalignedAddress(odd)));
    let sp = PhysAddr::new((POOL0_START + 1) * PAGE);
    let e = m.memphys_open(F, OWNER, 0, Placement::Fixed(sp), PAGE, 0, DmFlags::SUPERPAGES, "f");
    assert_eq!(e, Err(CreateError::MisalignedAddress(sp)));
    // Factories and quota.
    let bogus = m.create_factory(F, 0).unwrap();
    m.destroy_factory(bogus).unwrap();
    assert_eq!(m.mem_open(bogus, OWNER, PAGE, 0, DmFlags::empty(), "q"), Err(CreateError::InvalidFactory(bogus)));
    assert_eq!(m.create_factory(bogus, 1), Err(FactoryError::InvalidFactory(bogus)));
    assert_eq!(m.dec_ref(ds), Err(RefError::CountOutOfRange(ds, 0)));

    assert_eq!(snapshot(&mut m, ds), before, "a failed operation changed something");
    check(&mut m);
}

#[test]
fn quota_exceeded_changes_nothing() {
    let mut m = mmu();
    let f = m.create_factory(F, 4 * PAGE).unwrap();
    let ds = m.mem_open(f, OWNER, 3 * PAGE, 0, DmFlags::empty(), "d").unwrap();
    m.write(ds, 0, &[1; 3 * PAGE_SIZE], &mut NoRevoker).unwrap();
    let q = m.quota(f).unwrap();
    assert_eq!(m.mem_open(f, OWNER, 2 * PAGE, 0, DmFlags::PINNED, "x"), Err(CreateError::QuotaExceeded(f, 2 * PAGE)));
    assert_eq!(m.resize(OWNER, ds, 5 * PAGE, &mut NoRevoker), Err(ResizeError::QuotaExceeded(f, 2 * PAGE)));
    let e = m.copy(OWNER, ds, DmFlags::COW, "c", &mut NoRevoker);
    assert_eq!(e, Err(CopyError::Create(CreateError::QuotaExceeded(f, 3 * PAGE))));
    assert_eq!(m.create_task(f, 2 * PAGE).unwrap_err().code(), -12);
    assert_eq!(m.quota(f).unwrap(), q);
    assert_eq!(m.info(ds).unwrap().size, 3 * PAGE);
    assert_eq!(used(&m, PoolId::DEFAULT), 3);
    check(&mut m);
}
