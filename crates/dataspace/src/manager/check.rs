//! The invariants of the manager and the counts tests compare with a model (feature `check`).

use alloc::vec::Vec;

use memkit_types::{Frame, FrameSource, PAGE_SHIFT, PhysMemory};

use super::{Kind, MAX_ALIGN_SHIFT, Manager, PAGE, SUPERPAGE_FRAMES, backing_pages};
use crate::ids::{DataspaceId, FactoryId, PoolId};

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// The number of distinct frames dataspaces hold from `pool`.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn frames_held(&self, pool: PoolId) -> u64 {
        let mut frames: Vec<u64> = self
            .slots
            .iter()
            .filter_map(|s| s.ds.as_ref())
            .flat_map(|d| d.entries.iter())
            .filter(|e| e.pool() == pool)
            .filter_map(|e| e.frame().map(Frame::number))
            .collect();
        frames.sort_unstable();
        frames.dedup();
        frames.len() as u64
    }

    /// The frame behind every backing page of `ds` (`None` for a page never touched), past
    /// its size too: what a mapping of a whole page, or of a whole superpage, would show.
    /// `None` for an unknown or freed dataspace.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn backing_frames(&self, ds: DataspaceId) -> Option<Vec<Option<Frame>>> {
        let slot = self.slots.get(ds.index()).filter(|s| s.generation == ds.generation())?;
        Some(slot.ds.as_ref()?.entries.iter().map(|e| e.frame()).collect())
    }

    /// The number of frames currently shared copy-on-write by two or more page entries.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn shared_frames(&self) -> u64 {
        self.shares.iter().count() as u64
    }

    /// Checks every invariant; panics with a description at the first one broken.
    ///
    /// # Invariants
    /// - a dataspace has one entry per backing page: its size rounded up to pages
    ///   (superpages), and its charge is that many pages;
    /// - a bound dataspace has every page present, unshared, and without a copy-on-write
    ///   mark; a contiguous one has consecutive frames; a superpage one aligned 2 MiB runs;
    ///   frames of pool 7 end below 16 MiB;
    /// - a frame referenced by `n >= 2` entries has share count `n` and every such entry is
    ///   marked copy-on-write; a frame referenced once has no share count;
    /// - a factory's usage is the sum of its dataspaces' charges, its children's limits and
    ///   its tasks' charges, and at most its limit;
    /// - a slot holds a dataspace that is open or referenced; the live count counts the
    ///   open ones; free slots are empty.
    ///
    /// # Panics
    /// When an invariant does not hold.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&mut self) {
        use alloc::collections::BTreeMap;
        self.shares.check();
        let mut refs: BTreeMap<u64, (u32, bool)> = BTreeMap::new();
        let mut used: BTreeMap<u32, u64> = BTreeMap::new();
        let mut open = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(d) = slot.ds.as_ref() else {
                let retired = slot.generation >= DataspaceId::MAX_GENERATION;
                assert!(retired != self.free_slots.contains(&(i as u32)), "empty slot {i}: free or retired");
                continue;
            };
            assert!(!self.free_slots.contains(&(i as u32)), "slot {i} both used and free");
            assert!(d.open || d.refs > 0, "slot {i} neither open nor referenced");
            if d.open {
                open += 1;
            }
            let pages = backing_pages(d.size, d.kind.granule());
            assert_eq!(pages, Some(d.entries.len() as u64), "slot {i}: entries for size {}", d.size);
            assert!(d.align >= PAGE_SHIFT && d.align <= MAX_ALIGN_SHIFT, "slot {i}: alignment {}", d.align);
            *used.entry(d.factory.0).or_default() += d.charge();
            for (k, e) in d.entries.iter().enumerate() {
                let Some(f) = e.frame() else {
                    assert!(!d.kind.is_bound(), "slot {i}: bound dataspace page {k} empty");
                    continue;
                };
                assert!(self.pools[e.pool().index()].is_some(), "slot {i}: frame from a missing pool");
                if let Some(limit) = e.pool().limit() {
                    assert!(f.start_address().as_u64() + PAGE <= limit, "slot {i}: pool-7 frame {f:?} too high");
                }
                let r = refs.entry(f.number()).or_insert((0, true));
                r.0 += 1;
                r.1 &= e.is_cow();
                if d.kind.is_bound() {
                    assert!(!e.is_cow(), "slot {i}: bound page {k} marked copy-on-write");
                }
            }
            if d.kind.is_one_run() {
                for w in d.entries.windows(2) {
                    let (a, b) = (w[0].frame().map(Frame::number), w[1].frame().map(Frame::number));
                    assert_eq!(a.map(|n| n + 1), b, "slot {i}: contiguous dataspace not contiguous");
                }
            }
            if d.kind.contains(Kind::SUPERPAGES) {
                for chunk in d.entries.chunks(SUPERPAGE_FRAMES as usize) {
                    let first = chunk[0].frame().map_or(1, Frame::number);
                    assert_eq!(first % SUPERPAGE_FRAMES, 0, "slot {i}: superpage misaligned");
                    for (k, e) in chunk.iter().enumerate() {
                        assert_eq!(e.frame().map(Frame::number), Some(first + k as u64), "slot {i}: superpage split");
                    }
                }
            }
        }
        assert_eq!(open, self.live, "live count");
        for (frame, (n, all_cow)) in &refs {
            let counted = self.shares.get(Frame::from_number(*frame));
            if *n >= 2 {
                assert_eq!(counted, *n, "frame {frame:#x}: share count");
                assert!(all_cow, "frame {frame:#x} shared by {n} entries without copy-on-write marks");
            } else {
                assert_eq!(counted, 0, "frame {frame:#x} referenced once but counted shared");
            }
        }
        for (frame, n) in self.shares.iter() {
            assert_eq!(refs.get(&frame).map(|r| r.0), Some(n), "frame {frame:#x}: share count without entries");
        }
        for (fid, fac) in self.factories.iter().enumerate() {
            let Some(fac) = fac else { continue };
            let mut expect = used.get(&(fid as u32)).copied().unwrap_or(0);
            for child in self.factories.iter().flatten() {
                if child.parent == Some(FactoryId(fid as u32)) {
                    expect += child.limit;
                }
            }
            expect += self.tasks.values().filter(|(f, _)| f.0 == fid as u32).map(|(_, b)| b).sum::<u64>();
            assert_eq!(fac.used, expect, "factory {fid}: usage");
            assert!(fac.used <= fac.limit, "factory {fid}: usage above the limit");
        }
    }
}
