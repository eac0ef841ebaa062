//! `memkit bench`: the benchmark suites with progress bars.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

/// Runs `suite` (or every suite) and prints each table; writes the same JSON files as the
/// benchmark command.
pub(crate) fn run(suite: Option<&str>, quick: bool) -> ExitCode {
    let names: Vec<&str> = match suite {
        None | Some("all") => memkit_bench::SUITES.iter().map(|(n, _, _)| *n).collect(),
        Some(name) => vec![name],
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
            let known: Vec<&str> = memkit_bench::SUITES.iter().map(|(n, _, _)| *n).collect();
            eprintln!("memkit bench: no suite '{name}' (suites: {})", known.join(", "));
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

/// The suites and what they measure, for `--help`.
pub(crate) fn list() -> String {
    memkit_bench::SUITES.iter().map(|(n, what, _)| format!("  {n:10} {what}")).collect::<Vec<_>>().join("\n")
}
