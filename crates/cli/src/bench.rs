//! `memkit bench`: the benchmark suites with progress bars.
//!
//! The suites measure memkit against peer crates (talc, mimalloc, rlsf,
//! buddy_system_allocator, …), so they are linked only with the `peers` feature; without it
//! the command names the suites and says how to build them in.

use std::process::ExitCode;

/// The suites and one line on what each measures, for `--help` (the same as
/// `memkit_bench::SUITES`; a test with `peers` checks that).
const SUITES: [(&str, &str); 9] = [
    ("dataspace", "dataspaces: copy-on-write vs eager copy of 1 GiB, first-touch map, create+close"),
    ("frames", "frame allocator vs buddy_system_allocator, bitmap-allocator, frame-alloc"),
    ("fault", "hosted real page fault resolved by memkit vs the kernel's first touch"),
    ("heap", "kernel heap vs talc, rlsf, linked_list_allocator, buddy_system_allocator, mimalloc, system"),
    ("region", "region map find and search-attach vs BTreeMap and memory_set; software fault path"),
    (
        "replay",
        "recorded malloc traces of real programs vs talc, rlsf, mimalloc, system: time, footprint, smallest heap",
    ),
    (
        "programs",
        "unmodified programs (Python, git, gcc, a pipeline, threads): wall time and peak RSS under memkit, glibc, mimalloc",
    ),
    ("spaces", "revocation through the reverse index vs every region, in spaces of 10 and 100 000 regions"),
    (
        "vma-replay",
        "real mmap/munmap/mprotect/mremap/brk traces replayed into memkit vs a BTreeMap reference and memory_set",
    ),
];

/// How to get a `memkit` with the suites.
const ENABLE_PEERS: &str = "cargo run --release -p memkit --features peers -- bench";

/// The suite names `suite` selects, or an error message (exit code 2) for an unknown one.
fn select(suite: Option<&str>) -> Result<Vec<&'static str>, String> {
    match suite {
        None | Some("all") => Ok(SUITES.iter().map(|(n, _)| *n).collect()),
        Some(name) => match SUITES.iter().find(|(n, _)| *n == name) {
            Some((n, _)) => Ok(vec![*n]),
            None => {
                let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
                Err(format!("memkit bench: no suite '{name}' (suites: {})", known.join(", ")))
            }
        },
    }
}

/// Runs `suite` (or every suite) and prints each table; writes the same JSON files as the
/// benchmark command.
#[cfg(feature = "peers")]
pub(crate) fn run(suite: Option<&str>, quick: bool) -> ExitCode {
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressBar, ProgressStyle};

    let names = match select(suite) {
        Ok(names) => names,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for name in names {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        let shared = Arc::new(Mutex::new(bar.clone()));
        let mut options = memkit_bench::Options::new(quick);
        options.progress = Some(Box::new(move |what: &str, done: u64, total: u64| {
            if let Ok(bar) = shared.lock() {
                bar.set_length(total.max(1));
                bar.set_position(done);
                bar.set_message(what.to_string());
            }
        }));
        let report = memkit_bench::run(name, &options);
        bar.finish_and_clear();
        let Some(report) = report else {
            eprintln!("memkit bench: suite '{name}' is not in this build of memkit-bench");
            return ExitCode::from(2);
        };
        print!("{}", report.table());
        match report.write_json() {
            Ok(path) => println!("written to {}", path.display()),
            Err(e) => eprintln!("memkit bench: cannot write the JSON report: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// Without the peers linked in: checks the suite name, then says how to build them in.
#[cfg(not(feature = "peers"))]
pub(crate) fn run(suite: Option<&str>, _quick: bool) -> ExitCode {
    match select(suite) {
        Ok(_) => eprintln!(
            "memkit bench: this memkit was built without the benchmark suites and their peer \
             crates; build it with the `peers` feature: {ENABLE_PEERS}"
        ),
        Err(e) => eprintln!("{e}"),
    }
    ExitCode::from(2)
}

/// The suites and what they measure, for `--help`.
pub(crate) fn list() -> String {
    let mut text = SUITES.iter().map(|(n, what)| format!("  {n:10} {what}")).collect::<Vec<_>>().join("\n");
    if !cfg!(feature = "peers") {
        text.push_str(&format!("\n\nThis build has no suites: build with the `peers` feature ({ENABLE_PEERS})."));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_selected_by_name_and_unknown_ones_refused() {
        assert_eq!(select(None).unwrap().len(), SUITES.len());
        assert_eq!(select(Some("all")).unwrap().len(), SUITES.len());
        assert_eq!(select(Some("heap")).unwrap(), ["heap"]);
        let e = select(Some("nosuchsuite")).unwrap_err();
        assert!(e.contains("no suite 'nosuchsuite'") && e.contains("frames"), "{e}");
    }

    #[cfg(feature = "peers")]
    #[test]
    fn the_suite_list_is_the_benchmarks_list() {
        let listed: Vec<(&str, &str)> = memkit_bench::SUITES.iter().map(|(n, what, _)| (*n, *what)).collect();
        assert_eq!(listed, SUITES);
    }

    #[cfg(not(feature = "peers"))]
    #[test]
    fn without_peers_the_help_says_how_to_build_them_in() {
        assert!(list().contains("--features peers"), "{}", list());
        assert_eq!(run(Some("frames"), true), ExitCode::from(2));
    }
}
