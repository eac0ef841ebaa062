//! memkit's test kit: the reference models, random actions and drivers that the layers'
//! tests and the fuzz targets share, and the whole-system model.
//!
//! The libraries carry none of this: their only feature, `check`, exposes their
//! `check_invariants()`. Their integration tests take this crate as a dev-dependency.
//!
//! | module | what |
//! |---|---|
//! | [`SparseRam`], [`ModelFrameSource`] | RAM in plain Rust memory; a first-fit frame source with fault injection |
//! | [`phys`] | the frame allocator against a per-frame model (`Action`, `Harness`) |
//! | [`heap`] | the kernel heaps against a shadow model of every live block (`Action`, `run`) |
//! | [`dataspace`] | the dataspace manager against a `Vec<u8>` per dataspace (`Action`, `World`); [`dataspace::fixture`] |
//! | [`region`] | a region map, its `SoftMmu` and a mock backing against plain maps (`Action`, `Harness`) |
//! | [`soft_mmu`] | the software MMU's small and large entries against a map of translations (`Action`, `Harness`) |
//! | [`tlb`] | a TLB flush token absorbing others against a set of pages (`Absorb`, `check_absorbing`) |
//! | [`host`] | the `mmap`-backed MMU against a map of translations (`Action`, `MmuHarness`) |
//! | [`counting`] | a global allocator that counts a thread's allocations |
//! | the crate root | the whole-system model, below |
//!
//! Every `Action` derives `arbitrary::Arbitrary`, for the fuzz targets in `fuzz/`.
//!
//! # The whole-system model
//!
//! One random-action driver over every layer at once — the frame allocator's pools, the
//! dataspace manager, region maps and address spaces — checked after every action against a
//! plain model.
//!
//! ```text
//!   seed ──▶ Action stream ──▶ Driver ─┬─▶ SoftSystem: SpaceSet + SoftMmu over memkit-phys pools
//!                                      │   or HostedSystem: memkit-host System, real faults
//!                                      └─▶ model: a Vec<u8> per dataspace, regions per space
//!   after every action: every byte of every mapped page of every region, every manager read,
//!   info, frame counts per pool, one frame per dataspace page, no writable shared frame
//! ```
//!
//! # What it checks
//! - **Every readable byte**, after every action: each page of each region of each space that
//!   has a translation is read through it as a CPU would (the software MMU, or real loads
//!   in the hosted window) and compared with the model; bytes past a dataspace's size must
//!   read as zeros; a page wholly past the size must not be mapped (the manager refuses it).
//!   Each dataspace is also read whole through the manager, and a read at its size must fail.
//! - **Copy-on-write as snapshots**: the model copies bytes; a copy that shares frames is
//!   right exactly when every view agrees with the snapshot. Every translation of one
//!   dataspace page must name the same frame (a stale one after a copy-on-write break
//!   shows as two), and a frame backing several dataspace pages must not be writable.
//! - **Failure changes nothing**: a valid request may fail only for want of memory
//!   (`-L4_ENOMEM`), an access only when its dataspace's pool has no free frame left, and
//!   the state must then be as before. Invalid requests (closed or foreign dataspaces,
//!   ranges past the end, a full window) must be refused.
//! - **Frames**: each pool's frames in use are exactly the dataspaces' frames plus those
//!   the driver holds to make allocations fail ([`Action::Hog`]).
//! - Every layer's `check_invariants()`.
//!
//! # Running it
//! `cargo test -p memkit-testkit --profile ci` runs 10⁵ actions on the software system and
//! 10⁴ on the hosted one. Longer runs: `MEMKIT_SYSTEM_ACTIONS=10000000` (actions per
//! test) and `MEMKIT_SYSTEM_SEED=N` (the first seed). A failure prints its seed, the
//! action trace before it and a minimised reproduction ([`minimise`]); replay one with
//! [`run_soft`] or [`run_hosted`]. `fuzz/fuzz_targets/system.rs` drives the same model
//! from `arbitrary` bytes.
//!
//! While a known defect is being fixed, `MEMKIT_SYSTEM_SKIP` (see [`Skips`]) leaves out its
//! action shape so that a run can look past it; nothing is skipped unless it is set.

mod action;
pub mod counting;
pub mod dataspace;
mod driver;
pub mod heap;
pub mod host;
mod hosted;
mod memory;
pub mod phys;
pub mod region;
mod soft;
pub mod soft_mmu;
mod target;
pub mod tlb;

pub use action::{Action, Backing, Cut, Generator, OFFSETS, SIZES, size_of_code};
pub use driver::{CLIENTS, Counters, Driver, Failure, Skips};
pub use hosted::{HostedSystem, run_hosted};
pub use memory::{ModelFrameSource, SparseRam};
pub use soft::{MEMORY_MAP, SPACES, SoftSystem, WINDOW_PAGES, machine, run_soft};
pub use target::{AccessError, Target};

use rand::SeedableRng;
use rand::rngs::SmallRng;

/// `count` random actions from `seed`.
#[must_use]
pub fn random_actions(seed: u64, count: usize) -> Vec<Action> {
    let mut g = Generator::new(SmallRng::seed_from_u64(seed));
    (0..count).map(|_| g.next_action()).collect()
}

/// Actions per test from `MEMKIT_SYSTEM_ACTIONS`, else `default`.
#[must_use]
pub fn actions_from_env(default: usize) -> usize {
    std::env::var("MEMKIT_SYSTEM_ACTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The first seed from `MEMKIT_SYSTEM_SEED`, else `default`.
#[must_use]
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("MEMKIT_SYSTEM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The class of a failure message (its words before the first number, id or parenthesis),
/// so that a shortened sequence counts as failing the same way.
#[must_use]
pub fn failure_kind(message: &str) -> &str {
    message.split(|c: char| c.is_ascii_digit() || c == '#' || c == '(').next().unwrap_or("")
}

/// A report of a failed run: the seed, the failure with its trace, and the actions up to
/// the failure shortened by [`minimise`] (replaying with `run` for at most `budget`).
pub fn failure_report(
    seed: u64,
    actions: &[Action],
    failure: &Failure,
    budget: std::time::Duration,
    mut run: impl FnMut(&[Action]) -> Option<Failure>,
) -> String {
    let upto = &actions[..=(failure.step as usize).min(actions.len().saturating_sub(1))];
    let kind = failure_kind(&failure.message).to_string();
    let deadline = std::time::Instant::now() + budget;
    let short = minimise(upto, |a| {
        std::time::Instant::now() < deadline && run(a).is_some_and(|g| failure_kind(&g.message) == kind)
    });
    format!(
        "seed {seed} failed after {} actions:\n{failure}\nminimised to {} actions (replay them):\n{short:#?}",
        failure.step + 1,
        short.len()
    )
}

/// Shortens a failing action sequence: drops chunks of actions (halves, quarters, ... single
/// actions) while `fails` still holds, then returns what is left. Indices in actions are
/// resolved against what exists when they run, so any subsequence replays.
pub fn minimise(actions: &[Action], mut fails: impl FnMut(&[Action]) -> bool) -> Vec<Action> {
    let mut cur = actions.to_vec();
    let mut chunk = cur.len().div_ceil(2).max(1);
    let mut budget = 20_000usize;
    loop {
        let mut i = 0;
        let mut shrunk = false;
        while i < cur.len() && budget > 0 {
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cur.len()));
            budget -= 1;
            if fails(&cand) {
                cur = cand;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if budget == 0 || (chunk == 1 && !shrunk) {
            return cur;
        }
        if !shrunk {
            chunk = chunk.div_ceil(2);
        }
    }
}
