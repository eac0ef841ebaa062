//! Bad input to every operation: a clear error, and nothing changed (quota, frames, sizes,
//! contents).

use memkit_testkit::dataspace::fixture as common;

use common::{POOL0_START, check, mmu, read, used};
use memkit_dataspace::{
    ClientId, CloseError, CopyError, CopyLength, CopyRequest, CreateError, DataspaceId, DmFlags, FactoryError,
    FactoryId, InfoError, MAX_ALIGN_SHIFT, MapError, MemAllocFlags, MemphysCopyRequest, MemphysOpenRequest, NoRevoker,
    PhysAddrError, PoolId, RangeError, RefError, ResizeError,
};
use memkit_types::{Access, PAGE_SIZE, PhysAddr, PhysPlacement};

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
        m.copy_long(OWNER, ds, CopyRequest::new(1, 0, long).flags(DmFlags::COW).name("c"), &mut NoRevoker),
        Err(CopyError::SourceOutOfRange(1, u64::MAX))
    );
    let e = m.copy_long(
        OWNER,
        ds,
        CopyRequest::new(size + 1, 0, CopyLength::WholeDataspace).flags(DmFlags::COW).name("c"),
        &mut NoRevoker,
    );
    assert_eq!(e, Err(CopyError::SourceOutOfRange(size + 1, 0)));
    let e = m.copy_long(
        OWNER,
        ds,
        CopyRequest::new(0, u64::MAX, CopyLength::Bytes(1)).flags(DmFlags::COW).name("c"),
        &mut NoRevoker,
    );
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
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(u32::MAX, PAGE).name("p"));
    assert_eq!(e, Err(CreateError::PoolOutOfRange(u32::MAX)));
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(5, PAGE).name("p"));
    assert_eq!(e, Err(CreateError::PoolMissing(PoolId::new(5).unwrap())));
    // Fixed addresses: reserved (outside the pool), overflowing, misaligned.
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(PhysAddr::new(0x1000)).name("f"));
    assert_eq!(e, Err(CreateError::AddressOutOfPool(PhysAddr::new(0x1000))));
    let top = PhysAddr::new(PhysAddr::LIMIT - PAGE);
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, 2 * PAGE).at(top).name("f"));
    assert_eq!(e, Err(CreateError::AddressOutOfPool(top)));
    let odd = PhysAddr::new(POOL0_START * PAGE + 1);
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(odd).name("f"));
    assert_eq!(e, Err(CreateError::MisalignedAddress(odd)));
    let sp = PhysAddr::new((POOL0_START + 1) * PAGE);
    let e = m.memphys_open(F, OWNER, MemphysOpenRequest::new(0, PAGE).at(sp).flags(DmFlags::SUPERPAGES).name("f"));
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

// ------------------------------------------------------------------ the table

/// Every code the seeds name (negated L4 error numbers).
const SEED_CODES: [i32; 7] = [-1, -2, -12, -16, -20, -22, -34];

/// A manager with a dataspace of every kind, some of them shared copy-on-write, and handles
/// of every sort: full, narrowed, another task's, closed, stale (its slot reused) and forged.
struct World {
    m: common::Dsm,
    /// Live dataspaces (full handles), for the snapshot.
    live: Vec<DataspaceId>,
    /// Every handle the table tries, with the size of the dataspace it names (0 if none).
    handles: Vec<(&'static str, DataspaceId, u64)>,
}

fn world() -> World {
    use memkit_types::Rights;
    let mut m = mmu();
    let nr = &mut NoRevoker;
    let anon = m.mem_open(F, OWNER, 3 * PAGE + 1, 0, DmFlags::empty(), "anon").unwrap();
    m.write(anon, 0, &[0x5a; 2 * PAGE_SIZE + 9], nr).unwrap();
    let cow = m.copy(OWNER, anon, DmFlags::COW, "cow", nr).unwrap();
    let contig = m.mem_open(F, OWNER, 2 * PAGE, 0, DmFlags::CONTIGUOUS, "contig").unwrap();
    m.write(contig, PAGE - 2, b"edge", nr).unwrap();
    let pinned = m.mem_open(F, OWNER, PAGE + 5, 0, DmFlags::PINNED, "pinned").unwrap();
    let superp = m
        .memphys_open(F, OWNER, MemphysOpenRequest::new(0, 3 * PAGE).flags(DmFlags::SUPERPAGES).name("super"))
        .unwrap();
    let isa = m.memphys_open(F, OWNER, MemphysOpenRequest::new(7, PAGE + 1).name("isa")).unwrap();
    let foreign = m.mem_open(F, STRANGER, PAGE, 0, DmFlags::empty(), "foreign").unwrap();
    let gone = m.mem_open(F, OWNER, PAGE, 0, DmFlags::empty(), "gone").unwrap();
    m.close(OWNER, gone).unwrap();
    // The closed dataspace's slot is reused: `gone` is now a stale id of a live slot.
    let reused = m.mem_open(F, OWNER, 2, 0, DmFlags::empty(), "reused").unwrap();
    assert_eq!(reused.as_u64() & 0xffff_ffff, gone.as_u64() & 0xffff_ffff, "the slot is reused");
    let ro = m.share(anon, Rights::READ).unwrap();
    let none = m.share(contig, Rights::empty()).unwrap();
    let size = |m: &common::Dsm, d: DataspaceId| m.info(d).map_or(0, |i| i.size);
    let live = vec![anon, cow, contig, pinned, superp, isa, foreign, reused];
    let mut handles: Vec<(&'static str, DataspaceId)> = vec![
        ("anonymous", anon),
        ("cow copy", cow),
        ("contiguous", contig),
        ("pinned", pinned),
        ("superpages", superp),
        ("pool 7", isa),
        ("another task's", foreign),
        ("read-only", ro),
        ("no rights", none),
        ("closed", gone),
        ("forged: all ones", DataspaceId::from_u64(u64::MAX)),
        ("forged: next generation", DataspaceId::from_u64(anon.as_u64() + (1 << 32))),
        ("forged: unused slot", DataspaceId::from_u64(1 << 20)),
        ("forged: slot past u32", DataspaceId::from_u64(0xffff_ffff)),
    ];
    let handles = handles.drain(..).map(|(n, d)| (n, d, size(&m, d.narrowed(memkit_types::Rights::RWX)))).collect();
    check(&mut m);
    World { m, live, handles }
}

/// What a failed operation must leave as it was: quota, frames given out per pool, live
/// count, and per dataspace its size, references, backing frames and contents.
type Snapshot = (u64, u64, u64, u32, Vec<(u64, u32, Vec<Option<memkit_types::Frame>>, Vec<u8>)>);

fn snap(w: &mut World) -> Snapshot {
    let per_ds = w
        .live
        .iter()
        .map(|&d| {
            let (size, refs) = w.m.info(d).map_or((0, 0), |i| (i.size, i.refs));
            let frames = w.m.backing_frames(d).unwrap_or_default();
            (size, refs, frames, read(&mut w.m, d, 0, size as usize))
        })
        .collect();
    let q = w.m.quota(F).unwrap().used;
    (q, used(&w.m, PoolId::DEFAULT), used(&w.m, PoolId::ISA_DMA), w.m.live(), per_ds)
}

/// Interesting numbers around a dataspace of `size` bytes.
fn numbers(size: u64) -> Vec<u64> {
    let mut v = vec![0, 1, PAGE - 1, PAGE, PAGE + 1, size.saturating_sub(1), size, size + 1];
    v.extend([memkit_dataspace::MAX_SIZE, memkit_dataspace::MAX_SIZE + 1, u64::MAX - PAGE, u64::MAX - 1, u64::MAX]);
    v
}

/// Runs `op` on a fresh world for every handle and pair of numbers: an error must carry a
/// seed code and change nothing; a success must keep every invariant and satisfy `ok`.
/// Returns (cases, successes).
fn table(
    name: &str,
    uses_b: bool,
    op: impl Fn(&mut common::Dsm, DataspaceId, u64, u64) -> Result<(), i32>,
    ok: impl Fn(&str, u64, u64, u64) -> bool,
) -> (u64, u64) {
    let mut w = world();
    let mut before = snap(&mut w);
    let (mut cases, mut successes) = (0, 0);
    let handles = w.handles.clone();
    let handles = handles.into_iter().step_by(if cfg!(miri) { 4 } else { 1 });
    for (hname, h, size) in handles {
        let ns = numbers(if size == 0 { 3 * PAGE + 1 } else { size });
        let ns = if cfg!(miri) { vec![ns[0], ns[6], ns[12]] } else { ns };
        for &a in &ns {
            for &b in if uses_b { &ns[..] } else { &ns[..1] } {
                cases += 1;
                match op(&mut w.m, h, a, b) {
                    Err(code) => {
                        assert!(SEED_CODES.contains(&code), "{name}({hname}, {a:#x}, {b:#x}): code {code}");
                        let after = snap(&mut w);
                        assert!(
                            after == before,
                            "{name}({hname}, {a:#x}, {b:#x}) failed ({code}) but changed something"
                        );
                    }
                    Ok(()) => {
                        successes += 1;
                        assert!(ok(hname, size, a, b), "{name}({hname}, {a:#x}, {b:#x}) should have failed");
                        check(&mut w.m);
                        w = world();
                        before = snap(&mut w);
                    }
                }
            }
        }
    }
    (cases, successes)
}

/// Whether a handle of this name may change or read its dataspace (an owner's full handle).
fn usable(h: &str) -> bool {
    !matches!(h, "closed" | "no rights") && !h.starts_with("forged")
}

fn inside(size: u64, offset: u64, len: u64) -> bool {
    offset.checked_add(len).is_some_and(|e| e <= size)
}

#[test]
#[cfg_attr(miri, ignore = "tens of thousands of cases; the crate has no unsafe code")]
fn every_entry_point_against_a_table_of_bad_input() {
    use memkit_types::Rights;
    let nr = || NoRevoker;
    let mut total = (0, 0);
    let mut add = |(c, s): (u64, u64)| {
        total.0 += c;
        total.1 += s;
    };
    for access in [Access::Read, Access::Write, Access::Execute] {
        add(table(
            "map",
            false,
            |m, h, a, _| m.map(h, a, access).map(|_| ()).map_err(|e| e.code()),
            |h, size, a, _| usable(h) && a < size && (h != "read-only" || access == Access::Read),
        ));
    }
    add(table(
        "map_run",
        true,
        |m, h, a, b| m.map_run(h, a, b.min(1 << 20)).map(|_| ()).map_err(|e| e.code()),
        |h, size, a, b| usable(h) && (b == 0 || (a / PAGE + b.min(1 << 20) - 1) * PAGE < size),
    ));
    add(table(
        "read",
        true,
        |m, h, a, b| {
            let mut buf = vec![0u8; b.min(4 * PAGE) as usize];
            m.read(h, a, &mut buf).map_err(|e| e.code())
        },
        |h, size, a, b| usable(h) && inside(size, a, b.min(4 * PAGE)),
    ));
    add(table(
        "write",
        true,
        |m, h, a, b| m.write(h, a, &vec![0xee; b.min(4 * PAGE) as usize], &mut nr()).map_err(|e| e.code()),
        |h, size, a, b| usable(h) && h != "read-only" && inside(size, a, b.min(4 * PAGE)),
    ));
    for caller in [OWNER, STRANGER] {
        let mine = move |h: &str| usable(h) && h != "read-only" && (h == "another task's") == (caller == STRANGER);
        add(table(
            "clear",
            true,
            |m, h, a, b| m.clear(caller, h, a, b, &mut nr()).map_err(|e| e.code()),
            move |h, size, a, b| mine(h) && inside(size, a, b),
        ));
        add(table(
            "allocate",
            true,
            |m, h, a, b| m.allocate(caller, h, a, b, &mut nr()).map_err(|e| e.code()),
            move |h, size, a, b| mine(h) && inside(size, a, b),
        ));
        add(table(
            "resize",
            false,
            |m, h, a, _| m.resize(caller, h, a, &mut nr()).map_err(|e| e.code()),
            move |h, _, a, _| mine(h) && a <= memkit_dataspace::MAX_SIZE,
        ));
        // Eager and copy-on-write; every flag bit (defined or not) with the second.
        for flags in [DmFlags::empty(), DmFlags::from_bits_retain(u32::MAX)] {
            let readable = move |h: &str| usable(h) && (h == "another task's") == (caller == STRANGER);
            add(table(
                "copy_long",
                true,
                |m, h, a, b| {
                    let len = CopyLength::Bytes(b);
                    m.copy_long(caller, h, CopyRequest::new(a, a % 3, len).flags(flags).name("c"), &mut nr())
                        .map(|_| ())
                        .map_err(|e| e.code())
                },
                move |h, size, a, b| readable(h) && inside(size, a, b),
            ));
            add(table(
                "copy_long to an offset",
                true,
                |m, h, a, b| {
                    let len = CopyLength::WholeDataspace;
                    m.copy_long(caller, h, CopyRequest::new(a, b, len).flags(flags).name("c"), &mut nr())
                        .map(|_| ())
                        .map_err(|e| e.code())
                },
                move |h, size, a, b| readable(h) && a <= size && b + (size - a) <= memkit_dataspace::MAX_SIZE,
            ));
            add(table(
                "memphys_copy",
                true,
                |m, h, a, b| {
                    let (pool, size) = ((a % 9) as u32, b);
                    let len = CopyLength::Bytes(1);
                    m.memphys_copy(
                        caller,
                        h,
                        MemphysCopyRequest::new(0, 0, len, pool)
                            .size(size)
                            .align((b % 40) as u32)
                            .flags(flags)
                            .name("c"),
                        &mut nr(),
                    )
                    .map(|_| ())
                    .map_err(|e| e.code())
                },
                move |h, _, _, b| readable(h) && b <= memkit_dataspace::MAX_SIZE,
            ));
        }
        add(table("close", false, |m, h, _, _| m.close(caller, h).map_err(|e| e.code()), move |h, _, _, _| mine(h)));
    }
    add(table(
        "phys_addr",
        false,
        |m, h, a, _| m.phys_addr(h, a).map(|_| ()).map_err(|e| e.code()),
        |h, size, a, _| usable(h) && h != "read-only" && a < size,
    ));
    add(table(
        "inc_ref",
        false,
        |m, h, _, _| m.inc_ref(h).map_err(|e| e.code()),
        |h, _, _, _| !matches!(h, "closed") && !h.starts_with("forged"),
    ));
    add(table(
        "dec_refcnt",
        true,
        |m, h, a, b| m.dec_refcnt(h, (a as u32).wrapping_add(b as u32)).map_err(|e| e.code()),
        |_, _, a, b| (a as u32).wrapping_add(b as u32) == 0,
    ));
    add(table(
        "share",
        false,
        |m, h, a, _| m.share(h, Rights::from_bits_retain(a as u8)).map(|_| ()).map_err(|e| e.code()),
        |h, _, _, _| !matches!(h, "closed") && !h.starts_with("forged"),
    ));
    add(table(
        "info and rights",
        false,
        |m, h, _, _| {
            m.info(h).map_err(|e| e.code())?;
            m.rights(h).map(|_| ()).map_err(|e| e.code())
        },
        |h, _, _, _| !matches!(h, "closed") && !h.starts_with("forged"),
    ));
    println!("{} cases, {} accepted", total.0, total.1);
    assert!(total.0 > 10_000 || cfg!(miri), "{total:?}");
}

#[test]
#[cfg_attr(miri, ignore = "tens of thousands of cases; the crate has no unsafe code")]
fn every_creation_against_a_table_of_sizes_alignments_flags_pools_and_places() {
    let sizes = numbers(3 * PAGE + 1);
    let aligns = [0, 1, 11, 12, 21, 22, MAX_ALIGN_SHIFT, MAX_ALIGN_SHIFT + 1, u32::MAX];
    let places = [
        PhysPlacement::AnyAddr,
        PhysPlacement::Fixed(PhysAddr::zero()),
        PhysPlacement::Fixed(PhysAddr::new(POOL0_START * PAGE)),
        PhysPlacement::Fixed(PhysAddr::new(POOL0_START * PAGE + 1)),
        PhysPlacement::Fixed(PhysAddr::new(0x800 * PAGE)),
        PhysPlacement::Fixed(PhysAddr::new(PhysAddr::LIMIT - PAGE)),
    ];
    // Every combination of the defined flags, and every bit set.
    let mut dm: Vec<DmFlags> = (0..1u32 << 7)
        .map(|bits| {
            let all = [DmFlags::RESIZE, DmFlags::CONTIGUOUS, DmFlags::PINNED, DmFlags::COW, DmFlags::SAME_TASK];
            let all = all.into_iter().chain([DmFlags::SUPERPAGES, DmFlags::SAME_POOL]);
            all.enumerate().filter(|(i, _)| bits & (1 << i) != 0).fold(DmFlags::empty(), |f, (_, x)| f | x)
        })
        .collect();
    dm.push(DmFlags::from_bits_retain(u32::MAX));
    let mem_alloc: Vec<MemAllocFlags> =
        (0..16).map(MemAllocFlags::from_bits_retain).chain([MemAllocFlags::from_bits_retain(u32::MAX)]).collect();
    let mut m = mmu();
    let (mut cases, mut made) = (0u64, 0u64);
    let mut try_one = |m: &mut common::Dsm, what: &dyn Fn() -> String, r: Result<DataspaceId, CreateError>| {
        cases += 1;
        match r {
            Ok(ds) => {
                made += 1;
                let size = m.info(ds).unwrap().size;
                assert!(size > 0 && size <= memkit_dataspace::MAX_SIZE, "{}", what());
                check(m);
                m.close(OWNER, ds).unwrap();
            }
            Err(e) => assert!(SEED_CODES.contains(&e.code()), "{}: {e}", what()),
        }
        // Nothing is left behind, whether the creation worked or not.
        assert_eq!(
            (m.quota(F).unwrap().used, used(m, PoolId::DEFAULT), used(m, PoolId::ISA_DMA), m.live()),
            (0, 0, 0, 0)
        );
    };
    // Under Miri: a sample of each.
    let step = if cfg!(miri) { 16 } else { 1 };
    let (sizes, aligns) = if cfg!(miri) { (&sizes[..2], &aligns[..2]) } else { (&sizes[..], &aligns[..]) };
    let dm: Vec<DmFlags> = dm.into_iter().step_by(step).collect();
    let mem_alloc: Vec<MemAllocFlags> = mem_alloc.into_iter().step_by(step / 4 + 1).collect();
    let places = if cfg!(miri) { &places[..2] } else { &places[..] };
    for &size in sizes {
        for &align in aligns {
            for &flags in &dm {
                let r = m.mem_open(F, OWNER, size, align, flags, "t");
                try_one(&mut m, &|| format!("mem_open({size:#x}, {align}, {flags:?})"), r);
            }
            for &flags in &mem_alloc {
                let mmu_less_too = flags.contains(MemAllocFlags::FIXED_PADDR);
                for mmu_less in [false, true].into_iter().filter(|&l| !l || mmu_less_too) {
                    let mut n = if mmu_less {
                        common::manager(memkit_dataspace::Config::new(1 << 40).without_mmu())
                    } else {
                        mmu()
                    };
                    // A negative size searches for the largest run: too slow under Miri.
                    let signs = if cfg!(miri) { 1 } else { 2 };
                    for signed in [size as i64, -(size as i64)].into_iter().take(signs) {
                        let r = n.alloc(F, OWNER, signed, flags, align, PhysAddr::new(POOL0_START * PAGE));
                        try_one(&mut n, &|| format!("alloc({signed:#x}, {flags:?}, {align}, mmu {})", !mmu_less), r);
                    }
                }
            }
        }
        for pool in [0, 5, 7, 8, u32::MAX] {
            for &place in places {
                for flags in [
                    DmFlags::empty(),
                    DmFlags::CONTIGUOUS | DmFlags::PINNED,
                    DmFlags::SUPERPAGES,
                    DmFlags::from_bits_retain(u32::MAX),
                ] {
                    let r = m.memphys_open(
                        F,
                        OWNER,
                        MemphysOpenRequest::new(pool, size).placed(place).flags(flags).name("p"),
                    );
                    try_one(&mut m, &|| format!("memphys_open({pool}, {place:?}, {size:#x}, {flags:?})"), r);
                }
            }
        }
    }
    println!("{cases} creations, {made} made");
    assert!(made > 100 && cases > 5_000 || cfg!(miri));
}

#[test]
fn factories_tasks_and_close_all_against_a_table_of_bad_input() {
    let mut m = mmu();
    let child = m.create_factory(F, 8 * PAGE).unwrap();
    let gone = m.create_factory(F, PAGE).unwrap();
    m.destroy_factory(gone).unwrap();
    let ds = m.mem_open(child, OWNER, PAGE, 0, DmFlags::empty(), "d").unwrap();
    let task = m.create_task(child, PAGE).unwrap();
    m.destroy_task(task).unwrap();
    let before = |m: &common::Dsm| (m.quota(F), m.quota(child), m.live());
    let state = before(&m);
    let limits = [0, 1, PAGE, 7 * PAGE, 7 * PAGE + 1, 8 * PAGE, u64::MAX - 1, u64::MAX];
    for parent in [child, gone] {
        for limit in limits {
            match m.create_factory(parent, limit) {
                Ok(f) => {
                    assert!(parent == child && limit <= 7 * PAGE);
                    m.destroy_factory(f).unwrap();
                }
                Err(e) => assert!(SEED_CODES.contains(&e.code()), "{e}"),
            }
            match m.create_task(parent, limit) {
                Ok(t) => {
                    assert!(parent == child && limit <= 7 * PAGE);
                    m.destroy_task(t).unwrap();
                }
                Err(e) => assert!(SEED_CODES.contains(&e.code()), "{e}"),
            }
            assert_eq!(before(&m), state);
        }
    }
    // Destroying the root, a busy factory, a destroyed one; a task charge twice.
    for f in [F, child, gone] {
        assert!(SEED_CODES.contains(&m.destroy_factory(f).unwrap_err().code()));
    }
    assert_eq!(m.destroy_task(task).unwrap_err().code(), -22);
    // close_all: the invalid client, another task, every flag bit; only the owner's task may.
    for caller in [OWNER, STRANGER, ClientId::INVALID, ClientId::new(1, u32::MAX)] {
        for client in [STRANGER, ClientId::INVALID, ClientId::new(u32::MAX, 0), ClientId::new(1, 7)] {
            for flags in [DmFlags::empty(), DmFlags::from_bits_retain(u32::MAX)] {
                if client.task == OWNER.task && flags.contains(DmFlags::SAME_TASK) {
                    continue; // every thread of the owner's task: closes `ds` (below)
                }
                match m.close_all(caller, client, flags) {
                    Ok(n) => assert_eq!(n, 0, "{caller} closed {n} of {client}"),
                    Err(e) => assert!(SEED_CODES.contains(&e.code()), "{e}"),
                }
            }
        }
    }
    assert_eq!(before(&m), state);
    assert!(m.info(ds).is_ok());
    let all = DmFlags::from_bits_retain(u32::MAX);
    assert_eq!(m.close_all(STRANGER, ClientId::new(1, 7), all).unwrap_err().code(), -1);
    assert_eq!(m.close_all(ClientId::new(1, 7), ClientId::new(1, 7), all), Ok(1), "L4DM_SAME_TASK");
    assert!(m.info(ds).is_err());
    check(&mut m);
}
