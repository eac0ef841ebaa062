//! Replays every address-space trace into one region map, for profiles and instruction
//! counts (`valgrind --tool=callgrind target/release/examples/vma_one memkit 10`).
//!
//! `vma_one IMPLEMENTATION [ROUNDS]`; IMPLEMENTATION is `memkit`, `BTreeMap` or `memory_set`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(who) = args.get(1) else {
        eprintln!("usage: vma_one IMPLEMENTATION [ROUNDS]");
        return std::process::ExitCode::from(2);
    };
    let rounds = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1);
    match memkit_bench::vma::replay_one(who, rounds) {
        Some(ops) => {
            println!("{who}: {ops} operations");
            std::process::ExitCode::SUCCESS
        }
        None => {
            eprintln!("vma_one: no implementation {who}");
            std::process::ExitCode::from(2)
        }
    }
}
