//! The memory-map parser (`memkit --memory-map`): arbitrary bytes give a machine or an error,
//! never a panic; a machine passes its checks (usable ranges sorted, disjoint, aligned,
//! inside usable entries and outside reserved ones; pools inside them and apart).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(machine) = memkit_cli::input::machine_from_bytes(data)
        && let Err(e) = memkit_cli::input::check_machine(&machine)
    {
        panic!("{e}");
    }
});
