//! The mmap-backed MMU against a reference model (a map from page to translation), with
//! real loads through the window after every action: a property test and a random-action
//! driver of 10^6 actions.

#![cfg(feature = "check")]

use std::collections::BTreeMap;
use std::sync::Arc;

use memkit_host::{HostMmu, HostRam, MappingBudget, Window};
use memkit_region::{MapError, Mmu, Translation};
use memkit_types::{CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PAGES: usize = 48;
const FRAMES: u64 = 64;

/// One action on the MMU.
#[derive(Debug, Clone, Copy)]
enum Action {
    Map { page: usize, frame: u64, count: usize, write: bool },
    Unmap { page: usize, count: usize },
    Protect { page: usize, count: usize, write: bool },
}

fn rights(write: bool) -> Rights {
    if write { Rights::RW } else { Rights::READ }
}

struct Harness {
    mmu: HostMmu,
    model: BTreeMap<usize, Translation>,
    first: Page,
}

impl Harness {
    fn new() -> Self {
        let ram = Arc::new(HostRam::new(FRAMES * PAGE_SIZE as u64).unwrap());
        // Every frame carries its number in its first 8 bytes, so a load through the
        // window tells which frame a page really maps.
        for f in 0..FRAMES {
            ram.write(PhysAddr::new(f * PAGE_SIZE as u64), &f.to_le_bytes());
        }
        let window = Window::new(PAGES * PAGE_SIZE).unwrap();
        let first = window.first_page();
        let mmu = HostMmu::with_budget(window, ram, Arc::new(MappingBudget::with_limit(1 << 20)));
        Harness { mmu, model: BTreeMap::new(), first }
    }

    fn page(&self, i: usize) -> Page {
        self.first.checked_add(PageCount::new(i)).unwrap()
    }

    fn apply(&mut self, a: Action) {
        match a {
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
                        self.model.insert(
                            page + i,
                            Translation {
                                frame: Frame::from_number(frame + i as u64),
                                rights: rights(write),
                                cache: CacheMode::WriteBack,
                            },
                        );
                    }
                    Ok(())
                };
                assert_eq!(r.map(|f| f.ignore()), expected, "{a:?}");
            }
            Action::Unmap { page, count } => {
                let r = self.mmu.unmap(self.page(page), PageCount::new(count));
                if page + count > PAGES {
                    assert_eq!(r.unwrap_err(), MapError::OutOfRange(self.page(page)));
                } else {
                    r.unwrap().ignore();
                    for p in page..page + count {
                        self.model.remove(&p);
                    }
                }
            }
            Action::Protect { page, count, write } => {
                let r = self.mmu.protect(self.page(page), PageCount::new(count), rights(write));
                if page + count > PAGES {
                    assert_eq!(r.unwrap_err(), MapError::OutOfRange(self.page(page)));
                } else {
                    r.unwrap().ignore();
                    for p in page..page + count {
                        if let Some(t) = self.model.get_mut(&p) {
                            t.rights = rights(write);
                        }
                    }
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        self.mmu.check_invariants();
        for i in 0..PAGES {
            assert_eq!(self.mmu.translate(self.page(i)), self.model.get(&i).copied(), "page {i}");
        }
        // Real loads: every mapped page shows its frame's tag (unmapped pages are not
        // touched: they would fault, and no handler is registered here).
        for (&i, t) in &self.model {
            let addr = self.page(i).start_address();
            // SAFETY: the page is mapped readable (the model and translate agree).
            let tag = unsafe { memkit_host::access::load_u64(addr) };
            assert_eq!(tag, t.frame.number(), "page {i} loads another frame's data");
        }
    }
}

fn random_action(rng: &mut SmallRng) -> Action {
    let page = rng.random_range(0..PAGES + 2);
    let count = rng.random_range(0..6);
    match rng.random_range(0..10) {
        0..=4 => Action::Map { page, frame: rng.random_range(0..FRAMES + 2), count, write: rng.random() },
        5..=7 => Action::Unmap { page, count },
        _ => Action::Protect { page, count, write: rng.random() },
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..PAGES + 2, 0..FRAMES + 2, 0..6usize, any::<bool>()).prop_map(|(page, frame, count, write)| Action::Map {
            page,
            frame,
            count,
            write
        }),
        (0..PAGES + 2, 0..6usize).prop_map(|(page, count)| Action::Unmap { page, count }),
        (0..PAGES + 2, 0..6usize, any::<bool>()).prop_map(|(page, count, write)| Action::Protect {
            page,
            count,
            write
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_mmu_matches_its_model(actions in proptest::collection::vec(action(), 1..80)) {
        let mut h = Harness::new();
        for a in actions {
            h.apply(a);
        }
    }
}

#[test]
fn a_million_random_actions() {
    let mut h = Harness::new();
    let mut rng = SmallRng::seed_from_u64(0x6d656d6b6974);
    for step in 0..1_000_000u32 {
        let a = random_action(&mut rng);
        // Checking everything after every action would cost 48 translations and loads per
        // step: do it every 64 steps, and the invariants always.
        if step % 64 == 0 {
            h.apply(a);
        } else {
            h.apply_unchecked(a);
            h.mmu.check_invariants();
        }
    }
    h.check();
}

impl Harness {
    fn apply_unchecked(&mut self, a: Action) {
        // The same bookkeeping as apply, without the full comparison.
        match a {
            Action::Map { page, frame, count, write } => {
                let ok = page + count <= PAGES
                    && frame + count as u64 <= FRAMES
                    && !(page..page + count).any(|p| self.model.contains_key(&p));
                let r = self.mmu.map(
                    self.page(page),
                    Frame::from_number(frame),
                    PageCount::new(count),
                    rights(write),
                    CacheMode::WriteBack,
                );
                assert_eq!(r.is_ok(), ok, "{a:?}");
                if let Ok(f) = r {
                    f.ignore();
                    for i in 0..count {
                        self.model.insert(
                            page + i,
                            Translation {
                                frame: Frame::from_number(frame + i as u64),
                                rights: rights(write),
                                cache: CacheMode::WriteBack,
                            },
                        );
                    }
                }
            }
            Action::Unmap { page, count } => {
                if let Ok(f) = self.mmu.unmap(self.page(page), PageCount::new(count)) {
                    f.ignore();
                    for p in page..page + count {
                        self.model.remove(&p);
                    }
                }
            }
            Action::Protect { page, count, write } => {
                if let Ok(f) = self.mmu.protect(self.page(page), PageCount::new(count), rights(write)) {
                    f.ignore();
                    for p in page..page + count {
                        if let Some(t) = self.model.get_mut(&p) {
                            t.rights = rights(write);
                        }
                    }
                }
            }
        }
    }
}
