//! The whole-system reference model on the software MMU: at least 10⁵ random actions over
//! the frame allocator's pools, the dataspace manager, region maps and three address spaces,
//! every readable byte compared after every action. `MEMKIT_SYSTEM_ACTIONS` sets the actions
//! per seed, `MEMKIT_SYSTEM_SEED` the first seed.

use memkit_testkit::{Counters, Skips, actions_from_env, failure_report, random_actions, run_soft, seed_from_env};

const SEEDS: u64 = 10;

#[test]
fn random_actions_match_the_model_on_the_software_mmu() {
    let per_seed = actions_from_env(10_000);
    let first = seed_from_env(1);
    let mut total = Counters::default();
    for seed in first..first + SEEDS {
        let actions = random_actions(seed, per_seed);
        let (c, r) = run_soft(actions.iter().copied(), Skips::from_env());
        total.add(&c);
        if let Err(f) = r {
            panic!(
                "{}",
                failure_report(seed, &actions, &f, std::time::Duration::from_secs(60), |a| run_soft(
                    a.iter().copied(),
                    Skips::from_env()
                )
                .1
                .err())
            );
        }
    }
    println!("{total:#?}");
    assert!(total.actions >= 100_000 || per_seed < 10_000);
    let must = [
        ("cow copies", total.cow_copies),
        ("cow breaks", total.cow_breaks),
        ("partial-page tails compared", total.partial_tail_pages_compared),
        ("out of frames on a fault", total.fault_out_of_memory),
        ("superpage dataspaces", total.opened_superpages),
        ("superpage shrinks", total.resized_superpages_down),
        ("fixed dataspaces", total.opened_fixed),
        ("other pools", total.opened_other_pool),
        ("head detaches", total.detached_head),
        ("tail detaches", total.detached_tail),
        ("middle detaches", total.detached_middle),
        ("DETACH_FREE clears", total.detach_free_clears),
        ("a dataspace twice in a space", total.attached_twice_in_a_space),
        ("closed while attached", total.closed_while_attached),
        ("zero-length copies", total.zero_length_copies),
        ("shared frames compared", total.shared_pages_compared),
        ("protects", total.protected),
        ("protects taking rights away", total.protect_took_rights),
        ("protects splitting a region", total.protect_split),
        ("protects merging regions", total.protect_merged),
        ("regions grown in place", total.remap_grown),
        ("regions shrunk in place", total.remap_shrunk),
        ("grows with no room", total.remap_no_room),
    ];
    for (what, n) in must {
        assert!(n > 0, "the run never reached: {what}");
    }
}
