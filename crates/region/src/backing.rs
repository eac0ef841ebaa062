//! What a region map needs from the store behind its regions (the dataspace manager).
//!
//! The region map knows nothing of how dataspaces allocate, copy or share frames: it asks a
//! [`Backing`] for the frame behind an offset when a page faults, for the rights a handle
//! allows when it attaches, and tells it where an attachment appears, shrinks or goes away
//! (an [`Attachment`]: enough for the store to keep a reverse index from each dataspace to
//! the regions that show it, as `memkit-spaces` does).

use core::fmt;

use memkit_types::{Access, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

use crate::mmu::{MapError, Mmu, TlbFlush};

/// Where a region shows a dataspace: its place in the address space, the bytes of the
/// dataspace it shows from `offset` on, and its rights. What a [`Backing`] is told on
/// every attach, trim and detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// The region's first byte (page aligned).
    pub start: VirtAddr,
    /// The region's bytes (whole pages).
    pub size: usize,
    /// The offset in the dataspace of the region's first byte (page aligned).
    pub offset: u64,
    /// The region's rights.
    pub rights: Rights,
}

impl Attachment {
    /// The pages of this attachment that show bytes `offset .. offset + size` of its
    /// dataspace (a partly covered page counts), or `None` when it shows none of them.
    #[must_use]
    pub fn pages_showing(&self, offset: u64, size: u64) -> Option<(Page, PageCount)> {
        let end = offset.saturating_add(size);
        let len = self.size as u64;
        if size == 0 || self.offset >= end || self.offset.saturating_add(len) <= offset {
            return None;
        }
        let from = offset.max(self.offset) - self.offset;
        let to = end.min(self.offset.saturating_add(len)) - self.offset;
        let from_page = from / PAGE_SIZE as u64;
        let count = to.div_ceil(PAGE_SIZE as u64) - from_page;
        let first =
            Page::containing_address(self.start).checked_add(PageCount::new(usize::try_from(from_page).ok()?))?;
        Some((first, PageCount::new(usize::try_from(count).ok()?)))
    }

    /// Takes `keep`'s complement away from the mapped pages of this attachment that show
    /// bytes `offset .. offset + size` of its dataspace (every right when `keep` is empty:
    /// the pages are unmapped); the next access faults and is resolved again.
    ///
    /// # Errors
    /// The MMU's error (nothing is flushed then).
    pub fn revoke<M: Mmu + ?Sized>(&self, mmu: &mut M, offset: u64, size: u64, keep: Rights) -> Result<(), MapError> {
        self.revoke_deferred(mmu, offset, size, keep)?.flush(mmu);
        Ok(())
    }

    /// As [`revoke`](Self::revoke), but returns the flush it owes instead of flushing, for
    /// a caller that gathers the flushes of one operation and flushes each MMU once.
    ///
    /// # Errors
    /// The MMU's error: pages of the range may have lost rights then and are not flushed;
    /// flush [`pages_showing`](Self::pages_showing) the range.
    pub fn revoke_deferred<M: Mmu + ?Sized>(
        &self,
        mmu: &mut M,
        offset: u64,
        size: u64,
        keep: Rights,
    ) -> Result<TlbFlush, MapError> {
        let Some((first, count)) = self.pages_showing(offset, size) else { return Ok(TlbFlush::none()) };
        if keep.is_empty() { mmu.unmap(first, count) } else { mmu.protect(first, count, self.rights & keep) }
    }

    /// Unmaps the page of this attachment that shows byte `offset` of its dataspace, when
    /// it is mapped to the frame `stale` (a copy-on-write break gave that page a new frame).
    pub fn unmap_stale<M: Mmu + ?Sized>(&self, mmu: &mut M, offset: u64, stale: Frame) {
        self.unmap_stale_deferred(mmu, offset, stale).flush(mmu);
    }

    /// As [`unmap_stale`](Self::unmap_stale), but returns the flush it owes (nothing when
    /// the page was not on `stale`).
    pub fn unmap_stale_deferred<M: Mmu + ?Sized>(&self, mmu: &mut M, offset: u64, stale: Frame) -> TlbFlush {
        let Some((page, _)) = self.pages_showing(offset, 1) else { return TlbFlush::none() };
        if mmu.translate(page).is_some_and(|t| t.frame == stale) {
            mmu.unmap(page, PageCount::new(1)).unwrap_or_else(|_| TlbFlush::none())
        } else {
            TlbFlush::none()
        }
    }
}

/// Why the backing store could not provide a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingError {
    /// The dataspace does not exist (any more).
    UnknownDataspace,
    /// The offset is at or beyond the dataspace's size.
    OutOfRange(u64),
    /// The dataspace does not allow this access.
    Forbidden(Access),
    /// No memory to allocate the frame (or to break copy-on-write).
    OutOfMemory,
}

impl BackingError {
    /// The seed's code: `-L4_EINVAL` (-22), `-L4_ERANGE` (-34), `-L4_EPERM` (-1), `-L4_ENOMEM` (-12).
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            BackingError::UnknownDataspace => -memkit_types::l4::L4_EINVAL,
            BackingError::OutOfRange(_) => -memkit_types::l4::L4_ERANGE,
            BackingError::Forbidden(_) => -memkit_types::l4::L4_EPERM,
            BackingError::OutOfMemory => -memkit_types::l4::L4_ENOMEM,
        }
    }
}

impl fmt::Display for BackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackingError::UnknownDataspace => f.write_str("no such dataspace"),
            BackingError::OutOfRange(o) => write!(f, "offset {o:#x} is beyond the dataspace"),
            BackingError::Forbidden(a) => write!(f, "the dataspace does not allow {a:?}"),
            BackingError::OutOfMemory => f.write_str("no memory for the page"),
        }
    }
}

impl core::error::Error for BackingError {}

/// A store of dataspaces that regions are attached to.
///
/// Offsets are bytes from the dataspace's start, page aligned.
pub trait Backing {
    /// How a dataspace is named. `Copy`, so that the fault path moves it without allocating.
    type Id: Copy + Eq + fmt::Debug;

    /// The rights the handle `id` allows (what an attachment may ask for at most), or `None`
    /// when there is no such dataspace.
    fn rights(&self, id: Self::Id) -> Option<Rights>;

    /// The size of dataspace `id` in bytes, or `None` when it is unknown (no such
    /// dataspace, or a store that does not say): an attach, a resize or a move checks that a
    /// region shows no byte past it. `None` by default (nothing is checked).
    fn size(&self, id: Self::Id) -> Option<u64> {
        let _ = id;
        None
    }

    /// The frame behind the page at `offset` for an `access`, allocating it on first touch
    /// and breaking copy-on-write on a write, with the rights the mapping may have now (a
    /// copy-on-write page shared after a read is mapped without `WRITE`).
    ///
    /// # Errors
    /// [`BackingError`] when the offset is outside the dataspace, the dataspace is gone or
    /// forbids the access, or memory is exhausted. The fault path calls this: it should not
    /// allocate heap memory.
    fn map(&mut self, id: Self::Id, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError>;

    /// The 2 MiB block from `offset` (2 MiB aligned) of `id` as one run of frames that one
    /// large entry may map for an `access`: the run's first frame (2 MiB aligned) and the
    /// rights the mapping may have now, or `None` when the block cannot be given whole
    /// (`None` by default: the fault path then maps page by page). Only a block every page
    /// of which [`map`](Self::map) would give the frame of the run at its place, with the
    /// same rights and without a change (no allocation, no copy-on-write break), may be
    /// given. Called on the fault path: allocates no heap memory.
    fn large_run(&mut self, id: Self::Id, offset: u64, access: Access) -> Option<(Frame, Rights)> {
        let _ = (id, offset, access);
        None
    }

    /// A new region shows `id`: an attach, or the second half of a region a detach split
    /// (the first half is reported by [`trimmed`](Self::trimmed)).
    fn attached(&mut self, id: Self::Id, region: Attachment);

    /// A region showing `id` went away (it was detached whole).
    fn detached(&mut self, id: Self::Id, region: Attachment);

    /// A region showing `id` changed in place of itself: it lost its head or tail to a detach
    /// (or its tail and middle, when the detach split it), its rights changed, it grew,
    /// shrank or moved, or it took in a neighbour: `old` is now `kept`. The number of regions
    /// showing `id` does not change. Nothing to do by default; a reverse index updates its entry.
    fn trimmed(&mut self, id: Self::Id, old: Attachment, kept: Attachment) {
        let _ = (id, old, kept);
    }

    /// The detached bytes `offset .. offset + size` of `id` are no longer needed (a region
    /// attached with `DETACH_FREE` was detached without `DETACH_KEEP`): the store may free
    /// their frames.
    fn release(&mut self, id: Self::Id, offset: u64, size: u64);
}

impl<B: Backing + ?Sized> Backing for &mut B {
    type Id = B::Id;
    fn rights(&self, id: Self::Id) -> Option<Rights> {
        (**self).rights(id)
    }
    fn size(&self, id: Self::Id) -> Option<u64> {
        (**self).size(id)
    }
    fn map(&mut self, id: Self::Id, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        (**self).map(id, offset, access)
    }
    fn large_run(&mut self, id: Self::Id, offset: u64, access: Access) -> Option<(Frame, Rights)> {
        (**self).large_run(id, offset, access)
    }
    fn attached(&mut self, id: Self::Id, region: Attachment) {
        (**self).attached(id, region);
    }
    fn detached(&mut self, id: Self::Id, region: Attachment) {
        (**self).detached(id, region);
    }
    fn trimmed(&mut self, id: Self::Id, old: Attachment, kept: Attachment) {
        (**self).trimmed(id, old, kept);
    }
    fn release(&mut self, id: Self::Id, offset: u64, size: u64) {
        (**self).release(id, offset, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE_SIZE;

    fn att(start: usize, pages: usize, offset: u64) -> Attachment {
        Attachment { start: VirtAddr::new(start), size: pages * P, offset, rights: Rights::RW }
    }

    fn page(addr: usize) -> Page {
        Page::containing_address(VirtAddr::new(addr))
    }

    #[test]
    fn the_pages_showing_a_range_cover_every_byte_of_it_in_the_attachment() {
        let a = att(0x10_0000, 4, 2 * P as u64);
        // Before, after and at the edges of the shown bytes.
        assert_eq!(a.pages_showing(0, 2 * P as u64), None);
        assert_eq!(a.pages_showing(6 * P as u64, 1), None);
        assert_eq!(a.pages_showing(2 * P as u64, 0), None);
        assert_eq!(a.pages_showing(0, 3 * P as u64), Some((page(0x10_0000), PageCount::new(1))));
        assert_eq!(a.pages_showing(5 * P as u64 + 7, 100), Some((page(0x10_0000 + 3 * P), PageCount::new(1))));
        // An unaligned range touching two pages maps to both.
        assert_eq!(a.pages_showing(3 * P as u64 - 8, 16), Some((page(0x10_0000), PageCount::new(2))));
        assert_eq!(a.pages_showing(0, u64::MAX), Some((page(0x10_0000), PageCount::new(4))));
    }

    #[test]
    fn an_attachment_at_the_end_of_the_offsets_does_not_overflow() {
        let a = att(0x10_0000, 4, u64::MAX - 100);
        assert_eq!(a.pages_showing(u64::MAX - 50, 10), Some((page(0x10_0000), PageCount::new(1))));
        assert_eq!(a.pages_showing(u64::MAX, 1), None);
        assert_eq!(a.pages_showing(0, 1), None);
    }
}
