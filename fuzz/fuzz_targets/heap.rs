//! Fuzzes the kernel heaps through the same `Action` enum and shadow model as the property
//! test and the random-action driver of `memkit-heap`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_heap::Placement;
use memkit_heap::testing::{Action, RunConfig, run};

fuzz_target!(|input: (bool, bool, Vec<Action>)| {
    let (large_pages, exact_fit, actions) = input;
    let actions = &actions[..actions.len().min(4000)];
    let placement = if exact_fit { Placement::ExactFit } else { Placement::SizeClasses };
    let config = RunConfig { region_bytes: 40 << 20, large_pages, check_every: 1, verify_all: true, placement };
    if let Err(e) = run(actions, config) {
        panic!("{e}");
    }
});
