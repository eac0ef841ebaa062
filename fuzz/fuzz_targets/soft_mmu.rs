//! Fuzzes `SoftMmu`'s small and large (2 MiB) entries through the same `Action` enum and
//! model as `memkit-region`'s property test: every map, large map, unmap and protect is
//! compared with a plain map of translations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::soft_mmu::{Action, Harness};

fuzz_target!(|actions: Vec<Action>| {
    let mut harness = Harness::new();
    for action in actions.iter().take(500) {
        // Panics (and so reports) on any difference from the model or broken invariant.
        harness.apply(action);
    }
});
