//! The heaps against the shadow model: a property test over random action sequences (every
//! invariant and every live block's contents checked after every action) and a random-action
//! driver of a million actions, each for both placements of requests above 1 KiB.

use memkit_heap::FitPolicy;
use memkit_testkit::heap::{Action, RunConfig, run};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const FIT_POLICIES: [FitPolicy; 3] = [FitPolicy::SizeClasses, FitPolicy::ExactFit, FitPolicy::Adaptive];

fn fit_policy() -> impl Strategy<Value = FitPolicy> {
    prop::sample::select(&FIT_POLICIES[..])
}

fn action() -> impl Strategy<Value = Action> {
    let size = prop_oneof![4 => 0u16..256, 3 => 256u16..4096, 2 => 4096u16..=u16::MAX];
    let align = prop_oneof![6 => 0u8..5, 2 => 5u8..13, 1 => 13u8..32];
    prop_oneof![
        8 => (size, align, any::<u8>()).prop_map(|(size, align_log2, heap)| Action::Alloc { size, align_log2, heap }),
        1 => (any::<u8>(), 0u8..24, any::<u8>())
            .prop_map(|(pages, align_log2, heap)| Action::AllocLarge { pages, align_log2, heap }),
        6 => any::<u16>().prop_map(|index| Action::Free { index }),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(index, size)| Action::Realloc { index, size }),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(index, pages)| Action::ReallocLarge { index, pages }),
        1 => any::<u16>().prop_map(|index| Action::Pin { index }),
        1 => any::<u16>().prop_map(|index| Action::Unpin { index }),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(index, offset)| Action::FreeInterior { index, offset }),
        1 => any::<u16>().prop_map(|index| Action::DoubleFree { index }),
        1 => any::<u16>().prop_map(|index| Action::FreeWrongHeap { index }),
        4 => (0u16..1200).prop_map(|size| Action::AllocCached { size }),
        4 => any::<u16>().prop_map(|index| Action::FreeCached { index }),
        1 => Just(Action::Flush),
    ]
}

/// Every invariant and every live block's bytes after every action. Under Miri (where the
/// point is undefined behaviour, not the model, and every check is interpreted) the
/// invariants are checked every 16th action and the bytes of the block acted on; the run's
/// end still checks everything.
fn full_checks() -> RunConfig {
    if cfg!(miri) {
        RunConfig { check_every: 16, verify_all: false, ..RunConfig::default() }
    } else {
        RunConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 64 }, ..ProptestConfig::default() })]

    #[test]
    fn heaps_agree_with_the_shadow_model(
        actions in prop::collection::vec(action(), 1..300),
        large in any::<bool>(),
        fit_policy in fit_policy(),
    ) {
        let config = RunConfig { large_pages: large, fit_policy, region_bytes: if cfg!(miri) { 4 << 20 } else { 48 << 20 }, ..full_checks() };
        if let Err(e) = run(&actions, config) {
            return Err(TestCaseError::fail(e));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 64 }, ..ProptestConfig::default() })]

    /// A region of 1 MiB runs dry within a few dozen allocations: the paths for a dry
    /// source (holes of larger classes, merged neighbouring blocks) against the model.
    #[test]
    fn heaps_agree_with_the_shadow_model_when_dry(
        actions in prop::collection::vec(action(), 1..300),
        fit_policy in fit_policy(),
    ) {
        let config = RunConfig { region_bytes: 1 << 20, large_pages: false, fit_policy, ..full_checks() };
        if let Err(e) = run(&actions, config) {
            return Err(TestCaseError::fail(e));
        }
    }
}

fn random_action(rng: &mut SmallRng) -> Action {
    let index = rng.random();
    match rng.random_range(0..100) {
        // Fewer cached allocations than cached frees, so that classes fill.
        0..3 => Action::AllocCached { size: rng.random_range(0..1100) },
        3..45 => {
            let size = match rng.random_range(0..10) {
                0..6 => rng.random_range(1..512),
                6..9 => rng.random_range(512..8192),
                _ => rng.random_range(8192..=u16::MAX),
            };
            let align_log2 = if rng.random_ratio(1, 10) { rng.random_range(5..13) } else { rng.random_range(0..5) };
            Action::Alloc { size, align_log2, heap: rng.random() }
        }
        45..47 => Action::AllocLarge { pages: rng.random(), align_log2: rng.random_range(0..16), heap: rng.random() },
        47..82 => Action::Free { index },
        82..89 => Action::FreeCached { index },
        // Flushes rare enough that classes fill and give their older half back.
        89 if rng.random_ratio(1, 20) => Action::Flush,
        89 => Action::FreeCached { index },
        90..93 => Action::Realloc { index, size: rng.random_range(1..20000) },
        93 => Action::ReallocLarge { index, pages: rng.random() },
        94 => Action::Pin { index },
        95 => Action::Unpin { index },
        96 => Action::FreeInterior { index, offset: rng.random() },
        97 | 98 => Action::DoubleFree { index },
        _ => Action::FreeWrongHeap { index },
    }
}

fn a_million_random_actions(fit_policy: FitPolicy) {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0002);
    let n = if cfg!(miri) { 2_000 } else { 1_000_000 };
    let actions: Vec<Action> = (0..n).map(|_| random_action(&mut rng)).collect();
    let check_every = if cfg!(miri) { 500 } else { 20_000 };
    // Miri interprets every byte of the region's set-up and checks: 4 MiB keeps the run
    // within an hour there and still runs dry and recovers.
    let region_bytes = if cfg!(miri) { 4 << 20 } else { 64 << 20 };
    let config = RunConfig { region_bytes, large_pages: true, check_every, verify_all: false, fit_policy };
    let stats = run(&actions, config).unwrap();
    assert!(stats.allocations > n * 2 / 5, "{stats:?}");
    assert!(stats.refused_frees > n / 50, "{stats:?}");
}

#[test]
fn a_million_random_actions_in_size_classes() {
    a_million_random_actions(FitPolicy::SizeClasses);
}

#[test]
fn a_million_random_actions_with_exact_fit() {
    a_million_random_actions(FitPolicy::ExactFit);
}

#[test]
fn a_million_random_actions_adaptive() {
    a_million_random_actions(FitPolicy::Adaptive);
}

/// The random-action driver over a region that runs dry and recovers reaches every
/// structural path of the heaps: dry requests, holes of larger classes, merged blocks,
/// arenas made and given back, quick arena blocks taken again, the adaptive switch to packing and back, emptied first spans and cached spans used
/// again and runs given back by `trim`. An adaptive heap places classes above 1 KiB in
/// arenas, so the holes of larger classes' spans are mostly a size-class heap's path: the
/// driver runs both, and each path must be taken by one of them (the adaptive switches by
/// the adaptive heap).
#[test]
fn random_actions_reach_every_structural_path() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0014);
    let n = if cfg!(miri) { 2_000 } else { 200_000 };
    let actions: Vec<Action> = (0..n).map(|_| random_action(&mut rng)).collect();
    let run_with = |fit_policy| {
        let config = RunConfig {
            region_bytes: 4 << 20,
            large_pages: false,
            check_every: if cfg!(miri) { 500 } else { 5_000 },
            verify_all: false,
            fit_policy,
        };
        let stats = run(&actions, config).unwrap();
        eprintln!("{n} actions over 4 MiB, {fit_policy:?}: {stats:?}");
        stats
    };
    let (a, c) = (run_with(FitPolicy::Adaptive), run_with(FitPolicy::SizeClasses));
    // Phases as programs have them (a burst of allocations, then of frees) over a roomy
    // region: spans empty away from the head of their list and are cached, then taken
    // again once the listed ones fill.
    let bursts: Vec<Action> = (0..if cfg!(miri) { 4 } else { 200 })
        .flat_map(|_| {
            // A third of the allocations and two thirds of the frees through a thread cache.
            let allocs: Vec<Action> = (0..300)
                .map(|i| {
                    let size = rng.random_range(16..1024);
                    if i % 3 == 0 {
                        Action::AllocCached { size }
                    } else {
                        Action::Alloc { size, align_log2: 0, heap: 0 }
                    }
                })
                .collect();
            let frees: Vec<Action> = (0..300)
                .map(|i| {
                    let index = rng.random();
                    if i % 3 == 0 { Action::Free { index } } else { Action::FreeCached { index } }
                })
                .collect();
            allocs.into_iter().chain(frees)
        })
        .collect();
    let config = RunConfig {
        region_bytes: 16 << 20,
        large_pages: false,
        check_every: if cfg!(miri) { 500 } else { 5_000 },
        verify_all: false,
        fit_policy: FitPolicy::Adaptive,
    };
    let b = run(&bursts, config).unwrap();
    eprintln!("{} actions in bursts over 16 MiB: {b:?}", bursts.len());
    let (p, q, r) = (a.paths, c.paths, b.paths);
    let reached = [
        ("dry requests", p.dry_requests + q.dry_requests),
        ("blocks from larger classes", p.larger_class_blocks + q.larger_class_blocks),
        ("merged blocks", p.merged_blocks + q.merged_blocks),
        ("arenas made", p.arenas_made + q.arenas_made),
        ("arenas released", p.arenas_released + q.arenas_released),
        ("quick arena blocks taken again", p.quick_reuses),
        ("switches to packing", p.packings),
        ("switches back", p.unpackings),
        ("cached spans reused", p.span_reuses + q.span_reuses + r.span_reuses),
        ("emptied first spans taken again", p.head_reuses + q.head_reuses + r.head_reuses),
        ("class blocks moved by realloc under one lock", p.realloc_short_moves + q.realloc_short_moves),
        ("runs given back by trim", p.trimmed_runs + q.trimmed_runs),
        ("full thread-cache classes given back", a.cache_overflows + c.cache_overflows + b.cache_overflows),
    ];
    // Under Miri the run is a hundredth as long: it looks for undefined behaviour on the
    // paths it takes, and the paths are asserted by the full run.
    if cfg!(miri) {
        return;
    }
    for (path, times) in reached {
        assert!(times > 0, "the driver never took the path: {path} ({a:?}, {c:?})");
    }
}

#[test]
fn running_dry_then_recovering() {
    for fit_policy in FIT_POLICIES {
        running_dry_then_recovering_with(fit_policy);
    }
}

fn running_dry_then_recovering_with(fit_policy: FitPolicy) {
    // Fill a small region until the page source is exhausted, free, and allocate again.
    // Under Miri, an eighth of it (region and actions alike), which still runs dry.
    let scale: u16 = if cfg!(miri) { 8 } else { 1 };
    let mut actions: Vec<Action> = (0..3000 / scale)
        .map(|i| Action::Alloc { size: 1000 + (i % 7) * 3000, align_log2: (i % 5) as u8, heap: (i % 2) as u8 })
        .collect();
    actions.extend((0..3000 / scale).map(|i| Action::Free { index: i * 7 }));
    actions.extend((0..2000 / scale).map(|i| Action::Alloc { size: 100 + i, align_log2: 3, heap: 0 }));
    let config = RunConfig {
        region_bytes: (8 << 20) / usize::from(scale),
        large_pages: false,
        check_every: 100,
        verify_all: false,
        fit_policy,
    };
    let stats = run(&actions, config).unwrap();
    assert!(stats.out_of_memory > 0, "{stats:?}");
    assert!(
        stats.allocations > 2500 / usize::from(scale) && stats.live_at_end == 2000 / usize::from(scale),
        "{stats:?}"
    );
}

/// Every configuration the fuzz target uses (each placement, regions from 40 MiB down to
/// 256 KiB, with and without large pages) runs the random driver without a disagreement.
#[test]
fn the_fuzz_targets_configurations_run() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_f022);
    let n = if cfg!(miri) { 100 } else { 3_000 };
    for fit_policy in FIT_POLICIES {
        for region_bytes in
            if cfg!(miri) { [4 << 20, 2 << 20, 1 << 20, 256 << 10] } else { [40 << 20, 4 << 20, 1 << 20, 256 << 10] }
        {
            for large_pages in [false, true] {
                let actions: Vec<Action> = (0..n).map(|_| random_action(&mut rng)).collect();
                let config = RunConfig { region_bytes, large_pages, check_every: 50, verify_all: false, fit_policy };
                let stats = run(&actions, config).unwrap();
                assert!(stats.allocations > 0, "{fit_policy:?} {region_bytes} {large_pages}: {stats:?}");
            }
        }
    }
}
