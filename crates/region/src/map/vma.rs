//! The operations of real address-space workloads on regions that exist: changing the
//! rights of a range (`protect`, as `mprotect`), growing, shrinking and moving a region
//! (`remap`, as `mremap` and `brk`), merging compatible neighbours, and the iteration over
//! the regions of a range.
//!
//! ```text
//!   protect [s, e) RX          split at s and e, new rights, merge where they match again
//!   │ A rw │ B rw  │   ──▶   │A│ A' rx │ B rx │B'│   ──▶   │A│ rx ... │B'│
//!
//!   remap  grow in place when the bytes after the region are free; else (may move) the
//!          region moves to a free range: its frames are mapped at the new place first,
//!          the old pages unmapped after, the tree changed last
//! ```
//!
//! On the common paths (a range within one region, growing or shrinking in place) an
//! operation takes two tree searches: one that finds the region and its neighbours (a
//! cursor), one splice that writes the new rows (`crates/region/tests/descents.rs`).
//!
//! Each operation checks everything first and changes the trees last, so a failure leaves
//! the map as it was; MMU work done before a failure is undone or only takes rights away
//! (a page with fewer rights faults again and is resolved as before).

use memkit_types::{PAGE_SIZE, PageCount, Rights, VirtAddr};

use super::attach::pack;
use super::request::RegionInfo;
use super::{RegionData, RegionMap, Which, page, page_round, pages};
use crate::backing::{Attachment, Backing};
use crate::error::{AttachError, ProtectError, RemapError};
use crate::flags::Flags;
use crate::mmu::{Mmu, TlbFlush};
use crate::tree::{Cursor, Entry, Iter};

/// Where [`RegionMap::remap`] may put the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remap {
    /// In place only: shrink, or grow into the free bytes after the region.
    InPlace,
    /// In place when it fits, else moved to the first free range of the new size, in the
    /// region's area or outside every area as the region was (`MREMAP_MAYMOVE`).
    MayMove,
    /// Moved to this address, replacing the regions there (`MREMAP_FIXED`); inside an area
    /// the destination lies in, else outside every area.
    Fixed(VirtAddr),
}

/// The regions overlapping a range, in address order ([`RegionMap::regions_in`]).
/// Allocates nothing.
#[derive(Debug)]
pub struct Regions<'a, Id> {
    inner: Iter<'a, RegionData<Id>>,
    end: usize,
}

impl<Id: Copy + Eq + core::fmt::Debug> Iterator for Regions<'_, Id> {
    type Item = RegionInfo<Id>;

    fn next(&mut self) -> Option<RegionInfo<Id>> {
        self.inner.next().filter(|e| e.start < self.end).map(RegionMap::region_info)
    }
}

fn attachment<Id>(e: &Entry<RegionData<Id>>) -> Attachment {
    Attachment { start: VirtAddr::new(e.start), size: e.end - e.start, offset: e.value.offset, rights: e.value.rights }
}

/// The dataspace size rounded up to whole pages (a region shows a partial last page whole).
fn page_end(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE as u64).saturating_mul(PAGE_SIZE as u64)
}

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// The regions overlapping `[start, start + size)`, in address order: one descent, then
    /// the leaves in order. Allocates nothing.
    pub fn regions_in(&self, start: VirtAddr, size: usize) -> Regions<'_, Id> {
        Regions { inner: self.regions.iter_from(start.as_usize()), end: start.as_usize().saturating_add(size) }
    }

    /// Whether the region `l` and the region `r` right after it can be one region: the same
    /// dataspace at contiguous offsets, the same rights, cache mode and flags, and the
    /// same area (or none).
    fn mergeable(&self, l: &Entry<RegionData<Id>>, r: &Entry<RegionData<Id>>) -> bool {
        let (a, b) = (l.value, r.value);
        l.end == r.start
            && a.dataspace == b.dataspace
            && a.offset.checked_add((l.end - l.start) as u64) == Some(b.offset)
            && a.rights == b.rights
            && a.cache == b.cache
            && a.flags == b.flags
            && a.in_area == b.in_area
            && (!a.in_area || self.areas.containing(l.start).is_some_and(|ar| r.end <= ar.end))
    }

    /// Merges the region ending at `at` with the region starting there when they can be
    /// one ([`mergeable`](Self::mergeable)); returns whether it did.
    fn try_merge<B: Backing<Id = Id> + ?Sized>(&mut self, backing: &mut B, at: usize) -> bool {
        if at == 0 {
            return false;
        }
        let Some(l) = self.regions.containing(at - 1) else { return false };
        let Some(r) = self.regions.containing(at) else { return false };
        if l.end != at || r.start != at || !self.mergeable(&l, &r) {
            return false;
        }
        self.remove_region(r.start, r.value.in_area);
        self.update_region(l.start, l.start, r.end, l.value);
        let old = attachment(&l);
        backing.trimmed(l.value.dataspace, old, Attachment { size: r.end - l.start, ..old });
        backing.detached(r.value.dataspace, attachment(&r));
        true
    }

    /// Splits the region containing `at` in two there, when `at` lies strictly inside it.
    fn split<B: Backing<Id = Id> + ?Sized>(&mut self, backing: &mut B, at: usize) {
        let Some(g) = self.regions.containing(at) else { return };
        if g.start == at {
            return;
        }
        let d = g.value;
        let tail_offset = d.offset + (at - g.start) as u64;
        self.update_region(g.start, g.start, at, d);
        self.insert_region(at, g.end, RegionData { offset: tail_offset, ..d });
        let old = attachment(&g);
        backing.trimmed(d.dataspace, old, Attachment { size: at - g.start, ..old });
        backing.attached(
            d.dataspace,
            Attachment { start: VirtAddr::new(at), size: g.end - at, offset: tail_offset, rights: d.rights },
        );
    }

    /// Merges the compatible neighbours at every boundary of a region in `[s, e]`; returns
    /// the number of merges.
    fn merge_range<B: Backing<Id = Id> + ?Sized>(&mut self, backing: &mut B, s: usize, e: usize) -> usize {
        let mut merged = 0;
        let mut b = s;
        loop {
            merged += usize::from(self.try_merge(backing, b));
            let Some(r) = self.regions.iter_from(b).next() else { break };
            let next = if r.start > b { r.start } else { r.end };
            if next > e {
                break;
            }
            b = next;
        }
        merged
    }

    /// Takes `[s, e)` out of every region overlapping it (the trees and the backing; the
    /// MMU is the caller's), releasing the bytes of `DETACH_FREE` regions with `release`.
    pub(super) fn cut_range<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        s: usize,
        e: usize,
        release: bool,
    ) {
        // One search per region, which also finds the next one (none left: no search).
        let mut c = self.regions.seek_from(s);
        while let Some(at) = c {
            let g = self.regions.at(at);
            if g.start >= e {
                break;
            }
            let next = self.regions.after(at).map(|n| self.regions.at(n).start).filter(|&n| n < e);
            self.cut(backing, g, g.start.max(s), g.end.min(e), release);
            c = next.and_then(|n| self.regions.seek_from(n));
        }
    }

    /// Merges the compatible neighbours among the regions overlapping `[start, start +
    /// size)` and at its edges (same dataspace at contiguous offsets, same rights, cache
    /// mode, flags and area); returns the number of merges. The MMU keeps its pages.
    pub fn merge<B: Backing<Id = Id> + ?Sized>(&mut self, backing: &mut B, start: VirtAddr, size: usize) -> usize {
        let s = start.as_usize();
        let merged = self.merge_range(backing, s, s.saturating_add(size));
        if merged > 0 {
            self.generation += 1;
        }
        merged
    }

    /// Gives the pages `[start, start + size)` the rights `rights` (`mprotect`): every page
    /// of the range must lie in a region. Regions are split at the edges of the range and
    /// merged with their neighbours where the rights match again. Taking a right away
    /// takes it from the mapped pages that have it ([`Mmu::restrict`]: each keeps its own
    /// rights `& rights`, a page left with none is unmapped); a right given is mapped
    /// lazily by the next fault. Raising rights needs the dataspace handle to allow them.
    ///
    /// Returns the TLB flush owed for the pages that lost rights (none when nothing was
    /// taken away).
    ///
    /// # Errors
    /// [`ProtectError`]; nothing changes then (an MMU error may leave some pages with fewer
    /// rights, which only makes them fault again).
    pub fn protect<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        rights: Rights,
    ) -> Result<TlbFlush, ProtectError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if size == 0 {
            return Err(ProtectError::ZeroSize);
        }
        if !start.is_aligned(PAGE_SIZE) {
            return Err(ProtectError::Unaligned(start));
        }
        let size = page_round(size).ok_or(ProtectError::SizeOverflow(size))?;
        let s = start.as_usize();
        let e = s.checked_add(size).ok_or(ProtectError::SizeOverflow(size))?;
        // The common case, a range within one region: two searches in all.
        if let Some(c) = self.regions.seek(s) {
            let g = self.regions.at(c);
            if e <= g.end {
                return self.protect_within(backing, mmu, c, s, e, rights);
            }
        }
        let mut at = s;
        let mut reduce = false;
        for r in self.regions.iter_from(s) {
            if r.start >= e {
                break;
            }
            if r.start > at {
                return Err(ProtectError::NotMapped(VirtAddr::new(at)));
            }
            Self::may_raise(backing, &r, rights)?;
            reduce |= !rights.contains(r.value.rights);
            at = r.end;
        }
        if at < e {
            return Err(ProtectError::NotMapped(VirtAddr::new(at)));
        }
        let mut flush = TlbFlush::new(page(s), PageCount::new(0));
        if reduce {
            for r in self.regions.iter_from(s) {
                if r.start >= e {
                    break;
                }
                if !rights.contains(r.value.rights) {
                    let (a, b) = (r.start.max(s), r.end.min(e));
                    mmu.restrict(page(a), pages(b - a), rights).map_err(ProtectError::Mmu)?.ignore();
                }
            }
            flush = TlbFlush::new(page(s), pages(size));
        }
        // Split only where the rights change.
        for edge in [s, e] {
            if self.regions.containing(edge).is_some_and(|g| g.value.rights != rights) {
                self.split(backing, edge);
            }
        }
        let mut at = s;
        while at < e {
            let r = self.regions.containing(at).expect("the range was checked to lie in regions");
            if r.value.rights != rights {
                self.regions.set_value(r.start, RegionData { rights, ..r.value });
                let old = attachment(&r);
                backing.trimmed(r.value.dataspace, old, Attachment { rights, ..old });
            }
            at = r.end;
        }
        self.merge_range(backing, s, e);
        self.generation += 1;
        Ok(flush)
    }

    /// Whether region `r` may take `rights`: rights it lacks need the dataspace handle to
    /// allow them (a closed dataspace allows none).
    fn may_raise<B: Backing<Id = Id> + ?Sized>(
        backing: &B,
        r: &Entry<RegionData<Id>>,
        rights: Rights,
    ) -> Result<(), ProtectError> {
        if r.value.rights.contains(rights) {
            return Ok(());
        }
        let allowed = backing.rights(r.value.dataspace).unwrap_or_default();
        if allowed.contains(rights) {
            Ok(())
        } else {
            Err(ProtectError::PermissionDenied { region: VirtAddr::new(r.start), requested: rights, allowed })
        }
    }

    /// [`protect`](Self::protect) of `[s, e)` within the region at `c`: the region is
    /// replaced by its head, the changed part (merged with its neighbours where they match)
    /// and its tail in one splice, and the backing is told each step as a split, a change
    /// of rights and a merge.
    fn protect_within<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        c: Cursor,
        s: usize,
        e: usize,
        rights: Rights,
    ) -> Result<TlbFlush, ProtectError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let g = self.regions.at(c);
        let d = g.value;
        Self::may_raise(backing, &g, rights)?;
        let mut flush = TlbFlush::new(page(s), PageCount::new(0));
        if !rights.contains(d.rights) {
            mmu.restrict(page(s), pages(e - s), rights).map_err(ProtectError::Mmu)?.ignore();
            flush = TlbFlush::new(page(s), pages(e - s));
        }
        let changed = d.rights != rights;
        let at = |a: usize, b: usize, rights| Entry {
            start: a,
            end: b,
            value: RegionData { offset: d.offset + (a - g.start) as u64, rights, ..d },
        };
        let head = (changed && s > g.start).then(|| at(g.start, s, d.rights));
        let tail = (changed && e < g.end).then(|| at(e, g.end, d.rights));
        let mut mid = if changed { at(s, e, rights) } else { g };
        if let Some(h) = head {
            backing.trimmed(d.dataspace, attachment(&g), attachment(&h));
            backing.attached(d.dataspace, attachment(&at(s, g.end, d.rights)));
        }
        if let Some(t) = tail {
            let rest = at(mid.start, g.end, d.rights);
            backing.trimmed(d.dataspace, attachment(&rest), attachment(&at(mid.start, e, d.rights)));
            backing.attached(d.dataspace, attachment(&t));
        }
        if changed {
            backing.trimmed(d.dataspace, attachment(&at(s, e, d.rights)), attachment(&mid));
        }
        // Merges where the changed part meets a neighbour (its edges at the region's).
        let (mut first, mut old) = (g.start, 1);
        if s == g.start
            && let Some(prev) = self.regions.before(c).filter(|p| self.mergeable(p, &mid))
        {
            backing.trimmed(
                d.dataspace,
                attachment(&prev),
                Attachment { size: mid.end - prev.start, ..attachment(&prev) },
            );
            backing.detached(d.dataspace, attachment(&mid));
            mid = Entry { start: prev.start, end: mid.end, value: prev.value };
            (first, old) = (prev.start, 2);
        }
        if e == g.end
            && let Some(next) = self.regions.after(c).map(|n| self.regions.at(n)).filter(|n| self.mergeable(&mid, n))
        {
            backing.trimmed(
                d.dataspace,
                attachment(&mid),
                Attachment { size: next.end - mid.start, ..attachment(&mid) },
            );
            backing.detached(d.dataspace, attachment(&next));
            mid = Entry { end: next.end, ..mid };
            old += 1;
        }
        if old > 1 || changed {
            let (rows, n) = pack([head, Some(mid), tail], g);
            self.splice_regions(first, old, &rows[..n], d.in_area);
        }
        self.generation += 1;
        Ok(flush)
    }

    /// Whether the region `g` may grow in place to end at `new_end`: the bytes after it are
    /// free, in its area or outside every area as `g` is, and inside the window. `next` is
    /// the region after `g`.
    fn free_after(&self, g: &Entry<RegionData<Id>>, next: Option<&Entry<RegionData<Id>>>, new_end: usize) -> bool {
        let regions_free = next.is_none_or(|n| n.start >= new_end);
        if g.value.in_area {
            self.areas.containing(g.start).is_some_and(|a| new_end <= a.end) && regions_free
        } else if self.top_kept {
            new_end <= self.window_end && !self.top.overlaps(g.end, new_end)
        } else {
            new_end <= self.window_end && regions_free
        }
    }

    /// Resizes and moves the bytes `[start, start + old_size)` of one region (`mremap`;
    /// `brk` is a resize in place) to `new_size` bytes and returns their new start:
    ///
    /// - shrinking in place detaches the tail (released with `DETACH_FREE`, as a detach);
    /// - growing in place needs the old range to end the region and the bytes after it to
    ///   be free; the new pages fault in lazily (or are mapped at once with `EAGER_MAP`);
    /// - moving ([`Remap::MayMove`] when growing in place is impossible, [`Remap::Fixed`])
    ///   keeps the frames: every mapped page is mapped at the new place, then unmapped at
    ///   the old one. The rest of the region (before and after the old range) stays.
    ///
    /// The moved or grown region merges with a compatible neighbour. A region never grows
    /// past the end of its dataspace when the backing knows its size.
    ///
    /// # Errors
    /// [`RemapError`]; nothing changes then.
    pub fn remap<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        old_size: usize,
        new_size: usize,
        how: Remap,
    ) -> Result<VirtAddr, RemapError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if old_size == 0 || new_size == 0 {
            return Err(RemapError::ZeroSize);
        }
        if !start.is_aligned(PAGE_SIZE) {
            return Err(RemapError::Unaligned(start));
        }
        let old = page_round(old_size).ok_or(RemapError::SizeOverflow(old_size))?;
        let new = page_round(new_size).ok_or(RemapError::SizeOverflow(new_size))?;
        let s = start.as_usize();
        let old_end = s.checked_add(old).ok_or(RemapError::SizeOverflow(old_size))?;
        let c = self.regions.seek(s).filter(|&c| old_end <= self.regions.at(c).end);
        let c = c.ok_or(RemapError::NotMapped(start))?;
        let g = self.regions.at(c);
        let d = g.value;
        let offset = d.offset + (s - g.start) as u64;
        if new > old {
            let end = offset.checked_add(new as u64).ok_or(RemapError::SizeOverflow(new_size))?;
            if let Some(size) = backing.size(d.dataspace)
                && end > page_end(size)
            {
                return Err(RemapError::BeyondDataspace { end, size });
            }
        }
        let eager = d.flags().contains(Flags::EAGER_MAP);
        let eager_err = |e: AttachError| match e {
            AttachError::Backing(b) => RemapError::Backing(b),
            AttachError::Mmu(m) => RemapError::Mmu(m),
            _ => RemapError::NoSpace(new),
        };
        let fixed = match how {
            Remap::Fixed(to) => Some(to),
            Remap::InPlace | Remap::MayMove => None,
        };
        if fixed.is_none() {
            if new == old {
                return Ok(start);
            }
            if new < old {
                mmu.unmap(page(s + new), pages(old - new)).map_err(RemapError::Mmu)?.flush(mmu);
                self.cut(backing, g, s + new, old_end, true);
                self.generation += 1;
                return Ok(start);
            }
            let new_end = s.checked_add(new).ok_or(RemapError::SizeOverflow(new_size))?;
            let next = self.regions.after(c).map(|n| self.regions.at(n));
            if old_end == g.end && self.free_after(&g, next.as_ref(), new_end) {
                if eager {
                    let grown = RegionData { offset: offset + old as u64, ..d };
                    Self::map_eagerly(backing, mmu, old_end, new_end - old_end, &grown).map_err(eager_err)?;
                }
                let was = attachment(&g);
                let mut grown = Entry { end: new_end, ..g };
                backing.trimmed(d.dataspace, was, attachment(&grown));
                // One splice: the grown region, merged with the next when they match.
                let mut old_rows = 1;
                if let Some(n) = next.filter(|n| self.mergeable(&grown, n)) {
                    backing.trimmed(d.dataspace, attachment(&grown), Attachment { size: n.end - g.start, ..was });
                    backing.detached(n.value.dataspace, attachment(&n));
                    grown.end = n.end;
                    old_rows = 2;
                }
                if old_rows == 1 {
                    // Only the end changes: the row is rewritten where it is.
                    self.update_region(g.start, g.start, grown.end, d);
                } else {
                    self.splice_regions(g.start, old_rows, &[grown], d.in_area);
                }
                self.generation += 1;
                return Ok(start);
            }
            if how == Remap::InPlace {
                return Err(RemapError::NoSpace(new));
            }
        }
        // A move: where to.
        let (to, in_area) = match fixed {
            Some(to_addr) => {
                if !to_addr.is_aligned(PAGE_SIZE) {
                    return Err(RemapError::Unaligned(to_addr));
                }
                let t = to_addr.as_usize();
                let t_end = t.checked_add(new).ok_or(RemapError::SizeOverflow(new_size))?;
                if t < self.window_start || t_end > self.window_end || (t < old_end && s < t_end) {
                    return Err(RemapError::NotAvailable(to_addr));
                }
                let in_area = match self.areas.first_overlapping(t, t_end) {
                    None => false,
                    Some(a) if a.start <= t && t_end <= a.end && !a.value.contains(Flags::RESERVED) => true,
                    Some(_) => return Err(RemapError::NotAvailable(to_addr)),
                };
                (t, in_area)
            }
            None => {
                let (lo, hi, which) = if d.in_area {
                    let a = self.areas.containing(g.start).expect("an in-area region lies in an area");
                    (a.start, a.end, Which::Regions)
                } else {
                    (self.window_start, self.window_end, Which::Top)
                };
                (self.place(which, lo, hi, new, PAGE_SIZE).ok_or(RemapError::NoSpace(new))?, d.in_area)
            }
        };
        let t_end = to + new;
        let kept = old.min(new);
        // The MMU first: clear the destination, map the moved frames and the grown part
        // there, then unmap the old range; any failure unmaps the destination again.
        if fixed.is_some() {
            mmu.unmap(page(to), pages(new)).map_err(RemapError::Mmu)?.flush(mmu);
        }
        let undo = |mmu: &mut M, e: RemapError| {
            if let Ok(f) = mmu.unmap(page(to), pages(new)) {
                f.flush(mmu);
            }
            e
        };
        for i in (0..kept).step_by(PAGE_SIZE) {
            if let Some(t) = mmu.translate(page(s + i)) {
                match mmu.map(page(to + i), t.frame, PageCount::new(1), t.rights, t.cache) {
                    // The destination page had no translation: nothing stale to flush.
                    Ok(f) => f.ignore(),
                    Err(e) => return Err(undo(mmu, RemapError::Mmu(e))),
                }
            }
        }
        if eager && new > old {
            let grown = RegionData { offset: offset + old as u64, ..d };
            if let Err(e) = Self::map_eagerly(backing, mmu, to + old, new - old, &grown) {
                return Err(undo(mmu, eager_err(e)));
            }
        }
        match mmu.unmap(page(s), pages(old)) {
            Ok(f) => f.flush(mmu),
            Err(e) => return Err(undo(mmu, RemapError::Mmu(e))),
        }
        // Then the trees: the destination's regions go, the old range leaves its region.
        if fixed.is_some() {
            self.cut_range(backing, to, t_end, true);
        }
        let g = self.regions.containing(s).expect("the old range is still in its region");
        if new < old && d.flags().contains(Flags::DETACH_FREE) {
            backing.release(d.dataspace, offset + new as u64, (old - new) as u64);
        }
        self.remove_region(g.start, d.in_area);
        let was = attachment(&g);
        let head = (s > g.start).then_some((g.start, s, g.value.offset, d.in_area));
        let tail = (old_end < g.end).then(|| (old_end, g.end, g.value.offset + (old_end - g.start) as u64, d.in_area));
        let moved = Some((to, t_end, offset, in_area));
        let mut first = true;
        for (a, b, off, in_area) in [head, tail, moved].into_iter().flatten() {
            let data = RegionData { offset: off, in_area, ..d };
            self.insert_region(a, b, data);
            let now = Attachment { start: VirtAddr::new(a), size: b - a, offset: off, rights: d.rights };
            if first {
                backing.trimmed(d.dataspace, was, now);
                first = false;
            } else {
                backing.attached(d.dataspace, now);
            }
        }
        self.try_merge(backing, to);
        self.try_merge(backing, t_end);
        self.generation += 1;
        Ok(VirtAddr::new(to))
    }
}
