//! Handles carry rights (L4 capabilities, `l4dm_share` with `L4DM_RO` / `L4DM_RW`): a handle
//! narrowed with `share` is refused every fault, read, write, copy and change beyond them.

use memkit_testkit::dataspace::fixture as common;

use common::{check, mmu, read};
use memkit_dataspace::{
    ClientId, CloseError, CopyError, DataspaceId, DmFlags, FactoryId, MapError, NoRevoker, PhysAddrError, RangeError,
    ResizeError, ShareError,
};
use memkit_types::{Access, PAGE_SIZE, Rights};

const OWNER: ClientId = ClientId::new(1, 1);
const PAGE: u64 = PAGE_SIZE as u64;
const F: FactoryId = FactoryId::ROOT;

#[test]
fn a_new_handle_grants_everything_and_narrows_but_never_widens() {
    let mut m = mmu();
    let ds = m.mem_open(F, OWNER, 2 * PAGE, 0, DmFlags::empty(), "d").unwrap();
    assert_eq!(ds.rights(), Rights::RWX);
    assert_eq!(m.rights(ds), Ok(Rights::RWX));
    let ro = m.share(ds, Rights::READ).unwrap();
    assert_eq!((ro.rights(), ro == ds, ro.same_handle(ds)), (Rights::READ, true, false));
    assert_eq!(format!("{ro}"), format!("{ds}/r--"));
    assert_eq!(m.share(ro, Rights::RW), Err(ShareError::Widening(ro, Rights::RW)));
    assert_eq!(m.share(ro, Rights::RW).unwrap_err().code(), -1);
    assert_eq!(ro.narrowed(Rights::RWX).rights(), Rights::READ, "narrowing never widens");
    assert_eq!(DataspaceId::from_u64(ro.as_u64()).rights(), Rights::READ, "rights survive an IPC word");
    assert_eq!(m.share(ro, Rights::empty()).unwrap().rights(), Rights::empty());
    m.close(OWNER, ds).unwrap();
    assert_eq!(m.share(ds, Rights::READ), Err(ShareError::InvalidId(ds)));
    assert!(m.rights(ro).is_err());
    check(&mut m);
}

#[test]
fn every_operation_honours_the_handle_rights() {
    let mut m = mmu();
    let ds = m.mem_open(F, OWNER, 2 * PAGE + 7, 0, DmFlags::empty(), "d").unwrap();
    m.write(ds, 0, b"visible", &mut NoRevoker).unwrap();
    let ro = m.share(ds, Rights::READ).unwrap();
    let wo = m.share(ds, Rights::WRITE).unwrap();
    let none = m.share(ds, Rights::empty()).unwrap();
    let nr = &mut NoRevoker;
    let before = read(&mut m, ds, 0, (2 * PAGE + 7) as usize);

    // Faults: a write fault through a read-only handle is refused; a read fault gets a
    // read-only mapping, even of a page the owner has written.
    assert_eq!(m.map(ro, 0, Access::Write), Err(MapError::Forbidden(ro, Access::Write)));
    assert_eq!(m.map(ro, 0, Access::Write).unwrap_err().code(), -1);
    assert_eq!(m.map(ro, 0, Access::Execute), Err(MapError::Forbidden(ro, Access::Execute)));
    assert_eq!(m.map(ro, 0, Access::Read).unwrap().rights, Rights::READ);
    assert_eq!(m.map(ro, PAGE, Access::Read).unwrap().rights, Rights::READ, "a first touch too");
    assert_eq!(m.map(wo, 0, Access::Read), Err(MapError::Forbidden(wo, Access::Read)));
    assert_eq!(m.map(wo, 0, Access::Write).unwrap().rights, Rights::WRITE);
    assert_eq!(m.map(none, 0, Access::Read), Err(MapError::Forbidden(none, Access::Read)));
    assert_eq!(m.map_run(none, 2 * PAGE, 1), Err(MapError::Forbidden(none, Access::Read)));
    // Reads and writes.
    assert_eq!(read(&mut m, ro, 0, 7), b"visible");
    assert_eq!(m.write(ro, 0, b"x", nr), Err(RangeError::Forbidden(ro, Access::Write)));
    let mut b = [0u8; 1];
    assert_eq!(m.read(wo, 0, &mut b), Err(RangeError::Forbidden(wo, Access::Read)));
    // Changes of contents or size need WRITE; copies need READ; physical addresses both.
    assert_eq!(m.clear(OWNER, ro, 0, 1, nr), Err(RangeError::Forbidden(ro, Access::Write)));
    assert_eq!(m.allocate(OWNER, ro, 0, 1, nr), Err(RangeError::Forbidden(ro, Access::Write)));
    assert_eq!(m.resize(OWNER, ro, PAGE, nr), Err(ResizeError::PermissionDenied(ro, OWNER)));
    assert_eq!(m.resize(OWNER, ro, 0, nr), Err(ResizeError::PermissionDenied(ro, OWNER)));
    assert_eq!(m.close(OWNER, ro), Err(CloseError::PermissionDenied(ro, OWNER)));
    assert_eq!(m.copy(OWNER, wo, DmFlags::COW, "c", nr), Err(CopyError::PermissionDenied(wo, OWNER)));
    assert_eq!(m.phys_addr(ro, 0), Err(PhysAddrError::Forbidden(ro)));
    assert_eq!(m.phys_addr(ro, 0).unwrap_err().code(), -1);
    // Nothing changed.
    assert_eq!(read(&mut m, ds, 0, before.len()), before);
    assert_eq!(m.info(ds).unwrap().size, 2 * PAGE + 7);
    // A copy through a read-only handle is a new dataspace with a full handle of its own.
    let c = m.copy(OWNER, ro, DmFlags::COW, "c", nr).unwrap();
    assert_eq!(c.rights(), Rights::RWX);
    m.write(c, 0, b"mine", nr).unwrap();
    assert_eq!(read(&mut m, ro, 0, 7), b"visible");
    // A reference through any handle keeps the dataspace, as the owner's handle does.
    m.inc_ref(none).unwrap();
    m.close(OWNER, ds).unwrap();
    assert_eq!(read(&mut m, ro, 0, 7), b"visible");
    m.dec_ref(none).unwrap();
    assert!(m.read(ro, 0, &mut b).is_err());
    check(&mut m);
}
