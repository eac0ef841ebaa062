//! The harness: a region map, its MMU, a mock backing and RAM, driven side by side with the
//! [`Model`], and the check after every action.

use super::*;

/// How many actions of each kind succeeded, so a run can show it exercised them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Areas reserved.
    pub reserved: u64,
    /// Regions attached (in areas among them: `attached_in_area`).
    pub attached: u64,
    /// Regions attached with `IN_AREA`.
    pub attached_in_area: u64,
    /// Detach steps by result: detached, kept, split.
    pub detached: [u64; 3],
    /// Faults resolved.
    pub faults: u64,
    /// Loads and stores that succeeded.
    pub accesses: u64,
    /// Loads that read back a non-zero byte.
    pub nonzero_loads: u64,
}

/// A region map, its MMU, a mock backing and RAM, driven side by side with a [`Model`].
#[derive(Debug)]
pub struct Harness {
    /// What succeeded so far.
    pub stats: Stats,
    space: AddressSpace<MockId, SoftMmu>,
    backing: MockBacking,
    ram: SparseRam,
    model: Model,
    ids: Vec<MockId>,
    /// Actions applied so far.
    pub steps: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

const FIRST_FRAME: u64 = 0x100;

/// The page of the window a single action's `page` names.
fn single(page: u8) -> usize {
    SINGLE_START + page as usize
}

fn va(page: usize) -> VirtAddr {
    VirtAddr::new(WINDOW_START + page * PAGE_SIZE)
}

fn page_of(addr: VirtAddr) -> usize {
    (addr.as_usize() - WINDOW_START) / PAGE_SIZE
}

impl Harness {
    /// A fresh harness: an empty map over [`WINDOW_PAGES`] pages and [`DATASPACES`]
    /// dataspaces.
    #[must_use]
    pub fn new() -> Self {
        let mut backing = MockBacking::new(Frame::from_number(FIRST_FRAME));
        // The map checks every attachment against its dataspace's size.
        backing.tell_sizes(true);
        let ids = (0..DATASPACES).map(|d| backing.create(DATASPACE_PAGES, dataspace_rights(d))).collect();
        Harness {
            space: AddressSpace::new(RegionMap::new(va(0), WINDOW_PAGES * PAGE_SIZE), SoftMmu::new()),
            backing,
            ram: SparseRam::new(),
            model: Model::new(),
            ids,
            steps: 0,
            stats: Stats::default(),
        }
    }

    /// The region map under test.
    #[must_use]
    pub fn map(&self) -> &RegionMap<MockId> {
        &self.space.map
    }

    /// Applies `action` to both sides and checks that they agree.
    ///
    /// # Panics
    /// When the region map and the model disagree or an invariant breaks.
    pub fn apply(&mut self, action: &Action) {
        self.steps += 1;
        match *action {
            Action::Reserve { page, pages, search, reserved, align } => {
                self.reserve(page, pages, search, reserved, align)
            }
            Action::FreeArea { page } => self.free_area(single(page)),
            Action::Attach { page, pages, ds, offset, rights, search, in_area, eager, detach_free, align } => {
                let mut flags = Flags::empty();
                flags.set(Flags::SEARCH_ADDR, search);
                flags.set(Flags::IN_AREA, in_area);
                flags.set(Flags::EAGER_MAP, eager);
                flags.set(Flags::DETACH_FREE, detach_free);
                let req =
                    PageAttach::new(single(page), pages as usize % 16 + 1, ds as usize % DATASPACES, rights_of(rights));
                self.attach(PageAttach { offset: offset as usize % 32, flags, align: align % 4, ..req });
            }
            Action::Detach { page, pages, overlap, keep } => {
                let mut f = if overlap { DetachFlags::OVERLAP } else { DetachFlags::EXACT };
                f.set(DetachFlags::KEEP, keep);
                self.detach(single(page), pages as usize % 16 + 1, f);
            }
            Action::DetachAll { page, pages, overlap } => {
                self.detach_all(single(page), pages as usize % 64 + 1, overlap);
            }
            Action::Find { page, pages } => self.find(single(page), pages as usize % 8 + 1),
            Action::Fault { page, access } => {
                let access = [Access::Read, Access::Write, Access::Execute][access as usize % 3];
                self.fault(single(page), access);
            }
            Action::Load { page, within, len } => {
                self.load(single(page), within as usize % PAGE_SIZE, len as usize % (2 * PAGE_SIZE) + 1);
            }
            Action::Store { page, within, len, value } => {
                let (w, l) = (within as usize % PAGE_SIZE, len as usize % (2 * PAGE_SIZE) + 1);
                self.store(single(page), w, l, value);
            }
            Action::List { page, batch, areas } => self.list(single(page), batch as usize % 5 + 1, areas),
            Action::Run { lane, shifted, count, stride, order } => {
                self.run(lane as usize % LANES, shifted, count as usize % RUN_MAX + 1, stride as usize % 3 + 1, order)
            }
            Action::DetachRun { lane, every, order } => {
                self.detach_run(lane as usize % LANES, every as usize % 3 + 1, order)
            }
            Action::Protect { page, pages, rights } => {
                self.protect(single(page), pages as usize % 16 + 1, rights_of(rights));
            }
            Action::Remap { page, old, new, how, to } => {
                self.remap(single(page), old as usize % 8 + 1, new as usize % 16 + 1, how % 3, single(to));
            }
            Action::AttachReplace { page, pages, ds, offset, rights, in_area, detach_free } => {
                let mut flags = Flags::empty();
                flags.set(Flags::IN_AREA, in_area);
                flags.set(Flags::DETACH_FREE, detach_free);
                self.attach_replace(
                    single(page),
                    pages as usize % 16 + 1,
                    ds as usize % DATASPACES,
                    offset as usize % 32,
                    rights_of(rights),
                    flags,
                );
            }
            Action::Merge { page, pages } => self.merge(single(page), pages as usize % 32 + 1),
            Action::RegionsIn { page, pages } => self.regions_in(single(page), pages as usize % 64 + 1),
        }
        self.check();
    }

    fn reserve(&mut self, page: u8, pages: u8, search: bool, reserved: bool, align: u8) {
        let (page, pages, align) = (single(page), pages as usize % 32 + 1, align % 4);
        let mut flags = Flags::empty();
        flags.set(Flags::SEARCH_ADDR, search);
        flags.set(Flags::RESERVED, reserved);
        let got = self.space.map.reserve_area(va(page), pages * PAGE_SIZE, flags, 12 + align);
        let m = &self.model;
        let want = if search {
            m.first_fit(page, WINDOW_PAGES, pages, 1 << align, true)
        } else {
            (page + pages <= WINDOW_PAGES && !m.top_taken(page, page + pages)).then_some(page)
        };
        match (got, want) {
            (Ok(a), Some(p)) => {
                assert_eq!(page_of(a), p, "reserve_area placed the area elsewhere");
                self.model.areas.insert(p, (p + pages, reserved));
                self.stats.reserved += 1;
            }
            (Err(e), None) => assert_eq!(e.code(), -L4_EADDRNOTAVAIL, "{e}"),
            (g, w) => panic!("reserve_area: got {g:?}, model {w:?}"),
        }
    }

    fn free_area(&mut self, page: usize) {
        let got = self.space.map.free_area(va(page));
        match (got, self.model.area_at(page)) {
            (Ok(a), Some((s, e, _))) => {
                assert_eq!((page_of(a.start), a.size / PAGE_SIZE), (s, e - s));
                self.model.areas.remove(&s);
                for (_, r) in self.model.regions.range_mut(s..e) {
                    r.in_area = false;
                }
            }
            (Err(e), None) => assert_eq!(e.code(), -L4_ENOENT),
            (g, w) => panic!("free_area: got {g:?}, model {w:?}"),
        }
    }

    fn attach(&mut self, req: PageAttach) {
        let PageAttach { page, pages, ds, offset, rights, flags, align } = req;
        let req = AttachRequest {
            start: va(page),
            size: pages * PAGE_SIZE,
            flags,
            rights,
            cache: memkit_types::CacheMode::WriteBack,
            dataspace: self.ids[ds],
            offset: (offset * PAGE_SIZE) as u64,
            align: 12 + align,
            limit: None,
            replace: false,
        };
        let got = self.space.attach(&mut self.backing, &req);
        let m = &self.model;
        let want = (|| {
            if !dataspace_rights(ds).contains(rights) || offset + pages > DATASPACE_PAGES {
                return None;
            }
            let in_area = flags.contains(Flags::IN_AREA);
            let (lo, hi) = if in_area {
                let (s, e, reserved) = m.area_at(page)?;
                if reserved {
                    return None;
                }
                (s, e)
            } else {
                (0, WINDOW_PAGES)
            };
            let at = if flags.contains(Flags::SEARCH_ADDR) {
                m.first_fit(page.max(lo), hi, pages, 1 << align, !in_area)?
            } else {
                let taken = if in_area {
                    m.regions_overlap(page, page + pages).is_some()
                } else {
                    m.top_taken(page, page + pages)
                };
                if page < lo || page + pages > hi || taken {
                    return None;
                }
                page
            };
            Some(at)
        })();
        match (got, want) {
            (Ok(a), Some(p)) => {
                assert_eq!(page_of(a), p, "attach placed the region elsewhere");
                let r = ModelRegion {
                    end: p + pages,
                    ds,
                    offset,
                    rights,
                    flags: flags & (Flags::EAGER_MAP | Flags::DETACH_FREE),
                    in_area: flags.contains(Flags::IN_AREA),
                };
                self.model.regions.insert(p, r);
                self.model.attachments[ds] += 1;
                self.stats.attached += 1;
                self.stats.attached_in_area += u64::from(flags.contains(Flags::IN_AREA));
                if flags.contains(Flags::EAGER_MAP) && !rights.is_empty() {
                    for i in 0..pages {
                        assert!(
                            self.space.mmu.translate(Page::containing_address(va(p + i))).is_some(),
                            "eager map left a hole"
                        );
                    }
                }
            }
            (Err(e), None) => assert!(e.code() < 0),
            (g, w) => panic!("attach {req:?}: got {g:?}, model {w:?}"),
        }
    }

    /// The seed's detach step on the model.
    fn model_detach(
        &mut self,
        s: usize,
        e: usize,
        flags: DetachFlags,
    ) -> Option<(DetachResult, bool, usize, usize, usize)> {
        let gs = self.model.regions_overlap(s, e)?;
        let g = self.model.regions[&gs];
        let whole = flags.contains(DetachFlags::OVERLAP) || (s <= gs && e >= g.end);
        let (cs, ce, result) = if whole {
            (gs, g.end, DetachResult::DetachedDs)
        } else if s <= gs {
            (gs, e, DetachResult::KeptDs)
        } else if e >= g.end {
            (s, g.end, DetachResult::KeptDs)
        } else {
            (s, e, DetachResult::SplitDs)
        };
        self.model.regions.remove(&gs);
        if cs > gs {
            self.model.regions.insert(gs, ModelRegion { end: cs, ..g });
        }
        if ce < g.end {
            self.model.regions.insert(ce, ModelRegion { offset: g.offset + ce - gs, ..g });
        }
        match result {
            DetachResult::DetachedDs => self.model.attachments[g.ds] -= 1,
            DetachResult::SplitDs => self.model.attachments[g.ds] += 1,
            DetachResult::KeptDs => {}
        }
        let again = self.model.regions_overlap(s, e).is_some();
        self.stats.detached[result as usize] += 1;
        Some((result, again, cs, ce - cs, g.offset + cs - gs))
    }

    fn detach(&mut self, page: usize, pages: usize, flags: DetachFlags) {
        let got = self.space.detach(&mut self.backing, va(page), pages * PAGE_SIZE, flags);
        let want = self.model_detach(page, page + pages, flags);
        match (got, want) {
            (Ok(d), Some((result, again, s, n, off))) => {
                assert_eq!(
                    (d.result, d.again, page_of(d.start), d.size / PAGE_SIZE, d.offset as usize / PAGE_SIZE),
                    (result, again, s, n, off)
                );
                for i in 0..n {
                    assert!(
                        self.space.mmu.translate(Page::containing_address(va(s + i))).is_none(),
                        "detached page still mapped"
                    );
                }
            }
            (Err(e), None) => assert_eq!(e.code(), -L4_ENOENT),
            (g, w) => panic!("detach: got {g:?}, model {w:?}"),
        }
    }

    fn detach_all(&mut self, page: usize, pages: usize, overlap: bool) {
        let flags = if overlap { DetachFlags::OVERLAP } else { DetachFlags::EXACT };
        let got = self.space.map.detach_all(&mut self.backing, &mut self.space.mmu, va(page), pages * PAGE_SIZE, flags);
        let mut want = Vec::new();
        while let Some(step) = self.model_detach(page, page + pages, flags) {
            want.push(step);
            if !step.1 {
                break;
            }
        }
        match got {
            Ok(steps) => {
                let got: Vec<_> = steps
                    .iter()
                    .map(|d| (d.result, d.again, page_of(d.start), d.size / PAGE_SIZE, d.offset as usize / PAGE_SIZE))
                    .collect();
                assert_eq!(got, want);
                assert!(self.space.map.find(va(page), pages * PAGE_SIZE).map_or(true, |f| matches!(f, Found::Area(_))));
            }
            Err(e) => {
                assert!(want.is_empty(), "detach_all failed: {e}");
                assert_eq!(e.code(), -L4_ENOENT);
            }
        }
    }

    fn find(&mut self, page: usize, pages: usize) {
        let got = self.space.map.find(va(page), pages * PAGE_SIZE);
        let m = &self.model;
        match (got, m.regions_overlap(page, page + pages)) {
            (Ok(Found::Region(r)), Some(s)) => {
                let mr = m.regions[&s];
                assert_eq!(
                    (
                        page_of(r.start),
                        r.size / PAGE_SIZE,
                        r.offset as usize / PAGE_SIZE,
                        r.rights,
                        r.flags,
                        r.dataspace
                    ),
                    (s, mr.end - s, mr.offset, mr.rights, mr.flags, self.ids[mr.ds])
                );
            }
            (got, None) => {
                let area = m.areas.iter().find(|(a, v)| **a < page + pages && v.0 > page);
                match (got, area) {
                    (Ok(f @ Found::Area(a)), Some((s, (e, reserved)))) => {
                        assert_eq!((page_of(a.start), a.size / PAGE_SIZE), (*s, e - s));
                        assert!(f.flags().contains(Flags::IN_AREA));
                        assert_eq!(f.flags().contains(Flags::RESERVED), *reserved);
                    }
                    (Err(e), None) => assert_eq!(e.code(), -L4_ENOENT),
                    (g, w) => panic!("find: got {g:?}, model area {w:?}"),
                }
            }
            (g, w) => panic!("find: got {g:?}, model {w:?}"),
        }
    }

    fn fault(&mut self, page: usize, access: Access) {
        let got = self.space.resolve(&mut self.backing, va(page), access);
        match (got, self.model.allows(page, access)) {
            (Ok(t), Some((ds, off))) => {
                assert_eq!(Some(t.frame), self.backing.frame(self.ids[ds], (off * PAGE_SIZE) as u64));
                assert!(t.rights.allows(access));
                self.stats.faults += 1;
            }
            (Err(e), None) => assert!(e.code() < 0),
            (g, w) => panic!("fault {access:?} at page {page}: got {g:?}, model {w:?}"),
        }
    }

    /// The model's view of `[page*4096 + within, .. + len)`: the dataspace byte positions,
    /// or `None` when some page faults unresolvably.
    fn model_bytes(&self, page: usize, within: usize, len: usize, access: Access) -> Option<Vec<(usize, usize)>> {
        let start = page * PAGE_SIZE + within;
        let end = start + len;
        if end > WINDOW_PAGES * PAGE_SIZE {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut p = start / PAGE_SIZE;
        while p * PAGE_SIZE < end {
            let (ds, off) = self.model.allows(p, access)?;
            let lo = start.max(p * PAGE_SIZE);
            let hi = end.min((p + 1) * PAGE_SIZE);
            for b in lo..hi {
                out.push((ds, off * PAGE_SIZE + b % PAGE_SIZE));
            }
            p += 1;
        }
        Some(out)
    }

    fn load(&mut self, page: usize, within: usize, len: usize) {
        let mut buf = vec![0u8; len];
        let addr = VirtAddr::new(WINDOW_START + page * PAGE_SIZE + within);
        let got = self.space.load(&mut self.backing, &self.ram, addr, &mut buf);
        match (got, self.model_bytes(page, within, len, Access::Read)) {
            (Ok(()), Some(pos)) => {
                for (i, (ds, b)) in pos.iter().enumerate() {
                    assert_eq!(buf[i], self.model.bytes[*ds][*b], "loaded byte {i} differs from the model");
                }
                self.stats.accesses += 1;
                self.stats.nonzero_loads += u64::from(buf.iter().any(|b| *b != 0));
            }
            (Err(e), None) => assert!(e.code() < 0),
            (g, w) => panic!("load: got {g:?}, model {:?}", w.map(|v| v.len())),
        }
    }

    fn store(&mut self, page: usize, within: usize, len: usize, value: u8) {
        let buf: Vec<u8> = (0..len).map(|i| value.wrapping_add(i as u8)).collect();
        let addr = VirtAddr::new(WINDOW_START + page * PAGE_SIZE + within);
        let got = self.space.store(&mut self.backing, &self.ram, addr, &buf);
        match (got, self.model_bytes(page, within, len, Access::Write)) {
            (Ok(()), Some(pos)) => {
                for (i, (ds, b)) in pos.iter().enumerate() {
                    self.model.bytes[*ds][*b] = buf[i];
                }
                self.stats.accesses += 1;
            }
            (Err(e), None) => assert!(e.code() < 0),
            (g, w) => panic!("store: got {g:?}, model {:?}", w.map(|v| v.len())),
        }
    }

    /// The translations of `pages` pages from `page` on.
    fn translations(&self, page: usize, pages: usize) -> Vec<Option<memkit_region::Translation>> {
        (page..page + pages).map(|p| self.space.mmu.translate(Page::containing_address(va(p)))).collect()
    }

    fn protect(&mut self, page: usize, pages: usize, rights: Rights) {
        let before = self.translations(page, pages);
        let got = self.space.map.protect(&mut self.backing, &mut self.space.mmu, va(page), pages * PAGE_SIZE, rights);
        let m = &self.model;
        let want = (|| {
            let mut p = page;
            while p < page + pages {
                let (s, r) = m.region_at(p).ok_or(-memkit_types::l4::L4_ENOENT)?;
                if !r.rights.contains(rights) && !dataspace_rights(r.ds).contains(rights) {
                    return Err(-memkit_types::l4::L4_EPERM);
                }
                let _ = s;
                p = r.end;
            }
            Ok(())
        })();
        match (got, want) {
            (Ok(flush), Ok(())) => {
                flush.flush(&self.space.mmu);
                for edge in [page, page + pages] {
                    if self.model.region_at(edge).is_some_and(|(_, r)| r.rights != rights) {
                        self.model.split(edge);
                    }
                }
                let inside: Vec<usize> = self.model.regions.range(page..page + pages).map(|(p, _)| *p).collect();
                for p in inside {
                    self.model.regions.get_mut(&p).expect("listed").rights = rights;
                }
                self.model.merge_range(page, page + pages);
                self.model.recount();
                // Pages keep their frames; each keeps its own rights within the new ones.
                for (i, (b, a)) in before.iter().zip(self.translations(page, pages)).enumerate() {
                    let expect = b.and_then(|t| {
                        let r = t.rights & rights;
                        (!r.is_empty()).then_some(memkit_region::Translation { rights: r, ..t })
                    });
                    assert_eq!(a, expect, "protect changed page {} beyond what it must", page + i);
                }
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
            (g, w) => panic!("protect {page}+{pages} {rights:?}: got {g:?}, model {w:?}"),
        }
    }

    fn remap(&mut self, page: usize, old: usize, new: usize, how: u8, to: usize) {
        let remap = match how {
            0 => memkit_region::Remap::InPlace,
            1 => memkit_region::Remap::MayMove,
            _ => memkit_region::Remap::Fixed(va(to)),
        };
        let before = self.translations(page, old);
        let got = self.space.map.remap(
            &mut self.backing,
            &mut self.space.mmu,
            va(page),
            old * PAGE_SIZE,
            new * PAGE_SIZE,
            remap,
        );
        let want = self.model_remap(page, old, new, how, to);
        self.model.recount();
        match (got, want) {
            (Ok(a), Ok(p)) => {
                assert_eq!(page_of(a), p, "remap put the region elsewhere");
                if p != page {
                    // The frames moved with the pages.
                    let after = self.translations(p, old.min(new));
                    assert_eq!(&before[..old.min(new)], &after[..], "remap lost or changed a mapped page");
                    for i in 0..old {
                        let q = page + i;
                        if !(p..p + new).contains(&q) {
                            assert!(
                                self.model.region_at(q).is_some()
                                    || self.space.mmu.translate(Page::containing_address(va(q))).is_none(),
                                "remap left the old page {q} mapped"
                            );
                        }
                    }
                }
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
            (g, w) => panic!("remap {page}+{old} -> {new} ({how}, {to}): got {g:?}, model {w:?}"),
        }
    }

    /// The model's remap: the new start page, or the error code (nothing changed).
    fn model_remap(&mut self, page: usize, old: usize, new: usize, how: u8, to: usize) -> Result<usize, i32> {
        use memkit_types::l4::{L4_EADDRNOTAVAIL, L4_ENOENT, L4_ERANGE};
        let m = &mut self.model;
        let (gs, g) = m.region_at(page).filter(|(_, g)| page + old <= g.end).ok_or(-L4_ENOENT)?;
        let offset = g.offset + page - gs;
        if new > old && offset + new > DATASPACE_PAGES {
            return Err(-L4_ERANGE);
        }
        let old_end = page + old;
        if how != 2 {
            if new == old {
                return Ok(page);
            }
            if new < old {
                m.cut(page + new, old_end);
                return Ok(page);
            }
            let new_end = page + new;
            let free = old_end == g.end
                && if g.in_area {
                    m.area_at(gs).is_some_and(|a| new_end <= a.1) && m.regions_overlap(g.end, new_end).is_none()
                } else {
                    new_end <= WINDOW_PAGES && !m.top_taken(g.end, new_end)
                };
            if free {
                m.regions.insert(gs, ModelRegion { end: new_end, ..g });
                m.merge_at(new_end);
                return Ok(page);
            }
            if how == 0 {
                return Err(-L4_EADDRNOTAVAIL);
            }
        }
        let (t, in_area) = if how == 2 {
            if to + new > WINDOW_PAGES || (to < old_end && page < to + new) {
                return Err(-L4_EADDRNOTAVAIL);
            }
            let area = m.areas.iter().find(|(s, a)| **s < to + new && a.0 > to).map(|(s, a)| (*s, a.0, a.1));
            let in_area = match area {
                None => false,
                Some((s, e, reserved)) if s <= to && to + new <= e && !reserved => true,
                Some(_) => return Err(-L4_EADDRNOTAVAIL),
            };
            (to, in_area)
        } else {
            let (lo, hi) =
                if g.in_area { m.area_at(gs).map(|a| (a.0, a.1)).expect("an area") } else { (0, WINDOW_PAGES) };
            (m.first_fit(lo, hi, new, 1, !g.in_area).ok_or(-L4_EADDRNOTAVAIL)?, g.in_area)
        };
        if how == 2 {
            m.cut(t, t + new);
        }
        m.cut(page, old_end);
        m.regions.insert(t, ModelRegion { end: t + new, offset, in_area, ..g });
        m.merge_at(t);
        m.merge_at(t + new);
        Ok(t)
    }

    fn attach_replace(&mut self, page: usize, pages: usize, ds: usize, offset: usize, rights: Rights, flags: Flags) {
        let req = AttachRequest::new(self.ids[ds], pages * PAGE_SIZE, rights)
            .at(va(page))
            .offset((offset * PAGE_SIZE) as u64)
            .flags(flags)
            .replacing();
        let got = self.space.attach(&mut self.backing, &req);
        let m = &self.model;
        let in_area = flags.contains(Flags::IN_AREA);
        let want = (|| {
            if !dataspace_rights(ds).contains(rights) || offset + pages > DATASPACE_PAGES {
                return None;
            }
            if in_area {
                let (s, e, reserved) = m.area_at(page)?;
                (!reserved && s <= page && page + pages <= e).then_some(page)
            } else {
                (page + pages <= WINDOW_PAGES && m.area_overlap(page, page + pages).is_none()).then_some(page)
            }
        })();
        match (got, want) {
            (Ok(a), Some(p)) => {
                assert_eq!(page_of(a), p);
                self.model.cut(p, p + pages);
                let r = ModelRegion { end: p + pages, ds, offset, rights, flags: flags & Flags::DETACH_FREE, in_area };
                self.model.regions.insert(p, r);
                self.model.recount();
                self.stats.attached += 1;
                for i in 0..pages {
                    assert!(
                        self.space.mmu.translate(Page::containing_address(va(p + i))).is_none(),
                        "a replaced page is still mapped"
                    );
                }
            }
            (Err(e), None) => assert!(e.code() < 0),
            (g, w) => panic!("attach replacing {req:?}: got {g:?}, model {w:?}"),
        }
    }

    fn merge(&mut self, page: usize, pages: usize) {
        let got = self.space.map.merge(&mut self.backing, va(page), pages * PAGE_SIZE);
        let want = self.model.merge_range(page, page + pages);
        self.model.recount();
        assert_eq!(got, want, "merge");
    }

    fn regions_in(&mut self, page: usize, pages: usize) {
        let got: Vec<(usize, usize)> = self
            .space
            .map
            .regions_in(va(page), pages * PAGE_SIZE)
            .map(|r| (page_of(r.start), page_of(r.start) + r.size / PAGE_SIZE))
            .collect();
        let m = &self.model;
        let first = m.regions_overlap(page, page + pages).unwrap_or(page + pages);
        let want: Vec<(usize, usize)> = m.regions.range(first..page + pages).map(|(s, r)| (*s, r.end)).collect();
        assert_eq!(got, want, "regions_in");
    }

    /// The first page of `lane`.
    fn lane_start(lane: usize) -> usize {
        lane * LANE_PAGES
    }

    fn run(&mut self, lane: usize, shifted: bool, count: usize, stride: usize, order: u8) {
        let first = Self::lane_start(lane) + usize::from(shifted);
        let count = count.min((LANE_PAGES - usize::from(shifted)).div_ceil(stride));
        for i in run_order(count, order, self.steps ^ count as u64) {
            let ds = i % DATASPACES;
            self.attach(PageAttach {
                offset: i % DATASPACE_PAGES,
                ..PageAttach::new(first + i * stride, 1, ds, Rights::READ)
            });
        }
    }

    fn detach_run(&mut self, lane: usize, every: usize, order: u8) {
        let start = Self::lane_start(lane);
        let regions: Vec<(usize, usize)> =
            self.model.regions.range(start..start + LANE_PAGES).step_by(every).map(|(s, r)| (*s, r.end - s)).collect();
        for i in run_order(regions.len(), order, self.steps) {
            let (page, pages) = regions[i];
            self.detach(page, pages, DetachFlags::EXACT);
        }
    }

    fn list(&mut self, page: usize, batch: usize, areas: bool) {
        let generation = self.space.map.generation();
        let mut from = va(page);
        if areas {
            let mut got = Vec::new();
            let mut buf = vec![AreaInfo { start: va(0), size: 0, flags: Flags::empty() }; batch];
            loop {
                let l = self.space.map.get_areas(from, &mut buf);
                assert_eq!(l.generation, generation);
                got.extend(buf[..l.count].iter().map(|a| (page_of(a.start), page_of(a.start) + a.size / PAGE_SIZE)));
                match l.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            let want: Vec<_> = self.model.areas.range(page..).map(|(s, a)| (*s, a.0)).collect();
            assert_eq!(got, want);
        } else {
            let mut got = Vec::new();
            let blank = RegionInfo {
                start: va(0),
                size: 0,
                offset: 0,
                rights: Rights::empty(),
                cache: memkit_types::CacheMode::WriteBack,
                flags: Flags::empty(),
                dataspace: self.ids[0],
            };
            let mut buf = vec![blank; batch];
            loop {
                let l = self.space.map.get_regions(from, &mut buf);
                assert!(l.count <= batch);
                got.extend(buf[..l.count].iter().map(|r| (page_of(r.start), page_of(r.start) + r.size / PAGE_SIZE)));
                match l.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            let want: Vec<_> = self.model.regions.range(page..).map(|(s, r)| (*s, r.end)).collect();
            assert_eq!(got, want);
        }
    }

    /// Checks the invariants and that the MMU shows only what the regions allow.
    ///
    /// # Panics
    /// On the first difference.
    pub fn check(&self) {
        self.space.map.check_invariants();
        self.space.mmu.check_invariants();
        for (p, t) in self.space.mmu.translations() {
            let page = page_of(p.start_address());
            let (s, r) = self.model.region_at(page).expect("a translation outside every region");
            assert!(r.rights.contains(t.rights), "a translation beyond its region's rights");
            let off = (r.offset + page - s) * PAGE_SIZE;
            assert_eq!(
                Some(t.frame),
                self.backing.frame(self.ids[r.ds], off as u64),
                "a translation of the wrong frame"
            );
        }
        for (d, id) in self.ids.iter().enumerate() {
            assert_eq!(self.backing.attachments(*id), self.model.attachments[d], "attachment count of dataspace {d}");
        }
        assert_eq!(self.space.map.region_count(), self.model.regions.len());
        assert_eq!(self.space.map.area_count(), self.model.areas.len());
        let _ = self.backing.rights(self.ids[0]);
    }
}
