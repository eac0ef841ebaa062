//! `memkit demo`: the main job.

use std::path::Path;
use std::process::ExitCode;

use crate::hosted;

/// Runs the demo on the machine of `map` (the embedded default without one).
pub(crate) fn run(map: Option<&Path>, svg: &Path) -> ExitCode {
    let machine = match hosted::load_machine(map) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let hosted = match hosted::boot(machine) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    println!("memkit demo: {}", describe(&hosted));
    println!();
    println!("pools after boot:");
    print!("{}", hosted::pool_table(hosted.pools.stats()));
    let _ = svg;
    ExitCode::SUCCESS
}

fn describe(h: &hosted::Hosted) -> String {
    let usable = h.machine.usable();
    format!(
        "{} of usable RAM in {} ranges, kernel image at {:#x}..{:#x}",
        hosted::human(usable.bytes()),
        usable.as_slice().len(),
        h.machine.kernel_image().start.as_u64(),
        h.machine.kernel_image().end()
    )
}
