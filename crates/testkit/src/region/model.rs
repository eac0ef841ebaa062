//! The reference model of the region harness: plain maps of page ranges and byte vectors.

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

    /// Splits the region containing `at` there, when `at` lies strictly inside it.
    pub(super) fn split(&mut self, at: usize) {
        if let Some((s, r)) = self.region_at(at)
            && s < at
        {
            self.regions.insert(s, ModelRegion { end: at, ..r });
            self.regions.insert(at, ModelRegion { offset: r.offset + at - s, ..r });
        }
    }

    /// Takes `[s, e)` out of every region.
    pub(super) fn cut(&mut self, s: usize, e: usize) {
        self.split(s);
        self.split(e);
        let inside: Vec<usize> = self.regions.range(s..e).map(|(p, _)| *p).collect();
        for p in inside {
            self.regions.remove(&p);
        }
    }

    /// Merges the region ending at `at` with the one starting there when they can be one.
    pub(super) fn merge_at(&mut self, at: usize) -> bool {
        let Some((ls, l)) = at.checked_sub(1).and_then(|p| self.region_at(p)) else { return false };
        let Some(r) = self.regions.get(&at).copied() else { return false };
        let same_area = !l.in_area || self.area_at(ls).is_some_and(|a| r.end <= a.1);
        let fits = l.end == at
            && l.ds == r.ds
            && l.offset + (l.end - ls) == r.offset
            && (l.rights, l.flags, l.in_area) == (r.rights, r.flags, r.in_area)
            && same_area;
        if fits {
            self.regions.remove(&at);
            self.regions.insert(ls, ModelRegion { end: r.end, ..l });
        }
        fits
    }

    /// Tries a merge at every page boundary of `[s, e]`.
    pub(super) fn merge_range(&mut self, s: usize, e: usize) -> usize {
        (s..=e).map(|b| usize::from(self.merge_at(b))).sum()
    }

    /// Recounts the attachments of each dataspace from the regions.
    pub(super) fn recount(&mut self) {
        self.attachments = vec![0; DATASPACES];
        for r in self.regions.values() {
            self.attachments[r.ds] += 1;
        }
    }

    /// Whether `access` works at `page` (in a region with the rights, inside its dataspace).
    pub(super) fn allows(&self, page: usize, access: Access) -> Option<(usize, usize)> {
        let (s, r) = self.region_at(page)?;
        let off = r.offset + page - s;
        (r.rights.allows(access) && off < DATASPACE_PAGES).then_some((r.ds, off))
    }
}
