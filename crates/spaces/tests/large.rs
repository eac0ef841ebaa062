//! 2 MiB mappings on `SoftMmu`: a superpage dataspace attached at a 2 MiB-aligned address
//! and offset faults in one large entry per block; a partial detach, a protect of part of
//! the block, a shrink and a copy-on-write break split it, and every byte read through the
//! mappings is the one the dataspace holds.

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_region::{AttachRequest, DetachFlags, EntrySize, FaultError, LARGE_PAGES, Mmu, RegionMap, SoftMmu};
use memkit_spaces::{SpaceError, SpaceId, SpaceSet};
use memkit_testkit::{ModelFrameSource, SparseRam};
use memkit_types::{Access, Frame, FrameCount, PAGE_SIZE, Page, Rights, SUPERPAGE_SIZE, VirtAddr};

type Set = SpaceSet<ModelFrameSource, SparseRam, SoftMmu>;

const OWNER: ClientId = ClientId::new(1, 0);
const P: usize = PAGE_SIZE;
const BLOCK: usize = SUPERPAGE_SIZE;
/// Each space's window: 64 MiB from 1 GiB × (its index + 1).
const WINDOW: usize = 64 << 20;

fn set_with_spaces(n: usize) -> (Set, Vec<SpaceId>) {
    let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x1000), FrameCount::new(8192)));
    let mut set = SpaceSet::new(m);
    let ids = (0..n)
        .map(|i| set.add_space(RegionMap::new(VirtAddr::new((1 << 30) * (i + 1)), WINDOW), SoftMmu::new()))
        .collect();
    (set, ids)
}

fn superpages(set: &mut Set, bytes: usize) -> DataspaceId {
    set.manager_mut().mem_open(FactoryId::ROOT, OWNER, bytes as u64, 0, DmFlags::SUPERPAGES, "sp").unwrap()
}

/// Attaches `bytes` of `ds` from `offset` in space `id`, at an address aligned to 2^`align`.
fn attach(set: &mut Set, id: SpaceId, ds: DataspaceId, bytes: usize, offset: u64, align: u8) -> VirtAddr {
    let hint = set.space(id).unwrap().map.window_start();
    let req = AttachRequest::new(ds, bytes, Rights::RW).search(hint).offset(offset).align(align);
    let a = set.attach(id, &req).unwrap();
    set.check_invariants();
    a
}

fn read(set: &mut Set, id: SpaceId, at: VirtAddr, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    set.load(id, at, &mut b).unwrap();
    set.check_invariants();
    b
}

fn write(set: &mut Set, id: SpaceId, at: VirtAddr, bytes: &[u8]) {
    set.store(id, at, bytes).unwrap();
    set.check_invariants();
    set.space(id).unwrap().mmu.check_invariants();
}

fn off(a: VirtAddr, bytes: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + bytes)
}

fn page(a: VirtAddr) -> Page {
    Page::containing_address(a)
}

fn mmu(set: &Set, id: SpaceId) -> &SoftMmu {
    &set.space(id).unwrap().mmu
}

/// The frame that backs byte `offset` of `ds`.
fn frame_of(set: &mut Set, ds: DataspaceId, offset: usize) -> Frame {
    let (pa, _) = set.manager_mut().phys_addr(ds, offset as u64).unwrap();
    Frame::containing_address(pa)
}

/// Writes a byte into each page of `bytes` from `at`: its page index, so that every page's
/// content says where it is.
fn stamp(set: &mut Set, id: SpaceId, at: VirtAddr, bytes: usize) {
    for i in 0..bytes / P {
        write(set, id, off(at, i * P + 7), &[i as u8, (i >> 8) as u8]);
    }
}

fn stamped(set: &mut Set, id: SpaceId, at: VirtAddr, i: usize) -> bool {
    read(set, id, off(at, i * P + 7), 2) == [i as u8, (i >> 8) as u8]
}

#[test]
fn a_superpage_dataspace_faults_in_one_large_entry_per_block() {
    let (mut set, s) = set_with_spaces(1);
    let d = superpages(&mut set, 2 * BLOCK);
    let a = attach(&mut set, s[0], d, 2 * BLOCK, 0, 21);
    assert_eq!(a.as_usize() % BLOCK, 0);
    // One store: one fault, one large entry for the whole block.
    let flushes = mmu(&set, s[0]).large_flush_count();
    write(&mut set, s[0], off(a, 5 * P + 1), b"large");
    let large = mmu(&set, s[0]).large_entries();
    assert_eq!(large.len(), 1);
    assert_eq!(large[0].0, page(a));
    assert_eq!(large[0].1.frame, frame_of(&mut set, d, 0));
    assert_eq!(large[0].1.rights, Rights::RW);
    assert_eq!(mmu(&set, s[0]).mapped_pages(), LARGE_PAGES);
    assert_eq!(mmu(&set, s[0]).large_flush_count(), flushes + 1, "the new entry is flushed as one");
    let t = mmu(&set, s[0]).translate_entry(page(off(a, 300 * P))).unwrap();
    assert_eq!((t.0.frame, t.1), (frame_of(&mut set, d, 300 * P), EntrySize::Large));
    // Every page of the block reads without another fault; the data is the dataspace's.
    stamp(&mut set, s[0], a, BLOCK);
    assert_eq!(mmu(&set, s[0]).large_entries().len(), 1);
    let mut b = [0; 5];
    set.manager_mut().read(d, (5 * P + 1) as u64, &mut b).unwrap();
    assert_eq!(&b, b"large");
    assert!((0..LARGE_PAGES).all(|i| stamped(&mut set, s[0], a, i)));
    // The second block: a read fault maps it whole too.
    assert_eq!(read(&mut set, s[0], off(a, BLOCK + 3), 1), [0]);
    assert_eq!(mmu(&set, s[0]).large_entries().len(), 2);
    // A whole detach takes both entries away with large flushes.
    let before = mmu(&set, s[0]).large_flush_count();
    set.detach(s[0], a, 2 * BLOCK, DetachFlags::empty()).unwrap();
    set.check_invariants();
    assert_eq!(mmu(&set, s[0]).mapped_pages(), 0);
    assert_eq!(mmu(&set, s[0]).large_flush_count(), before + 1);
}

#[test]
fn unaligned_attachments_and_small_regions_map_small_pages() {
    let (mut set, s) = set_with_spaces(1);
    let d = superpages(&mut set, 2 * BLOCK);
    // An offset that is not 2 MiB aligned: no block of the region starts a block of the
    // dataspace.
    let a = attach(&mut set, s[0], d, BLOCK, P as u64, 21);
    write(&mut set, s[0], a, b"x");
    assert!(mmu(&set, s[0]).large_entries().is_empty());
    assert_eq!(mmu(&set, s[0]).mapped_pages(), 1);
    // A region smaller than a block.
    let b = attach(&mut set, s[0], d, BLOCK - P, 0, 21);
    write(&mut set, s[0], b, b"y");
    assert!(mmu(&set, s[0]).large_entries().is_empty());
    // An address that is not 2 MiB aligned (a 4 KiB-aligned search after a 4 KiB region).
    let c = attach(&mut set, s[0], d, BLOCK, BLOCK as u64, 12);
    if !c.as_usize().is_multiple_of(BLOCK) {
        write(&mut set, s[0], c, b"z");
        assert!(mmu(&set, s[0]).large_entries().is_empty());
    }
    // An anonymous dataspace whose frames are not yet there: small pages, lazily.
    let anon = set.manager_mut().mem_open(FactoryId::ROOT, OWNER, BLOCK as u64, 21, DmFlags::empty(), "anon").unwrap();
    let e = attach(&mut set, s[0], anon, BLOCK, 0, 21);
    write(&mut set, s[0], e, b"lazy");
    assert!(mmu(&set, s[0]).large_entries().is_empty());
    assert_eq!(set.manager().frames_held(PoolId::DEFAULT) % LARGE_PAGES as u64, 1, "one frame for the anonymous page");
}

#[test]
fn a_partial_detach_splits_the_entry_and_the_rest_keeps_its_translations() {
    let (mut set, s) = set_with_spaces(1);
    let d = superpages(&mut set, BLOCK);
    let a = attach(&mut set, s[0], d, BLOCK, 0, 21);
    stamp(&mut set, s[0], a, BLOCK);
    assert_eq!(mmu(&set, s[0]).large_entries().len(), 1);
    set.detach(s[0], off(a, 100 * P), 2 * P, DetachFlags::empty()).unwrap();
    set.check_invariants();
    let m = mmu(&set, s[0]);
    m.check_invariants();
    assert!(m.large_entries().is_empty(), "split");
    assert_eq!(m.mapped_pages(), LARGE_PAGES - 2);
    assert!(m.translate(page(off(a, 100 * P))).is_none() && m.translate(page(off(a, 101 * P))).is_none());
    let kept = m.translate_entry(page(off(a, 102 * P))).unwrap();
    assert_eq!(kept.1, EntrySize::Small);
    assert_eq!(kept.0.frame, frame_of(&mut set, d, 102 * P));
    // The detached pages fault and are refused; the others read what was written.
    let e = set.load(s[0], off(a, 100 * P), &mut [0]).unwrap_err();
    assert!(matches!(e, SpaceError::Op(FaultError::NoRegion(_))));
    assert!((0..LARGE_PAGES).filter(|i| !(100..102).contains(i)).all(|i| stamped(&mut set, s[0], a, i)));
    assert_eq!(mmu(&set, s[0]).mapped_pages(), LARGE_PAGES - 2, "no page faulted again");
}

#[test]
fn a_protect_of_part_of_the_block_splits_the_entry() {
    let (mut set, s) = set_with_spaces(1);
    let d = superpages(&mut set, BLOCK);
    let a = attach(&mut set, s[0], d, BLOCK, 0, 21);
    stamp(&mut set, s[0], a, BLOCK);
    set.protect(s[0], off(a, 8 * P), 8 * P, Rights::READ).unwrap();
    set.check_invariants();
    let m = mmu(&set, s[0]);
    m.check_invariants();
    assert!(m.large_entries().is_empty());
    assert_eq!(m.mapped_pages(), LARGE_PAGES);
    for i in [0, 7, 16, 511] {
        assert_eq!(m.translate(page(off(a, i * P))).unwrap().rights, Rights::RW, "page {i}");
    }
    for i in 8..16 {
        assert_eq!(m.translate(page(off(a, i * P))).unwrap().rights, Rights::READ, "page {i}");
    }
    assert!(set.store(s[0], off(a, 9 * P), b"no").is_err(), "a protected page refuses stores");
    write(&mut set, s[0], off(a, 16 * P), b"ok");
    assert!((0..LARGE_PAGES).filter(|&i| i != 16).all(|i| stamped(&mut set, s[0], a, i)));
    // A protect of the whole block keeps it one entry.
    let b = attach(&mut set, s[0], d, BLOCK, 0, 21);
    write(&mut set, s[0], b, b"b");
    let flushes = mmu(&set, s[0]).flush_count();
    set.protect(s[0], b, BLOCK, Rights::READ).unwrap();
    let large = mmu(&set, s[0]).large_entries();
    assert_eq!(large.len(), 1);
    assert_eq!(large[0].1.rights, Rights::READ);
    assert!(mmu(&set, s[0]).flush_count() > flushes);
    assert!(set.store(s[0], b, b"no").is_err());
    assert_eq!(read(&mut set, s[0], b, 1), b"b");
}

#[test]
fn a_shrink_unmaps_the_pages_past_the_size_and_keeps_the_others() {
    let (mut set, s) = set_with_spaces(2);
    let d = superpages(&mut set, BLOCK);
    let a = attach(&mut set, s[0], d, BLOCK, 0, 21);
    let b = attach(&mut set, s[1], d, BLOCK, 0, 21);
    stamp(&mut set, s[0], a, BLOCK);
    write(&mut set, s[0], off(a, 300 * P + 2), &[0xab]);
    assert!(stamped(&mut set, s[1], b, 511));
    assert_eq!(mmu(&set, s[1]).large_entries().len(), 1);
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, (300 * P + 5) as u64, &mut r).unwrap();
    }
    set.check_invariants();
    for (id, at) in [(s[0], a), (s[1], b)] {
        let m = mmu(&set, id);
        m.check_invariants();
        assert!(m.large_entries().is_empty());
        assert_eq!(m.mapped_pages(), 301, "the pages up to the new size keep their translations");
        assert!(m.translate(page(off(at, 301 * P))).is_none());
        assert!(set.load(id, off(at, 301 * P), &mut [0]).is_err(), "past the size");
        assert!((0..300).all(|i| stamped(&mut set, id, at, i)));
        // The last page shows its bytes up to the size, zeros after.
        assert_eq!(read(&mut set, id, off(at, 300 * P + 2), 6), [0xab, 0, 0, 0, 0, 0]);
    }
    // The block no longer qualifies as a whole: a detach and a new attach map small pages.
    set.detach(s[0], a, BLOCK, DetachFlags::empty()).unwrap();
    let c = attach(&mut set, s[0], d, BLOCK, 0, 21);
    assert!(stamped(&mut set, s[0], c, 3));
    assert!(mmu(&set, s[0]).large_entries().is_empty());
}

#[test]
fn a_copy_on_write_break_splits_the_entry_and_the_copy_keeps_the_old_bytes() {
    // An anonymous dataspace whose pages were populated one by one from an empty pool:
    // consecutive frames from a 2 MiB-aligned one, so the backing gives its block whole.
    let (mut set, s) = set_with_spaces(2);
    let src = set.manager_mut().mem_open(FactoryId::ROOT, OWNER, BLOCK as u64, 21, DmFlags::empty(), "anon").unwrap();
    {
        let (m, mut r) = set.manager_and_revoker();
        m.allocate(OWNER, src, 0, BLOCK as u64, &mut r).unwrap();
    }
    let a = attach(&mut set, s[0], src, BLOCK, 0, 21);
    stamp(&mut set, s[0], a, BLOCK);
    assert_eq!(mmu(&set, s[0]).large_entries().len(), 1, "the populated block maps whole");
    let copy = set.copy_on_write(OWNER, src, "copy").unwrap();
    set.check_invariants();
    // The source is write-protected: the large entry stays, read-only.
    let large = mmu(&set, s[0]).large_entries();
    assert_eq!(large.len(), 1);
    assert_eq!(large[0].1.rights, Rights::READ);
    let b = attach(&mut set, s[1], copy, BLOCK, 0, 21);
    assert!(stamped(&mut set, s[1], b, 200));
    assert!(mmu(&set, s[1]).large_entries().is_empty(), "shared frames map small");
    // A write in the source breaks copy-on-write on one page: the entry splits, that page
    // gets a new frame, the others keep the shared frames, read-only.
    let shared = |set: &Set, i: usize| mmu(set, s[1]).translate(page(off(b, i * P))).unwrap().frame;
    assert!(stamped(&mut set, s[1], b, 201));
    let (old, old_next) = (shared(&set, 200), shared(&set, 201));
    write(&mut set, s[0], off(a, 200 * P + 7), b"new");
    let m = mmu(&set, s[0]);
    m.check_invariants();
    assert!(m.large_entries().is_empty());
    let broken = m.translate(page(off(a, 200 * P))).unwrap();
    assert_ne!(broken.frame, old);
    assert_eq!(broken.rights, Rights::RW);
    let other = m.translate(page(off(a, 201 * P))).unwrap();
    assert_eq!((other.frame, other.rights), (old_next, Rights::READ));
    assert_eq!(read(&mut set, s[0], off(a, 200 * P + 7), 3), b"new");
    assert!(stamped(&mut set, s[1], b, 200), "the copy keeps the old bytes");
    assert!((0..LARGE_PAGES).filter(|&i| i != 200).all(|i| stamped(&mut set, s[0], a, i)));
    assert!((0..LARGE_PAGES).all(|i| stamped(&mut set, s[1], b, i)));
}

#[test]
fn a_write_to_a_large_read_only_entry_regains_the_right_in_place() {
    // Write-protected whole (a copy-on-write copy), then the copy goes away: the source's
    // frames are its own again, and the write fault gives the large entry its right back.
    let (mut set, s) = set_with_spaces(1);
    let src = set.manager_mut().mem_open(FactoryId::ROOT, OWNER, BLOCK as u64, 21, DmFlags::empty(), "anon").unwrap();
    {
        let (m, mut r) = set.manager_and_revoker();
        m.allocate(OWNER, src, 0, BLOCK as u64, &mut r).unwrap();
    }
    let a = attach(&mut set, s[0], src, BLOCK, 0, 21);
    assert_eq!(read(&mut set, s[0], a, 1), [0]);
    let copy = set.copy_on_write(OWNER, src, "copy").unwrap();
    set.manager_mut().close(OWNER, copy).unwrap();
    assert_eq!(mmu(&set, s[0]).large_entries()[0].1.rights, Rights::READ);
    write(&mut set, s[0], off(a, 9 * P), b"w");
    let large = mmu(&set, s[0]).large_entries();
    assert_eq!(large.len(), 1, "still one entry");
    assert_eq!(large[0].1.rights, Rights::RW);
    assert_eq!(read(&mut set, s[0], off(a, 9 * P), 1), b"w");
}

#[test]
fn a_large_entry_never_shows_bytes_past_the_size() {
    // 2 MiB + 4 KiB: the second block has one page of the size, so it maps small.
    let (mut set, s) = set_with_spaces(1);
    let d = superpages(&mut set, BLOCK + P);
    let a = attach(&mut set, s[0], d, 2 * BLOCK, 0, 21);
    write(&mut set, s[0], off(a, BLOCK), b"last");
    assert!(mmu(&set, s[0]).large_entries().is_empty());
    assert!(set.load(s[0], off(a, BLOCK + P), &mut [0]).is_err());
    write(&mut set, s[0], a, b"first");
    assert_eq!(mmu(&set, s[0]).large_entries().len(), 1);
    let Err(SpaceError::Op(e)) = set.resolve(s[0], off(a, BLOCK + 2 * P), Access::Read) else {
        panic!("a page past the size resolves")
    };
    assert!(matches!(e, FaultError::Backing(_)));
}
