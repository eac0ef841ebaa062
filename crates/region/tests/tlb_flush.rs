//! Flush tokens absorbing others, against a set of pages (the test kit's `tlb` check, which
//! the `tlb_flush` fuzz target runs too): random steps, and the ends of the address space.

use memkit_testkit::tlb::{Absorb, check_absorbing};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[test]
fn random_absorbs_match_a_set_of_pages() {
    let mut rng = SmallRng::seed_from_u64(0x0074_6c62);
    for _ in 0..2000 {
        let len = rng.random_range(0..24);
        let near = rng.random_range(0u16..200);
        let steps: Vec<Absorb> = (0..len)
            .map(|_| {
                let offset = rng.random_range(0u16..64);
                let top = if rng.random_bool(0.2) { 0x8000 } else { 0 };
                Absorb { first: top | (near + offset), pages: rng.random_range(0..12), as_token: rng.random_bool(0.5) }
            })
            .collect();
        check_absorbing(&steps);
    }
}

#[test]
fn the_last_page_of_the_lower_half_and_counts_past_it() {
    check_absorbing(&[
        Absorb { first: 0x8000, pages: 1, as_token: true },
        Absorb { first: 0x8000, pages: 255, as_token: false },
        Absorb { first: 0, pages: 1, as_token: true },
    ]);
    check_absorbing(&[
        Absorb { first: 0x8001, pages: 2, as_token: false },
        Absorb { first: 0, pages: 0, as_token: true },
    ]);
}
