//! `l4dm_mem_resize`: shrinking (revoke, free the tail, zero the rest of the last page kept)
//! and growing (in place for a contiguous dataspace).

use alloc::vec::Vec;

use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, PhysMemory, Rights};

use super::{Kind, Manager, PAGE, PageRange, RevokeKind, Revoker, backing_pages, lookup_open, release_entries};
use crate::entry::Entry;
use crate::error::ResizeError;
use crate::ids::{ClientId, DataspaceId, PoolId};

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// `l4dm_mem_resize`: shrinking frees the tail (revoking every mapping of it first) and
    /// zeroes the rest of the last page kept, 0 closes the dataspace, growing adds memory
    /// (zero-filled). A contiguous dataspace grows in place or not at all.
    ///
    /// # Errors
    /// [`ResizeError::InvalidId`], [`ResizeError::PermissionDenied`] (not the owner, or an id
    /// without `WRITE`), [`ResizeError::SizeNotSupported`], [`ResizeError::QuotaExceeded`],
    /// [`ResizeError::OutOfMemory`] (also for a shrink whose new last page is shared
    /// copy-on-write and needs a frame of its own to be zeroed past the new size),
    /// [`ResizeError::CannotGrowInPlace`]. On error nothing changed.
    pub fn resize<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        new_size: u64,
        revoker: &mut R,
    ) -> Result<(), ResizeError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(ResizeError::InvalidId(ds))?;
        if d.owner != caller || !ds.rights().contains(Rights::WRITE) {
            return Err(ResizeError::PermissionDenied(ds, caller));
        }
        if new_size == 0 {
            self.close_unchecked(ds);
            return Ok(());
        }
        let kind = d.kind;
        let pool = d.pool;
        let factory = d.factory;
        let old_size = d.size;
        let old_pages = d.entries.len() as u64;
        let new_pages = backing_pages(new_size, kind.granule()).ok_or(ResizeError::SizeNotSupported(new_size))?;
        if new_pages > old_pages {
            let extra = new_pages - old_pages;
            let room = self.room(factory).unwrap_or(0);
            if extra * PAGE > room {
                return Err(ResizeError::QuotaExceeded(factory, extra * PAGE));
            }
            // No dataspace may be larger than its pool: those pages could never have frames.
            if self.pools[pool.index()].as_ref().is_some_and(|p| new_pages > p.total_frames().get()) {
                return Err(ResizeError::OutOfMemory(FrameCount::new(new_pages)));
            }
            let d = lookup_open(&mut self.slots, ds).ok_or(ResizeError::InvalidId(ds))?;
            d.entries
                .try_reserve_exact(extra as usize)
                .map_err(|_| ResizeError::OutOfMemory(FrameCount::new(extra)))?;
        }
        // No byte past the size may keep old data, since a mapping shows whole pages (and a
        // superpage mapping whole superpages): a shrink zeroes the kept backing past the new
        // size, a grow zeroes what lies past the old size (the owner may have written there
        // through a mapping of its last page). This may break copy-on-write, so it runs
        // before anything else that could fail.
        let (from, to) = if new_size < old_size {
            (new_size, new_pages.min(old_pages) * PAGE)
        } else {
            (old_size, old_pages * PAGE)
        };
        if from < to {
            self.zero_bytes(ds, from, to, revoker).map_err(ResizeError::OutOfMemory)?;
        }
        let mut entries = match lookup_open(&mut self.slots, ds) {
            Some(d) => core::mem::take(&mut d.entries),
            None => return Err(ResizeError::InvalidId(ds)),
        };
        // A shrink unmaps every page wholly past the new size, not only the backing pages it
        // frees: a superpage dataspace keeps the rest of its last granule, whose pages the
        // fault path no longer maps (they are past the size).
        let first_past = new_size.div_ceil(PAGE);
        if new_size < old_size && first_past < old_pages {
            revoker.revoke(ds, PageRange { start: first_past, end: old_pages }, RevokeKind::All);
        }
        let result = self.resize_entries(&mut entries, kind, pool, old_pages, new_pages);
        let Some(d) = lookup_open(&mut self.slots, ds) else { return Err(ResizeError::InvalidId(ds)) };
        d.entries = entries;
        result?;
        d.size = new_size;
        if let Some(f) = self.factory_mut(factory) {
            f.used = f.used + new_pages * PAGE - old_pages * PAGE;
        }
        Ok(())
    }

    fn resize_entries(
        &mut self,
        entries: &mut Vec<Entry>,
        kind: Kind,
        pool: PoolId,
        old_pages: u64,
        new_pages: u64,
    ) -> Result<(), ResizeError> {
        if new_pages < old_pages {
            // `resize` has revoked every mapping of these pages.
            release_entries(&self.pools, &mut self.shares, &entries[new_pages as usize..], kind.is_bound());
            entries.truncate(new_pages as usize);
            return Ok(());
        }
        let extra = new_pages - old_pages;
        if extra == 0 {
            return Ok(());
        }
        if kind.is_one_run() {
            let last =
                entries.last().and_then(|e| e.frame()).ok_or(ResizeError::OutOfMemory(FrameCount::new(extra)))?;
            let next = Frame::from_number(last.number() + 1);
            let next_addr = next.start_address();
            let end = next_addr.checked_add(extra * PAGE).ok_or(ResizeError::CannotGrowInPlace(next_addr))?;
            if pool.limit().is_some_and(|l| end.as_u64() > l) {
                return Err(ResizeError::CannotGrowInPlace(next_addr));
            }
            let source = self.pools[pool.index()].as_ref().ok_or(ResizeError::CannotGrowInPlace(next_addr))?;
            source.allocate_at(next, FrameCount::new(extra)).map_err(|e| match e {
                FrameSourceError::Exhausted(n) => ResizeError::OutOfMemory(n),
                _ => ResizeError::CannotGrowInPlace(next_addr),
            })?;
            self.memory.zero(next, FrameCount::new(extra));
            entries.extend((0..extra).map(|i| Entry::new(Frame::from_number(next.number() + i), pool)));
        } else if kind.is_bound() {
            self.fill_granules(entries, pool, kind.granule(), extra)
                .map_err(|()| ResizeError::OutOfMemory(FrameCount::new(kind.granule())))?;
        } else {
            entries.resize(new_pages as usize, Entry::EMPTY);
        }
        Ok(())
    }
}
