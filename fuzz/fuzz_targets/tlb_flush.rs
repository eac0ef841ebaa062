//! Fuzzes a TLB flush token absorbing others against a set of pages, through the same
//! check as `memkit-region`'s random test (`memkit_testkit::tlb`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkit_testkit::tlb::{Absorb, check_absorbing};

fuzz_target!(|steps: Vec<Absorb>| {
    // Panics (and so reports) on any difference from the set or broken invariant.
    check_absorbing(&steps[..steps.len().min(256)]);
});
