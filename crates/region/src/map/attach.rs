//! Attaching a dataspace as a region (searching for free space, mapping eagerly on request)
//! and detaching regions, keeping the three trees in step.

use alloc::vec::Vec;

use memkit_types::{Access, PAGE_SIZE, PageCount, Rights, VirtAddr};

use super::request::{AttachRequest, Detached};
use super::{RegionData, RegionMap, Which, page, page_round, pages};
use crate::backing::{Attachment, Backing};
use crate::error::{AttachError, DetachError};
use crate::flags::{DetachFlags, DetachResult, Flags};
use crate::mmu::Mmu;
use crate::tree::Entry;

/// Where a region shows its dataspace.
pub(super) fn attachment_of<Id>(e: &Entry<RegionData<Id>>) -> Attachment {
    Attachment { start: VirtAddr::new(e.start), size: e.end - e.start, offset: e.value.offset, rights: e.value.rights }
}

/// The most rows one splice of the region map writes.
pub(super) const SPLICE_MAX: usize = 3;

/// The rows that are there, in order, packed at the front (the rest are `filler`).
pub(super) fn pack<V: Copy, const N: usize>(
    rows: [Option<Entry<V>>; N],
    filler: Entry<V>,
) -> ([Entry<V>; SPLICE_MAX], usize) {
    let mut out = [filler; SPLICE_MAX];
    let mut n = 0;
    for r in rows.into_iter().flatten() {
        out[n] = r;
        n += 1;
    }
    (out, n)
}

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// Attaches a dataspace (`attach`) and returns the region's start.
    ///
    /// - At `req.start`, or with `SEARCH_ADDR` at the first free place at or above it
    ///   aligned to `2^req.align`.
    /// - With `IN_AREA` inside the area containing `req.start` (fixed or searched there);
    ///   without it, never inside an area.
    /// - With `EAGER_MAP` every page is mapped through `mmu` before the call returns.
    /// - `req.rights` must be within what the handle allows, and the region must show no
    ///   byte past the end of the dataspace when the backing knows its size.
    /// - With [`replace`](AttachRequest::replace) (a fixed start only), the regions in the
    ///   range are detached in the same step, as `MAP_FIXED` does; an area is never
    ///   replaced (without `IN_AREA` the range must overlap none).
    ///
    /// # Errors
    /// See [`AttachError`]; a failed attach changes nothing in the map or the MMU.
    pub fn attach<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        req: &AttachRequest<Id>,
    ) -> Result<VirtAddr, AttachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if req.flags.contains(Flags::RESERVED) || (req.replace && req.flags.contains(Flags::SEARCH_ADDR)) {
            return Err(AttachError::InvalidFlags(req.flags));
        }
        if req.size == 0 {
            return Err(AttachError::ZeroSize);
        }
        let size = page_round(req.size).ok_or(AttachError::SizeOverflow(req.size))?;
        if !req.offset.is_multiple_of(PAGE_SIZE as u64) {
            return Err(AttachError::UnalignedOffset(req.offset));
        }
        let ds_end = req.offset.checked_add(size as u64).ok_or(AttachError::SizeOverflow(req.size))?;
        let align = Self::align_bytes(req.align).ok_or(AttachError::BadAlignment(req.align))?;
        let allowed = backing.rights(req.dataspace).ok_or(AttachError::UnknownDataspace)?;
        if !allowed.contains(req.rights) {
            return Err(AttachError::PermissionDenied { requested: req.rights, allowed });
        }
        if let Some(ds_size) = backing.size(req.dataspace)
            && ds_end > ds_size.div_ceil(PAGE_SIZE as u64).saturating_mul(PAGE_SIZE as u64)
        {
            return Err(AttachError::BeyondDataspace { end: ds_end, size: ds_size });
        }
        let s = req.start.as_usize();
        let in_area = req.flags.contains(Flags::IN_AREA);
        let (lo, hi, which) = if in_area {
            let a = self.areas.containing(s).ok_or(AttachError::NoArea(req.start))?;
            if a.value.contains(Flags::RESERVED) {
                return Err(AttachError::ReservedArea(VirtAddr::new(a.start)));
            }
            (a.start, a.end, Which::Regions)
        } else {
            (self.window_start, self.window_end, Which::Top)
        };
        let searched = req.flags.contains(Flags::SEARCH_ADDR);
        let eager = req.flags.contains(Flags::EAGER_MAP);
        let at = if searched {
            let hi = req.limit.map_or(hi, |l| hi.min(l.as_usize()));
            self.place(which, s.max(lo), hi, size, align).ok_or(AttachError::NoSpace(size))?
        } else {
            if !req.start.is_aligned(PAGE_SIZE) {
                return Err(AttachError::Unaligned(req.start));
            }
            let end = s.checked_add(size).ok_or(AttachError::NotAvailable(req.start))?;
            // A plain attach at an address checks for overlaps as it inserts (below),
            // unless an eager mapping must come first.
            let taken = match which {
                Which::Top if req.replace => self.areas.overlaps(s, end),
                Which::Regions if req.replace => false,
                _ if !eager => false,
                Which::Top => self.top_overlaps(s, end),
                Which::Regions => self.regions.overlaps(s, end),
            };
            if s < lo || end > hi || taken {
                return Err(AttachError::NotAvailable(req.start));
            }
            s
        };
        let data = RegionData {
            dataspace: req.dataspace,
            offset: req.offset,
            rights: req.rights,
            cache: req.cache,
            flags: (req.flags & RegionData::<Id>::KEPT).bits() as u8,
            in_area,
        };
        if req.replace {
            // Every page of the range goes: the old regions keep their place in the trees
            // until the new one is sure, and a failure leaves them to fault in again.
            mmu.unmap(page(at), pages(size)).map_err(AttachError::Mmu)?.flush(mmu);
        }
        if eager {
            Self::map_eagerly(backing, mmu, at, size, &data)?;
        }
        let attachment = Attachment { start: VirtAddr::new(at), size, offset: req.offset, rights: req.rights };
        let new = Entry { start: at, end: at + size, value: data };
        if !searched && !req.replace && !eager {
            // One descent checks and inserts.
            if !self.insert_free_region(at, at + size, data) {
                return Err(AttachError::NotAvailable(req.start));
            }
            backing.attached(req.dataspace, attachment);
        } else if req.replace && self.replace_within(backing, new) {
            backing.attached(req.dataspace, attachment);
        } else {
            if req.replace {
                self.cut_range(backing, at, at + size, true);
            }
            backing.attached(req.dataspace, attachment);
            self.insert_region(at, at + size, data);
        }
        self.generation += 1;
        Ok(VirtAddr::new(at))
    }

    /// Maps every page of a new region; on failure unmaps what it mapped.
    pub(super) fn map_eagerly<B, M>(
        backing: &mut B,
        mmu: &mut M,
        at: usize,
        size: usize,
        r: &RegionData<Id>,
    ) -> Result<(), AttachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let access = if r.rights.contains(Rights::WRITE) {
            Access::Write
        } else if r.rights.contains(Rights::READ) {
            Access::Read
        } else if r.rights.contains(Rights::EXECUTE) {
            Access::Execute
        } else {
            return Ok(());
        };
        let mut done = 0;
        let result = loop {
            if done == size {
                break Ok(());
            }
            let (frame, now) = match backing.map(r.dataspace, r.offset + done as u64, access) {
                Ok(x) => x,
                Err(e) => break Err(AttachError::Backing(e)),
            };
            match mmu.map(page(at + done), frame, PageCount::new(1), r.rights & now, r.cache) {
                Ok(flush) => flush.flush(mmu),
                Err(e) => break Err(AttachError::Mmu(e)),
            }
            done += PAGE_SIZE;
        };
        if result.is_err() && done > 0 {
            // Undo: the pages were free before, and the same range unmaps without error.
            if let Ok(flush) = mmu.unmap(page(at), pages(done)) {
                flush.flush(mmu);
            }
        }
        result
    }

    /// One detach step over the pages holding `[start, start + size)` (the seed's
    /// `detach(start, size, mem, task)` with its flags):
    ///
    /// - `OVERLAP`: the lowest region overlapping the range is detached whole
    ///   (`DetachedDs`).
    /// - `EXACT` (or no mode): only the range is detached: a region inside it whole
    ///   (`DetachedDs`), its head or tail (`KeptDs`), or its middle, splitting it
    ///   (`SplitDs`).
    /// - `KEEP`: a region attached with `DETACH_FREE` does not free the detached memory.
    ///
    /// `again` is set when other regions still overlap the range. The detached range is
    /// unmapped through `mmu`.
    ///
    /// # Errors
    /// [`DetachError::NoRegion`] when no region overlaps the range, [`DetachError::Mmu`]
    /// when unmapping fails (nothing changes then), the `EINVAL` errors for malformed
    /// arguments.
    pub fn detach<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<Id>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if flags.contains(DetachFlags::EXACT | DetachFlags::OVERLAP) {
            return Err(DetachError::InvalidFlags(flags.bits()));
        }
        if size == 0 {
            return Err(DetachError::ZeroSize);
        }
        let a = start.as_usize();
        let e = a.checked_add(size).and_then(page_round).ok_or(DetachError::SizeOverflow(size))?;
        let s = a & !(PAGE_SIZE - 1);
        // One search finds the region and the one after it, which says whether another
        // step is owed.
        let c = self.regions.seek_from(s).filter(|&c| self.regions.at(c).start < e);
        let c = c.ok_or(DetachError::NoRegion(start))?;
        let g = self.regions.at(c);
        let again = self.regions.after(c).is_some_and(|n| self.regions.at(n).start < e);
        let whole = flags.contains(DetachFlags::OVERLAP) || (s <= g.start && e >= g.end);
        let (cut_start, cut_end, result) = if whole {
            (g.start, g.end, DetachResult::DetachedDs)
        } else if s <= g.start {
            (g.start, e, DetachResult::KeptDs)
        } else if e >= g.end {
            (s, g.end, DetachResult::KeptDs)
        } else {
            (s, e, DetachResult::SplitDs)
        };
        let cut = cut_end - cut_start;
        mmu.unmap(page(cut_start), pages(cut)).map_err(DetachError::Mmu)?.flush(mmu);
        let d = g.value;
        let cut_offset = d.offset + (cut_start - g.start) as u64;
        self.cut(backing, g, cut_start, cut_end, !flags.contains(DetachFlags::KEEP));
        self.generation += 1;
        Ok(Detached {
            result,
            again,
            start: VirtAddr::new(cut_start),
            size: cut,
            offset: cut_offset,
            dataspace: d.dataspace,
        })
    }

    /// Takes `[cut_start, cut_end)` out of the region `g` in the trees and tells `backing`
    /// (the MMU is the caller's): the region goes, or keeps its head, its tail or both.
    /// With `release`, the cut bytes of a `DETACH_FREE` region are released.
    pub(super) fn cut<B>(
        &mut self,
        backing: &mut B,
        g: crate::tree::Entry<RegionData<Id>>,
        cut_start: usize,
        cut_end: usize,
        release: bool,
    ) where
        B: Backing<Id = Id> + ?Sized,
    {
        let d = g.value;
        let cut_offset = d.offset + (cut_start - g.start) as u64;
        if release && d.flags().contains(Flags::DETACH_FREE) {
            backing.release(d.dataspace, cut_offset, (cut_end - cut_start) as u64);
        }
        let old =
            Attachment { start: VirtAddr::new(g.start), size: g.end - g.start, offset: d.offset, rights: d.rights };
        let head = (cut_start > g.start).then(|| Attachment { size: cut_start - g.start, ..old });
        let tail = (cut_end < g.end).then(|| Attachment {
            start: VirtAddr::new(cut_end),
            size: g.end - cut_end,
            offset: d.offset + (cut_end - g.start) as u64,
            rights: d.rights,
        });
        // The row is replaced by what stays of it, in one descent.
        let part = |a: Attachment| Entry {
            start: a.start.as_usize(),
            end: a.start.as_usize() + a.size,
            value: RegionData { offset: a.offset, ..d },
        };
        let rows = [head.map(part), tail.map(part)];
        let (rows, n) = pack(rows, g);
        if n == 1 {
            // A head or a tail stays: the row is rewritten where it is.
            let r = rows[0];
            self.update_region(g.start, r.start, r.end, r.value);
        } else {
            self.splice_regions(g.start, 1, &rows[..n], d.in_area);
        }
        match (head, tail) {
            (Some(h), t) => {
                backing.trimmed(d.dataspace, old, h);
                if let Some(t) = t {
                    backing.attached(d.dataspace, t);
                }
            }
            (None, Some(t)) => backing.trimmed(d.dataspace, old, t),
            (None, None) => backing.detached(d.dataspace, old),
        }
    }

    /// A replacing attach of `new` over part of one region of its kind (in the same area, or
    /// outside areas as `new` is; `MAP_FIXED` inside a reservation): the region is cut as a
    /// detach would, and its rows and the new one written in one splice. False (nothing
    /// done) when the range overlaps no region or several, or one of the other kind.
    fn replace_within<B: Backing<Id = Id> + ?Sized>(&mut self, backing: &mut B, new: Entry<RegionData<Id>>) -> bool {
        let Some(c) = self.regions.seek_from(new.start) else { return false };
        let g = self.regions.at(c);
        if g.start >= new.end
            || g.value.in_area != new.value.in_area
            || self.regions.after(c).is_some_and(|n| self.regions.at(n).start < new.end)
        {
            return false;
        }
        let d = g.value;
        let (s, e) = (g.start.max(new.start), g.end.min(new.end));
        if d.flags().contains(Flags::DETACH_FREE) {
            backing.release(d.dataspace, d.offset + (s - g.start) as u64, (e - s) as u64);
        }
        let old = attachment_of(&g);
        let part = |a: usize, b: usize| Entry {
            start: a,
            end: b,
            value: RegionData { offset: d.offset + (a - g.start) as u64, ..d },
        };
        let head = (s > g.start).then(|| part(g.start, s));
        let tail = (e < g.end).then(|| part(e, g.end));
        match (head, tail) {
            (Some(h), t) => {
                backing.trimmed(d.dataspace, old, attachment_of(&h));
                if let Some(t) = t {
                    backing.attached(d.dataspace, attachment_of(&t));
                }
            }
            (None, Some(t)) => backing.trimmed(d.dataspace, old, attachment_of(&t)),
            (None, None) => backing.detached(d.dataspace, old),
        }
        let (rows, n) = pack([head, Some(new), tail], g);
        self.splice_regions(g.start, 1, &rows[..n], d.in_area);
        true
    }

    /// Replaces the `old` regions from the one starting at `first` on (consecutive, all in
    /// an area or all outside) by `new` in the trees: one descent of each tree that holds
    /// them in the common case ([`GapTree::splice`](crate::tree::GapTree::splice)).
    pub(super) fn splice_regions(&mut self, first: usize, old: usize, new: &[Entry<RegionData<Id>>], in_area: bool) {
        debug_assert!(new.iter().all(|e| e.value.in_area == in_area));
        let done = self.regions.splice(first, old, new);
        debug_assert!(done, "no {old} regions from {first:#x}");
        if !in_area && self.top_kept {
            let mut top = [Entry { start: 0, end: 0, value: () }; SPLICE_MAX];
            for (t, e) in top.iter_mut().zip(new) {
                *t = Entry { start: e.start, end: e.end, value: () };
            }
            let done = self.top.splice(first, old, &top[..new.len()]);
            debug_assert!(done, "top lacks {old} regions from {first:#x}");
        }
    }

    /// Changes the region starting at `old` to `[start, end)` with `d`, in place in the
    /// trees (see [`GapTree::set_row`](crate::tree::GapTree::set_row)).
    pub(super) fn update_region(&mut self, old: usize, start: usize, end: usize, d: RegionData<Id>) {
        self.regions.set_row(old, start, end, d);
        if !d.in_area && self.top_kept {
            self.top.set_row(old, start, end, ());
        }
    }

    pub(super) fn remove_region(&mut self, start: usize, in_area: bool) {
        self.regions.remove(start);
        if !in_area && self.top_kept {
            self.top.remove(start);
        }
    }

    pub(super) fn insert_region(&mut self, start: usize, end: usize, d: RegionData<Id>) {
        self.regions.insert(start, end, d);
        if !d.in_area && self.top_kept {
            self.top.insert(start, end, ());
        }
    }

    /// Inserts a region unless it overlaps a region (in an area) or an area or a region
    /// (outside areas): the check and the insertion in one descent of each tree.
    fn insert_free_region(&mut self, start: usize, end: usize, d: RegionData<Id>) -> bool {
        if d.in_area || !self.top_kept {
            return self.regions.insert_free(start, end, d);
        }
        if !self.top.insert_free(start, end, ()) {
            return false;
        }
        self.regions.insert(start, end, d);
        true
    }

    /// Whether `[start, end)` overlaps an area or a region outside every area.
    pub(super) fn top_overlaps(&self, start: usize, end: usize) -> bool {
        if self.top_kept { self.top.overlaps(start, end) } else { self.regions.overlaps(start, end) }
    }

    /// Detaches the whole region containing `addr` (the seed's `detach(addr, mem, task)`:
    /// `Detach_overlap` over one byte).
    ///
    /// # Errors
    /// As [`detach`](Self::detach).
    pub fn detach_at<B, M>(&mut self, backing: &mut B, mmu: &mut M, addr: VirtAddr) -> Result<Detached<Id>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        self.detach(backing, mmu, addr, 1, DetachFlags::OVERLAP)
    }

    /// Detaches everything in `[start, start + size)` in one call (repeating
    /// [`detach`](Self::detach) while it reports `again`) and reports every step.
    ///
    /// # Errors
    /// As [`detach`](Self::detach) for the first step (nothing changes then); a later step
    /// cannot fail for want of a region, and an MMU error there stops the loop with the
    /// steps done so far kept.
    pub fn detach_all<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Vec<Detached<Id>>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let mut steps = Vec::new();
        self.detach_range(backing, mmu, start, size, flags, |d| steps.push(d))?;
        Ok(steps)
    }

    /// [`detach_all`](Self::detach_all) that hands each step to `each` instead of
    /// collecting them, and returns the number of steps: allocates nothing itself.
    ///
    /// # Errors
    /// As [`detach_all`](Self::detach_all).
    pub fn detach_range<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
        mut each: impl FnMut(Detached<Id>),
    ) -> Result<usize, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let mut steps = 0;
        loop {
            match self.detach(backing, mmu, start, size, flags) {
                Ok(d) => {
                    steps += 1;
                    each(d);
                    if !d.again {
                        return Ok(steps);
                    }
                }
                Err(e) if steps == 0 => return Err(e),
                Err(_) => return Ok(steps),
            }
        }
    }
}
