//! The software MMU's small and large (2 MiB) entries against a plain map from page to
//! (frame, rights): maps, large maps, unmaps and protects of whole entries and of parts of
//! them (which split them), loads through the table. Shared by `memkit-region`'s property
//! test and the `soft_mmu` fuzz target.

use std::collections::BTreeMap;

use memkit_region::{EntrySize, LARGE_PAGES, MapError, Mmu, SoftMmu};
use memkit_types::{CacheMode, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

/// Blocks of 512 pages in the harness's range.
pub const BLOCKS: usize = 4;
/// Pages in the harness's range.
pub const PAGES: usize = BLOCKS * LARGE_PAGES;

/// One step on a [`Harness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// `map_large` of block `block` onto the aligned run numbered `run`; `shift` pages
    /// (mod 4) off the block's start and `frame_shift` frames off the run's, to try
    /// misaligned ones.
    MapLarge {
        /// The block.
        block: u8,
        /// The frame run.
        run: u8,
        /// Pages off the block's start (mod 4).
        shift: u8,
        /// Frames off the run's start (mod 4).
        frame_shift: u8,
        /// Rights bits (read 1, write 2, execute 4).
        rights: u8,
    },
    /// `map` of `count` (mod 8) pages from `page`.
    Map {
        /// The first page.
        page: u16,
        /// Pages (mod 8).
        count: u8,
        /// Rights bits.
        rights: u8,
    },
    /// `unmap` of `count` (mod 1100) pages from `page`.
    Unmap {
        /// The first page.
        page: u16,
        /// Pages (mod 1100).
        count: u16,
    },
    /// `protect` of `count` (mod 1100) pages from `page`.
    Protect {
        /// The first page.
        page: u16,
        /// Pages (mod 1100).
        count: u16,
        /// Rights bits.
        rights: u8,
    },
}

fn page(n: usize) -> Page {
    Page::containing_address(VirtAddr::new(n * PAGE_SIZE))
}

fn rights(bits: u8) -> Rights {
    Rights::from_bits_truncate(bits & 7)
}

/// A software MMU and its model.
#[derive(Debug, Default)]
pub struct Harness {
    mmu: SoftMmu,
    model: BTreeMap<usize, (u64, Rights)>,
    /// Large entries mapped.
    pub large_mapped: u64,
    /// Large entries that a partial unmap or protect split.
    pub splits: u64,
}

impl Harness {
    /// An empty MMU.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `action` to the MMU and the model, then compares them.
    ///
    /// # Panics
    /// On any difference or broken invariant.
    pub fn apply(&mut self, action: &Action) {
        let large_before = self.mmu.large_entries().len();
        // Large entries wholly inside an unmapped range go; the others that go were split.
        let mut whole = 0;
        match *action {
            Action::MapLarge { block, run, shift, frame_shift, rights: r } => {
                let first = (block as usize % BLOCKS) * LARGE_PAGES + (shift as usize % 4);
                let frame =
                    Frame::from_number((1 + u64::from(run % 16)) * LARGE_PAGES as u64 + u64::from(frame_shift % 4));
                let got = self.mmu.map_large(page(first), frame, rights(r), CacheMode::WriteBack);
                let aligned = first.is_multiple_of(LARGE_PAGES) && frame.number().is_multiple_of(LARGE_PAGES as u64);
                let free = (first..first + LARGE_PAGES).all(|p| !self.model.contains_key(&p));
                match got {
                    Ok(flush) => {
                        assert!(aligned && free, "{action:?} mapped");
                        assert!(flush.is_large());
                        flush.flush(&self.mmu);
                        for i in 0..LARGE_PAGES {
                            self.model.insert(first + i, (frame.number() + i as u64, rights(r)));
                        }
                        self.large_mapped += 1;
                    }
                    Err(MapError::Unsupported(_)) => assert!(!aligned, "{action:?} refused as unsupported"),
                    Err(MapError::AlreadyMapped(p)) => {
                        assert!(aligned && !free, "{action:?} refused as mapped");
                        assert!(self.model.contains_key(&p.number()), "{action:?} names an unmapped page");
                    }
                    Err(e) => panic!("{action:?}: {e}"),
                }
            }
            Action::Map { page: p, count, rights: r } => {
                let first = p as usize % PAGES;
                let count = count as usize % 8;
                let got = self.mmu.map(
                    page(first),
                    Frame::from_number(first as u64),
                    PageCount::new(count),
                    rights(r),
                    CacheMode::WriteBack,
                );
                let free = (first..first + count).all(|p| !self.model.contains_key(&p));
                assert_eq!(got.is_ok(), free, "{action:?}");
                if let Ok(flush) = got {
                    flush.ignore();
                    for p in first..first + count {
                        self.model.insert(p, (p as u64, rights(r)));
                    }
                }
            }
            Action::Unmap { page: p, count } => {
                let first = p as usize % PAGES;
                let count = count as usize % 1100;
                whole = self.whole_entries(first, count);
                self.mmu.unmap(page(first), PageCount::new(count)).expect("unmap").flush(&self.mmu);
                for p in first..first + count {
                    self.model.remove(&p);
                }
            }
            Action::Protect { page: p, count, rights: r } => {
                let first = p as usize % PAGES;
                let count = count as usize % 1100;
                self.mmu.protect(page(first), PageCount::new(count), rights(r)).expect("protect").flush(&self.mmu);
                for p in first..first + count {
                    if let Some(e) = self.model.get_mut(&p) {
                        e.1 = rights(r);
                    }
                }
            }
        }
        let large_after = self.mmu.large_entries().len();
        if matches!(action, Action::Unmap { .. }) {
            self.splits += (large_before - whole).saturating_sub(large_after) as u64;
        } else if matches!(action, Action::Protect { .. }) {
            self.splits += large_before.saturating_sub(large_after) as u64;
        }
        self.check();
    }

    /// Large entries wholly inside the `count` pages from `first` on.
    fn whole_entries(&self, first: usize, count: usize) -> usize {
        self.mmu
            .large_entries()
            .iter()
            .filter(|(p, _)| p.number() >= first && p.number() + LARGE_PAGES <= first + count)
            .count()
    }

    /// Compares the MMU with the model, page by page.
    ///
    /// # Panics
    /// On any difference or broken invariant.
    pub fn check(&self) {
        self.mmu.check_invariants();
        assert_eq!(self.mmu.mapped_pages(), self.model.len());
        let got: Vec<(usize, u64, Rights)> =
            self.mmu.translations().iter().map(|(p, t)| (p.number(), t.frame.number(), t.rights)).collect();
        let want: Vec<(usize, u64, Rights)> = self.model.iter().map(|(&p, &(f, r))| (p, f, r)).collect();
        assert_eq!(got, want);
        for (first, t) in self.mmu.large_entries() {
            assert!(first.number().is_multiple_of(LARGE_PAGES) && t.frame.number().is_multiple_of(LARGE_PAGES as u64));
            let last = page(first.number() + LARGE_PAGES - 1);
            let (tl, size) = self.mmu.translate_entry(last).expect("the last page of a large entry");
            assert_eq!((tl.frame.number(), size), (t.frame.number() + LARGE_PAGES as u64 - 1, EntrySize::Large));
        }
    }
}
