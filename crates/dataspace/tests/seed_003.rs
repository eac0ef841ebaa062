//! Seed 003, DROPS `l4dm` / DMphys, function by function: every `L4DM_*` constant, open,
//! resize, info, close, close_all, copy, copy_long, memphys_open, memphys_copy and their
//! error codes.

use memkit_testkit::dataspace::fixture as common;

use common::{POOL0_START, POOL7_FRAMES, Recorder, check, mmu, read, used};
use memkit_dataspace::{
    ANY_ADDR, ClientId, CloseAllError, CopyError, CopyLength, CopyRequest, CreateError, DataspaceId, DmFlags,
    FactoryId, Kind, MEMPHYS_DEFAULT, MEMPHYS_ISA_DMA, MemphysCopyRequest, MemphysOpenRequest, NoRevoker, PageRange,
    PoolId, ResizeError, RevokeKind, WHOLE_DS,
};
use memkit_types::l4::{L4_EINVAL, L4_ENOENT, L4_ENOMEM, L4_EPERM, L4_ERANGE};
use memkit_types::{Access, PAGE_SIZE, PhysAddr, Rights, SUPERPAGE_SIZE};

const OWNER: ClientId = ClientId::new(3, 1);
const SIBLING: ClientId = ClientId::new(3, 2);
const STRANGER: ClientId = ClientId::new(4, 1);
const PAGE: u64 = PAGE_SIZE as u64;
const F: FactoryId = FactoryId::ROOT;

fn open(m: &mut common::Dsm, size: u64, flags: DmFlags, name: &str) -> DataspaceId {
    m.mem_open(F, OWNER, size, 0, flags, name).unwrap()
}

#[test]
fn constants_are_the_seeds() {
    assert_eq!(DmFlags::RESIZE.bits(), 0x80);
    assert_eq!(DmFlags::CONTIGUOUS.bits(), 0x100);
    assert_eq!(DmFlags::PINNED.bits(), 0x200);
    assert_eq!(DmFlags::COW.bits(), 0x400);
    assert_eq!(DmFlags::SAME_TASK.bits(), 0x2000);
    assert_eq!(DmFlags::SUPERPAGES.bits(), 0x1_0000);
    assert_eq!(DmFlags::SAME_POOL.bits(), 0x2_0000);
    assert_eq!((WHOLE_DS, ANY_ADDR, MEMPHYS_DEFAULT, MEMPHYS_ISA_DMA), (-1, -1, 0, 7));
    assert_eq!(PoolId::new(MEMPHYS_ISA_DMA), Some(PoolId::ISA_DMA));
    assert!(ClientId::INVALID.is_invalid(), "L4_INVALID_ID");
}

#[test]
fn mem_open_kinds_and_name() {
    let mut m = mmu();
    let a = open(&mut m, 3 * PAGE, DmFlags::RESIZE, "anon");
    let c = open(&mut m, 3 * PAGE, DmFlags::CONTIGUOUS, "contig");
    let p = open(&mut m, 3 * PAGE, DmFlags::PINNED, "pinned");
    assert_eq!(used(&m, PoolId::DEFAULT), 6, "contiguous and pinned allocated at open");
    assert_eq!(m.info(a).unwrap().name, "anon");
    assert_eq!(m.info(c).unwrap().kind, Kind::CONTIGUOUS);
    assert_eq!(m.info(p).unwrap().kind, Kind::PINNED);
    assert_eq!(m.phys_addr(c, 0).unwrap().1, 3 * PAGE);
    assert_eq!(m.phys_addr(a, 0).unwrap_err().code(), -L4_EINVAL, "lazy page not resident");
    let e = m.mem_open(F, OWNER, (common::POOL0_FRAMES + 1) * PAGE, 0, DmFlags::PINNED, "x").unwrap_err();
    assert_eq!(e.code(), -L4_ENOMEM);
    assert_eq!(used(&m, PoolId::DEFAULT), 6, "a failed open leaks nothing");
    check(&mut m);
}

#[test]
fn shrinking_a_superpage_dataspace_revokes_every_page_past_the_new_size() {
    let mut m = mmu();
    let ds =
        m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, 3 * PAGE).flags(DmFlags::SUPERPAGES).name("sp")).unwrap();
    let mut r = Recorder::default();
    m.resize(OWNER, ds, 0xc8, &mut r).unwrap();
    // The backing stays one superpage: the revocation is of the pages past the size.
    assert!(
        r.0.iter().any(|&(d, p, k)| d == ds && p.start <= 1 && p.end >= 3 && k == RevokeKind::All),
        "pages 1..3 revoked: {:?}",
        r.0
    );
    assert!(r.0.iter().all(|&(_, p, _)| p.start >= 1), "page 0 keeps its mappings: {:?}", r.0);
    check(&mut m);
}

#[test]
fn mem_resize() {
    let mut m = mmu();
    let ds = open(&mut m, 4 * PAGE, DmFlags::empty(), "r");
    m.write(ds, 0, &[7; 4 * PAGE_SIZE], &mut NoRevoker).unwrap();
    // Shrink frees the tail, after revoking it.
    let mut rec = Recorder::default();
    m.resize(OWNER, ds, PAGE + 10, &mut rec).unwrap();
    assert_eq!(rec.0, vec![(ds, PageRange { start: 2, end: 4 }, RevokeKind::All)]);
    assert_eq!(used(&m, PoolId::DEFAULT), 2);
    assert_eq!(m.info(ds).unwrap().size, PAGE + 10);
    // Grow adds zero-filled memory (also the bytes of the old last page past the old size).
    m.resize(OWNER, ds, 3 * PAGE, &mut NoRevoker).unwrap();
    let data = read(&mut m, ds, 0, 3 * PAGE_SIZE);
    assert!(data[..PAGE_SIZE + 10].iter().all(|b| *b == 7));
    assert!(data[PAGE_SIZE + 10..].iter().all(|b| *b == 0));
    // Errors: invalid id, not the owner, too large, quota.
    let bogus = DataspaceId::from_u64(0xdead_0000_0001);
    assert_eq!(m.resize(OWNER, bogus, 1, &mut NoRevoker).unwrap_err().code(), -L4_EINVAL);
    assert_eq!(m.resize(SIBLING, ds, 1, &mut NoRevoker).unwrap_err().code(), -L4_EPERM);
    assert_eq!(m.resize(OWNER, ds, u64::MAX, &mut NoRevoker).unwrap_err().code(), -L4_ERANGE);
    let small = m.create_factory(F, 2 * PAGE).unwrap();
    let s = m.mem_open(small, OWNER, PAGE, 0, DmFlags::empty(), "s").unwrap();
    assert_eq!(m.resize(OWNER, s, 3 * PAGE, &mut NoRevoker).unwrap_err().code(), -L4_ENOMEM);
    // 0 closes.
    m.resize(OWNER, ds, 0, &mut NoRevoker).unwrap();
    assert!(m.info(ds).is_err());
    check(&mut m);
}

/// "If the dataspace was allocated on contiguous memory, enlarge the used contiguous memory
/// area": in place, or not at all.
#[test]
fn contiguous_grows_in_place_or_fails_with_nothing_changed() {
    let mut m = mmu();
    let base = PhysAddr::new((POOL0_START + 64) * PAGE);
    let ds = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, 2 * PAGE).at(base).name("c")).unwrap();
    m.resize(OWNER, ds, 4 * PAGE, &mut NoRevoker).unwrap();
    assert_eq!(m.phys_addr(ds, 0).unwrap(), (base, 4 * PAGE));
    // Block the frame after it.
    let next = base.checked_add(4 * PAGE).unwrap();
    let blocker = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(next).name("b")).unwrap();
    let before = (m.quota(F).unwrap(), used(&m, PoolId::DEFAULT));
    let e = m.resize(OWNER, ds, 5 * PAGE, &mut NoRevoker).unwrap_err();
    assert_eq!(e, ResizeError::CannotGrowInPlace(next));
    assert_eq!(e.code(), -L4_ENOMEM);
    assert_eq!((m.quota(F).unwrap(), used(&m, PoolId::DEFAULT)), before, "nothing changed");
    assert_eq!(m.info(ds).unwrap().size, 4 * PAGE);
    m.close(OWNER, blocker).unwrap();
    m.resize(OWNER, ds, 5 * PAGE, &mut NoRevoker).unwrap();
    assert_eq!(m.phys_addr(ds, 0).unwrap(), (base, 5 * PAGE));
    check(&mut m);
}

#[test]
fn mem_info_iterates_every_live_dataspace_once() {
    let mut m = mmu();
    let ids: Vec<_> = (0..10).map(|i| open(&mut m, (i + 1) * 100, DmFlags::empty(), "i")).collect();
    for id in ids.iter().step_by(3) {
        m.close(OWNER, *id).unwrap();
    }
    let again = open(&mut m, 1, DmFlags::empty(), "again"); // reuses a slot
    let mut seen = Vec::new();
    let mut next = m.first_id();
    while let Some(id) = next {
        let info = m.info(id).unwrap();
        assert_eq!(info.owner, OWNER);
        seen.push(id);
        next = info.next_id;
    }
    let mut expect: Vec<_> = ids.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, id)| *id).collect();
    expect.push(again);
    seen.sort();
    expect.sort();
    assert_eq!(seen, expect);
    assert_eq!(m.info(ids[0]).unwrap_err().code(), -L4_EINVAL, "closed id");
    assert_ne!(again, ids[0], "a reused slot gets a new id");
}

#[test]
fn close_is_owner_only() {
    let mut m = mmu();
    let ds = open(&mut m, PAGE, DmFlags::empty(), "c");
    assert_eq!(m.close(SIBLING, ds).unwrap_err().code(), -L4_EPERM);
    assert_eq!(m.close(STRANGER, ds).unwrap_err().code(), -L4_EPERM);
    m.close(OWNER, ds).unwrap();
    assert_eq!(m.close(OWNER, ds).unwrap_err().code(), -L4_EINVAL);
    check(&mut m);
}

#[test]
fn close_all_and_same_task() {
    let mut m = mmu();
    let mine = [open(&mut m, PAGE, DmFlags::PINNED, "a"), open(&mut m, PAGE, DmFlags::empty(), "b")];
    let sibling = m.mem_open(F, SIBLING, PAGE, 0, DmFlags::PINNED, "s").unwrap();
    let other = m.mem_open(F, STRANGER, PAGE, 0, DmFlags::PINNED, "o").unwrap();
    let e = m.close_all(STRANGER, OWNER, DmFlags::empty()).unwrap_err();
    assert_eq!(e, CloseAllError::PermissionDenied(OWNER, STRANGER));
    assert_eq!(e.code(), -L4_EPERM);
    assert_eq!(m.close_all(OWNER, ClientId::INVALID, DmFlags::empty()).unwrap_err().code(), -L4_EINVAL);
    assert_eq!(m.close_all(SIBLING, OWNER, DmFlags::empty()), Ok(2), "any thread of the task may ask");
    assert!(mine.iter().all(|d| m.info(*d).is_err()));
    assert!(m.info(sibling).is_ok());
    let third = open(&mut m, PAGE, DmFlags::empty(), "c");
    assert_eq!(m.close_all(OWNER, OWNER, DmFlags::SAME_TASK), Ok(2), "L4DM_SAME_TASK: every thread of task 3");
    assert!(m.info(sibling).is_err() && m.info(third).is_err());
    assert!(m.info(other).is_ok());
    assert_eq!(used(&m, PoolId::DEFAULT), 1);
    check(&mut m);
}

#[test]
fn copy_whole_and_cow() {
    let mut m = mmu();
    let src = open(&mut m, 3 * PAGE + 5, DmFlags::empty(), "src");
    m.write(src, 0, &[1; 3 * PAGE_SIZE + 5], &mut NoRevoker).unwrap();
    let eager = m.copy(OWNER, src, DmFlags::empty(), "eager", &mut NoRevoker).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 8, "an eager copy has its own frames");
    assert_eq!(m.info(eager).unwrap().size, 3 * PAGE + 5);
    assert_eq!(m.info(eager).unwrap().owner, OWNER);

    let mut rec = Recorder::default();
    let cow = m.copy(SIBLING, src, DmFlags::COW, "cow", &mut rec).unwrap();
    assert_eq!(m.info(cow).unwrap().owner, SIBLING, "the caller owns the copy");
    // Whole pages are shared; the partial last page is copied, so that the copy never shows
    // the source's bytes past its own size.
    assert_eq!(used(&m, PoolId::DEFAULT), 9, "a COW copy shares every whole page");
    assert_eq!(rec.0, vec![(src, PageRange { start: 0, end: 3 }, RevokeKind::Write)]);
    check(&mut m);
    // Reads of a shared page are read-only; a write breaks the share for the writer only.
    let r = m.map(cow, 0, Access::Read).unwrap();
    assert_eq!(r.rights, Rights::READ | Rights::EXECUTE);
    let w = m.map(cow, 0, Access::Write).unwrap();
    assert_eq!(w.replaced, Some(r.frame));
    assert_ne!(w.frame, r.frame);
    assert_eq!(w.rights, Rights::RWX);
    m.write(cow, 10, b"changed", &mut NoRevoker).unwrap();
    assert_eq!(read(&mut m, src, 10, 7), [1; 7]);
    assert_eq!(read(&mut m, cow, 10, 7), b"changed");
    // The source is the last sharer of page 0: it keeps its frame without a copy.
    let s = m.map(src, 0, Access::Write).unwrap();
    assert_eq!((s.frame, s.replaced), (r.frame, None));
    assert_eq!(used(&m, PoolId::DEFAULT), 10);
    assert_eq!(m.copy(STRANGER, src, DmFlags::COW, "x", &mut NoRevoker).unwrap_err().code(), -L4_EPERM);
    check(&mut m);
}

/// "There are no restrictions to the offsets, in particular they do not need to be aligned":
/// a COW copy at byte offsets shares the aligned middle and copies the edges.
#[test]
fn copy_long_byte_offsets_share_the_aligned_middle() {
    let mut m = mmu();
    let src = open(&mut m, 8 * PAGE, DmFlags::empty(), "src");
    let pattern: Vec<u8> = (0..8 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    m.write(src, 0, &pattern, &mut NoRevoker).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 8);
    // Source bytes 100 .. 100 + 5 pages, to destination offset 4096 + 100: same page phase.
    let num = 5 * PAGE;
    let copy = m
        .copy_long(
            OWNER,
            src,
            CopyRequest::new(100, PAGE + 100, CopyLength::Bytes(num)).flags(DmFlags::COW).name("c"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(m.info(copy).unwrap().size, PAGE + 100 + num);
    // Destination pages 2..=5 lie wholly inside: shared. Page 6 ends at the copy's end, 100
    // bytes in: copied (sharing it would show the source's bytes past the copy's size). Page 1
    // starts at byte 100: copied.
    assert_eq!(used(&m, PoolId::DEFAULT), 8 + 2);
    let data = read(&mut m, copy, 0, (PAGE + 100 + num) as usize);
    assert!(data[..PAGE_SIZE + 100].iter().all(|b| *b == 0));
    assert_eq!(&data[PAGE_SIZE + 100..], &pattern[100..100 + num as usize]);
    check(&mut m);
    // A different page phase copies every byte.
    let shifted = m
        .copy_long(
            OWNER,
            src,
            CopyRequest::new(1, 0, CopyLength::Bytes(2 * PAGE)).flags(DmFlags::COW).name("s"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(read(&mut m, shifted, 0, 2 * PAGE_SIZE), &pattern[1..1 + 2 * PAGE_SIZE]);
    // L4DM_WHOLE_DS from an offset.
    let tail = m.copy_long(
        OWNER,
        src,
        CopyRequest::new(7 * PAGE + 3, 0, CopyLength::WholeDataspace).flags(DmFlags::COW).name("t"),
        &mut NoRevoker,
    );
    let tail = tail.unwrap();
    assert_eq!(m.info(tail).unwrap().size, PAGE - 3);
    // Out of range: the source ends before offset + num.
    let e = m.copy_long(OWNER, src, CopyRequest::new(8 * PAGE - 1, 0, CopyLength::Bytes(2)).name("e"), &mut NoRevoker);
    assert_eq!(e.unwrap_err(), CopyError::SourceOutOfRange(8 * PAGE - 1, 2));
    let e = m.copy_long(OWNER, src, CopyRequest::new(0, u64::MAX, CopyLength::Bytes(2)).name("e"), &mut NoRevoker);
    assert_eq!(e.unwrap_err().code(), -L4_ERANGE);
    check(&mut m);
}

#[test]
fn memphys_open_pools_addresses_and_superpages() {
    let mut m = mmu();
    // Pool 7: ISA DMA memory below 16 MiB.
    let isa =
        m.memphys_open(F, OWNER, MemphysOpenRequest::new(7, 64 * PAGE).flags(DmFlags::CONTIGUOUS).name("isa")).unwrap();
    let (addr, len) = m.phys_addr(isa, 0).unwrap();
    assert!(addr.as_u64() + len <= 16 << 20);
    assert_eq!(m.info(isa).unwrap().pool, PoolId::ISA_DMA);
    // Lazy pages of a pool-7 dataspace come from pool 7 too.
    let lazy = m.memphys_open(F, OWNER, MemphysOpenRequest::new(7, PAGE).name("l")).unwrap();
    assert!(m.map(lazy, 0, Access::Write).unwrap().frame.start_address().as_u64() < 16 << 20);
    // A fixed address, on an MMU system too.
    let at = PhysAddr::new((POOL0_START + 8) * PAGE);
    let fixed = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, 3 * PAGE).at(at).name("f")).unwrap();
    assert_eq!(m.phys_addr(fixed, 0).unwrap(), (at, 3 * PAGE));
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(at).name("f2")).unwrap_err();
    assert_eq!(e, CreateError::AddressInUse(at));
    // Reserved / outside the pool, and past 16 MiB in pool 7.
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(PhysAddr::new(0)).name("z"));
    assert_eq!(e.unwrap_err().code(), -L4_ERANGE);
    let high = PhysAddr::new((16 << 20) - PAGE);
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(7, 2 * PAGE).at(high).name("h"));
    assert_eq!(e.unwrap_err(), CreateError::AddressOutOfPool(high));
    // Superpages.
    let sp = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).flags(DmFlags::SUPERPAGES).name("sp")).unwrap();
    let (spa, splen) = m.phys_addr(sp, 0).unwrap();
    assert!(spa.is_aligned(SUPERPAGE_SIZE as u64));
    assert_eq!(splen, PAGE, "contiguous up to the byte size");
    assert_eq!(m.info(sp).unwrap().align, 21);
    // Pools out of range and without memory.
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(8, PAGE).name("p")).unwrap_err();
    assert_eq!(e, CreateError::PoolOutOfRange(8));
    assert_eq!(e.code(), -L4_EINVAL);
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(3, PAGE).name("p")).unwrap_err();
    assert_eq!(e.code(), -L4_ENOENT);
    // Pool 7 is small: asking for more than it has.
    let e =
        m.memphys_open(F, OWNER, MemphysOpenRequest::new(7, POOL7_FRAMES * PAGE).flags(DmFlags::PINNED).name("big"));
    assert_eq!(e.unwrap_err().code(), -L4_ENOMEM);
    check(&mut m);
}

#[test]
fn memphys_copy_into_another_pool() {
    let mut m = mmu();
    let src = open(&mut m, 4 * PAGE, DmFlags::empty(), "src");
    m.write(src, 0, &[9; 4 * PAGE_SIZE], &mut NoRevoker).unwrap();
    // At a fixed address in pool 7: contiguous there.
    let at = PhysAddr::new((common::POOL7_START + 16) * PAGE);
    let fixed = m
        .memphys_copy(
            OWNER,
            src,
            MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, 7).at(at).flags(DmFlags::COW).name("f"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(m.phys_addr(fixed, 0).unwrap(), (at, 4 * PAGE));
    assert_eq!(read(&mut m, fixed, 0, 4 * PAGE_SIZE), vec![9; 4 * PAGE_SIZE]);
    // dst_size larger than dst_offs + num is the size.
    let sized = m
        .memphys_copy(
            OWNER,
            src,
            MemphysCopyRequest::new(PAGE, 10, CopyLength::Bytes(PAGE), 7).size(5 * PAGE).align(12).name("s"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(m.info(sized).unwrap().size, 5 * PAGE);
    assert_eq!(m.info(sized).unwrap().pool, PoolId::ISA_DMA);
    // A COW copy into pool 7 shares pool-0 frames and breaks into pool 7.
    let cow = m
        .memphys_copy(
            OWNER,
            src,
            MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, 7).flags(DmFlags::COW).name("c"),
            &mut NoRevoker,
        )
        .unwrap();
    let before = used(&m, PoolId::DEFAULT);
    let shared = m.map(cow, 0, Access::Read).unwrap().frame;
    assert!(shared.start_address().as_u64() >= POOL0_START * PAGE, "shared from pool 0");
    let broken = m.map(cow, 0, Access::Write).unwrap().frame;
    assert!(broken.start_address().as_u64() < 16 << 20, "broken into pool 7");
    assert_eq!(used(&m, PoolId::DEFAULT), before);
    // SAME_POOL keeps the source's pool whatever dst_pool says.
    let same = m
        .memphys_copy(
            OWNER,
            src,
            MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, 9).flags(DmFlags::SAME_POOL).name("p"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(m.info(same).unwrap().pool, PoolId::DEFAULT);
    let e = m.memphys_copy(
        OWNER,
        src,
        MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, 9).name("p"),
        &mut NoRevoker,
    );
    assert_eq!(e.unwrap_err(), CopyError::Create(CreateError::PoolOutOfRange(9)));
    check(&mut m);
    // Closing the source leaves the copies intact.
    m.close(OWNER, src).unwrap();
    assert_eq!(read(&mut m, cow, 0, 4 * PAGE_SIZE), vec![9; 4 * PAGE_SIZE]);
    check(&mut m);
}

#[test]
fn clear_and_allocate() {
    let mut m = mmu();
    let ds = open(&mut m, 4 * PAGE, DmFlags::empty(), "d");
    m.write(ds, 0, &[5; 4 * PAGE_SIZE], &mut NoRevoker).unwrap();
    let mut rec = Recorder::default();
    m.clear(OWNER, ds, 100, 2 * PAGE, &mut rec).unwrap();
    let data = read(&mut m, ds, 0, 4 * PAGE_SIZE);
    assert!(data[..100].iter().all(|b| *b == 5));
    assert!(data[100..100 + 2 * PAGE_SIZE].iter().all(|b| *b == 0));
    assert!(data[100 + 2 * PAGE_SIZE..].iter().all(|b| *b == 5));
    assert_eq!(rec.0, vec![(ds, PageRange { start: 1, end: 2 }, RevokeKind::All)], "page 1 dropped");
    assert_eq!(used(&m, PoolId::DEFAULT), 3);
    m.allocate(OWNER, ds, 0, 4 * PAGE, &mut NoRevoker).unwrap();
    assert_eq!(used(&m, PoolId::DEFAULT), 4);
    assert!(m.phys_addr(ds, PAGE).is_ok());
    assert_eq!(m.clear(STRANGER, ds, 0, 1, &mut NoRevoker).unwrap_err().code(), -L4_EPERM);
    assert_eq!(m.allocate(OWNER, ds, 4 * PAGE, 1, &mut NoRevoker).unwrap_err().code(), -L4_ERANGE);
    assert_eq!(m.clear(OWNER, ds, u64::MAX, 2, &mut NoRevoker).unwrap_err().code(), -L4_ERANGE);
    check(&mut m);
}
