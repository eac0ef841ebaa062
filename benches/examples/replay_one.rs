//! Replays one trace into one allocator, for profiles and instruction counts
//! (`valgrind --tool=callgrind target/release/examples/replay_one memkit benches/traces/git.mkt.z`).
//!
//! `replay_one CONTENDER TRACE [ROUNDS]`; CONTENDER is a row name of the `replay` suite.
//! `replay_one memkit TRACE peak` tells instead where memkit's heap held its pages at the
//! moment it held the most.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(who), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: replay_one CONTENDER TRACE [ROUNDS]");
        return std::process::ExitCode::from(2);
    };
    let rounds = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(1);
    let trace = match memkit_bench::replay::load(std::path::Path::new(path)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("replay_one: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.get(3).is_some_and(|a| a == "peak") {
        return match memkit_bench::replay::peak_composition(&trace) {
            Ok((held, s)) => {
                let kib = |pages: usize| pages * 4;
                println!(
                    "{} at memkit's peak: held {} KiB (peak live {} KiB): spans {} KiB ({} KiB live, {} KiB of empty spans), arenas {} KiB ({} KiB live), large blocks {} KiB, metadata {} KiB",
                    trace.name,
                    held / 1024,
                    trace.peak_live / 1024,
                    kib(s.span_pages),
                    s.span_live_bytes / 1024,
                    kib(s.empty_span_pages),
                    kib(s.arena_pages),
                    s.arena_live_bytes / 1024,
                    kib(s.large_pages),
                    kib(s.metadata_pages),
                );
                std::process::ExitCode::SUCCESS
            }
            Err(i) => {
                eprintln!("replay_one: operation {i} failed");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match memkit_bench::replay::replay_one(who, &trace, rounds, 0) {
        Ok(m) => {
            println!("{who} {}: {} ops, {} moved, {} bytes copied", trace.name, trace.ops.len(), m.moved, m.copied);
            if let Some(held) = m.held {
                println!("held {:.1} % of peak live", held as f64 * 100.0 / trace.peak_live.max(1) as f64);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(i) => {
            eprintln!("replay_one: operation {i} failed");
            std::process::ExitCode::FAILURE
        }
    }
}
