//! The memkit command as a library: the memory-management stack hosted on Linux, with real
//! page faults, driven by the scenario language.
//!
//! The `memkit` binary is [`command_line`]; the library also serves tests and fuzz targets
//! that drive the same parsers in-process:
//!
//! - [`input`]: bounded reading of scenario files, memory maps and shell lines;
//! - [`scenario`]: the scenario language (one table of operations, a strict parser, a
//!   runner over a booted [`scenario::Runtime`]).
//!
//! Commands:
//!
//! - `memkit demo` (also `memkit` alone): every layer on the embedded default machine, with
//!   a report and an SVG picture of physical memory; exits non-zero if a check fails.
//! - `memkit run FILE`: a scenario, one operation per line (see the README).
//! - `memkit shell`: the same language, interactively.
//! - `memkit map`: the picture of a machine, or of a scenario's end state.
//! - `memkit bench [SUITE] [--quick]`: the benchmark suites with progress bars.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod hosted;
pub mod input;
mod picture;
pub mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// memkit: a memory-management kit for kernels, hosted on Linux with real page faults.
#[derive(Parser, Debug)]
#[command(name = "memkit", version, about, long_about = None)]
struct Cli {
    /// A machine's memory map (`start end type` per line) instead of the embedded 512 MiB PC.
    #[arg(long, global = true, value_name = "FILE")]
    memory_map: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Exercise every layer with real loads and stores, print a report, write a picture.
    Demo {
        /// Where to write the SVG picture of physical memory.
        #[arg(long, value_name = "FILE", default_value = "memkit-demo.svg")]
        svg: PathBuf,
    },
    /// Run a scenario file: one operation per line (see `memkit shell` then `help`).
    Run {
        /// The scenario.
        file: PathBuf,
    },
    /// The scenario language, interactively; `help` lists the operations.
    Shell,
    /// Picture physical memory: of the machine as booted, or after a scenario.
    Map {
        /// Run this scenario first and picture its end state.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Where to write the SVG picture.
        #[arg(long, value_name = "FILE", default_value = "memkit-map.svg")]
        svg: PathBuf,
    },
    /// Run benchmark suites and print their tables (also written as JSON).
    #[command(after_help = format!("Suites:\n{}", bench::list()))]
    Bench {
        /// The suite, or `all`.
        suite: Option<String>,
        /// Fewer iterations: each suite within a minute.
        #[arg(long)]
        quick: bool,
    },
}

/// The `memkit` command: parses the process's arguments and runs the command they name.
#[must_use]
pub fn command_line() -> ExitCode {
    let cli = Cli::parse();
    let map = cli.memory_map.as_deref();
    match cli.command.unwrap_or(Command::Demo { svg: PathBuf::from("memkit-demo.svg") }) {
        Command::Demo { svg } => demo::run(map, &svg),
        Command::Run { file } => scenario::run_file(map, &file),
        Command::Shell => scenario::shell(map),
        Command::Map { scenario, svg } => picture::map_command(map, scenario.as_deref(), &svg),
        Command::Bench { suite, quick } => bench::run(suite.as_deref(), quick),
    }
}
