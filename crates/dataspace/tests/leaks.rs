//! No byte past a dataspace's size, and no byte from before a shrink, a close or a free, is
//! readable through a manager read, a copy or a frame handed out for mapping: for every kind
//! of dataspace and every operation that creates, copies, resizes or frees memory.

use memkit_testkit::dataspace::fixture as common;

use common::{check, mmu, read};
use memkit_dataspace::{
    ClientId, CopyLength, CopyRequest, DataspaceId, DmFlags, FactoryId, MemphysCopyRequest, MemphysOpenRequest,
    NoRevoker,
};
use memkit_types::{Access, PAGE_SIZE, PhysMemory, PhysPlacement};

const OWNER: ClientId = ClientId::new(1, 1);
const PAGE: u64 = PAGE_SIZE as u64;
const F: FactoryId = FactoryId::ROOT;

/// Every byte of every backing frame of `ds` from `from` on (its size, usually) is zero.
fn assert_zero_beyond(m: &mut common::Dsm, ds: DataspaceId, from: u64) {
    let frames = m.backing_frames(ds).expect("live dataspace");
    for (page, frame) in frames.iter().enumerate() {
        let Some(frame) = frame else { continue };
        let start = page as u64 * PAGE;
        if start + PAGE <= from {
            continue;
        }
        let mut buf = vec![0u8; PAGE_SIZE];
        m.memory().read(frame.start_address(), &mut buf);
        let skip = from.saturating_sub(start) as usize;
        if let Some(i) = buf[skip..].iter().position(|&b| b != 0) {
            panic!("{ds}: byte {:#x} past the size {from:#x} is {:#x}", start + (skip + i) as u64, buf[skip + i]);
        }
    }
}

/// The whole page a mapping of `offset` hands out, as a client sees it.
fn mapped_page(m: &mut common::Dsm, ds: DataspaceId, offset: u64, access: Access) -> Vec<u8> {
    let mapping = m.map(ds, offset, access).expect("mappable");
    let mut buf = vec![0u8; PAGE_SIZE];
    m.memory().read(mapping.frame.start_address(), &mut buf);
    buf
}

#[test]
fn copy_long_of_zero_bytes_at_a_destination_offset() {
    let mut m = mmu();
    let src = m.mem_open(F, OWNER, 2 * PAGE, 0, DmFlags::empty(), "src").unwrap();
    m.write(src, 0, &[7; 2 * PAGE_SIZE], &mut NoRevoker).unwrap();
    for flags in [DmFlags::empty(), DmFlags::COW] {
        for (src_offs, dst_offs) in [(0, 1), (0, 5000), (100, 5000), (2 * PAGE, 1), (4095, PAGE), (1, 3 * PAGE + 7)] {
            let c = m
                .copy_long(
                    OWNER,
                    src,
                    CopyRequest::new(src_offs, dst_offs, CopyLength::Bytes(0)).flags(flags).name("c"),
                    &mut NoRevoker,
                )
                .unwrap();
            assert_eq!(m.info(c).unwrap().size, dst_offs);
            assert_eq!(read(&mut m, c, 0, dst_offs as usize), vec![0; dst_offs as usize]);
            assert_zero_beyond(&mut m, c, 0);
            check(&mut m);
            m.close(OWNER, c).unwrap();
        }
    }
    check(&mut m);
}

#[test]
fn cow_copy_of_a_partial_page_does_not_share_the_source_tail() {
    let mut m = mmu();
    let src = m.mem_open(F, OWNER, 2 * PAGE, 0, DmFlags::empty(), "src").unwrap();
    m.write(src, 200, b"secret", &mut NoRevoker).unwrap();
    let c = m
        .copy_long(
            OWNER,
            src,
            CopyRequest::new(0, 0, CopyLength::Bytes(100)).flags(DmFlags::COW).name("c"),
            &mut NoRevoker,
        )
        .unwrap();
    assert_eq!(m.info(c).unwrap().size, 100);
    // Through the frame a read fault hands out, and the one a write fault hands out.
    for access in [Access::Read, Access::Write] {
        let page = mapped_page(&mut m, c, 0, access);
        assert!(page[100..].iter().all(|&b| b == 0), "bytes past the copy's size: {:?}", &page[200..206]);
    }
    assert_zero_beyond(&mut m, c, 100);
    // A grow shows zeros there too.
    m.resize(OWNER, c, PAGE, &mut NoRevoker).unwrap();
    assert_eq!(read(&mut m, c, 200, 6), vec![0; 6]);
    // And the source still has its bytes.
    assert_eq!(read(&mut m, src, 200, 6), b"secret");
    check(&mut m);
}

/// A dataspace of the test and what it must hold.
struct Ds {
    id: DataspaceId,
    data: Vec<u8>,
}

/// Reads, the backing past the size, and the whole page of every mapping all agree with
/// `d.data` (zeros past its end).
fn verify(m: &mut common::Dsm, d: &Ds) {
    let len = d.data.len();
    assert_eq!(read(m, d.id, 0, len), d.data, "{}: contents", d.id);
    assert_zero_beyond(m, d.id, len as u64);
    for page in 0..len.div_ceil(PAGE_SIZE) {
        let at = page * PAGE_SIZE;
        let n = (len - at).min(PAGE_SIZE);
        let shown = mapped_page(m, d.id, at as u64, Access::Read);
        assert_eq!(shown[..n], d.data[at..at + n], "{}: mapped page {page}", d.id);
        assert!(shown[n..].iter().all(|&b| b == 0), "{}: mapped page {page} shows bytes past the size", d.id);
    }
    check(m);
}

/// The kinds of dataspace: (name, pool, placement, flags).
fn kinds() -> Vec<(&'static str, u32, PhysPlacement, DmFlags)> {
    let fixed = memkit_types::PhysAddr::new(0x800 * PAGE);
    vec![
        ("anonymous", 0, PhysPlacement::AnyAddr, DmFlags::empty()),
        ("contiguous", 0, PhysPlacement::AnyAddr, DmFlags::CONTIGUOUS),
        ("pinned", 0, PhysPlacement::AnyAddr, DmFlags::PINNED),
        ("superpages", 0, PhysPlacement::AnyAddr, DmFlags::SUPERPAGES),
        ("anonymous pool 7", 7, PhysPlacement::AnyAddr, DmFlags::empty()),
        ("pinned pool 7", 7, PhysPlacement::AnyAddr, DmFlags::PINNED),
        ("fixed pool 7", 7, PhysPlacement::Fixed(fixed), DmFlags::empty()),
    ]
}

fn open(m: &mut common::Dsm, kind: &(&str, u32, PhysPlacement, DmFlags), size: u64) -> Ds {
    let (name, pool, placement, flags) = *kind;
    let id = m
        .memphys_open(F, OWNER, MemphysOpenRequest::new(pool, size).placed(placement).flags(flags).name(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = Ds { id, data: vec![0; size as usize] };
    verify(m, &d);
    d
}

fn fill(m: &mut common::Dsm, d: &mut Ds, seed: u8) {
    for (i, b) in d.data.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1 ^ seed;
        if *b == 0 {
            *b = 0x80;
        }
    }
    m.write(d.id, 0, &d.data, &mut NoRevoker).unwrap();
    verify(m, d);
}

#[test]
fn no_byte_past_the_size_or_from_before_a_shrink_or_free_is_visible() {
    let mut m = mmu();
    let size = 2 * PAGE + 100;
    for kind in &kinds() {
        let mut src = open(&mut m, kind, size);
        fill(&mut m, &mut src, 0);
        // Copies of every shape, eager and copy-on-write, into the source's pool and pool 7.
        let shapes = [(0, 0, 100), (0, 0, PAGE), (0, 0, PAGE + 1), (100, 100, PAGE), (0, 0, size), (5, 0, PAGE - 1)];
        let shapes = shapes.into_iter().chain([(PAGE, 7, 300), (PAGE + 1, PAGE + 1, PAGE), (size - 1, 0, 1)]);
        let shapes = shapes.take(if cfg!(miri) { 2 } else { usize::MAX });
        for (src_offs, dst_offs, len) in shapes {
            for flags in [DmFlags::empty(), DmFlags::COW] {
                for pool7 in [false, true] {
                    let len = CopyLength::Bytes(len);
                    let id = if pool7 {
                        m.memphys_copy(
                            OWNER,
                            src.id,
                            MemphysCopyRequest::new(src_offs, dst_offs, len, 7).flags(flags).name("c"),
                            &mut NoRevoker,
                        )
                    } else {
                        m.copy_long(
                            OWNER,
                            src.id,
                            CopyRequest::new(src_offs, dst_offs, len).flags(flags).name("c"),
                            &mut NoRevoker,
                        )
                    };
                    let id = id.unwrap();
                    let CopyLength::Bytes(n) = len else { unreachable!() };
                    let mut data = vec![0; dst_offs as usize];
                    data.extend_from_slice(&src.data[src_offs as usize..(src_offs + n) as usize]);
                    let mut c = Ds { id, data };
                    verify(&mut m, &c);
                    // Writing the copy leaves the source as it was, and the other way round.
                    fill(&mut m, &mut c, 0x40);
                    verify(&mut m, &src);
                    // Shrinking and growing the copy shows zeros, never the source's bytes.
                    let short = (c.data.len() as u64 / 2).max(1);
                    m.resize(OWNER, c.id, short, &mut NoRevoker).unwrap();
                    c.data.truncate(short as usize);
                    verify(&mut m, &c);
                    m.resize(OWNER, c.id, short + 2 * PAGE, &mut NoRevoker).unwrap();
                    c.data.resize((short + 2 * PAGE) as usize, 0);
                    verify(&mut m, &c);
                    m.close(OWNER, c.id).unwrap();
                    verify(&mut m, &src);
                }
            }
        }
        // A copy-on-write copy of the whole source, then shrink the source below it.
        let id = m.copy(OWNER, src.id, DmFlags::COW, "whole", &mut NoRevoker).unwrap();
        let whole = Ds { id, data: src.data.clone() };
        for new_size in [PAGE + 10, PAGE, 1] {
            m.resize(OWNER, src.id, new_size, &mut NoRevoker).unwrap();
            src.data.truncate(new_size as usize);
            verify(&mut m, &src);
            verify(&mut m, &whole);
        }
        // Grow back over the old bytes: zeros, in reads and in the mapped pages.
        m.close(OWNER, whole.id).unwrap();
        m.resize(OWNER, src.id, size + PAGE, &mut NoRevoker).unwrap();
        src.data.resize((size + PAGE) as usize, 0);
        verify(&mut m, &src);
        fill(&mut m, &mut src, 0x20);
        m.close(OWNER, src.id).unwrap();
        check(&mut m);
    }
    // Everything written is gone: every new dataspace of every kind reads zeros (the frames
    // of the closed ones are reused).
    for round in 0..2 {
        let mut live = Vec::new();
        for kind in &kinds() {
            let mut d = open(&mut m, kind, size);
            fill(&mut m, &mut d, round);
            live.push(d);
        }
        if round == 0 {
            assert_eq!(m.close_all(OWNER, OWNER, DmFlags::empty()).unwrap(), live.len() as u32);
        } else {
            for d in live {
                m.resize(OWNER, d.id, 0, &mut NoRevoker).unwrap();
            }
        }
        check(&mut m);
    }
}

#[test]
fn fault_around_runs_and_larger_copies_show_zeros_only() {
    let mut m = mmu();
    // Dirty every frame of the pool's start, then give it back.
    let dirty = m.mem_open(F, OWNER, 64 * PAGE, 0, DmFlags::PINNED, "dirty").unwrap();
    m.write(dirty, 0, &vec![0xd1; 64 * PAGE_SIZE], &mut NoRevoker).unwrap();
    let mut src = Ds { id: m.mem_open(F, OWNER, 3 * PAGE + 9, 0, DmFlags::empty(), "src").unwrap(), data: vec![] };
    src.data = vec![0; 3 * PAGE_SIZE + 9];
    fill(&mut m, &mut src, 3);
    m.close(OWNER, dirty).unwrap();
    // A fault-around run of fresh pages: zeroed frames.
    let fresh = m.mem_open(F, OWNER, 16 * PAGE - 3, 0, DmFlags::empty(), "fresh").unwrap();
    let first = m.map_run(fresh, 0, 16).unwrap().expect("no page has a frame yet");
    let mut buf = vec![0u8; 16 * PAGE_SIZE];
    m.memory().read(first.start_address(), &mut buf);
    assert!(buf.iter().all(|&b| b == 0), "a fault-around run shows old bytes");
    verify(&mut m, &Ds { id: fresh, data: vec![0; 16 * PAGE_SIZE - 3] });
    // memphys_copy into a destination larger than the bytes copied: zeros around them.
    for flags in [DmFlags::empty(), DmFlags::COW, DmFlags::PINNED, DmFlags::CONTIGUOUS] {
        let len = CopyLength::Bytes(PAGE + 1);
        let dst_size = 5 * PAGE + 3;
        let id = m
            .memphys_copy(
                OWNER,
                src.id,
                MemphysCopyRequest::new(7, PAGE + 7, len, 0).size(dst_size).flags(flags).name("c"),
                &mut NoRevoker,
            )
            .unwrap();
        let mut data = vec![0; dst_size as usize];
        data[(PAGE + 7) as usize..(2 * PAGE + 8) as usize].copy_from_slice(&src.data[7..PAGE_SIZE + 8]);
        verify(&mut m, &Ds { id, data });
        m.close(OWNER, id).unwrap();
    }
    check(&mut m);
}

/// A write that runs out of frames part-way writes no byte: not on the pages before the one
/// that found no frame (first touches and copy-on-write breaks alike).
#[test]
fn a_write_that_runs_out_of_frames_writes_nothing() {
    use memkit_dataspace::PoolId;
    for (fail_at, cow) in [(1, false), (2, false), (1, true), (2, true)] {
        let mut m = mmu();
        let ds = m.mem_open(F, OWNER, 4 * PAGE, 0, DmFlags::empty(), "ds").unwrap();
        if cow {
            m.write(ds, 0, &[5; 3 * PAGE_SIZE], &mut NoRevoker).unwrap();
            let _copy = m.copy(OWNER, ds, DmFlags::COW, "copy", &mut NoRevoker).unwrap();
        }
        let before = read(&mut m, ds, 0, 4 * PAGE_SIZE);
        m.pool(PoolId::DEFAULT).unwrap().fail_allocation(Some(fail_at));
        let e = m.write(ds, 100, &[9; 3 * PAGE_SIZE], &mut NoRevoker).unwrap_err();
        assert_eq!(e.code(), -12, "{e}");
        m.pool(PoolId::DEFAULT).unwrap().fail_allocation(None);
        assert_eq!(read(&mut m, ds, 0, 4 * PAGE_SIZE), before, "fail at {fail_at}, cow {cow}: bytes changed");
        check(&mut m);
    }
}
