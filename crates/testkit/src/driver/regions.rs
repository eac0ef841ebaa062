//! The driver's actions on address spaces: attach, detach, and loads, stores and touches
//! through the regions.

use super::*;

impl<T: Target> Driver<T> {
    pub(super) fn attach(&mut self, space: u8, ds: u8, page: u8, pages: u8, flags: u8) -> Check {
        let space = space as usize % self.regions.len();
        let Some(id) = self.pick(ds) else { return Ok(()) };
        if self.regions[space].len() >= MAX_REGIONS {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let mut pages = 1 + (pages as usize % 8);
        let mut offset = u64::from(page % 8) * PAGE;
        if flags & 0x40 == 0
            && let Some(i) = self.ds_index(id)
        {
            // Mostly a region over pages the dataspace has (bit 6 asks for the range as drawn).
            let have = self.dataspaces[i].pages().max(1);
            offset = (offset / PAGE % have) * PAGE;
            pages = pages.min((have - offset / PAGE) as usize);
        }
        let mut rights = Rights::READ;
        if flags & 3 != 0 {
            rights |= Rights::WRITE;
        }
        if flags & 3 == 2 {
            rights |= Rights::EXECUTE;
        }
        let free = flags & 4 != 0 && !self.skips.detach_free;
        let eager = flags & 0x38 == 0x38;
        let mut f = Flags::empty();
        if free {
            f |= Flags::DETACH_FREE;
        }
        if eager {
            f |= Flags::EAGER_MAP;
        }
        let (wstart, wsize) = self.target.window(space);
        let req =
            AttachRequest::new(id, pages * PAGE_SIZE, rights).search(VirtAddr::new(wstart)).offset(offset).flags(f);
        let r = self.target.attach(space, &req);
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("attach of a closed dataspace", code);
        };
        // First fit from the window's start.
        let mut spots = self.regions[space].clone();
        spots.sort_by_key(|r| r.start);
        let mut at = wstart;
        for r in &spots {
            if r.start >= at + pages * PAGE_SIZE {
                break;
            }
            at = at.max(r.end());
        }
        if at + pages * PAGE_SIZE > wstart + wsize {
            return self.expect_refused("attach into a full window", code);
        }
        let d = &self.dataspaces[i];
        if eager && offset / PAGE + pages as u64 > d.pages() {
            return self.expect_refused("eager attach past the dataspace's end", code);
        }
        let pool = d.pool;
        let ok = Self::expect_valid("attach", code)?;
        self.counters.fault_out_of_memory += u64::from(!ok);
        if !ok {
            if self.pool_free(pool) > 0 {
                return fail("eager attach out of memory while its pool has free frames");
            }
            return Ok(());
        }
        let Ok(addr) = r else { return Ok(()) };
        if addr.as_usize() != at {
            return fail(format!("attach placed the region at {addr}, first fit is {at:#x}"));
        }
        self.counters.attached += 1;
        self.counters.eager_attaches += u64::from(eager);
        self.counters.attached_twice_in_a_space += u64::from(self.regions[space].iter().any(|r| r.ds == id));
        self.regions[space].push(ModelRegion { start: at, pages, ds: id, offset, rights, free, eager });
        Ok(())
    }

    /// `mprotect` of pages of one region. The model splits the region where the rights
    /// change, then merges at every region edge from the range's start to its end where the
    /// regions match ([`ModelRegion::merges_with`]), as the region map does.
    pub(super) fn protect(&mut self, space: u8, region: u8, from: u8, pages: u8, code: u8) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let r = self.regions[s][ri];
        let first = usize::from(from) % r.pages;
        let n = 1 + usize::from(pages) % (r.pages - first);
        let rights = match code % 4 {
            0 => Rights::READ,
            1 => Rights::READ | Rights::WRITE,
            2 => Rights::READ | Rights::EXECUTE,
            _ => Rights::READ | Rights::WRITE | Rights::EXECUTE,
        };
        let (a, e) = (r.start + first * PAGE_SIZE, r.start + (first + n) * PAGE_SIZE);
        let got = self.target.protect(s, VirtAddr::new(a), e - a, rights);
        if !r.rights.contains(rights) && !self.ds(r.ds).open {
            // Raising rights needs the dataspace's handle, and a closed one allows nothing.
            return match got {
                Err(memkit_region::ProtectError::PermissionDenied { .. }) => {
                    self.counters.refused_requests += 1;
                    Ok(())
                }
                other => fail(format!("protect of {a:#x}..{e:#x} of a closed dataspace to {rights:?}: {other:?}")),
            };
        }
        if let Err(err) = got {
            return fail(format!("protect of {a:#x}..{e:#x} to {rights:?}: {err}"));
        }
        self.counters.protected += 1;
        self.counters.protect_took_rights += u64::from(!rights.contains(r.rights));
        if r.rights != rights {
            let mut pieces = Vec::new();
            if a > r.start {
                pieces.push(ModelRegion { pages: first, ..r });
            }
            pieces.push(ModelRegion { start: a, pages: n, offset: r.offset + (a - r.start) as u64, rights, ..r });
            if e < r.end() {
                pieces.push(ModelRegion {
                    start: e,
                    pages: (r.end() - e) / PAGE_SIZE,
                    offset: r.offset + (e - r.start) as u64,
                    ..r
                });
            }
            self.counters.protect_split += u64::from(pieces.len() > 1);
            self.regions[s].remove(ri);
            self.regions[s].extend(pieces);
        }
        // Merge at the region edges in [a, e].
        let list = &mut self.regions[s];
        list.sort_by_key(|g| g.start);
        let mut i = 0;
        while i + 1 < list.len() {
            let edge = list[i].end();
            if edge >= a && edge <= e && list[i].merges_with(&list[i + 1]) {
                list[i].pages += list[i + 1].pages;
                list.remove(i + 1);
                self.counters.protect_merged += 1;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// `mremap` of a whole region in place. Regions that `DETACH_FREE`, map eagerly or show
    /// a closed dataspace are left alone (a shrink would clear, a grow map, a closed one
    /// refuse), and so is a one-page region asked to shrink.
    pub(super) fn remap(&mut self, space: u8, region: u8, pages: u8, grow: bool) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let r = self.regions[s][ri];
        if r.free || r.eager || !self.ds(r.ds).open || (!grow && r.pages < 2) {
            self.counters.skipped += 1;
            return Ok(());
        }
        let new = if grow { r.pages + 1 + usize::from(pages) % 4 } else { 1 + usize::from(pages) % (r.pages - 1) };
        let new_end = r.start + new * PAGE_SIZE;
        let got = self.target.remap(s, VirtAddr::new(r.start), r.pages * PAGE_SIZE, new * PAGE_SIZE);
        if grow {
            let (wstart, wsize) = self.target.window(s);
            let room =
                new_end <= wstart + wsize && !self.regions[s].iter().any(|g| g.start >= r.end() && g.start < new_end);
            if !room {
                self.counters.remap_no_room += 1;
                return match got {
                    Err(_) => Ok(()),
                    Ok(at) => fail(format!("remap of {:#x} grew to {new} pages at {at} with no room", r.start)),
                };
            }
        }
        match got {
            Ok(at) if at.as_usize() == r.start => {}
            other => return fail(format!("remap of {:#x} from {} to {new} pages: {other:?}", r.start, r.pages)),
        }
        self.regions[s][ri].pages = new;
        if grow {
            self.counters.remap_grown += 1;
            let grown = self.regions[s][ri];
            if let Some(ni) = self.regions[s].iter().position(|g| g.start == new_end)
                && grown.merges_with(&self.regions[s][ni])
            {
                self.regions[s][ri].pages += self.regions[s][ni].pages;
                self.regions[s].remove(ni);
                self.counters.remap_grown_merged += 1;
            }
        } else {
            self.counters.remap_shrunk += 1;
        }
        Ok(())
    }

    pub(super) fn region(&self, space: u8, region: u8) -> Option<(usize, usize)> {
        let s = space as usize % self.regions.len();
        let n = self.regions[s].len();
        (n > 0).then(|| (s, region as usize % n))
    }

    pub(super) fn detach(&mut self, space: u8, region: u8, cut: Cut, keep: bool) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let r = self.regions[s][ri];
        if self.skips.closed_access && !self.ds(r.ds).open && cut == Cut::Middle {
            self.counters.skipped += 1;
            return Ok(());
        }
        let k = 1 + (usize::from(region) / 7) % r.pages.max(2).saturating_sub(1).max(1);
        let (from, to, mut flags) = match cut {
            Cut::Head if r.pages > 1 => (r.start, r.start + k * PAGE_SIZE, DetachFlags::EXACT),
            Cut::Tail if r.pages > 1 => (r.end() - k * PAGE_SIZE, r.end(), DetachFlags::EXACT),
            Cut::Middle if r.pages > 2 => {
                let n = 1 + (usize::from(region) / 3) % (r.pages - 2);
                let first = 1 + (usize::from(region) / 5) % (r.pages - 1 - n);
                (r.start + first * PAGE_SIZE, r.start + (first + n) * PAGE_SIZE, DetachFlags::EXACT)
            }
            Cut::Overlap => (r.start, r.end(), DetachFlags::OVERLAP),
            _ => (r.start, r.end(), DetachFlags::EXACT),
        };
        if keep {
            flags |= DetachFlags::KEEP;
        }
        // An overlap detach names one byte inside the region.
        let (addr, size) = if flags.contains(DetachFlags::OVERLAP) {
            (r.start + (r.pages / 2) * PAGE_SIZE + 123, 1)
        } else {
            (from, to - from)
        };
        let ds = r.ds;
        let (pool, open) = {
            let d = self.ds(ds);
            (d.pool, d.open)
        };
        let free_before = self.pool_free(pool);
        let before = self.ds(ds).bytes.clone();
        let got = self.target.detach(s, VirtAddr::new(addr), size, flags).map_err(|e| format!("detach: {e}"))?;
        let whole = from == r.start && to == r.end();
        let want = if whole {
            DetachResult::DetachedDs
        } else if from > r.start && to < r.end() {
            DetachResult::SplitDs
        } else {
            DetachResult::KeptDs
        };
        if got.result != want || got.start.as_usize() != from || got.size != to - from {
            return fail(format!("detach did {got:?}, the model cuts {from:#x}..{to:#x} ({want:?})"));
        }
        match want {
            DetachResult::DetachedDs => self.counters.detached_whole += 1,
            DetachResult::SplitDs => self.counters.detached_middle += 1,
            DetachResult::KeptDs if from == r.start => self.counters.detached_head += 1,
            DetachResult::KeptDs => self.counters.detached_tail += 1,
        }
        let mut pieces = Vec::new();
        if from > r.start {
            pieces.push(ModelRegion { pages: (from - r.start) / PAGE_SIZE, ..r });
        }
        if to < r.end() {
            let skip = (to - r.start) as u64;
            pieces.push(ModelRegion { start: to, pages: (r.end() - to) / PAGE_SIZE, offset: r.offset + skip, ..r });
        }
        self.regions[s].remove(ri);
        self.regions[s].extend(pieces);
        if r.free && !keep && open {
            // DETACH_FREE: the detached part of the dataspace reads as zeros again (the
            // manager's `clear`, which may fail only for want of a frame to unshare an edge
            // page, and then changes nothing).
            let off = r.offset + (from - r.start) as u64;
            let len = (to - from) as u64;
            let i = self.ds_index(ds).expect("open");
            let size = self.dataspaces[i].bytes.len() as u64;
            if off < size {
                let end = (off + len).min(size);
                let mut zeroed = before.clone();
                zeroed[off as usize..end as usize].fill(0);
                let mut now = vec![0u8; size as usize];
                self.target.manager(|m, _| m.read(ds, 0, &mut now)).map_err(|e| format!("read: {e}"))?;
                if now == zeroed {
                    self.dataspaces[i].bytes = zeroed;
                    self.counters.detach_free_clears += 1;
                } else if now != before {
                    return fail(format!(
                        "DETACH_FREE of {off:#x}..{end:#x} of {ds}: the bytes there are neither cleared nor unchanged"
                    ));
                } else if free_before >= 2 {
                    return fail(format!(
                        "DETACH_FREE of {off:#x}..{end:#x} of {ds} left the bytes there (not cleared) while its pool had {free_before} free frames"
                    ));
                }
            }
        }
        self.collect(ds);
        Ok(())
    }

    /// Where an access of `len` bytes at `at` of region `(s, ri)` lands: the region, the
    /// dataspace offset of its first byte, and whether every page it touches shows the
    /// dataspace.
    pub(super) fn access_range(&self, s: usize, ri: usize, at: u64, len: u64) -> (ModelRegion, u64, u64, bool) {
        let r = self.regions[s][ri];
        let rsize = (r.pages * PAGE_SIZE) as u64;
        let at = at % rsize;
        let len = len.min(rsize - at).max(1);
        let off = r.offset + at;
        let d = self.ds(r.ds);
        let last_page = (off + len - 1) / PAGE;
        (r, at, len, last_page < d.pages())
    }

    /// Makes an access through a space and checks its outcome against `valid`; returns
    /// whether it happened.
    pub(super) fn access(
        &mut self,
        s: usize,
        addr: VirtAddr,
        buf: &mut [u8],
        access: Access,
        valid: bool,
        pool: PoolId,
    ) -> Result<bool, String> {
        // A region of a closed dataspace (skipped: `would_resolve` answers for it).
        let closed = self.skips.closed_access
            && self.regions[s]
                .iter()
                .any(|r| r.start <= addr.as_usize() && addr.as_usize() < r.end() && !self.ds(r.ds).open);
        if !self.target.reports_refused_access() {
            // Every page the access touches must be resolvable.
            let (first, last) = (addr.as_usize() / PAGE_SIZE, (addr.as_usize() + buf.len() - 1) / PAGE_SIZE);
            let mut all = Some(true);
            for p in first..=last {
                let at = VirtAddr::new((p * PAGE_SIZE).max(addr.as_usize()));
                match self.target.would_resolve(s, at, access) {
                    Some(w) => all = all.map(|a| a && w),
                    None => all = None,
                }
            }
            if let Some(w) = all
                && w != valid
                && !closed
            {
                return fail(format!(
                    "would_resolve({addr}, {} bytes, {access:?}) says {w}, the model {valid}",
                    buf.len()
                ));
            }
            if !valid {
                self.counters.refused_accesses += 1;
                return Ok(false);
            }
            if self.skips.hosted_dry_access && self.pool_free(pool) < 16 {
                self.counters.skipped += 1;
                return Ok(false);
            }
        }
        let r: Result<(), AccessError> =
            if access == Access::Write { self.target.store(s, addr, buf) } else { self.target.load(s, addr, buf) };
        match (r, valid) {
            (Ok(()), true) => Ok(true),
            (Ok(()), false) => fail(format!("{access:?} at {addr} succeeded where the model refuses it")),
            (Err(_), false) => {
                self.counters.refused_accesses += 1;
                Ok(false)
            }
            (Err(e), true) if e.code == ENOMEM => {
                self.counters.fault_out_of_memory += 1;
                let free = self.pool_free(pool);
                if free > 0 {
                    return fail(format!(
                        "{access:?} at {addr} failed for want of a frame while its pool has {free} free"
                    ));
                }
                Ok(false)
            }
            (Err(e), true) => fail(format!("{access:?} at {addr} refused: {}", e.message)),
        }
    }

    pub(super) fn store(&mut self, space: u8, region: u8, at: u16, len: u8, value: u8) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let mut at = u64::from(at);
        {
            // Mostly at bytes the dataspace has (the top bit of `at` asks for it as drawn).
            let r = self.regions[s][ri];
            let have = (self.ds(r.ds).bytes.len() as u64).saturating_sub(r.offset).min((r.pages * PAGE_SIZE) as u64);
            if at & 0x8000 == 0 && have > 0 {
                at %= have;
            }
        }
        let (r, at, len, valid) = self.access_range(s, ri, at, u64::from(len) + 1);
        let d = self.ds(r.ds);
        let (pool, size) = (d.pool, d.bytes.len() as u64);
        let off = r.offset + at;
        let writable = r.rights.contains(Rights::WRITE);
        // Stores stay within the dataspace's size: what a store past it (inside the last
        // page) should leave is not the model's to say.
        let len = if valid && writable {
            if off >= size {
                self.counters.skipped += 1;
                return Ok(());
            }
            len.min(size - off)
        } else {
            len
        };
        let mut buf: Vec<u8> = (0..len).map(|i| value.wrapping_add(i as u8)).collect();
        let shared = self.target.manager(|m, _| m.shared_frames());
        let what = self.describe(r.ds);
        let done = self
            .access(s, VirtAddr::new(r.start + at as usize), &mut buf, Access::Write, valid && writable, pool)
            .map_err(|m| format!("{m} ({what})"))?;
        if done {
            self.counters.stores += 1;
            if self.target.manager(|m, _| m.shared_frames()) < shared {
                self.counters.cow_breaks += 1;
            }
            let i = self.ds_index(r.ds).expect("live");
            self.dataspaces[i].bytes[off as usize..(off + len) as usize].copy_from_slice(&buf);
        }
        Ok(())
    }

    pub(super) fn load(&mut self, space: u8, region: u8, at: u16, len: u16) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let (r, at, len, valid) = self.access_range(s, ri, u64::from(at), u64::from(len));
        let pool = self.ds(r.ds).pool;
        let mut buf = vec![0u8; len as usize];
        let addr = VirtAddr::new(r.start + at as usize);
        let what = self.describe(r.ds);
        if self.access(s, addr, &mut buf, Access::Read, valid, pool).map_err(|m| format!("{m} ({what})"))? {
            self.counters.loads += 1;
            let d = self.ds(r.ds);
            let off = r.offset + at;
            if let Some(k) = (0..len).find(|&k| buf[k as usize] != d.byte(off + k))
                && !(self.skips.tail_bytes && off + k >= d.bytes.len() as u64)
            {
                return fail(format!(
                    "load at {addr} (dataspace {} offset {:#x}, size {:#x}) read {:#04x}, the model {:#04x}",
                    r.ds,
                    off + k,
                    d.bytes.len(),
                    buf[k as usize],
                    d.byte(off + k)
                ));
            }
        }
        Ok(())
    }

    pub(super) fn touch(&mut self, space: u8) -> Check {
        let s = space as usize % self.regions.len();
        for ri in 0..self.regions[s].len() {
            let r = self.regions[s][ri];
            for p in 0..r.pages {
                let (_, _, _, valid) = self.access_range(s, ri, (p * PAGE_SIZE) as u64, 1);
                let pool = self.ds(r.ds).pool;
                let mut b = [0u8];
                self.access(s, VirtAddr::new(r.start + p * PAGE_SIZE), &mut b, Access::Read, valid, pool)?;
            }
        }
        Ok(())
    }
}
