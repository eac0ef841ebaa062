//! The manager against a reference model in which every dataspace is a `Vec<u8>`: a property
//! test, the random-action driver (10^6 actions) and exhaustive fault injection.

use memkit_testkit::dataspace::{Action, SLOTS, World};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn action() -> impl Strategy<Value = Action> {
    let slot = 0..SLOTS as u8;
    prop_oneof![
        3 => (slot.clone(), any::<u16>(), 0..4u8, prop::bool::weighted(0.15))
            .prop_map(|(slot, size, kind, pool7)| Action::Create { slot, size, kind, pool7 }),
        4 => (slot.clone(), 0..36_000u16, any::<u16>(), any::<u8>())
            .prop_map(|(slot, offset, len, byte)| Action::Write { slot, offset, len, byte }),
        2 => (slot.clone(), 0..36_000u16, any::<u16>()).prop_map(|(slot, offset, len)| Action::Read { slot, offset, len }),
        2 => (slot.clone(), 0..36_000u16, any::<bool>()).prop_map(|(slot, offset, write)| Action::Map { slot, offset, write }),
        3 => (slot.clone(), slot.clone(), 0..34_000u16, 0..20_000u16, any::<u16>(), prop::bool::weighted(0.7), prop::bool::weighted(0.1), any::<bool>())
            .prop_map(|(src, dst, src_offs, dst_offs, len, cow, pool7, same_phase)| {
                let len = if len.is_multiple_of(4) { u16::MAX } else { len % 36_000 };
                let src_offs = if len % 3 == 0 { src_offs - src_offs % 4096 } else { src_offs };
                Action::Copy { src, dst, src_offs, dst_offs, len, cow, pool7, same_phase }
            }),
        2 => (slot.clone(), any::<u16>(), prop::bool::weighted(0.1))
            .prop_map(|(slot, size, foreign)| Action::Resize { slot, size, foreign }),
        1 => (slot.clone(), prop::bool::weighted(0.2)).prop_map(|(slot, foreign)| Action::Close { slot, foreign }),
        1 => (slot.clone(), 0..36_000u16, 0..20_000u16).prop_map(|(slot, offset, len)| Action::Clear { slot, offset, len }),
        1 => (slot.clone(), 0..36_000u16, 0..20_000u16).prop_map(|(slot, offset, len)| Action::Populate { slot, offset, len }),
        1 => slot.clone().prop_map(|slot| Action::Attach { slot }),
        1 => slot.clone().prop_map(|slot| Action::Detach { slot }),
        1 => slot.prop_map(|slot| Action::Stale { slot }),
        1 => any::<u8>().prop_map(|k| Action::FailAllocation { k }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

    #[test]
    fn manager_matches_model(actions in prop::collection::vec(action(), 1..120)) {
        let mut world = World::new();
        for a in &actions {
            world.apply(a);
        }
        world.teardown();
    }
}

/// A random action with the same weights as the property test, from a plain RNG.
fn random_action(rng: &mut SmallRng) -> Action {
    let slot = rng.random_range(0..SLOTS as u8);
    let offset = rng.random_range(0..36_000u16);
    match rng.random_range(0..23u32) {
        0..=2 => {
            Action::Create { slot, size: rng.random(), kind: rng.random_range(0..4), pool7: rng.random_bool(0.15) }
        }
        3..=6 => Action::Write { slot, offset, len: rng.random(), byte: rng.random() },
        7..=8 => Action::Read { slot, offset, len: rng.random() },
        9..=10 => Action::Map { slot, offset, write: rng.random() },
        11..=13 => {
            let len: u16 = rng.random();
            let src_offs = match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(0..8) * 4096,
                _ => rng.random_range(0..34_000),
            };
            Action::Copy {
                src: slot,
                dst: rng.random_range(0..SLOTS as u8),
                src_offs,
                dst_offs: rng.random_range(0..20_000),
                len: if len.is_multiple_of(4) { u16::MAX } else { len % 36_000 },
                cow: rng.random_bool(0.7),
                pool7: rng.random_bool(0.1),
                same_phase: rng.random_bool(0.7),
            }
        }
        14..=15 => Action::Resize { slot, size: rng.random(), foreign: rng.random_bool(0.1) },
        16 => Action::Close { slot, foreign: rng.random_bool(0.2) },
        17 => Action::Clear { slot, offset, len: rng.random_range(0..20_000) },
        18 => Action::Populate { slot, offset, len: rng.random_range(0..20_000) },
        19 => Action::Attach { slot },
        20 => Action::Detach { slot },
        21 => Action::Stale { slot },
        _ => Action::FailAllocation { k: rng.random() },
    }
}

/// The random-action driver: 10^6 actions in several worlds, each torn down at the end.
#[test]
fn random_action_driver() {
    const ACTIONS: u64 = if cfg!(miri) { 2_000 } else { 1_000_000 };
    const PER_WORLD: u64 = if cfg!(miri) { 1_000 } else { 5_000 };
    let mut rng = SmallRng::seed_from_u64(0x0da7_a5ace);
    let (mut done, mut successes, mut most_shared) = (0, 0, 0);
    while done < ACTIONS {
        let mut world = World::new();
        for _ in 0..PER_WORLD {
            world.apply(&random_action(&mut rng));
            most_shared = most_shared.max(world.manager.shared_frames());
        }
        world.teardown();
        done += PER_WORLD;
        successes += world.successes;
    }
    assert!(successes > ACTIONS / 4, "only {successes} of {ACTIONS} actions did something");
    assert!(
        most_shared >= 8 || cfg!(miri),
        "copy-on-write sharing barely exercised: at most {most_shared} frames shared"
    );
}

/// A workload run again and again, with the k-th frame allocation failing for every k until
/// a run needs no more than k allocations: every failure is clean (the world's checks after
/// each action: no frame leaked, no dataspace half-built, contents as the model says).
#[test]
fn every_allocation_may_fail() {
    let mut rng = SmallRng::seed_from_u64(7);
    let workload: Vec<Action> = (0..if cfg!(miri) { 100 } else { 1500 })
        .map(|_| random_action(&mut rng))
        .filter(|a| !matches!(a, Action::FailAllocation { .. }))
        .collect();
    let mut k = 0u64;
    loop {
        let mut world = World::new();
        let base = world.manager.pool(memkit_dataspace::PoolId::DEFAULT).map_or(0, |p| p.allocation_requests());
        world.fail_allocation_at(k);
        for a in &workload {
            world.apply(a);
            world.compare_all();
        }
        let requests = world.manager.pool(memkit_dataspace::PoolId::DEFAULT).map_or(0, |p| p.allocation_requests());
        world.teardown();
        if requests - base <= k {
            break;
        }
        k += 1;
    }
    assert!(k > 40 || cfg!(miri), "the workload allocated only {k} times");
}
