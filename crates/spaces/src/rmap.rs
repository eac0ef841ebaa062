//! The reverse index: from each dataspace to the regions that show it (Linux's rmap, its
//! `i_mmap` tree of a file's mappings).
//!
//! ```text
//!   ds#3 ─▶ (offset 0x0000, space 0, 0x4000_0000) 4 pages rw
//!           (offset 0x2000, space 1, 0x7000_0000) 1 page  r
//!   ds#5 ─▶ (offset 0x0000, space 1, 0x7010_0000) 16 pages rw
//! ```
//!
//! Each dataspace's attachments are kept in order of their offset in the dataspace, with a
//! bound on their longest size, so that the attachments showing a range of a dataspace are
//! found by one range query from `offset - longest` to the range's end: revoking pages of a
//! dataspace visits the attachments of that dataspace starting there, never the regions of
//! other dataspaces, whatever the number of regions in a space. The index is kept by the
//! [`Backing`](memkit_region::Backing) the set hands the region map (every attach, trim and
//! detach reports an [`Attachment`]), and checked against a scan of every space by
//! [`SpaceSet::check_invariants`](crate::SpaceSet::check_invariants).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use memkit_dataspace::DataspaceId;
use memkit_region::Attachment;
use memkit_types::{Rights, VirtAddr};

use crate::set::SpaceId;

/// The attachments of one dataspace: (offset, space, start) to (size, rights).
#[derive(Debug, Clone, Default)]
struct Attachments {
    by_offset: BTreeMap<(u64, usize, usize), (usize, Rights)>,
    /// At least the size of every attachment in `by_offset` (reset when it empties).
    longest: usize,
}

/// From each dataspace to the regions that show it, in every space of a set.
#[derive(Debug, Clone, Default)]
pub struct ReverseIndex {
    by_dataspace: BTreeMap<DataspaceId, Attachments>,
}

impl ReverseIndex {
    /// An empty index.
    #[must_use]
    pub const fn new() -> Self {
        ReverseIndex { by_dataspace: BTreeMap::new() }
    }

    /// Records that `region` of space `space` shows `ds`; returns whether it is the first
    /// region showing `ds`.
    pub(crate) fn insert(&mut self, ds: DataspaceId, space: SpaceId, region: Attachment) -> bool {
        let a = self.by_dataspace.entry(ds).or_default();
        let first = a.by_offset.is_empty();
        a.by_offset.insert((region.offset, space.0, region.start.as_usize()), (region.size, region.rights));
        a.longest = a.longest.max(region.size);
        first
    }

    /// Forgets that `region` of space `space` shows `ds`; returns whether no region shows
    /// `ds` any more (and it was there).
    pub(crate) fn remove(&mut self, ds: DataspaceId, space: SpaceId, region: Attachment) -> bool {
        let Some(a) = self.by_dataspace.get_mut(&ds) else { return false };
        if a.by_offset.remove(&(region.offset, space.0, region.start.as_usize())).is_none() {
            return false;
        }
        if a.by_offset.is_empty() {
            self.by_dataspace.remove(&ds);
            return true;
        }
        false
    }

    /// The number of regions showing `ds`, in all spaces.
    #[must_use]
    pub fn count(&self, ds: DataspaceId) -> usize {
        self.by_dataspace.get(&ds).map_or(0, |a| a.by_offset.len())
    }

    /// The number of dataspaces some region shows.
    #[must_use]
    pub fn dataspaces(&self) -> usize {
        self.by_dataspace.len()
    }

    /// Calls `f` with every attachment of `ds` that shows a byte of
    /// `offset .. offset + size`, in order of offset, visiting only the attachments of `ds`
    /// that start at most its longest attachment's size below `offset`. Allocates nothing.
    pub fn for_each_showing(&self, ds: DataspaceId, offset: u64, size: u64, mut f: impl FnMut(SpaceId, Attachment)) {
        let Some(a) = self.by_dataspace.get(&ds) else { return };
        let end = offset.saturating_add(size);
        if size == 0 {
            return;
        }
        let from = offset.saturating_sub(a.longest as u64);
        for (&(off, space, start), &(len, rights)) in a.by_offset.range((from, 0, 0)..(end, 0, 0)) {
            if off.saturating_add(len as u64) > offset {
                f(SpaceId(space), Attachment { start: VirtAddr::new(start), size: len, offset: off, rights });
            }
        }
    }

    /// Every attachment of `ds`, in order of offset.
    #[must_use]
    pub fn attachments(&self, ds: DataspaceId) -> Vec<(SpaceId, Attachment)> {
        let mut out = Vec::new();
        if let Some(a) = self.by_dataspace.get(&ds) {
            for (&(offset, space, start), &(size, rights)) in &a.by_offset {
                out.push((SpaceId(space), Attachment { start: VirtAddr::new(start), size, offset, rights }));
            }
        }
        out
    }

    /// Every entry: (dataspace, space, attachment), in order of dataspace, offset, space
    /// and start.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn entries(&self) -> Vec<(DataspaceId, SpaceId, Attachment)> {
        let mut out = Vec::new();
        for (&ds, a) in &self.by_dataspace {
            assert!(!a.by_offset.is_empty(), "a dataspace without attachments in the reverse index");
            for (&(offset, space, start), &(size, rights)) in &a.by_offset {
                assert!(size <= a.longest, "an attachment longer than its dataspace's bound");
                out.push((ds, SpaceId(space), Attachment { start: VirtAddr::new(start), size, offset, rights }));
            }
        }
        out
    }
}
