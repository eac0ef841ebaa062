//! The benchmark command: `memkit-bench <SUITE|all> [--quick]`, `memkit-bench replay [TRACE...]`.
#![deny(unsafe_code)]

use clap::Parser;

/// Runs memkit's side-by-side benchmark suites and prints their tables.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The suite to run, or `all`.
    #[arg(default_value = "all")]
    suite: String,
    /// Trace files for `replay` (default: the ones in benches/traces/).
    traces: Vec<std::path::PathBuf>,
    /// Fewer iterations: each suite within a minute.
    #[arg(long)]
    quick: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let names: Vec<&str> = if args.suite == "all" {
        memkit_bench::SUITES.iter().map(|(n, _, _)| *n).collect()
    } else {
        vec![args.suite.as_str()]
    };
    let mut options = memkit_bench::Options::new(args.quick);
    options.traces = args.traces;
    for name in names {
        let Some(report) = memkit_bench::run(name, &options) else {
            let known: Vec<&str> = memkit_bench::SUITES.iter().map(|(n, _, _)| *n).collect();
            eprintln!("memkit-bench: no suite '{name}' (suites: {})", known.join(", "));
            return std::process::ExitCode::from(2);
        };
        print!("{}", report.table());
        match report.write_json() {
            Ok(path) => println!("written to {}", path.display()),
            Err(e) => eprintln!("memkit-bench: cannot write the JSON report: {e}"),
        }
    }
    std::process::ExitCode::SUCCESS
}
