//! The scenario language (`memkit run`): arbitrary bytes as a script on a small machine (a
//! 32 MiB PC) give a result or an error naming a line, never a panic or a hang. A run is
//! bounded: at most 4 KiB and 64 lines of script; each session gives back what it made.
#![no_main]

use std::cell::RefCell;
use std::mem::ManuallyDrop;

use libfuzzer_sys::fuzz_target;
use memkit_cli::scenario::{self, Runtime};

const MACHINE: &str = "0x0 0x9fc00 usable\n0x9fc00 0xa0000 reserved\n0xf0000 0x100000 reserved\n\
                       0x100000 0x2000000 usable\n";
const MAX_BYTES: usize = 4096;
const MAX_LINES: usize = 64;

thread_local! {
    // One machine for the process: its RAM lives as long as the process, so the runtime is
    // never dropped (dropping it at exit would leave what its boot leaked on purpose
    // unreachable, and the leak checker would report it).
    static RUNTIME: ManuallyDrop<RefCell<Runtime>> = ManuallyDrop::new(RefCell::new(
        memkit_cli::input::machine_from_bytes(MACHINE.as_bytes())
            .and_then(Runtime::boot)
            .expect("the small machine boots"),
    ));
}

fuzz_target!(|data: &[u8]| {
    let mut data = &data[..data.len().min(MAX_BYTES)];
    if let Some((i, _)) = data.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(MAX_LINES - 1) {
        data = &data[..i];
    }
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let mut session = rt.session();
        let _ = scenario::run_bytes(&mut session, data, drop);
        session.release_all();
    });
});
