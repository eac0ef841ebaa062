//! Fuzzes the dataspace manager: a sequence of `memkit_testkit::dataspace::Action`s (the
//! same enum the property test and the random-action driver use) applied to a manager and to
//! its `Vec<u8>` model, compared after every action, then torn down with a leak check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::dataspace::{Action, World};

fuzz_target!(|actions: Vec<Action>| {
    let mut world = World::new();
    for action in actions.iter().take(1024) {
        world.apply(action);
    }
    world.teardown();
});
