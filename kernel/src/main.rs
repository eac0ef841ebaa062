//! memkit's bare-metal kernel: memkit's `no_std` crates managing real x86_64 page tables
//! under QEMU.
//!
//! `qemu-system-x86_64 -kernel` enters the kernel through its PVH note ([`boot`]). The kernel
//! then
//!
//! ```text
//!   serial + GDT/TSS/IDT ─▶ memory map (PVH start info) ─▶ in-kernel tests ─▶ "N passed, M failed"
//!                                                                          ─▶ isa-debug-exit
//! ```
//!
//! Design principles:
//! - **Unsafe is fenced** in small modules that say why each step is sound: [`boot`] and
//!   [`runtime`] (assembly and the C runtime symbols), [`interrupts`] (descriptor tables,
//!   entry stubs, the fault path), [`boot_memory`] (reads through the identity map),
//!   [`serial`] (port I/O).
//! - **Counts, not timings.** Under emulation times mean nothing; the tests report faults
//!   served, frames and heap bytes.
#![no_std]
#![no_main]

mod boot;
mod boot_memory;
mod interrupts;
mod ktests;
mod pvh;
mod runtime;
mod serial;
mod testing;

use memkit_types::PhysAddr;

use crate::serial::{ExitCode, Serial, exit, println};

/// The Rust entry point, called by the boot stub in long mode on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
    Serial::init();
    println!("memkit kernel: booted through PVH");
    interrupts::init();
    let map = match pvh::MemoryMap::from_start_info(PhysAddr::new(u64::from(start_info))) {
        Ok(map) => map,
        Err(e) => {
            println!("cannot read the PVH start info: {e:?}");
            exit(ExitCode::Failure)
        }
    };
    println!("memory map: {} entries, {} MiB of RAM", map.entries().len(), map.ram_bytes() >> 20);
    for range in map.entries() {
        println!("  {:#014x}..{:#014x} {:?}", range.start.as_u64(), range.end.as_u64(), range.kind);
    }
    ktests::run(&map)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {info}");
    exit(ExitCode::Failure)
}
