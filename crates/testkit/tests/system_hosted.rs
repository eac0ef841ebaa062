//! The whole-system reference model on the hosted runtime: at least 10⁴ random actions with
//! real page faults in `PROT_NONE` windows, every mapped page read with real loads and
//! compared with the model after every action. Its own test binary, because a fault the
//! runtime cannot resolve ends the process. `MEMKIT_SYSTEM_ACTIONS` sets the actions per
//! seed, `MEMKIT_SYSTEM_SEED` the first seed.

use memkit_testkit::{Counters, Skips, actions_from_env, failure_report, random_actions, run_hosted, seed_from_env};

const SEEDS: u64 = 4;

#[test]
fn random_actions_match_the_model_on_the_hosted_runtime() {
    let per_seed = actions_from_env(10_000) / 4;
    let first = seed_from_env(1);
    let mut total = Counters::default();
    for seed in first..first + SEEDS {
        let actions = random_actions(seed, per_seed);
        let (c, r) = run_hosted(actions.iter().copied(), Skips::from_env());
        total.add(&c);
        if let Err(f) = r {
            panic!(
                "{}",
                failure_report(seed, &actions, &f, std::time::Duration::from_secs(60), |a| run_hosted(
                    a.iter().copied(),
                    Skips::from_env()
                )
                .1
                .err())
            );
        }
    }
    println!("{total:#?}");
    assert!(total.actions >= 10_000 || per_seed < 2_500);
    for (what, n) in [
        ("cow copies", total.cow_copies),
        ("stores", total.stores),
        ("partial-page tails compared", total.partial_tail_pages_compared),
        ("DETACH_FREE clears", total.detach_free_clears),
        ("a dataspace twice in a space", total.attached_twice_in_a_space),
        ("protects taking rights away", total.protect_took_rights),
        ("protects splitting a region", total.protect_split),
    ] {
        assert!(n > 0, "the run never reached: {what}");
    }
}

/// Seed 2's first 245 actions end with an access through a space whose dataspace's pool has
/// no free frame: the access must fail for want of memory (nothing else changes), and the
/// model must expect that, not a resolved page. (The action stream changes when the
/// generator gains actions: then find the shortest prefix of a seed that reaches
/// `fault_out_of_memory` again.)
#[test]
fn an_access_with_its_pool_dry_fails_for_want_of_memory() {
    let (c, r) = run_hosted(random_actions(2, 245), Skips::default());
    if let Err(f) = r {
        panic!("{f:?}");
    }
    assert!(c.fault_out_of_memory > 0, "the run never ran a pool dry");
}
