//! Seed 000, `L4Re::Mem_alloc`, function by function: `alloc` with every flag, the size and
//! alignment rules, the return values, and the inherited `Factory` / `Kobject` calls.

use memkit_testkit::dataspace::fixture as common;

use common::{Recorder, check, manager, mmu, read, used};
use memkit_dataspace::{
    ClientId, Config, CreateError, DmFlags, FactoryId, Kind, MAX_ALIGN_SHIFT, MemAllocFlags, NoRevoker, PoolId,
    RevokeKind,
};
use memkit_types::l4::{L4_EINVAL, L4_ENOMEM, L4_ERANGE};
use memkit_types::{Access, PAGE_SIZE, PhysAddr, Rights, SUPERPAGE_SIZE};

const OWNER: ClientId = ClientId::new(1, 0);
const PAGE: u64 = PAGE_SIZE as u64;

#[test]
fn mem_alloc_flag_values_are_the_seeds() {
    assert_eq!(MemAllocFlags::CONTINUOUS.bits(), 0x01);
    assert_eq!(MemAllocFlags::PINNED.bits(), 0x02);
    assert_eq!(MemAllocFlags::SUPER_PAGES.bits(), 0x04);
    assert_eq!(MemAllocFlags::FIXED_PADDR.bits(), 0x08);
}

/// "the memory backing a dataspace from an allocator need not be allocated instantly, but may
/// be allocated lazily on demand"; "the allocator will store the byte-granular given size".
#[test]
fn alloc_is_lazy_byte_granular_and_zero_filled() {
    let mut m = mmu();
    let ds = m.alloc(FactoryId::ROOT, OWNER, 5000, MemAllocFlags::empty(), 0, PhysAddr::zero()).unwrap();
    let info = m.info(ds).unwrap();
    assert_eq!(info.size, 5000, "size stored as given");
    assert_eq!(info.kind, Kind::empty());
    assert_eq!(info.align, 12, "alignment at least L4_PAGESHIFT");
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 2 * PAGE, "backing is page granular");
    assert_eq!(used(&m, PoolId::DEFAULT), 0, "nothing allocated before the first touch");
    let first = m.map(ds, 4999, Access::Read).unwrap();
    assert_eq!(first.rights, Rights::RWX);
    assert_eq!(used(&m, PoolId::DEFAULT), 1, "one frame on the first touch");
    assert_eq!(read(&mut m, ds, 0, 5000), vec![0; 5000], "zero-filled");
    assert_eq!(m.map(ds, 5000, Access::Read).unwrap_err().code(), -L4_ERANGE, "past the byte size");
    // Data written stays while the dataspace lives.
    m.write(ds, 4096, b"kept", &mut NoRevoker).unwrap();
    assert_eq!(m.map(ds, 4097, Access::Write).unwrap().frame, first.frame);
    assert_eq!(read(&mut m, ds, 4096, 4), b"kept");
    check(&mut m);
}

#[test]
fn continuous_is_physically_contiguous_and_allocated_at_creation() {
    let mut m = mmu();
    let ds = m.alloc(FactoryId::ROOT, OWNER, 10 * PAGE as i64 + 1, MemAllocFlags::CONTINUOUS, 16, PhysAddr::zero());
    let ds = ds.unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 11);
    let (addr, len) = m.phys_addr(ds, 0).unwrap();
    assert_eq!(len, 10 * PAGE + 1, "contiguous to the end");
    assert!(addr.is_aligned(1 << 16), "log2 alignment 16 honoured: {addr:?}");
    let (a2, l2) = m.phys_addr(ds, 3 * PAGE + 7).unwrap();
    assert_eq!(a2.as_u64(), addr.as_u64() + 3 * PAGE + 7);
    assert_eq!(l2, 7 * PAGE + 1 - 7);
    assert_eq!(m.info(ds).unwrap().kind, Kind::CONTIGUOUS);
    check(&mut m);
}

#[test]
fn pinned_is_allocated_at_creation_and_never_faults_for_memory() {
    let mut m = mmu();
    let ds = m.alloc(FactoryId::ROOT, OWNER, 3 * PAGE as i64, MemAllocFlags::PINNED, 0, PhysAddr::zero()).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 3);
    let before: Vec<_> = (0..3).map(|p| m.map(ds, p * PAGE, Access::Write).unwrap().frame).collect();
    assert_eq!(used(&m, PoolId::DEFAULT), 3, "mapping allocates nothing");
    // Even a copy-on-write copy does not move a pinned page.
    let copy = m.copy(OWNER, ds, DmFlags::COW, "c", &mut NoRevoker).unwrap();
    m.write(ds, 0, b"x", &mut NoRevoker).unwrap();
    let after: Vec<_> = (0..3).map(|p| m.map(ds, p * PAGE, Access::Write).unwrap().frame).collect();
    assert_eq!(before, after);
    assert_eq!(read(&mut m, copy, 0, 1), [0]);
    check(&mut m);
}

#[test]
fn super_pages_use_2mib_frames_and_alignment() {
    let mut m = mmu();
    let ds = m.alloc(FactoryId::ROOT, OWNER, 3 << 20, MemAllocFlags::SUPER_PAGES, 0, PhysAddr::zero()).unwrap();
    let info = m.info(ds).unwrap();
    assert_eq!(info.align, 21, "at least L4_SUPERPAGESHIFT");
    assert_eq!(info.size, 3 << 20);
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 4 << 20, "backed by two 2 MiB superpages");
    for sp in 0..2u64 {
        let (addr, len) = m.phys_addr(ds, sp * SUPERPAGE_SIZE as u64).unwrap();
        assert!(addr.is_aligned(SUPERPAGE_SIZE as u64));
        assert!(len >= SUPERPAGE_SIZE as u64 || sp == 1);
    }
    check(&mut m);
}

/// "Fixed_paddr: Only honored on no-MMU systems. Will fail on MMU systems."
#[test]
fn fixed_paddr_only_without_mmu() {
    let mut m = mmu();
    let at = PhysAddr::new((common::POOL0_START + 100) * PAGE);
    let e = m.alloc(FactoryId::ROOT, OWNER, 8192, MemAllocFlags::FIXED_PADDR, 0, at).unwrap_err();
    assert_eq!(e, CreateError::FixedAddressNeedsNoMmu(at));
    assert_eq!(e.code(), -L4_EINVAL);
    assert_eq!(used(&m, PoolId::DEFAULT), 0);

    let mut m = manager(Config::new(1 << 40).without_mmu());
    let ds = m.alloc(FactoryId::ROOT, OWNER, 8192, MemAllocFlags::FIXED_PADDR, 0, at).unwrap();
    assert_eq!(m.phys_addr(ds, 0).unwrap(), (at, 8192));
    assert_eq!(m.info(ds).unwrap().kind, Kind::FIXED);
    // The same address again: in use.
    let again = m.alloc(FactoryId::ROOT, OWNER, 4096, MemAllocFlags::FIXED_PADDR, 0, at.checked_add(4096).unwrap());
    assert_eq!(again.unwrap_err().code(), -L4_ENOMEM);
    // Outside the pool, misaligned.
    let outside = m.alloc(FactoryId::ROOT, OWNER, 4096, MemAllocFlags::FIXED_PADDR, 0, PhysAddr::new(1 << 40));
    assert_eq!(outside.unwrap_err().code(), -L4_ERANGE);
    let odd = m.alloc(FactoryId::ROOT, OWNER, 4096, MemAllocFlags::FIXED_PADDR, 0, PhysAddr::new(0x100_0010));
    assert_eq!(odd.unwrap_err(), CreateError::MisalignedAddress(PhysAddr::new(0x100_0010)));
    check(&mut m);
}

/// "if size is a negative value and flags set the Continuous bit, the allocator tries to
/// allocate as much memory as possible leaving an amount of at least -size bytes within the
/// associated quota."
#[test]
fn negative_size_takes_the_most_leaving_the_rest_of_the_quota() {
    let mut m = mmu();
    let f = m.create_factory(FactoryId::ROOT, 100 * PAGE + 123).unwrap();
    let ds = m.alloc(f, OWNER, -(30 * PAGE as i64), MemAllocFlags::CONTINUOUS, 0, PhysAddr::zero()).unwrap();
    let q = m.quota(f).unwrap();
    assert!(q.limit - q.used >= 30 * PAGE, "at least -size left: {q:?}");
    assert!(q.limit - q.used < 31 * PAGE, "as much as possible: {q:?}");
    assert_eq!(m.phys_addr(ds, 0).unwrap().1, m.info(ds).unwrap().size);
    // Bounded by memory too: a quota larger than the pool.
    let ds2 = m.alloc(FactoryId::ROOT, OWNER, -1, MemAllocFlags::CONTINUOUS, 0, PhysAddr::zero()).unwrap();
    assert_eq!(m.info(ds2).unwrap().size, (common::POOL0_FRAMES - 70) * PAGE, "the rest of pool 0");
    // Negative size without Continuous: not supported.
    let e = m.alloc(f, OWNER, -4096, MemAllocFlags::empty(), 0, PhysAddr::zero()).unwrap_err();
    assert_eq!(e.code(), -L4_ERANGE);
    // Nothing left to leave.
    let e = m.alloc(f, OWNER, -(31 * PAGE as i64), MemAllocFlags::CONTINUOUS, 0, PhysAddr::zero()).unwrap_err();
    assert_eq!(e.code(), -L4_ENOMEM);
    check(&mut m);
}

/// "-L4_ERANGE Given size not supported. -L4_ENOMEM Not enough memory available."
#[test]
fn return_values() {
    let mut m = mmu();
    let z = PhysAddr::zero();
    for size in [0, i64::MAX] {
        let e = m.alloc(FactoryId::ROOT, OWNER, size, MemAllocFlags::empty(), 0, z).unwrap_err();
        assert_eq!(e.code(), -L4_ERANGE, "size {size}");
    }
    let e = m.alloc(FactoryId::ROOT, OWNER, 4096, MemAllocFlags::empty(), MAX_ALIGN_SHIFT + 1, z).unwrap_err();
    assert_eq!(e, CreateError::AlignmentOutOfRange(MAX_ALIGN_SHIFT + 1));
    assert_eq!(e.code(), -L4_ERANGE);
    // Memory: more contiguous frames than pool 0 has.
    let big = (common::POOL0_FRAMES + 1) * PAGE;
    let e = m.alloc(FactoryId::ROOT, OWNER, big as i64, MemAllocFlags::CONTINUOUS, 0, z).unwrap_err();
    assert_eq!(e.code(), -L4_ENOMEM);
    // Quota.
    let f = m.create_factory(FactoryId::ROOT, 4 * PAGE).unwrap();
    let e = m.alloc(f, OWNER, 4 * PAGE as i64 + 1, MemAllocFlags::empty(), 0, z).unwrap_err();
    assert_eq!(e, CreateError::QuotaExceeded(f, 5 * PAGE));
    assert_eq!(e.code(), -L4_ENOMEM);
    assert_eq!(m.live(), 0);
    assert_eq!(used(&m, PoolId::DEFAULT), 0);
    check(&mut m);
}

/// `create_factory(limit)`: factories nest; the child's limit is charged to the parent.
#[test]
fn create_factory_limits_nest() {
    let mut m = manager(Config::new(100 * PAGE));
    let a = m.create_factory(FactoryId::ROOT, 60 * PAGE).unwrap();
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 60 * PAGE);
    assert_eq!(m.create_factory(FactoryId::ROOT, 41 * PAGE).unwrap_err().code(), -L4_ENOMEM);
    let b = m.create_factory(a, 20 * PAGE).unwrap();
    let ds = m.alloc(b, OWNER, 20 * PAGE as i64, MemAllocFlags::empty(), 0, PhysAddr::zero()).unwrap();
    assert_eq!(m.quota(b).unwrap().used, 20 * PAGE);
    assert!(m.alloc(b, OWNER, 1, MemAllocFlags::empty(), 0, PhysAddr::zero()).is_err());
    assert_eq!(m.destroy_factory(b).unwrap_err().code(), -16, "busy while charged");
    m.close(OWNER, ds).unwrap();
    assert_eq!(m.quota(b).unwrap().used, 0, "released exactly");
    m.destroy_factory(b).unwrap();
    assert_eq!(m.quota(a).unwrap().used, 0);
    assert_eq!(m.destroy_factory(FactoryId::ROOT).unwrap_err().code(), -L4_EINVAL);
    check(&mut m);
}

/// `create_task`: the new address space is charged to the factory.
#[test]
fn create_task_is_charged() {
    let mut m = manager(Config::new(10 * PAGE));
    let t = m.create_task(FactoryId::ROOT, 3 * PAGE).unwrap();
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 3 * PAGE);
    assert_eq!(m.create_task(FactoryId::ROOT, 8 * PAGE).unwrap_err().code(), -L4_ENOMEM);
    m.destroy_task(t).unwrap();
    assert_eq!(m.destroy_task(t).unwrap_err().code(), -L4_EINVAL);
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 0);
    check(&mut m);
}

/// `dec_refcnt` and the lifetime rule: memory lives while a handle or an attachment refers to
/// it; closing never unmaps a region elsewhere.
#[test]
fn dec_refcnt_and_lifetime() {
    let mut m = mmu();
    let ds = m.alloc(FactoryId::ROOT, OWNER, 2 * PAGE as i64, MemAllocFlags::empty(), 0, PhysAddr::zero()).unwrap();
    m.write(ds, 0, b"alive", &mut NoRevoker).unwrap();
    m.inc_ref(ds).unwrap(); // an attachment in one address space
    m.inc_ref(ds).unwrap(); // and one in another
    m.close(OWNER, ds).unwrap();
    // The owner's handle is gone...
    assert!(m.info(ds).is_err());
    assert!(m.inc_ref(ds).is_err(), "no new attachments");
    assert_eq!(m.live(), 0);
    // ...but the attachments still fault in the same memory, and nothing was revoked.
    assert_eq!(read(&mut m, ds, 0, 5), b"alive");
    let page = m.map(ds, PAGE, Access::Write).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 2);
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 2 * PAGE, "still charged");
    m.dec_refcnt(ds, 1).unwrap();
    assert_eq!(m.map(ds, PAGE, Access::Read).unwrap().frame, page.frame);
    assert_eq!(m.dec_refcnt(ds, 2).unwrap_err().code(), -L4_ERANGE);
    m.dec_refcnt(ds, 1).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 0, "freed with the last reference");
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 0);
    assert!(m.map(ds, 0, Access::Read).is_err());
    check(&mut m);

    // A shrink by the owner, in contrast, does revoke the tail everywhere.
    let ds = m.alloc(FactoryId::ROOT, OWNER, 4 * PAGE as i64, MemAllocFlags::empty(), 0, PhysAddr::zero()).unwrap();
    m.inc_ref(ds).unwrap();
    let mut rec = Recorder::default();
    m.resize(OWNER, ds, PAGE, &mut rec).unwrap();
    assert_eq!(rec.0.len(), 1);
    assert_eq!((rec.0[0].1.start, rec.0[0].1.end, rec.0[0].2), (1, 4, RevokeKind::All));
    // Closing takes no revoker at all: it cannot unmap anything.
    m.close(OWNER, ds).unwrap();
    assert_eq!(read(&mut m, ds, 0, 4), [0; 4]);
    m.dec_ref(ds).unwrap();
    check(&mut m);
}
