//! `SoftMmu`'s large (2 MiB) entries against a plain map of translations: a property test
//! over random action sequences (the `soft_mmu` fuzz target drives the same harness), and a
//! longer run that shows the actions map large entries and split them.

use memkit_testkit::soft_mmu::{Action, Harness, PAGES};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    let block_page = || (0..PAGES as u16 / 512, prop_oneof![Just(0u16), Just(1), Just(255), Just(510), Just(511)]);
    prop_oneof![
        2 => (any::<u8>(), any::<u8>(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()], prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 1u8..8)
            .prop_map(|(block, run, shift, frame_shift, rights)| Action::MapLarge { block, run, shift, frame_shift, rights }),
        1 => (any::<u16>(), any::<u8>(), 1u8..8).prop_map(|(page, count, rights)| Action::Map { page, count, rights }),
        2 => (block_page(), prop_oneof![Just(1u16), Just(2), Just(512), Just(513), Just(1024), 0u16..1100])
            .prop_map(|((b, at), count)| Action::Unmap { page: b * 512 + at, count }),
        2 => (block_page(), prop_oneof![Just(1u16), Just(2), Just(512), Just(513), Just(1024), 0u16..1100], 1u8..8)
            .prop_map(|((b, at), count, rights)| Action::Protect { page: b * 512 + at, count, rights }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 64 }, ..ProptestConfig::default() })]

    #[test]
    fn soft_mmu_matches_the_model(actions in prop::collection::vec(action(), 1..40)) {
        let mut h = Harness::new();
        for a in &actions {
            h.apply(a);
        }
    }
}

#[test]
fn random_actions_map_and_split_large_entries() {
    let mut h = Harness::new();
    let mut x: u64 = 0x2_0000_5eed;
    let steps = if cfg!(miri) { 50 } else { 3000 };
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = (x >> 8) as u8;
        let page = ((x >> 16) % 4) as u16 * 512 + [0, 1, 255, 511][((x >> 24) % 4) as usize];
        let count = [1u16, 3, 512, 513, 1024][((x >> 28) % 5) as usize];
        let rights = 1 + (x >> 32) as u8 % 7;
        let a = match (x >> 40) % 6 {
            0 | 1 => Action::MapLarge { block: b, run: b, shift: 0, frame_shift: u8::from(x >> 50 & 15 == 0), rights },
            2 => Action::Map { page, count: 2, rights },
            3 | 4 => Action::Unmap { page, count },
            _ => Action::Protect { page, count, rights },
        };
        h.apply(&a);
    }
    assert!(h.large_mapped > 100, "large entries mapped: {}", h.large_mapped);
    assert!(h.splits > 20, "large entries split: {}", h.splits);
}
