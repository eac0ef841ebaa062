//! Drives the mmap-backed MMU (memkit-host) through the same actions as its property test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::host::{Action, MmuHarness};

fuzz_target!(|actions: Vec<Action>| {
    let mut h = MmuHarness::new();
    for a in actions.into_iter().take(256) {
        h.apply(a);
    }
});
