//! The region map against the reference model: a property test over random action
//! sequences, and a long random-action run (10^6 actions).

use memkit_region::action::{Action, ActionSource, Harness, Stats};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => (any::<u8>(), any::<u8>(), any::<bool>(), any::<bool>(), 0u8..4)
            .prop_map(|(page, pages, search, reserved, align)| Action::Reserve { page, pages, search, reserved, align }),
        1 => any::<u8>().prop_map(|page| Action::FreeArea { page }),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), 0u8..24, 1u8..8, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4)
            .prop_map(|(page, pages, ds, offset, rights, search, in_area, eager, detach_free, align)| Action::Attach {
                page, pages, ds, offset, rights, search, in_area, eager, detach_free, align
            }),
        2 => (any::<u8>(), any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(page, pages, overlap, keep)| Action::Detach { page, pages, overlap, keep }),
        1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(page, pages, overlap)| Action::DetachAll { page, pages, overlap }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(page, pages)| Action::Find { page, pages }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(page, access)| Action::Fault { page, access }),
        2 => (any::<u8>(), any::<u16>(), 0u16..300).prop_map(|(page, within, len)| Action::Load { page, within, len }),
        2 => (any::<u8>(), any::<u16>(), 0u16..300, any::<u8>())
            .prop_map(|(page, within, len, value)| Action::Store { page, within, len, value }),
        1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(page, batch, areas)| Action::List { page, batch, areas }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn region_map_matches_the_model(actions in proptest::collection::vec(action(), 1..300)) {
        let mut h = Harness::new();
        for a in &actions {
            h.apply(a);
        }
    }
}

#[test]
fn a_million_random_actions() {
    let mut h = Harness::new();
    let mut src = ActionSource::new(0x5eed_0001);
    let mut total = Stats::default();
    let add = |t: &mut Stats, s: Stats| {
        t.reserved += s.reserved;
        t.attached += s.attached;
        t.attached_in_area += s.attached_in_area;
        for k in 0..3 {
            t.detached[k] += s.detached[k];
        }
        t.faults += s.faults;
        t.accesses += s.accesses;
        t.nonzero_loads += s.nonzero_loads;
    };
    for i in 0..1_000_000u64 {
        // A fresh map now and then, so that both full and empty maps are exercised.
        if i % 20_000 == 0 {
            add(&mut total, h.stats);
            h = Harness::new();
        }
        h.apply(&src.action());
    }
    add(&mut total, h.stats);
    println!("{total:?}");
    // Every kind of success happened many times (the run is not all errors).
    assert!(total.reserved > 1000 && total.attached > 10_000 && total.attached_in_area > 100, "{total:?}");
    assert!(total.detached.iter().all(|&n| n > 400), "{total:?}");
    assert!(total.faults > 5000 && total.accesses > 20_000 && total.nonzero_loads > 500, "{total:?}");
}
