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
//!
//! With the feature `hosted-stub` (only ever enabled by `--all-features` builds of the whole
//! workspace, where other crates' test features would pull `std` into the kernel's
//! dependencies) the binary is a hosted placeholder instead; `tests/boot.rs` then builds the
//! real image by itself.
#![cfg_attr(not(feature = "hosted-stub"), no_std, no_main)]

/// Keeps its items only in the bare-metal build (see the crate docs).
macro_rules! bare_metal {
    ($($item:item)*) => { $( #[cfg(not(feature = "hosted-stub"))] $item )* };
}

bare_metal! {
    extern crate alloc;

    mod boot;
    mod boot_memory;
    mod cpu;
    mod frames;
    mod heap;
    mod image;
    mod interrupts;
    mod ktests;
    mod memory;
    mod paging;
    mod phys_window;
    mod pvh;
    mod runtime;
    mod serial;
    mod space;
    mod testing;

    use core::sync::atomic::Ordering;

    use memkit_types::{FrameSource, PhysAddr};

    use crate::serial::{ExitCode, Serial, exit, println};

    /// The Rust entry point, called by the boot stub in long mode on the boot stack.
    #[unsafe(no_mangle)]
    extern "C" fn kernel_main(start_info: u32) -> ! {
        Serial::init();
        println!("memkit kernel: booted through PVH");
        interrupts::init();
        cpu::init();
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
        let mut runner = testing::Runner::default();
        ktests::boot(&mut runner, &map);

        let frames = match memory::frames(&map) {
            Ok(frames) => FRAMES.call_once(|| frames),
            Err(e) => fatal("frame allocator", e),
        };
        let stats = frames.stats();
        println!(
            "frames: pool 0 manages {}, {} free, header {} ({} bytes) through the identity map at {:?}",
            stats.total_frames.get(),
            stats.free_frames.get(),
            frames.header(),
            frames.header().size,
            frames.header_mapping_address()
        );
        frames.with_pools(|pools| {
            for pool in pools.stats() {
                println!(
                    "  pool {}: {}, {} frames, header {}",
                    pool.id,
                    pool.span,
                    pool.total_frames.get(),
                    pool.header
                );
            }
        });
        let carried = ktests::frames_identity(&mut runner, frames);

        let space = match memory::switch_to_kernel_tables(&map, frames) {
            Ok(space) => space,
            Err(e) => fatal("kernel page tables", e),
        };
        println!(
            "switched to the kernel's page tables: {} table frames, direct map of {} MiB; header now at {:?}",
            space.table_frames,
            space.direct_map_end.as_u64() >> 20,
            frames.header_mapping_address()
        );
        ktests::frames_direct(&mut runner, frames, &space, carried);

        let free_before_heap = frames.free_frames().get();
        // SAFETY: the direct map is in use and covers all RAM the allocator manages.
        let heaps = match unsafe { heap::init(frames, space.direct_map_end, true) } {
            Ok(heaps) => heaps,
            Err(e) => fatal("kernel heap", e),
        };
        println!(
            "kernel heap: large pages {}, {} frames taken at init (page maps, 16 MiB pages)",
            if heaps.large_pages_enabled() { "on" } else { "off" },
            free_before_heap - frames.free_frames().get()
        );
        ktests::heap(&mut runner, heaps, frames);
        ktests::spaces(&mut runner, frames, space.root);

        let stats = frames.stats();
        println!(
            "counts: {} page faults resolved, {} reported, {} breakpoints; {} of {} frames free; heap {} bytes in blocks",
            interrupts::FAULTS_RESOLVED.load(Ordering::SeqCst),
            interrupts::FAULTS_REPORTED.load(Ordering::SeqCst),
            interrupts::BREAKPOINTS.load(Ordering::SeqCst),
            stats.free_frames.get(),
            stats.total_frames.get(),
            ktests::heap_block_bytes(heaps)
        );
        runner.finish()
    }

    /// The kernel's frame allocator, once built.
    static FRAMES: spin::Once<frames::KernelFrames> = spin::Once::new();

    fn fatal(what: &str, error: impl core::fmt::Debug) -> ! {
        println!("cannot set up the {what}: {error:?}");
        exit(ExitCode::Failure)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        println!("PANIC: {info}");
        exit(ExitCode::Failure)
    }
}

/// The hosted placeholder: says where the real kernel comes from.
#[cfg(feature = "hosted-stub")]
fn main() {
    eprintln!("memkit-kernel was built with `hosted-stub`: this is not the bootable image.");
    eprintln!("Build it with `cargo build -p memkit-kernel` (no features).");
    std::process::exit(2);
}
