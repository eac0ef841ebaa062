//! A reference model of the mmap-backed MMU, shared by its property test, its random-action
//! driver and its fuzz target: every [`Action`] is applied to a real [`HostMmu`] over a real
//! window and to a map from page to translation, and the two are compared, with real loads
//! through the window.

use std::collections::BTreeMap;
use std::sync::Arc;

use memkit_region::{MapError, Mmu, Translation};
use memkit_types::{CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights};

use memkit_host::{HostMmu, HostRam, MappingBudget, Window};

/// Pages in the model's window.
pub const PAGES: usize = 48;
/// Frames of the model's RAM.
pub const FRAMES: u64 = 64;

/// One action on the MMU. Fields are taken modulo the model's bounds (a little past them, so
/// that out-of-range requests are exercised too).
#[derive(Debug, Clone, Copy, arbitrary::Arbitrary)]
pub enum Action {
    /// Map `count` pages from `page` to frames from `frame`, read-only or read-write.
    Map {
        /// First page.
        page: usize,
        /// First frame.
        frame: u64,
        /// Pages.
        count: usize,
        /// Read-write, else read-only.
        write: bool,
    },
    /// Unmap `count` pages from `page`.
    Unmap {
        /// First page.
        page: usize,
        /// Pages.
        count: usize,
    },
    /// Change the rights of the mapped pages among `count` pages from `page`.
    Protect {
        /// First page.
        page: usize,
        /// Pages.
        count: usize,
        /// Read-write, else read-only.
        write: bool,
    },
}

impl Action {
    fn normalised(self) -> Self {
        let (p, c) = (|v: usize| v % (PAGES + 2), |v: usize| v % 6);
        match self {
            Action::Map { page, frame, count, write } => {
                Action::Map { page: p(page), frame: frame % (FRAMES + 2), count: c(count), write }
            }
            Action::Unmap { page, count } => Action::Unmap { page: p(page), count: c(count) },
            Action::Protect { page, count, write } => Action::Protect { page: p(page), count: c(count), write },
        }
    }
}

fn rights(write: bool) -> Rights {
    if write { Rights::RW } else { Rights::READ }
}

/// A [`HostMmu`] and its model.
#[derive(Debug)]
pub struct MmuHarness {
    mmu: HostMmu,
    model: BTreeMap<usize, Translation>,
    first: Page,
}

impl Default for MmuHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl MmuHarness {
    /// A fresh window over fresh RAM whose frames carry their numbers.
    ///
    /// # Panics
    /// If the RAM or the window cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let ram = Arc::new(HostRam::new(FRAMES * PAGE_SIZE as u64).expect("RAM"));
        // Every frame carries its number in its first 8 bytes, so a load through the window
        // tells which frame a page really maps.
        for f in 0..FRAMES {
            ram.write(PhysAddr::new(f * PAGE_SIZE as u64), &f.to_le_bytes());
        }
        let window = Window::new(PAGES * PAGE_SIZE).expect("window");
        let first = window.first_page();
        let mmu = HostMmu::with_budget(window, ram, Arc::new(MappingBudget::with_limit(1 << 20)));
        MmuHarness { mmu, model: BTreeMap::new(), first }
    }

    /// The MMU under test.
    #[must_use]
    pub fn mmu(&self) -> &HostMmu {
        &self.mmu
    }

    fn page(&self, i: usize) -> Page {
        self.first.checked_add(PageCount::new(i)).expect("page inside the address space")
    }

    /// Applies `a` to both, checks the result, then compares everything.
    ///
    /// # Panics
    /// On any difference between the MMU and the model.
    pub fn apply(&mut self, a: Action) {
        self.apply_fast(a);
        self.check();
    }

    /// Applies `a` to both and checks its result and the invariants, without comparing every
    /// page.
    ///
    /// # Panics
    /// On a result the model does not expect, or a broken invariant.
    pub fn apply_fast(&mut self, a: Action) {
        match a.normalised() {
            Action::Map { page, frame, count, write } => {
                let r = self.mmu.map(
                    self.page(page),
                    Frame::from_number(frame),
                    PageCount::new(count),
                    rights(write),
                    CacheMode::WriteBack,
                );
                let expected = if page + count > PAGES {
                    Err(MapError::OutOfRange(self.page(page)))
                } else if frame + count as u64 > FRAMES {
                    Err(MapError::InvalidFrame(Frame::from_number(frame)))
                } else if let Some(p) = (page..page + count).find(|p| self.model.contains_key(p)) {
                    Err(MapError::AlreadyMapped(self.page(p)))
                } else {
                    for i in 0..count {
                        let t = Translation {
                            frame: Frame::from_number(frame + i as u64),
                            rights: rights(write),
                            cache: CacheMode::WriteBack,
                        };
                        self.model.insert(page + i, t);
                    }
                    Ok(())
                };
                assert_eq!(r.map(memkit_region::TlbFlush::ignore), expected, "{a:?}");
            }
            Action::Unmap { page, count } => {
                let r = self.mmu.unmap(self.page(page), PageCount::new(count));
                if page + count > PAGES {
                    assert_eq!(r.map(memkit_region::TlbFlush::ignore), Err(MapError::OutOfRange(self.page(page))));
                } else {
                    r.expect("unmap inside the window").ignore();
                    for p in page..page + count {
                        self.model.remove(&p);
                    }
                }
            }
            Action::Protect { page, count, write } => {
                let r = self.mmu.protect(self.page(page), PageCount::new(count), rights(write));
                if page + count > PAGES {
                    assert_eq!(r.map(memkit_region::TlbFlush::ignore), Err(MapError::OutOfRange(self.page(page))));
                } else {
                    r.expect("protect inside the window").ignore();
                    for p in page..page + count {
                        if let Some(t) = self.model.get_mut(&p) {
                            t.rights = rights(write);
                        }
                    }
                }
            }
        }
        self.mmu.check_invariants();
    }

    /// Compares every page's translation with the model, and loads through every mapped page.
    ///
    /// # Panics
    /// On the first difference.
    pub fn check(&self) {
        self.mmu.check_invariants();
        for i in 0..PAGES {
            assert_eq!(self.mmu.translate(self.page(i)), self.model.get(&i).copied(), "page {i}");
        }
        // Unmapped pages are not touched: they would fault, and no handler is registered.
        for (&i, t) in &self.model {
            let addr = self.page(i).start_address();
            // SAFETY: the page is mapped readable (the model and translate agree).
            let tag = unsafe { memkit_host::access::load_u64(addr) };
            assert_eq!(tag, t.frame.number(), "page {i} loads another frame's data");
        }
    }
}
