//! The frame allocator under random actions, checked against the reference model after
//! every action (`memkit_testkit::phys`, the harness the property test and the driver use).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use memkit_testkit::phys::{Action, Harness};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut h) = Harness::arbitrary(&mut u) else { return };
    while let Ok(a) = Action::arbitrary(&mut u) {
        h.apply(a);
        h.check_invariants();
        if u.is_empty() {
            break;
        }
    }
    h.check();
    h.free_all();
});
