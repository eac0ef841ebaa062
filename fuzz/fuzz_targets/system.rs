//! Fuzzes the whole system: a sequence of `memkit_testkit::Action`s (the enum the
//! whole-system tests draw at random) applied to the frame allocator's pools, the dataspace
//! manager and three software-MMU address spaces at once, every readable byte compared with
//! the reference model after every action.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::{Action, Skips, run_soft};

fuzz_target!(|actions: Vec<Action>| {
    let (_, result) = run_soft(actions.iter().take(512).copied(), Skips::default());
    if let Err(failure) = result {
        panic!("{failure}");
    }
});
