//! Fuzzes the kernel heaps through the same `Action` enum and shadow model as the property
//! test and the random-action driver of `memkit-heap`: every placement (the default
//! `FitPolicy::Adaptive` first), over regions from 40 MiB down to 256 KiB, so that the
//! small ones run dry at once (holes of larger classes, other arenas, merged blocks) and
//! the adaptive heaps switch to packing and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_heap::FitPolicy;
use memkit_testkit::heap::{Action, RunConfig, run};

const FIT_POLICIES: [FitPolicy; 3] = [FitPolicy::Adaptive, FitPolicy::SizeClasses, FitPolicy::ExactFit];
const REGIONS: [usize; 4] = [40 << 20, 4 << 20, 1 << 20, 256 << 10];

fuzz_target!(|input: (u8, u8, bool, Vec<Action>)| {
    let (fit_policy, region, large_pages, actions) = input;
    let actions = &actions[..actions.len().min(4000)];
    let fit_policy = FIT_POLICIES[fit_policy as usize % FIT_POLICIES.len()];
    let region_bytes = REGIONS[region as usize % REGIONS.len()];
    let config = RunConfig { region_bytes, large_pages, check_every: 1, verify_all: true, fit_policy };
    if let Err(e) = run(actions, config) {
        panic!("{e}");
    }
});
