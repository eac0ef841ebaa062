//! The region map's reference model: plain maps of page ranges, first fit spelled out.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ModelRegion {
    pub(super) end: usize,
    pub(super) ds: usize,
    pub(super) offset: usize,
    pub(super) rights: Rights,
    pub(super) flags: Flags,
    pub(super) in_area: bool,
}

/// The reference model: plain maps of page ranges and byte vectors.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// start page → region.
    pub(super) regions: BTreeMap<usize, ModelRegion>,
    /// start page → (end page, reserved).
    pub(super) areas: BTreeMap<usize, (usize, bool)>,
    /// Dataspace contents.
    pub(super) bytes: Vec<Vec<u8>>,
    /// Attachments per dataspace.
    pub(super) attachments: Vec<usize>,
}

impl Model {
    pub(super) fn new() -> Self {
        Model {
            regions: BTreeMap::new(),
            areas: BTreeMap::new(),
            bytes: vec![vec![0; DATASPACE_PAGES * PAGE_SIZE]; DATASPACES],
            attachments: vec![0; DATASPACES],
        }
    }

    pub(super) fn region_at(&self, page: usize) -> Option<(usize, ModelRegion)> {
        self.regions.range(..=page).next_back().filter(|(_, r)| page < r.end).map(|(s, r)| (*s, *r))
    }

    pub(super) fn area_at(&self, page: usize) -> Option<(usize, usize, bool)> {
        self.areas.range(..=page).next_back().filter(|(_, a)| page < a.0).map(|(s, a)| (*s, a.0, a.1))
    }

    /// The lowest region that overlaps `[s, e)`: the one starting at or below `s` if it
    /// reaches past `s`, else the first one starting in `(s, e)`.
    pub(super) fn regions_overlap(&self, s: usize, e: usize) -> Option<usize> {
        let below = self.regions.range(..=s).next_back().filter(|(_, r)| r.end > s);
        below.or_else(|| self.regions.range(s..e).next()).map(|(rs, _)| *rs)
    }

    /// The end of an area that overlaps `[s, e)`.
    pub(super) fn area_overlap(&self, s: usize, e: usize) -> Option<usize> {
        let below = self.areas.range(..=s).next_back().filter(|(_, a)| a.0 > s);
        below.or_else(|| self.areas.range(s..e).next()).map(|(_, a)| a.0)
    }

    /// The end of an obstacle outside areas that overlaps `[s, e)`: an area or a region
    /// outside areas.
    pub(super) fn top_obstacle(&self, s: usize, e: usize) -> Option<usize> {
        self.area_overlap(s, e).or_else(|| {
            let below = self.regions.range(..=s).next_back().filter(|(_, r)| r.end > s && !r.in_area);
            below.or_else(|| self.regions.range(s..e).find(|(_, r)| !r.in_area)).map(|(_, r)| r.end)
        })
    }

    /// Whether an area or a region outside areas overlaps `[s, e)`.
    pub(super) fn top_taken(&self, s: usize, e: usize) -> bool {
        self.top_obstacle(s, e).is_some()
    }

    /// The first `pages` aligned free pages in `[lo, hi)`: tries each aligned place in
    /// turn, skipping past the end of whatever is in the way.
    pub(super) fn first_fit(&self, lo: usize, hi: usize, pages: usize, align: usize, top: bool) -> Option<usize> {
        let mut p = lo.next_multiple_of(align);
        while p + pages <= hi {
            let obstacle = if top {
                self.top_obstacle(p, p + pages)
            } else {
                self.regions_overlap(p, p + pages).map(|s| self.regions[&s].end)
            };
            match obstacle {
                None => return Some(p),
                Some(end) => p = end.next_multiple_of(align).max(p + align),
            }
        }
        None
    }

    /// Whether `access` works at `page` (in a region with the rights, inside its dataspace).
    pub(super) fn allows(&self, page: usize, access: Access) -> Option<(usize, usize)> {
        let (s, r) = self.region_at(page)?;
        let off = r.offset + page - s;
        (r.rights.allows(access) && off < DATASPACE_PAGES).then_some((r.ds, off))
    }
}
