//! Address spaces over the real dataspace manager: sharing, copy-on-write across spaces,
//! revocation on shrink, references and `DETACH_FREE`.

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_region::{AttachRequest, DetachFlags, Flags, Mmu, RegionMap, SoftMmu};
use memkit_spaces::{SpaceId, SpaceSet};
use memkit_testkit::{ModelFrameSource, SparseRam};
use memkit_types::l4::L4_ERANGE;
use memkit_types::{Access, Frame, FrameCount, FrameSource, PAGE_SIZE, Page, Rights, VirtAddr};

type Set = SpaceSet<ModelFrameSource, SparseRam, SoftMmu>;

const OWNER: ClientId = ClientId::new(1, 0);
const P: usize = PAGE_SIZE;

fn set_with_spaces(n: usize) -> (Set, Vec<SpaceId>) {
    let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x1000), FrameCount::new(1024)));
    let mut set = SpaceSet::new(m);
    let ids = (0..n)
        .map(|i| set.add_space(RegionMap::new(VirtAddr::new(0x10_0000 * (i + 1)), 0x10_0000), SoftMmu::new()))
        .collect();
    (set, ids)
}

fn ds(set: &mut Set, pages: usize) -> DataspaceId {
    set.manager_mut().mem_open(FactoryId::ROOT, OWNER, (pages * P) as u64, 0, DmFlags::empty(), "t").unwrap()
}

fn attach(set: &mut Set, id: SpaceId, ds: DataspaceId, pages: usize, rights: Rights) -> VirtAddr {
    let hint = set.space(id).unwrap().map.window_start();
    let a = set.attach(id, &AttachRequest::new(ds, pages * P, rights).search(hint)).unwrap();
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
}

fn off(a: VirtAddr, bytes: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + bytes)
}

fn pool_used(set: &Set) -> u64 {
    let p = set.manager().pool(PoolId::DEFAULT).unwrap();
    p.total_frames().get() - p.free_frames().get()
}

#[test]
fn spaces_sharing_a_dataspace_see_each_others_writes() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 4);
    let a = attach(&mut set, s[0], d, 4, Rights::RW);
    let b = attach(&mut set, s[1], d, 4, Rights::READ);
    write(&mut set, s[0], off(a, 2 * P + 5), b"shared");
    assert_eq!(read(&mut set, s[1], off(b, 2 * P + 5), 6), b"shared");
    assert_eq!(set.attachments(d), 2);
    assert!(set.store(s[1], b, b"no").is_err(), "B attached read-only");
}

#[test]
fn a_cow_copy_in_another_space_does_not_see_writes() {
    let (mut set, s) = set_with_spaces(2);
    let src = ds(&mut set, 4);
    let a = attach(&mut set, s[0], src, 4, Rights::RW);
    write(&mut set, s[0], off(a, P), b"before copy");
    let page_a = Page::containing_address(off(a, P));
    assert!(set.space(s[0]).unwrap().mmu.translate(page_a).unwrap().rights.contains(Rights::WRITE));

    let copy = set.copy_on_write(OWNER, src, "copy").unwrap();
    set.check_invariants();
    // The source's mapping in A lost write access when the frames became shared.
    let t = set.space(s[0]).unwrap().mmu.translate(page_a).unwrap();
    assert!(!t.rights.contains(Rights::WRITE), "the source is write-protected in every space");

    let b = attach(&mut set, s[1], copy, 4, Rights::RW);
    assert_eq!(read(&mut set, s[1], off(b, P), 11), b"before copy");
    let shared = set.space(s[1]).unwrap().mmu.translate(Page::containing_address(off(b, P))).unwrap();
    assert_eq!(shared.frame, t.frame, "the copy shares the frame until a write");

    write(&mut set, s[0], off(a, P), b"A writes...");
    assert_eq!(read(&mut set, s[1], off(b, P), 11), b"before copy", "the copy does not see the source's write");
    write(&mut set, s[1], off(b, P), b"B writes...");
    assert_eq!(read(&mut set, s[0], off(a, P), 11), b"A writes...", "nor the source the copy's");
    assert_eq!(read(&mut set, s[1], off(b, P), 11), b"B writes...");
}

#[test]
fn a_cow_break_unmaps_the_old_frame_in_every_space() {
    // A and B both show the source; C shows the copy. A's write breaks copy-on-write: B's
    // mapping of the old frame must go, so that B sees A's write.
    let (mut set, s) = set_with_spaces(3);
    let src = ds(&mut set, 2);
    let a = attach(&mut set, s[0], src, 2, Rights::RW);
    let b = attach(&mut set, s[1], src, 2, Rights::READ);
    write(&mut set, s[0], a, b"one");
    assert_eq!(read(&mut set, s[1], b, 3), b"one");
    let copy = set.copy_on_write(OWNER, src, "c").unwrap();
    let c = attach(&mut set, s[2], copy, 2, Rights::READ);
    assert_eq!(read(&mut set, s[2], c, 3), b"one");
    write(&mut set, s[0], a, b"two");
    assert_eq!(read(&mut set, s[1], b, 3), b"two", "B sees the source's new frame");
    assert_eq!(read(&mut set, s[2], c, 3), b"one", "C keeps the copy");
}

#[test]
fn shrinking_a_dataspace_unmaps_its_tail_everywhere() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 4);
    let a = attach(&mut set, s[0], d, 4, Rights::RW);
    let b = attach(&mut set, s[1], d, 4, Rights::RW);
    write(&mut set, s[0], off(a, 3 * P), b"tail");
    assert_eq!(read(&mut set, s[1], off(b, 3 * P), 4), b"tail");
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, (2 * P) as u64, &mut r).unwrap();
    }
    set.check_invariants();
    for (id, at) in [(s[0], a), (s[1], b)] {
        assert!(set.space(id).unwrap().mmu.translate(Page::containing_address(off(at, 3 * P))).is_none());
        let e = set.resolve(id, off(at, 3 * P), Access::Read).unwrap_err();
        assert_eq!(e.code(), -L4_ERANGE, "beyond the new size");
    }
    assert_eq!(read(&mut set, s[1], off(b, P), 1), [0]);
}

#[test]
fn shrinking_a_superpage_dataspace_unmaps_the_pages_past_its_new_size() {
    // The shrink keeps the whole superpage of backing, so it frees no page; the pages past
    // the new size must still lose their mappings, in every space.
    let (mut set, s) = set_with_spaces(2);
    let d = set.manager_mut().mem_open(FactoryId::ROOT, OWNER, (2 * P) as u64, 0, DmFlags::SUPERPAGES, "sp").unwrap();
    let a = attach(&mut set, s[0], d, 2, Rights::RW);
    let b = attach(&mut set, s[1], d, 2, Rights::RW);
    write(&mut set, s[0], off(a, P), b"tail");
    assert_eq!(read(&mut set, s[1], off(b, P), 4), b"tail");
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, 0xc8, &mut r).unwrap();
    }
    set.check_invariants();
    for (id, at) in [(s[0], a), (s[1], b)] {
        assert!(set.space(id).unwrap().mmu.translate(Page::containing_address(off(at, P))).is_none());
        let e = set.resolve(id, off(at, P), Access::Read).unwrap_err();
        assert_eq!(e.code(), -L4_ERANGE, "beyond the new size");
    }
    assert_eq!(read(&mut set, s[1], off(b, 0xc8), 1), [0]);
}

#[test]
fn closing_keeps_attached_memory_until_the_last_detach() {
    let (mut set, s) = set_with_spaces(1);
    let d = ds(&mut set, 2);
    let a = attach(&mut set, s[0], d, 2, Rights::RW);
    write(&mut set, s[0], a, b"alive");
    set.manager_mut().close(OWNER, d).unwrap();
    assert_eq!(read(&mut set, s[0], a, 5), b"alive", "the region keeps the memory");
    // Split the region: still one reference from the set.
    set.detach(s[0], off(a, 0), P, DetachFlags::EXACT).unwrap();
    assert_eq!(set.attachments(d), 1);
    let used = pool_used(&set);
    assert!(used > 0);
    set.detach(s[0], off(a, P), P, DetachFlags::EXACT).unwrap();
    set.check_invariants();
    assert_eq!(set.attachments(d), 0);
    assert_eq!(pool_used(&set), 0, "the last detach freed the closed dataspace's frames");
}

#[test]
fn detach_free_clears_the_detached_part() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 2);
    let hint = set.space(s[0]).unwrap().map.window_start();
    let a = set.attach(s[0], &AttachRequest::new(d, 2 * P, Rights::RW).search(hint).flags(Flags::DETACH_FREE)).unwrap();
    let b = attach(&mut set, s[1], d, 2, Rights::READ);
    write(&mut set, s[0], a, b"gone soon");
    write(&mut set, s[0], off(a, P), b"stays");
    assert_eq!(read(&mut set, s[1], b, 9), b"gone soon");
    set.detach(s[0], a, P, DetachFlags::EXACT).unwrap();
    set.check_invariants();
    assert_eq!(read(&mut set, s[1], b, 9), [0; 9], "Detach_free freed the first page");
    assert_eq!(read(&mut set, s[1], off(b, P), 5), b"stays");
    // With Detach_keep nothing is freed.
    set.detach(s[0], off(a, P), P, DetachFlags::EXACT | DetachFlags::KEEP).unwrap();
    assert_eq!(read(&mut set, s[1], off(b, P), 5), b"stays");
}

#[test]
fn removing_a_space_drops_its_references() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 2);
    attach(&mut set, s[0], d, 2, Rights::RW);
    attach(&mut set, s[0], d, 1, Rights::RW);
    attach(&mut set, s[1], d, 1, Rights::RW);
    assert_eq!(set.attachments(d), 3);
    let gone = set.remove_space(s[0]).unwrap();
    assert_eq!(gone.map.region_count(), 0);
    assert_eq!(set.attachments(d), 1);
    assert!(set.space(s[0]).is_none());
    assert!(set.resolve(s[0], VirtAddr::new(0x10_0000), Access::Read).is_err());
    set.check_invariants();
}

/// The same dataspace attached twice in one space: a copy-on-write break through the first
/// region must not leave the second on the old frame (the faulting space is one of the
/// spaces whose mappings of the page are unmapped). The scenario `space a; ds o 4K;
/// attach r1 a o; attach r2 a o; store r1 0 "old"; copy c o cow; store r1 0 "new";
/// load r2 0` must read "new".
#[test]
fn a_cow_break_unmaps_the_old_frame_in_its_own_space() {
    for touch_second_first in [false, true] {
        let (mut set, s) = set_with_spaces(1);
        let o = ds(&mut set, 1);
        let r1 = attach(&mut set, s[0], o, 1, Rights::RW);
        let r2 = attach(&mut set, s[0], o, 1, Rights::RW);
        write(&mut set, s[0], r1, b"old");
        if touch_second_first {
            // The second region maps the shared frame before the copy.
            assert_eq!(read(&mut set, s[0], r2, 3), b"old");
        }
        let c = set.copy_on_write(OWNER, o, "c").unwrap();
        write(&mut set, s[0], r1, b"new");
        assert_eq!(set.cow_breaks(), 1);
        assert_eq!(read(&mut set, s[0], r2, 3), b"new", "r2 still shows the frame from before the break");
        let (t1, t2) = {
            let mmu = &set.space(s[0]).unwrap().mmu;
            (mmu.translate(Page::containing_address(r1)), mmu.translate(Page::containing_address(r2)))
        };
        assert_eq!(t1.map(|t| t.frame), t2.map(|t| t.frame));
        let mut buf = [0; 3];
        set.manager_mut().read(c, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"old", "the copy keeps the old bytes");
    }
}

/// `DETACH_FREE` on a whole region frees its frames when no other region shows them, and
/// a later attachment of the dataspace reads zeros.
#[test]
fn detach_free_of_a_whole_region_gives_its_frames_back() {
    let (mut set, s) = set_with_spaces(1);
    let d = ds(&mut set, 2);
    let hint = set.space(s[0]).unwrap().map.window_start();
    let req = AttachRequest::new(d, 2 * P, Rights::RW).search(hint).flags(Flags::DETACH_FREE);
    let a = set.attach(s[0], &req).unwrap();
    write(&mut set, s[0], a, b"private");
    write(&mut set, s[0], off(a, P), b"bytes");
    assert_eq!(pool_used(&set), 2);
    set.detach(s[0], a, 2 * P, DetachFlags::EXACT).unwrap();
    set.check_invariants();
    assert_eq!(pool_used(&set), 0, "Detach_free gave the frames back");
    let b = attach(&mut set, s[0], d, 2, Rights::READ);
    assert_eq!(read(&mut set, s[0], b, 7), [0; 7]);
    assert_eq!(read(&mut set, s[0], off(b, P), 5), [0; 5]);
}

#[test]
fn a_read_only_handle_attaches_read_only_and_its_mappings_are_still_revoked() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 4);
    let ro = set.manager().share(d, Rights::READ).unwrap();
    assert_eq!(ro.rights(), Rights::READ);
    assert_eq!(set.manager().rights(ro), Ok(Rights::READ));
    // Attaching beyond the handle's rights: -L4_EPERM, nothing attached.
    let hint = set.space(s[1]).unwrap().map.window_start();
    let e = set.attach(s[1], &AttachRequest::new(ro, 4 * P, Rights::RW).search(hint)).unwrap_err();
    assert_eq!(e.code(), -1, "{e}");
    assert_eq!(set.attachments(d), 0);
    // Within them: reads see the owner's writes, stores fault and are refused.
    let a = attach(&mut set, s[0], d, 4, Rights::RW);
    let b = attach(&mut set, s[1], ro, 4, Rights::READ);
    write(&mut set, s[0], off(a, P + 3), b"owner");
    assert_eq!(read(&mut set, s[1], off(b, P + 3), 5), b"owner");
    assert!(set.store(s[1], off(b, P), b"no").is_err());
    let t = set.space(s[1]).unwrap().mmu.translate(Page::containing_address(off(b, P))).unwrap();
    assert_eq!(t.rights & Rights::WRITE, Rights::empty());
    // The manager refuses a write fault through the read-only handle, whatever the region says.
    assert_eq!(set.manager_mut().map(ro, 0, Access::Write).unwrap_err().code(), -1);
    // A handle cannot be widened again.
    assert_eq!(set.manager().share(ro, Rights::RW).unwrap_err().code(), -1);
    // A shrink through the owner's handle revokes the read-only handle's mappings too: the
    // freed page is no longer reachable from B.
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, P as u64, &mut r).unwrap();
    }
    set.check_invariants();
    assert!(set.space(s[1]).unwrap().mmu.translate(Page::containing_address(off(b, P))).is_none());
    let mut buf = [0u8; 1];
    assert!(set.load(s[1], off(b, P), &mut buf).is_err());
    assert_eq!(set.attachments(d), 2);
}

#[test]
fn an_eager_attach_that_breaks_copy_on_write_on_several_pages_unmaps_every_old_frame() {
    let (mut set, s) = set_with_spaces(2);
    let d = ds(&mut set, 2);
    let a = attach(&mut set, s[0], d, 2, Rights::RW);
    write(&mut set, s[0], a, b"p0");
    write(&mut set, s[0], off(a, P), b"p1");
    let _copy = set.copy_on_write(OWNER, d, "copy").unwrap();
    set.check_invariants();
    assert_eq!(read(&mut set, s[0], a, 2), b"p0");
    assert_eq!(read(&mut set, s[0], off(a, P), 2), b"p1");
    // B's eager attach maps both pages writable: each gets a frame of its own, and A's
    // mappings of both old frames must go.
    let hint = set.space(s[1]).unwrap().map.window_start();
    let b = set.attach(s[1], &AttachRequest::new(d, 2 * P, Rights::RW).search(hint).flags(Flags::EAGER_MAP)).unwrap();
    set.check_invariants();
    write(&mut set, s[1], b, b"B!");
    write(&mut set, s[1], off(b, P), b"B?");
    assert_eq!(read(&mut set, s[0], a, 2), b"B!");
    assert_eq!(read(&mut set, s[0], off(a, P), 2), b"B?");
}
