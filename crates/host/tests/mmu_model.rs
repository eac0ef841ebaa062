//! The mmap-backed MMU against its reference model ([`memkit_testkit::host`]), with real loads
//! through the window: a property test and a random-action driver of 10^6 actions.

use memkit_testkit::host::{Action, FRAMES, MmuHarness, PAGES};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

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
        let mut h = MmuHarness::new();
        for a in actions {
            h.apply(a);
        }
    }
}

#[test]
fn a_million_random_actions() {
    let mut h = MmuHarness::new();
    let mut rng = SmallRng::seed_from_u64(0x6d656d6b6974);
    for step in 0..1_000_000u32 {
        let a = random_action(&mut rng);
        // Comparing every page after every action would cost 48 translations and loads per
        // step: do it every 64 steps; results and invariants are checked always.
        if step % 64 == 0 {
            h.apply(a);
        } else {
            h.apply_fast(a);
        }
    }
    h.check();
    assert!(h.mmu().mappings() >= 1);
}
