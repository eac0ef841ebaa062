//! Fuzzes the region map through the same `Action` enum and reference model as the
//! property test and the random-action driver of `memkit-region`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_region::action::{Action, Harness};

fuzz_target!(|actions: Vec<Action>| {
    let mut harness = Harness::new();
    for action in actions.iter().take(4000) {
        // Panics (and so reports) on any difference from the model or broken invariant.
        harness.apply(action);
    }
});
