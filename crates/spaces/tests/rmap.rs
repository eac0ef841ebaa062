//! The reverse index: it holds exactly the regions a scan of every space finds, through
//! attaches, partial detaches (trims and splits), removed spaces, copies, resizes and
//! closes; and revocation visits only the regions that show the revoked pages.

use std::cell::Cell;
use std::rc::Rc;

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_region::{
    AttachRequest, DetachFlags, Flags, MapError, Mmu, RegionMap, Remap, SoftMmu, TlbFlush, Translation,
};
use memkit_spaces::{SpaceId, SpaceSet};
use memkit_testkit::{ModelFrameSource, SparseRam};
use memkit_types::{Access, CacheMode, Frame, FrameCount, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OWNER: ClientId = ClientId::new(1, 0);
const P: usize = PAGE_SIZE;

/// The MMU calls a revocation makes, counted.
#[derive(Debug, Default)]
struct Calls {
    unmap: Cell<u64>,
    protect: Cell<u64>,
    translate: Cell<u64>,
}

/// A [`SoftMmu`] that counts the calls made to it.
#[derive(Debug)]
struct Counting {
    inner: SoftMmu,
    calls: Rc<Calls>,
}

impl Mmu for Counting {
    fn map(
        &mut self,
        page: Page,
        frame: Frame,
        count: PageCount,
        rights: Rights,
        cache: CacheMode,
    ) -> Result<TlbFlush, MapError> {
        self.inner.map(page, frame, count, rights, cache)
    }
    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        self.calls.unmap.set(self.calls.unmap.get() + 1);
        self.inner.unmap(page, count)
    }
    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        self.calls.protect.set(self.calls.protect.get() + 1);
        self.inner.protect(page, count, rights)
    }
    fn translate(&self, page: Page) -> Option<Translation> {
        self.calls.translate.set(self.calls.translate.get() + 1);
        self.inner.translate(page)
    }
    fn flush(&self, start: Page, count: PageCount) {
        self.inner.flush(start, count);
    }
}

fn manager(frames: u64) -> Manager<ModelFrameSource, SparseRam> {
    let mut m = Manager::new(Config::new(1 << 32), SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x1000), FrameCount::new(frames)));
    m
}

fn open<M: Mmu>(set: &mut SpaceSet<ModelFrameSource, SparseRam, M>, bytes: u64) -> DataspaceId {
    set.manager_mut().mem_open(FactoryId::ROOT, OWNER, bytes, 0, DmFlags::empty(), "r").unwrap()
}

fn reset(calls: &Calls) {
    calls.unmap.set(0);
    calls.protect.set(0);
    calls.translate.set(0);
}

#[test]
fn revocation_visits_only_the_regions_that_show_the_pages() {
    let calls = Rc::new(Calls::default());
    let mut set = SpaceSet::new(manager(4096));
    let window = VirtAddr::new(0x1000_0000);
    let s = set.add_space(RegionMap::new(window, 1 << 30), Counting { inner: SoftMmu::new(), calls: calls.clone() });
    // 2000 regions of another dataspace around the one region of `d`.
    let other = open(&mut set, 4 * P as u64);
    for _ in 0..1000 {
        set.attach(s, &AttachRequest::new(other, P, Rights::RW).search(window)).unwrap();
    }
    let d = open(&mut set, 4 * P as u64);
    let a = set.attach(s, &AttachRequest::new(d, 4 * P, Rights::RW).search(window)).unwrap();
    for _ in 0..1000 {
        set.attach(s, &AttachRequest::new(other, P, Rights::RW).search(window)).unwrap();
    }
    set.check_invariants();
    assert_eq!(set.attachments(other), 2000);
    assert_eq!(set.index().attachments(d), vec![(s, set.space(s).unwrap().map.region_at(a).unwrap().attachment())]);
    set.resolve(s, a, Access::Write).unwrap();

    // A copy-on-write copy write-protects the source: one protect, of the one region.
    reset(&calls);
    let _copy = set.copy_on_write(OWNER, d, "c").unwrap();
    assert_eq!((calls.protect.get(), calls.unmap.get()), (1, 0));
    assert!(!set.space(s).unwrap().mmu.translate(Page::containing_address(a)).unwrap().rights.contains(Rights::WRITE));

    // The write breaks copy-on-write: the stale frame is looked for in the one region only.
    reset(&calls);
    set.resolve(s, a, Access::Write).unwrap();
    assert_eq!(set.cow_breaks(), 1);
    assert!(calls.translate.get() <= 3, "{} translations for one page", calls.translate.get());

    // A shrink unmaps the lost pages of the one region.
    reset(&calls);
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, P as u64, &mut r).unwrap();
    }
    assert_eq!((calls.protect.get(), calls.unmap.get()), (0, 1));
    set.check_invariants();
}

#[test]
fn a_revoked_range_visits_the_attachments_of_that_range() {
    // One dataspace of 64 pages shown page by page by 64 regions: a shrink to 32 pages
    // unmaps in the 32 regions that show the lost pages, and no other.
    let calls = Rc::new(Calls::default());
    let mut set = SpaceSet::new(manager(4096));
    let window = VirtAddr::new(0x1000_0000);
    let s = set.add_space(RegionMap::new(window, 1 << 30), Counting { inner: SoftMmu::new(), calls: calls.clone() });
    let d = open(&mut set, 64 * P as u64);
    for i in 0..64 {
        let req = AttachRequest::new(d, P, Rights::RW).offset((i * P) as u64).search(window);
        set.attach(s, &req).unwrap();
    }
    reset(&calls);
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, 32 * P as u64, &mut r).unwrap();
    }
    assert_eq!(calls.unmap.get(), 32);
    set.check_invariants();
}

#[test]
fn splits_and_trims_keep_the_index_and_the_reference() {
    let mut set: SpaceSet<_, _, SoftMmu> = SpaceSet::new(manager(256));
    let s = set.add_space(RegionMap::new(VirtAddr::new(0x10_0000), 1 << 24), SoftMmu::new());
    let d = open(&mut set, 8 * P as u64);
    let a = set.attach(s, &AttachRequest::new(d, 8 * P, Rights::RW).search(VirtAddr::new(0))).unwrap();
    let at = |n: usize| VirtAddr::new(a.as_usize() + n * P);
    set.manager_mut().close(OWNER, d).unwrap();
    // Split: pages 0..3 and 5..8 remain.
    set.detach(s, at(3), 2 * P, DetachFlags::EXACT).unwrap();
    set.check_invariants();
    let offsets: Vec<(u64, usize)> = set.index().attachments(d).iter().map(|(_, x)| (x.offset, x.size)).collect();
    assert_eq!(offsets, [(0, 3 * P), (5 * P as u64, 3 * P)]);
    // Trim the head of the first piece and the tail of the second.
    set.detach(s, at(0), P, DetachFlags::EXACT).unwrap();
    set.detach(s, at(7), P, DetachFlags::EXACT).unwrap();
    set.check_invariants();
    let offsets: Vec<(u64, usize)> = set.index().attachments(d).iter().map(|(_, x)| (x.offset, x.size)).collect();
    assert_eq!(offsets, [(P as u64, 2 * P), (5 * P as u64, 2 * P)]);
    // The closed dataspace lives while a piece shows it, and goes with the last.
    assert!(set.manager_mut().map(d, P as u64, Access::Read).is_ok());
    set.detach(s, at(1), 7 * P, DetachFlags::OVERLAP).unwrap();
    set.detach(s, at(1), 7 * P, DetachFlags::OVERLAP).unwrap();
    set.check_invariants();
    assert_eq!(set.index().dataspaces(), 0);
    assert!(set.manager_mut().map(d, P as u64, Access::Read).is_err(), "the last detach dropped the reference");
}

#[test]
fn a_removed_space_slot_is_reused_and_its_regions_leave_the_index() {
    let mut set: SpaceSet<_, _, SoftMmu> = SpaceSet::new(manager(256));
    let ids: Vec<SpaceId> = (0..3)
        .map(|i| set.add_space(RegionMap::new(VirtAddr::new(0x100_0000 * (i + 1)), 1 << 20), SoftMmu::new()))
        .collect();
    let d = open(&mut set, 4 * P as u64);
    for &s in &ids {
        let hint = set.space(s).unwrap().map.window_start();
        set.attach(s, &AttachRequest::new(d, 2 * P, Rights::RW).search(hint)).unwrap();
    }
    set.remove_space(ids[1]).unwrap();
    set.check_invariants();
    assert_eq!(set.attachments(d), 2);
    let again = set.add_space(RegionMap::new(VirtAddr::new(0x800_0000), 1 << 20), SoftMmu::new());
    assert_eq!(again, ids[1], "the lowest free slot");
    assert_eq!(set.space(again).unwrap().map.region_count(), 0);
    set.check_invariants();
}

/// Random attaches, partial detaches, areas, copies, resizes, closes, stores and removed
/// spaces: after every action the index equals a scan of every space.
#[test]
fn the_index_equals_a_scan_after_random_actions() {
    let mut rng = SmallRng::seed_from_u64(0x726d_6170);
    let mut set: SpaceSet<_, _, SoftMmu> = SpaceSet::new(manager(2048));
    // Regions stay within their dataspaces: a grow past the end is refused.
    set.set_check_sizes(true);
    let windows: Vec<VirtAddr> = (0..3).map(|i| VirtAddr::new(0x1000_0000 * (i + 1))).collect();
    let mut ids: Vec<Option<SpaceId>> =
        windows.iter().map(|&w| Some(set.add_space(RegionMap::new(w, 1 << 22), SoftMmu::new()))).collect();
    let mut dataspaces: Vec<DataspaceId> = Vec::new();
    let mut done = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..20_000 {
        let which = rng.random_range(0..ids.len());
        let kind = rng.random_range(0..14);
        let ok = match (kind, ids[which]) {
            (0, _) if dataspaces.len() < 16 => {
                let size = rng.random_range(1..12 * P as u64);
                dataspaces.push(open(&mut set, size));
                Some("open")
            }
            (1 | 2, Some(s)) if !dataspaces.is_empty() => {
                let d = dataspaces[rng.random_range(0..dataspaces.len())];
                let mut flags = Flags::empty();
                if rng.random_bool(0.2) {
                    flags |= Flags::EAGER_MAP;
                }
                if rng.random_bool(0.2) {
                    flags |= Flags::DETACH_FREE;
                }
                let req = AttachRequest::new(d, rng.random_range(1..8) * P, Rights::RW)
                    .offset(rng.random_range(0..4) * P as u64)
                    .flags(flags)
                    .search(windows[which]);
                set.attach(s, &req).ok().map(|_| "attach")
            }
            (3 | 4, Some(s)) => {
                let regions = set.space(s).unwrap().map.regions();
                if regions.is_empty() {
                    None
                } else {
                    let r = regions[rng.random_range(0..regions.len())];
                    let pages = r.size / P;
                    let first = rng.random_range(0..pages);
                    let n = rng.random_range(1..=pages - first);
                    let start = VirtAddr::new(r.start.as_usize() + first * P);
                    let flags = if rng.random_bool(0.7) { DetachFlags::EXACT } else { DetachFlags::OVERLAP };
                    let flags = if rng.random_bool(0.3) { flags | DetachFlags::KEEP } else { flags };
                    set.detach(s, start, n * P, flags).ok().map(|_| "detach")
                }
            }
            (5, Some(s)) => {
                let regions = set.space(s).unwrap().map.regions();
                if regions.is_empty() {
                    None
                } else {
                    let r = regions[rng.random_range(0..regions.len())];
                    let at = VirtAddr::new(r.start.as_usize() + rng.random_range(0..r.size));
                    set.store(s, at, &[rng.random()]).ok().map(|()| "store")
                }
            }
            (6, _) if !dataspaces.is_empty() => {
                let d = dataspaces[rng.random_range(0..dataspaces.len())];
                let flags = if rng.random_bool(0.7) { DmFlags::COW } else { DmFlags::empty() };
                let (m, mut r) = set.manager_and_revoker();
                match m.copy(OWNER, d, flags, "c", &mut r) {
                    Ok(c) if dataspaces.len() < 16 => {
                        dataspaces.push(c);
                        Some("copy")
                    }
                    Ok(_) => Some("copy"),
                    Err(_) => None,
                }
            }
            (7, _) if !dataspaces.is_empty() => {
                let d = dataspaces[rng.random_range(0..dataspaces.len())];
                let (m, mut r) = set.manager_and_revoker();
                m.resize(OWNER, d, rng.random_range(1..12 * P as u64), &mut r).ok().map(|()| "resize")
            }
            (8, _) if !dataspaces.is_empty() => {
                let d = dataspaces.swap_remove(rng.random_range(0..dataspaces.len()));
                set.manager_mut().close(OWNER, d).ok().map(|()| "close")
            }
            (9, Some(s)) if rng.random_bool(0.05) => {
                set.remove_space(s).unwrap();
                ids[which] = None;
                Some("remove space")
            }
            (9, None) => {
                ids[which] = Some(set.add_space(RegionMap::new(windows[which], 1 << 22), SoftMmu::new()));
                Some("add space")
            }
            (10, Some(s)) => {
                // Rights for a range that may span several regions (and holes).
                let regions = set.space(s).unwrap().map.regions();
                if regions.is_empty() {
                    None
                } else {
                    let r = regions[rng.random_range(0..regions.len())];
                    let start = VirtAddr::new(r.start.as_usize() + rng.random_range(0..r.size / P) * P);
                    let rights = [Rights::READ, Rights::RW, Rights::empty(), Rights::RWX][rng.random_range(0..4)];
                    set.protect(s, start, rng.random_range(1..12) * P, rights).ok().map(|()| "protect")
                }
            }
            (11, Some(s)) => {
                let regions = set.space(s).unwrap().map.regions();
                if regions.is_empty() {
                    None
                } else {
                    let r = regions[rng.random_range(0..regions.len())];
                    let pages = r.size / P;
                    let first = rng.random_range(0..pages);
                    let old = rng.random_range(1..=pages - first);
                    let start = VirtAddr::new(r.start.as_usize() + first * P);
                    let how = match rng.random_range(0..3) {
                        0 => Remap::InPlace,
                        1 => Remap::MayMove,
                        _ => Remap::Fixed(VirtAddr::new(windows[which].as_usize() + rng.random_range(0..64) * P)),
                    };
                    set.remap(s, start, old * P, rng.random_range(1..10) * P, how).ok().map(|_| "remap")
                }
            }
            (12, Some(s)) if !dataspaces.is_empty() => {
                let d = dataspaces[rng.random_range(0..dataspaces.len())];
                let at = VirtAddr::new(windows[which].as_usize() + rng.random_range(0..64) * P);
                let flags = if rng.random_bool(0.3) { Flags::DETACH_FREE } else { Flags::empty() };
                let req = AttachRequest::new(d, rng.random_range(1..4) * P, Rights::RW).flags(flags).at(at).replacing();
                set.attach(s, &req).ok().map(|_| "replace")
            }
            (13, Some(s)) => set.merge(s, windows[which], 1 << 22).ok().filter(|n| *n > 0).map(|_| "merge"),
            _ => None,
        };
        if let Some(k) = ok {
            *done.entry(k).or_insert(0) += 1;
        }
        set.check_invariants();
    }
    eprintln!("{done:?}");
    for k in [
        "attach",
        "detach",
        "store",
        "copy",
        "resize",
        "close",
        "remove space",
        "add space",
        "protect",
        "remap",
        "replace",
    ] {
        assert!(done.get(k).copied().unwrap_or(0) > 10, "too few {k}: {done:?}");
    }
}
