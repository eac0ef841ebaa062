//! The memkit command: see the library ([`memkit_cli`]) and `memkit --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    memkit_cli::command_line()
}
