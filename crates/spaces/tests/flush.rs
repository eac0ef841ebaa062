//! TLB flushes: one operation flushes each space's MMU once however many regions it
//! changes, and no frame is freed while a translation to it may still be cached (every
//! unmap is flushed before the frame goes back to its source).

use std::sync::Mutex;

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_region::{AttachRequest, DetachFlags, MapError, Mmu, RegionMap, SoftMmu, TlbFlush, Translation};
use memkit_spaces::{SpaceId, SpaceSet};
use memkit_testkit::{ModelFrameSource, SparseRam};
use memkit_types::{
    Access, CacheMode, Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SIZE, Page, PageCount, PhysAddr,
    Rights, VirtAddr,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OWNER: ClientId = ClientId::new(1, 0);
const P: usize = PAGE_SIZE;

/// Translations unmapped and not flushed yet: (page, frame).
type Unflushed = &'static Mutex<Vec<(Page, Frame)>>;

/// A frame source that refuses to take back a frame some MMU may still translate to.
#[derive(Debug)]
struct Guarded {
    inner: ModelFrameSource,
    unflushed: Unflushed,
}

impl FrameSource for Guarded {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        self.inner.allocate(count, align, limit)
    }
    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.inner.allocate_at(start, count)
    }
    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        let range = start.number()..start.number() + count.get();
        let stale = self.unflushed.lock().unwrap().iter().find(|(_, f)| range.contains(&f.number())).copied();
        assert_eq!(stale, None, "a frame freed while a translation to it may be cached");
        self.inner.free(start, count)
    }
    fn free_frames(&self) -> FrameCount {
        self.inner.free_frames()
    }
    fn total_frames(&self) -> FrameCount {
        self.inner.total_frames()
    }
}

/// A [`SoftMmu`] that records what it unmapped until a flush covers it, and counts flushes.
#[derive(Debug)]
struct Gathering {
    inner: SoftMmu,
    unflushed: Unflushed,
}

impl Gathering {
    fn forget(&self, start: Page, count: PageCount) {
        let end = start.number().saturating_add(count.get());
        self.unflushed.lock().unwrap().retain(|(p, _)| p.number() < start.number() || p.number() >= end);
    }
}

impl Mmu for Gathering {
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
        let mut gone = Vec::new();
        for i in 0..count.get() {
            let p = page.checked_add(PageCount::new(i)).unwrap();
            if let Some(t) = self.inner.translate(p) {
                gone.push((p, t.frame));
            }
        }
        let r = self.inner.unmap(page, count);
        if r.is_ok() {
            self.unflushed.lock().unwrap().extend(gone);
        }
        r
    }
    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        self.inner.protect(page, count, rights)
    }
    fn translate(&self, page: Page) -> Option<Translation> {
        self.inner.translate(page)
    }
    fn flush(&self, start: Page, count: PageCount) {
        self.forget(start, count);
        self.inner.flush(start, count);
    }
    fn flush_batch(&self, batch: &TlbFlush) {
        for (start, count) in batch.ranges() {
            self.forget(start, count);
        }
        self.inner.flush_batch(batch);
    }
}

type Set = SpaceSet<Guarded, SparseRam, Gathering>;

fn set_with_spaces(n: usize) -> (Set, Vec<SpaceId>, Unflushed) {
    let unflushed: Unflushed = Box::leak(Box::new(Mutex::new(Vec::new())));
    let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
    let inner = ModelFrameSource::new(Frame::from_number(0x1000), FrameCount::new(1024));
    m.set_pool(PoolId::DEFAULT, Guarded { inner, unflushed });
    let mut set = SpaceSet::new(m);
    let ids = (0..n)
        .map(|i| {
            let map = RegionMap::new(VirtAddr::new(0x100_0000 * (i + 1)), 0x100_0000);
            set.add_space(map, Gathering { inner: SoftMmu::new(), unflushed })
        })
        .collect();
    (set, ids, unflushed)
}

fn ds(set: &mut Set, pages: usize) -> DataspaceId {
    set.manager_mut().mem_open(FactoryId::ROOT, OWNER, (pages * P) as u64, 0, DmFlags::empty(), "t").unwrap()
}

/// Attaches `ds` in `id` as `pages` one-page regions side by side (page `i` at offset `i`),
/// and touches each for writing. Returns the first region's start.
fn attach_page_by_page(set: &mut Set, id: SpaceId, ds: DataspaceId, pages: usize) -> VirtAddr {
    let base = set.space(id).unwrap().map.window_start();
    for i in 0..pages {
        let at = VirtAddr::new(base.as_usize() + i * P);
        set.attach(id, &AttachRequest::new(ds, P, Rights::RW).offset((i * P) as u64).at(at)).unwrap();
        set.resolve(id, at, Access::Write).unwrap();
    }
    set.check_invariants();
    base
}

fn flushes(set: &Set, id: SpaceId) -> u64 {
    set.space(id).unwrap().mmu.inner.flush_count()
}

fn rights_at(set: &Set, id: SpaceId, at: VirtAddr) -> Option<Rights> {
    set.space(id).unwrap().mmu.translate(Page::containing_address(at)).map(|t| t.rights)
}

#[test]
fn a_cow_copy_of_a_dataspace_shown_by_8_regions_flushes_once() {
    let (mut set, s, unflushed) = set_with_spaces(1);
    let d = ds(&mut set, 8);
    let base = attach_page_by_page(&mut set, s[0], d, 8);
    assert_eq!(set.attachments(d), 8);
    let before = flushes(&set, s[0]);
    set.copy_on_write(OWNER, d, "copy").unwrap();
    assert_eq!(flushes(&set, s[0]) - before, 1, "one flush for 8 regions");
    for i in 0..8 {
        assert_eq!(rights_at(&set, s[0], VirtAddr::new(base.as_usize() + i * P)), Some(Rights::READ));
    }
    assert!(unflushed.lock().unwrap().is_empty());
    set.check_invariants();
}

#[test]
fn a_shrink_across_spaces_flushes_each_space_once_before_freeing() {
    let (mut set, s, unflushed) = set_with_spaces(3);
    let d = ds(&mut set, 8);
    for &id in &s {
        attach_page_by_page(&mut set, id, d, 8);
    }
    let before: Vec<u64> = s.iter().map(|&id| flushes(&set, id)).collect();
    let free_before = set.manager().pool(PoolId::DEFAULT).unwrap().free_frames().get();
    {
        let (m, mut r) = set.manager_and_revoker();
        m.resize(OWNER, d, P as u64, &mut r).unwrap();
    }
    for (&id, b) in s.iter().zip(before) {
        assert_eq!(flushes(&set, id) - b, 1, "one flush per space for 7 regions");
        let base = set.space(id).unwrap().map.window_start();
        assert_eq!(rights_at(&set, id, base), Some(Rights::RW));
        for i in 1..8 {
            assert_eq!(rights_at(&set, id, VirtAddr::new(base.as_usize() + i * P)), None);
        }
    }
    assert_eq!(set.manager().pool(PoolId::DEFAULT).unwrap().free_frames().get(), free_before + 7);
    assert!(unflushed.lock().unwrap().is_empty());
    set.check_invariants();
}

#[test]
fn a_cow_break_flushes_once_however_many_regions_show_the_page() {
    // The page of a copy-on-write dataspace shown by 2 and by 6 regions of one space: the
    // break costs the same number of flushes.
    let mut cost = Vec::new();
    for shown in [2usize, 6] {
        let (mut set, s, unflushed) = set_with_spaces(1);
        let d = ds(&mut set, 1);
        let base = set.space(s[0]).unwrap().map.window_start();
        for i in 0..shown {
            let at = VirtAddr::new(base.as_usize() + i * P);
            set.attach(s[0], &AttachRequest::new(d, P, Rights::RW).at(at)).unwrap();
            set.resolve(s[0], at, Access::Write).unwrap();
        }
        set.copy_on_write(OWNER, d, "copy").unwrap();
        let before = flushes(&set, s[0]);
        set.resolve(s[0], base, Access::Write).unwrap();
        assert_eq!(set.cow_breaks(), 1);
        cost.push(flushes(&set, s[0]) - before);
        for i in 1..shown {
            assert_eq!(rights_at(&set, s[0], VirtAddr::new(base.as_usize() + i * P)), None, "the stale frame");
        }
        assert!(unflushed.lock().unwrap().is_empty());
        set.check_invariants();
    }
    assert_eq!(cost[0], cost[1], "flushes for 2 and 6 regions");
}

/// Random operations over dataspaces shown page by page in three spaces: after each, no
/// unmap is left unflushed, no frame was freed before its flush (the source checks), and
/// the set's invariants hold.
#[test]
fn no_frame_is_freed_before_its_flush_after_random_operations() {
    let mut rng = SmallRng::seed_from_u64(0x666c_7573);
    let (mut set, s, unflushed) = set_with_spaces(3);
    let mut live: Vec<(DataspaceId, usize)> = Vec::new();
    for step in 0..400 {
        match rng.random_range(0..8) {
            0 | 1 if live.len() < 6 => {
                let pages = rng.random_range(1..6);
                let d = ds(&mut set, pages);
                for &id in &s {
                    let hint = set.space(id).unwrap().map.window_start();
                    let req = AttachRequest::new(d, pages * P, Rights::RW).search(hint);
                    let flags =
                        if rng.random_bool(0.5) { memkit_region::Flags::DETACH_FREE } else { Default::default() };
                    let _ = set.attach(id, &req.flags(flags));
                }
                live.push((d, pages));
            }
            2 if !live.is_empty() => {
                let (d, pages) = live[rng.random_range(0..live.len())];
                let keep = rng.random_range(0..pages) as u64 * P as u64;
                let (m, mut r) = set.manager_and_revoker();
                let _ = m.resize(OWNER, d, keep.max(P as u64), &mut r);
            }
            3 if !live.is_empty() => {
                let (d, pages) = live[rng.random_range(0..live.len())];
                let (m, mut r) = set.manager_and_revoker();
                let _ = m.clear(OWNER, d, 0, (pages * P) as u64 / 2 + 7, &mut r);
            }
            4 if !live.is_empty() => {
                let (d, _) = live[rng.random_range(0..live.len())];
                if let Ok(c) = set.copy_on_write(OWNER, d, "c") {
                    let _ = set.manager_mut().close(OWNER, c);
                }
            }
            5 if !live.is_empty() => {
                let i = rng.random_range(0..live.len());
                let (d, _) = live.swap_remove(i);
                let _ = set.manager_mut().close(OWNER, d);
            }
            6 => {
                let id = s[rng.random_range(0..s.len())];
                if let Some(r) = set.space(id).unwrap().map.regions().first().copied() {
                    let flags = if rng.random_bool(0.5) { DetachFlags::OVERLAP } else { DetachFlags::empty() };
                    let _ = set.detach(id, r.start, P.min(r.size), flags);
                }
            }
            _ => {
                let id = s[rng.random_range(0..s.len())];
                let regions = set.space(id).unwrap().map.regions();
                if let Some(r) = regions.get(rng.random_range(0..regions.len().max(1))) {
                    let at = VirtAddr::new(r.start.as_usize() + rng.random_range(0..r.size / P) * P);
                    let access = if rng.random_bool(0.5) { Access::Write } else { Access::Read };
                    let _ = set.resolve(id, at, access);
                }
            }
        }
        assert!(unflushed.lock().unwrap().is_empty(), "step {step}: an unmap left unflushed");
        set.check_invariants();
    }
}
