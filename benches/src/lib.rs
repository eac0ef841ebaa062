//! memkit's side-by-side benchmarks.
//!
//! Each suite measures memkit and its peers **in the same run, interleaved**, so that the
//! ratios compare like with like on whatever machine runs them. A suite produces a
//! [`Report`]: rows of (case, implementation, ns/op), with the speedup of memkit over each
//! peer (`peer ns / memkit ns`) filled in by [`Report::finish`]. The report prints as a table
//! and is written as JSON to `target/memkit-bench/<suite>.json`:
//!
//! ```text
//! {"suite":"frames","results":[{"case":"order0","impl":"memkit","ns_per_op":9.1,"speedup":1.0}, ...]}
//! ```
//!
//! Benchmarks print figures; they never assert timings.
//!
//! `unsafe` is denied here and allowed only in the suites that need it (`fault`, `frames`,
//! `heap`, `region`); each says in its `# Unsafe` section what its `unsafe` relies on.
#![deny(unsafe_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

pub mod dataspace;
#[allow(unsafe_code)]
pub mod fault;
#[allow(unsafe_code)]
pub mod frames;
#[allow(unsafe_code)]
pub mod heap;
#[allow(unsafe_code)]
pub mod programs;
#[allow(unsafe_code)]
pub mod region;
#[allow(unsafe_code)]
pub mod replay;
pub mod spaces;
pub mod vma;

/// The name memkit's own rows carry in the `impl` column.
pub const MEMKIT: &str = "memkit";

/// A progress callback: (what is being measured, steps done, steps in all).
pub type ProgressFn = Box<dyn Fn(&str, u64, u64)>;

/// How a suite should run.
pub struct Options {
    /// Fewer iterations: the whole suite within a minute.
    pub quick: bool,
    /// Called as work advances: (what is being measured, steps done, steps in all).
    pub progress: Option<ProgressFn>,
    /// Trace files for the `replay` suite; empty: the traces in `benches/traces/`.
    pub traces: Vec<PathBuf>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("quick", &self.quick).field("traces", &self.traces).finish_non_exhaustive()
    }
}

impl Options {
    /// Options without progress reporting.
    #[must_use]
    pub fn new(quick: bool) -> Self {
        Options { quick, progress: None, traces: Vec::new() }
    }

    /// Reports progress, if anyone listens.
    pub fn progress(&self, what: &str, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(what, done, total);
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// What was measured.
    pub case: String,
    /// Who was measured: [`MEMKIT`] or a peer's crate name.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Nanoseconds per operation (or the case's unit, named in the case).
    pub ns_per_op: f64,
    /// `peer ns / memkit ns` for the same case; 1.0 on memkit's rows; `None` when the case
    /// has no memkit row.
    pub speedup: Option<f64>,
}

/// The figures of one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The suite's name.
    pub suite: String,
    /// Its rows, in the order they were measured.
    pub results: Vec<Record>,
    /// Free-form lines printed under the table (targets, notes, counts).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `suite`.
    #[must_use]
    pub fn new(suite: &str) -> Self {
        Report { suite: suite.to_string(), results: Vec::new(), notes: Vec::new() }
    }

    /// Adds a row.
    pub fn push(&mut self, case: &str, implementation: &str, ns_per_op: f64) {
        self.results.push(Record {
            case: case.to_string(),
            implementation: implementation.to_string(),
            ns_per_op,
            speedup: None,
        });
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Fills in every row's speedup against memkit's row of the same case.
    pub fn finish(&mut self) {
        let memkit: Vec<(String, f64)> =
            self.results.iter().filter(|r| r.implementation == MEMKIT).map(|r| (r.case.clone(), r.ns_per_op)).collect();
        for r in &mut self.results {
            r.speedup =
                memkit.iter().find(|(c, _)| *c == r.case).filter(|(_, m)| *m > 0.0).map(|(_, m)| r.ns_per_op / m);
        }
    }

    /// The memkit speedup over `peer` in `case`, once [`finish`](Report::finish) ran.
    #[must_use]
    pub fn speedup(&self, case: &str, peer: &str) -> Option<f64> {
        self.results.iter().find(|r| r.case == case && r.implementation == peer).and_then(|r| r.speedup)
    }

    /// The report as a table.
    #[must_use]
    pub fn table(&self) -> String {
        let cw = self.results.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
        let iw = self.results.iter().map(|r| r.implementation.len()).max().unwrap_or(4).max(4);
        let mut out = String::new();
        let _ = writeln!(out, "suite {}", self.suite);
        let _ = writeln!(out, "| {:cw$} | {:iw$} | {:>12} | {:>8} |", "case", "impl", "ns/op", "speedup");
        let _ = writeln!(out, "|{}|{}|{}|{}|", "-".repeat(cw + 2), "-".repeat(iw + 2), "-".repeat(14), "-".repeat(10));
        for r in &self.results {
            let s = r.speedup.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));
            let _ = writeln!(out, "| {:cw$} | {:iw$} | {:>12.1} | {:>8} |", r.case, r.implementation, r.ns_per_op, s);
        }
        for n in &self.notes {
            let _ = writeln!(out, "{n}");
        }
        out
    }

    /// The report as JSON (`{"suite":..,"results":[..]}`).
    #[must_use]
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Writes the JSON to `target/memkit-bench/<suite>.json` and returns the path.
    ///
    /// # Errors
    /// The I/O error when the directory or the file cannot be written.
    pub fn write_json(&self) -> std::io::Result<PathBuf> {
        let dir = output_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.suite));
        std::fs::write(&path, self.json())?;
        Ok(path)
    }
}

/// Where the JSON reports go: `$CARGO_TARGET_DIR/memkit-bench`, else the workspace's
/// `target/memkit-bench`.
#[must_use]
pub fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("memkit-bench")
}

/// Times `op` over `iterations` calls and returns nanoseconds per call.
pub fn time_per_op(iterations: u64, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..iterations {
        op(i);
    }
    start.elapsed().as_nanos() as f64 / iterations.max(1) as f64
}

/// Measures several implementations of one case interleaved: `rounds` rounds, each running
/// every implementation once for `iterations` operations, keeping each one's best round.
/// Interleaving spreads frequency changes and noise from other processes evenly over all.
pub fn interleaved(rounds: u32, iterations: u64, impls: &mut [(&str, &mut dyn FnMut(u64))]) -> Vec<(String, f64)> {
    interleaved_warm(rounds, 0, iterations, impls)
}

/// [`interleaved`], with `warmup` untimed operations before each timed round, so that
/// what the implementation measured before left in the caches is not billed to this one
/// (it matters for structures of several MiB, which the other implementations evict).
pub fn interleaved_warm(
    rounds: u32,
    warmup: u64,
    iterations: u64,
    impls: &mut [(&str, &mut dyn FnMut(u64))],
) -> Vec<(String, f64)> {
    let mut best = vec![f64::INFINITY; impls.len()];
    for _ in 0..rounds.max(1) {
        for (i, (_, op)) in impls.iter_mut().enumerate() {
            for k in 0..warmup {
                op(iterations + k);
            }
            let ns = time_per_op(iterations, &mut **op);
            best[i] = best[i].min(ns);
        }
    }
    impls.iter().zip(best).map(|((name, _), ns)| ((*name).to_string(), ns)).collect()
}

/// A suite: its name, one line on what it measures, and the function that runs it.
pub type Suite = (&'static str, &'static str, fn(&Options) -> Report);

/// Every suite, in the order `all` runs them.
pub const SUITES: &[Suite] = &[
    // Each suite module adds its line here.
    ("dataspace", "dataspaces: copy-on-write vs eager copy of 1 GiB, first-touch map, create+close", dataspace::run),
    ("frames", "frame allocator vs buddy_system_allocator, bitmap-allocator, frame-alloc", frames::run),
    ("fault", "hosted real page fault resolved by memkit vs the kernel's first touch", fault::run),
    ("heap", "kernel heap vs talc, rlsf, linked_list_allocator, buddy_system_allocator, mimalloc, system", heap::run),
    ("region", "region map find and search-attach vs BTreeMap and memory_set; software fault path", region::run),
    (
        "replay",
        "recorded malloc traces of real programs vs talc, rlsf, mimalloc, system: time, footprint, smallest heap",
        replay::run,
    ),
    (
        "programs",
        "unmodified programs (Python, git, gcc, a pipeline, threads): wall time and peak RSS under memkit, glibc, mimalloc",
        programs::run,
    ),
    (
        "spaces",
        "revocation through the reverse index vs every region, in spaces of 10 and 100 000 regions",
        spaces::run,
    ),
    (
        "vma-replay",
        "real mmap/munmap/mprotect/mremap/brk traces replayed into memkit vs a BTreeMap reference and memory_set",
        vma::run,
    ),
];

/// Runs the suite called `name`, prints nothing, writes nothing.
#[must_use]
pub fn run(name: &str, options: &Options) -> Option<Report> {
    SUITES.iter().find(|(n, _, _)| *n == name).map(|(_, _, f)| {
        let mut report = f(options);
        report.finish();
        report
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedups_are_peer_over_memkit() {
        let mut r = Report::new("t");
        r.push("a", MEMKIT, 10.0);
        r.push("a", "peer", 30.0);
        r.push("b", "peer", 5.0);
        r.finish();
        assert_eq!(r.speedup("a", "peer"), Some(3.0));
        assert_eq!(r.speedup("a", MEMKIT), Some(1.0));
        assert_eq!(r.speedup("b", "peer"), None);
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["suite"], "t");
        assert_eq!(json["results"][1]["impl"], "peer");
        assert_eq!(json["results"][1]["speedup"], 3.0);
        assert!(r.table().contains("| a    | peer   |"));
    }
}
