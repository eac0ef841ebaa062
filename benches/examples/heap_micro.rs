//! Random replacement of live blocks (free one, allocate one in its place) in memkit's
//! default heap and talc, for instruction counts of the common paths
//! (`valgrind --tool=callgrind target/release/examples/heap_micro memkit 16B 1`).
//!
//! `heap_micro [memkit|talc] [CASE] [ROUNDS]`; CASE is one of `16B`, `16-24`, `16-512`,
//! `1K-8K` (all when omitted). Prints ns per free-and-allocate pair; timings on a shared
//! machine swing, so compare the two only within one run.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::time::Instant;

use memkit_heap::{Heap, RegionPageSource, SingleCpu};

/// Replaces a random one of `live` blocks `n` times, sizes in turn from `sizes`; ns per
/// replacement.
fn churn(a: &dyn GlobalAlloc, sizes: &[usize], live: usize, n: usize) -> f64 {
    let mut slots: Vec<Option<(NonNull<u8>, Layout)>> = vec![None; live];
    let mut x = 12345u64;
    let t = Instant::now();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = (x as usize >> 8) % live;
        if let Some((p, l)) = slots[s].take() {
            // SAFETY: allocated below from `a` with layout `l`, freed once.
            unsafe { a.dealloc(p.as_ptr(), l) };
        }
        let l = Layout::from_size_align(sizes[i % sizes.len()], 8).expect("layout");
        // SAFETY: a non-zero size.
        let q = NonNull::new(unsafe { a.alloc(l) }).expect("allocation");
        // SAFETY: `q` is a fresh block of at least one byte.
        unsafe { q.as_ptr().write(1) };
        slots[s] = Some((q, l));
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    for (p, l) in slots.into_iter().flatten() {
        // SAFETY: as above.
        unsafe { a.dealloc(p.as_ptr(), l) };
    }
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map_or("", String::as_str);
    let case = args.get(2).map_or("", String::as_str);
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
    let bytes = 256 << 20;
    let (m, t): (&'static mut [u8], &'static mut [u8]) = (vec![1u8; bytes].leak(), vec![1u8; bytes].leak());
    // SAFETY: the leaked region is the heap's alone, for the whole run.
    let src = unsafe { RegionPageSource::new(NonNull::from(&mut m[0]), bytes) }.expect("region");
    let heap = Heap::new(src, SingleCpu, false);
    heap.init().expect("heap");
    // SAFETY: as above, for talc.
    let talc = talc::TalcLock::<spin::Mutex<()>, _>::new(unsafe { talc::source::Claim::new(t.as_mut_ptr(), bytes) });
    let cases: [(&str, Vec<usize>, usize); 4] = [
        ("16B", vec![16], 1000),
        ("16-24", vec![16, 24, 40, 16, 64], 1000),
        ("16-512", (1..32).map(|i| i * 16).collect(), 10_000),
        ("1K-8K", (1..8).map(|i| i * 1024 + 24).collect(), 1000),
    ];
    for (name, sizes, live) in cases.iter().filter(|c| case.is_empty() || c.0 == case) {
        for _ in 0..rounds {
            let n = 3_000_000;
            let m = if who == "talc" { f64::NAN } else { churn(&heap, sizes, *live, n) };
            let t = if who == "memkit" { f64::NAN } else { churn(&talc, sizes, *live, n) };
            println!("{name:8} memkit {m:6.1} ns  talc {t:6.1} ns  speedup {:.2}", t / m);
        }
    }
}
