//! The map's invariants and tree counters (feature `check`).

use alloc::vec::Vec;

use memkit_types::PAGE_SIZE;

use super::RegionMap;
use crate::flags::Flags;
use crate::tree::TreeStats;

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// The structural changes of the map's trees so far (regions, areas, and the tree of
    /// areas and regions outside them, added up), for tests that show which paths of the
    /// trees they reached.
    #[cfg(any(test, feature = "check"))]
    pub fn tree_stats(&self) -> TreeStats {
        self.regions.stats().plus(&self.areas.stats()).plus(&self.top.stats())
    }

    /// The walks from a tree's root to a leaf so far, in all of the map's trees: a lookup
    /// that a leaf hint or a cached region answered is not one. Tests take the difference
    /// around an operation to bound what it costs.
    #[cfg(any(test, feature = "check"))]
    pub fn descents(&self) -> u64 {
        self.regions.descents() + self.areas.descents() + self.top.descents()
    }

    /// The lookups by address that a leaf hint answered without a descent so far, in all of
    /// the map's trees (each still reads a leaf): with [`descents`](Self::descents), every
    /// search of a tree.
    #[cfg(any(test, feature = "check"))]
    pub fn hinted_lookups(&self) -> u64 {
        self.regions.hinted() + self.areas.hinted() + self.top.hinted()
    }

    /// Checks every invariant of the map.
    ///
    /// # Panics
    /// On the first broken invariant, naming it.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.regions.check_invariants();
        self.areas.check_invariants();
        self.top.check_invariants();
        let in_window = |s: usize, e: usize| s >= self.window_start && e <= self.window_end;
        let mut expected_top = Vec::new();
        for a in self.areas.entries() {
            assert!(in_window(a.start, a.end), "area outside the window");
            assert!(a.start.is_multiple_of(PAGE_SIZE) && a.end.is_multiple_of(PAGE_SIZE), "area not page aligned");
            assert!((Flags::RESERVED).contains(a.value), "area with region flags");
            expected_top.push((a.start, a.end));
        }
        for r in self.regions.entries() {
            assert!(in_window(r.start, r.end), "region outside the window");
            assert!(r.start.is_multiple_of(PAGE_SIZE) && r.end.is_multiple_of(PAGE_SIZE), "region not page aligned");
            assert!(r.value.offset.is_multiple_of(PAGE_SIZE as u64), "offset not page aligned");
            if r.value.in_area {
                let a = self.areas.containing(r.start).expect("in-area region outside every area");
                assert!(r.end <= a.end, "region sticks out of its area");
                assert!(!a.value.contains(Flags::RESERVED), "region in a reserved area");
            } else {
                assert!(!self.areas.overlaps(r.start, r.end), "region outside areas overlaps an area");
                expected_top.push((r.start, r.end));
            }
        }
        expected_top.sort_unstable();
        let top: Vec<(usize, usize)> = self.top.entries().iter().map(|e| (e.start, e.end)).collect();
        if self.top_kept {
            assert_eq!(top, expected_top, "top tree is not areas + regions outside areas");
        } else {
            assert!(top.is_empty() && self.areas.len() == 0, "top tree or areas before the first area");
        }
    }
}
