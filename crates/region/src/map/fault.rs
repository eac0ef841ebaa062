//! Page faults and revocation: resolving a fault through the region's backing and the MMU,
//! and taking mappings of a dataspace's pages back.

use memkit_types::{Access, Page, PageCount, Rights, SUPERPAGE_SIZE, VirtAddr};

use super::{RegionData, RegionMap};
use crate::backing::Backing;
use crate::error::FaultError;
use crate::mmu::{EntrySize, LARGE_PAGES, Mmu, Translation};

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// Resolves a page fault (the seed's pager `page_fault`): finds the region containing
    /// `addr`, asks `backing` for the frame (allocating it, or breaking copy-on-write on a
    /// write) and maps the page through `mmu` with the region's rights, intersected with
    /// what the backing allows now, and its cache mode. Allocates no heap memory itself.
    ///
    /// Where the MMU maps large entries ([`Mmu::maps_large`]), the region covers the whole
    /// 2 MiB-aligned block around `addr` at a 2 MiB-aligned offset, nothing in the block is
    /// mapped yet (or one large entry maps it with too few rights) and the backing gives
    /// the block as one run ([`Backing::large_run`]), the block is mapped with one large
    /// entry; otherwise the page alone.
    ///
    /// # Errors
    /// [`FaultError::NoRegion`] outside every region, [`FaultError::Forbidden`] when the
    /// rights do not allow `access`, [`FaultError::Backing`], [`FaultError::Mmu`]: nothing
    /// is mapped then.
    pub fn resolve<B, M>(
        &self,
        backing: &mut B,
        mmu: &mut M,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, FaultError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        // The page's current translation first: where the MMU keeps it depends on the
        // address alone, so its cache misses overlap the region lookup's.
        let pg = Page::containing_address(addr);
        let current = mmu.translate(pg);
        let r = self.regions.containing_cached(addr.as_usize()).ok_or(FaultError::NoRegion(addr))?;
        let d = r.value;
        if !d.rights.allows(access) {
            return Err(FaultError::Forbidden { addr, access, rights: d.rights });
        }
        let offset = d.offset + (pg.start_address().as_usize() - r.start) as u64;
        if mmu.maps_large()
            && let Some(t) = Self::resolve_large(backing, mmu, (r.start, r.end), &d, addr, access, current)
        {
            return Ok(t);
        }
        let (frame, now) = backing.map(d.dataspace, offset, access).map_err(FaultError::Backing)?;
        let rights = d.rights & now;
        if !rights.allows(access) {
            return Err(FaultError::Forbidden { addr, access, rights });
        }
        let one = PageCount::new(1);
        let t = Translation { frame, rights, cache: d.cache };
        match current {
            Some(old) if old == t => {}
            Some(old) if old.frame == frame && old.cache == d.cache => {
                mmu.protect(pg, one, rights).map_err(FaultError::Mmu)?.flush(mmu);
            }
            Some(_) => {
                mmu.unmap(pg, one).map_err(FaultError::Mmu)?.flush(mmu);
                mmu.map(pg, frame, one, rights, d.cache).map_err(FaultError::Mmu)?.flush(mmu);
            }
            None => mmu.map(pg, frame, one, rights, d.cache).map_err(FaultError::Mmu)?.flush(mmu),
        }
        Ok(t)
    }

    /// The large-entry path of [`resolve`](Self::resolve): maps the 2 MiB block around
    /// `addr` with one large entry and returns the faulting page's translation, or `None`
    /// (nothing changed) when the block does not qualify; the caller maps the page alone
    /// then.
    fn resolve_large<B, M>(
        backing: &mut B,
        mmu: &mut M,
        (start, end): (usize, usize),
        d: &RegionData<Id>,
        addr: VirtAddr,
        access: Access,
        current: Option<Translation>,
    ) -> Option<Translation>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let block = addr.as_usize() & !(SUPERPAGE_SIZE - 1);
        let block_end = block.checked_add(SUPERPAGE_SIZE)?;
        let offset = d.offset.checked_add((block.checked_sub(start)?) as u64)?;
        if block_end > end || !offset.is_multiple_of(SUPERPAGE_SIZE as u64) {
            return None;
        }
        let first = Page::containing_address(VirtAddr::try_new(block).ok()?);
        // Nothing mapped at the faulting page, or one large entry with too few rights.
        let old = match current {
            None => None,
            Some(_) => match mmu.translate_entry(Page::containing_address(addr))? {
                (t, EntrySize::Large) => Some(t),
                (_, EntrySize::Small) => return None,
            },
        };
        let (frame, now) = backing.large_run(d.dataspace, offset, access)?;
        let rights = d.rights & now;
        if !rights.allows(access) {
            return None;
        }
        let count = PageCount::new(LARGE_PAGES);
        match old {
            Some(old) => {
                let old_first = mmu.translate(first)?;
                if old_first.frame != frame || old.cache != d.cache {
                    return None;
                }
                // Another CPU may have resolved the same fault first: nothing to change then.
                if old.rights != rights {
                    let flush = mmu.protect(first, count, rights).ok()?;
                    flush.flush(mmu);
                }
            }
            None => match mmu.map_large(first, frame, rights, d.cache) {
                Ok(flush) => flush.flush(mmu),
                // Small translations in the block, no memory for a table, or an MMU that
                // refuses this block: the page alone.
                Err(_) => return None,
            },
        }
        mmu.translate(Page::containing_address(addr))
    }

    /// Takes `keep`'s complement away from the mapped pages that show bytes
    /// `offset .. offset + size` of `dataspace` (every right when `keep` is empty: the pages
    /// are unmapped). The next access faults and is resolved again. Visits every region:
    /// this is for a map used on its own; a set of spaces keeps a reverse index from each
    /// dataspace to its [`Attachment`](crate::Attachment)s and calls [`Attachment::revoke`](crate::Attachment::revoke) on those alone
    /// (`memkit-spaces`). Allocates nothing.
    ///
    /// # Errors
    /// The MMU's first error; the other regions are still processed.
    pub fn revoke<M: Mmu + ?Sized>(
        &self,
        mmu: &mut M,
        dataspace: Id,
        offset: u64,
        size: u64,
        keep: Rights,
    ) -> Result<(), crate::mmu::MapError> {
        let mut result = Ok(());
        self.regions.for_each(|r| {
            if r.value.dataspace != dataspace {
                return;
            }
            if let Err(e) = Self::region_info(r).attachment().revoke(mmu, offset, size, keep)
                && result.is_ok()
            {
                result = Err(e);
            }
        });
        result
    }

    /// Unmaps every page that shows byte `offset` of `dataspace` through the frame `stale`
    /// (after a copy-on-write break gave that page a new frame). Visits every region, as
    /// [`revoke`](Self::revoke) does ([`Attachment::unmap_stale`](crate::Attachment::unmap_stale) is the one-region step).
    /// Allocates nothing.
    pub fn unmap_stale<M: Mmu + ?Sized>(&self, mmu: &mut M, dataspace: Id, offset: u64, stale: memkit_types::Frame) {
        self.regions.for_each(|r| {
            if r.value.dataspace == dataspace {
                Self::region_info(r).attachment().unmap_stale(mmu, offset, stale);
            }
        });
    }
}
