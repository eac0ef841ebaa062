//! Fuzzes the region map through the same `Action` enum and reference model as the
//! property test and the random-action driver of `memkit-region`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::region::{Action, Harness};

fuzz_target!(|actions: Vec<Action>| {
    let mut harness = Harness::new();
    // A run attaches or detaches up to `RUN_MAX` regions: a few per input keep one input
    // well under a second while still building trees of three levels.
    let mut runs = 0;
    for action in actions.iter().take(4000) {
        if matches!(action, Action::Run { .. } | Action::DetachRun { .. }) {
            runs += 1;
            if runs > 16 {
                continue;
            }
        }
        // Panics (and so reports) on any difference from the model or broken invariant.
        harness.apply(action);
    }
});
