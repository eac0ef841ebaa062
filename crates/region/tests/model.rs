//! The region map against the reference model: a property test over random action
//! sequences, a long random-action run (10^6 actions), and a run with runs of many small
//! regions that shows the actions reach every structural path of the region tree.

use memkit_region::TreeStats;
use memkit_testkit::region::{Action, ActionSource, Harness, Stats};
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
        1 => (any::<u8>(), any::<bool>(), 0u16..200, any::<u8>(), any::<u8>())
            .prop_map(|(lane, shifted, count, stride, order)| Action::Run { lane, shifted, count, stride, order }),
        1 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(lane, every, order)| Action::DetachRun { lane, every, order }),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(page, pages, rights)| Action::Protect { page, pages, rights }),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(page, old, new, how, to)| Action::Remap { page, old, new, how, to }),
        1 => (any::<u8>(), any::<u8>(), any::<u8>(), 0u8..24, 1u8..8, any::<bool>(), any::<bool>())
            .prop_map(|(page, pages, ds, offset, rights, in_area, detach_free)| Action::AttachReplace {
                page, pages, ds, offset, rights, in_area, detach_free
            }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(page, pages)| Action::Merge { page, pages }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(page, pages)| Action::RegionsIn { page, pages }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 200 }))]
    #[test]
    fn region_map_matches_the_model(actions in proptest::collection::vec(action(), 1..if cfg!(miri) { 30 } else { 300 })) {
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
    // Under Miri a few thousand.
    let (actions, fresh) = if cfg!(miri) { (500u64, 500) } else { (1_000_000, 20_000) };
    for i in 0..actions {
        // A fresh map now and then, so that both full and empty maps are exercised.
        if i % fresh == 0 {
            add(&mut total, h.stats);

            h = Harness::new();
        }
        h.apply(&src.action());
    }
    add(&mut total, h.stats);
    println!("{total:?}");
    if cfg!(miri) {
        return;
    }
    // Every kind of success happened many times (the run is not all errors).
    assert!(total.reserved > 1000 && total.attached > 10_000 && total.attached_in_area > 100, "{total:?}");
    assert!(total.detached.iter().all(|&n| n > 400), "{total:?}");
    assert!(total.faults > 5000 && total.accesses > 20_000 && total.nonzero_loads > 500, "{total:?}");
}

/// The random actions with runs of many small regions reach every structural path of the
/// region tree: splits, merges and evening out of leaves and of internal nodes, and the root
/// growing to and shrinking from one and two internal levels.
#[test]
fn random_actions_reach_every_structural_path() {
    let (actions, fresh) = if cfg!(miri) { (40u64, 40) } else { (30_000, 15_000) };
    let mut h = Harness::new();
    // Under Miri without the runs (each of up to 2048 attaches).
    let mut src = if cfg!(miri) { ActionSource::new(0x5eed_0002) } else { ActionSource::with_runs(0x5eed_0002, 60) };
    let mut tree = TreeStats::NONE;
    for i in 0..actions {
        if i % fresh == 0 {
            tree = tree.plus(&h.map().tree_stats());
            h = Harness::new();
        }
        h.apply(&src.action());
    }
    tree = tree.plus(&h.map().tree_stats());
    println!("{tree:?}");
    if cfg!(miri) {
        return;
    }
    for level in 0..2 {
        assert!(tree.splits[level] > 0, "no split at height {level}: {tree:?}");
        assert!(tree.merges[level] > 0, "no merge at height {level}: {tree:?}");
        assert!(tree.evens[level] > 0, "no evening out at height {level}: {tree:?}");
    }
    for height in 1..3 {
        assert!(tree.grows[height] > 0, "the root never grew to height {height}: {tree:?}");
        assert!(tree.shrinks[height] > 0, "the root never shrank from height {height}: {tree:?}");
    }
}
