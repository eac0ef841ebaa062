//! The allocator against a reference model: a property test, a random-action driver of
//! 10^6 actions, and the no-pointer test (the header copied elsewhere mid-workload).

use arbitrary::{Arbitrary, Unstructured};
use memkit_testkit::phys::{Action, Harness};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn actions(bytes: &[u8]) -> Vec<Action> {
    let mut u = Unstructured::new(bytes);
    let mut v = Vec::new();
    while let Ok(a) = Action::arbitrary(&mut u) {
        v.push(a);
        if u.is_empty() {
            break;
        }
    }
    v
}

proptest! {
    // Miri runs a few cases (each action is about a thousand times slower there).
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 3 } else { 96 }, ..ProptestConfig::default() })]

    /// Every action checked against the model, every frame compared after every action.
    #[test]
    fn allocator_matches_model(
        start in 0u64..5000,
        frames in 1u64..1200,
        reserved in proptest::collection::vec((0u64..1300, 0u64..200), 0..4),
        bytes in proptest::collection::vec(any::<u8>(), 0..if cfg!(miri) { 150 } else { 1500 }),
    ) {
        let reserved: Vec<(u64, u64)> = reserved;
        let mut h = match std::panic::catch_unwind(|| Harness::new(start, frames, &reserved)) {
            Ok(h) => h,
            // No room for the header outside the reserved regions: the same area without them.
            Err(_) => Harness::new(start, frames, &[]),
        };
        for a in actions(&bytes) {
            h.apply(a);
            h.check();
        }
        h.free_all();
    }
}

fn random_actions(rng: &mut SmallRng, buf: &mut [u8]) -> Vec<Action> {
    rng.fill(buf);
    actions(buf)
}

/// 10^6 random actions on a 4096-frame area with reserved regions (1000 on 1024 frames under
/// Miri); every result is checked against the model; the invariant checker and a
/// frame-by-frame comparison run every 2000 actions (they are O(frames)) and at the end;
/// everything is freed every 10^5 actions (500 under Miri).
#[test]
fn one_million_random_actions() {
    let (actions, reset) = if cfg!(miri) { (1000, 500) } else { (1_000_000, 100_000) };
    let mut rng = SmallRng::seed_from_u64(0x7068_7973);
    let mut h = if cfg!(miri) {
        // A quarter of the area (the model's work per action is O(frames)).
        Harness::new(0x1f3, 1024, &[(0, 3), (175, 10), (512, 1), (750, 50)])
    } else {
        Harness::new(0x1f3, 4096, &[(0, 3), (700, 40), (2048, 1), (3000, 200)])
    };
    let mut buf = vec![0u8; if cfg!(miri) { 512 } else { 4096 }];
    let mut done = 0u64;
    while done < actions {
        for a in random_actions(&mut rng, &mut buf) {
            h.apply(a);
            done += 1;
            if done.is_multiple_of(2000) {
                h.check();
            }
            if done.is_multiple_of(reset) {
                // Start over from an empty allocator now and then, so the workload does not
                // spend its life near full.
                h.free_all();
            }
        }
    }
    h.check();
    assert!(h.steps() >= actions);
    h.free_all();
}

/// The header holds no pointers: a workload whose header is copied to a fresh buffer every
/// few actions ends with exactly the same header words as the same workload left in place.
#[test]
fn header_survives_being_moved() {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut buf = vec![0u8; if cfg!(miri) { 1024 } else { 8192 }];
    let workload: Vec<Action> =
        random_actions(&mut rng, &mut buf).into_iter().filter(|a| *a != Action::Remap).collect();
    assert!(workload.len() > buf.len() / 16);
    let mut still = Harness::new(100, 3000, &[(10, 20)]);
    let mut moved = Harness::new(100, 3000, &[(10, 20)]);
    for (i, a) in workload.iter().enumerate() {
        still.apply(*a);
        if i % 7 == 0 {
            let before = moved.header_words().as_ptr();
            moved.apply(Action::Remap);
            assert_ne!(before, moved.header_words().as_ptr(), "the header moved");
        }
        moved.apply(*a);
        assert_eq!(still.header_words(), moved.header_words(), "after action {i}: {a:?}");
    }
    moved.check();
}
