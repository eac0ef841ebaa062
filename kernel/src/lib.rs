//! memkit's bare-metal kernel: memkit's `no_std` crates managing real x86_64 page tables
//! under QEMU.
//!
//! The kernel is this `no_std` library plus a thin binary (`src/main.rs`): the binary holds
//! what only a bootable image may contain (the PVH note and the 32-bit entry stub, the C
//! runtime symbols, the panic handler) and calls [`kernel_main`]. Everything else lives here.
//! The kernel is a workspace of its own (`cargo build --manifest-path kernel/Cargo.toml`), so
//! that the hosted crates' features never reach the libraries it links.
//!
//! ```text
//!   PVH entry (bin) ─▶ kernel_main: serial, GDT/TSS/IDT, CR0.WP/NXE/PAT, local APIC
//!     ─▶ memory map (PVH start info), processors (ACPI MADT)
//!     ─▶ pools (headers through the boot identity map) ─▶ AP trampoline page from pool 7
//!     ─▶ kernel page tables + direct map, CR3 switch ─▶ pools re-attached through the direct map
//!     ─▶ xmalloc heaps as #[global_allocator] ─▶ APs started (INIT-SIPI-SIPI), jobs on all CPUs
//!     ─▶ address spaces, real page faults
//!     ─▶ in-kernel tests: "N passed, M failed" ─▶ isa-debug-exit
//! ```
//!
//! Design principles:
//! - **Unsafe is fenced** in small modules that say why each step is sound: `interrupts`
//!   (descriptor tables, entry stubs, the fault path and its probes), `smp` (the AP
//!   trampoline, per-CPU data), `apic` (local APIC registers), `firmware` (ACPI tables through
//!   the identity map), `paging` (page tables
//!   through the physical window), `phys_window` and `boot_memory` (physical memory
//!   access), `frames` (the pools' header mappings), `heap` (the global allocator),
//!   `cpu` (control registers), `serial` (port I/O).
//! - **memkit does the work.** Frames come from memkit-phys pools, the heap is memkit-heap,
//!   address spaces are memkit-region maps over memkit-dataspace; the kernel only supplies
//!   the x86_64 [`memkit_region::Mmu`] and the fault entry.
//! - **Counts, not timings.** Under emulation times mean nothing; the tests report faults
//!   served, frames and heap bytes.
//!
//! The compiler keeps the fence: the crate denies `unsafe`, and only the modules above (and
//! `image`, `memory`, `space` and the tests in `ktests`, which call into them) allow it, each
//! stating in its documentation what its `unsafe` relies on. At the root only
//! [`kernel_main`] allows it: its symbol is unmangled for the boot stub, and it turns the heap
//! on once the direct map is in use.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

#[allow(unsafe_code)]
mod apic;
#[allow(unsafe_code)]
mod bench;
#[allow(unsafe_code)]
mod boot_memory;
#[allow(unsafe_code)]
mod cpu;
#[allow(unsafe_code)]
mod firmware;
#[allow(unsafe_code)]
mod frames;
#[allow(unsafe_code)]
mod heap;
#[allow(unsafe_code)]
mod image;
#[allow(unsafe_code)]
mod interrupts;
#[allow(unsafe_code)]
mod ktests;
#[allow(unsafe_code)]
mod memory;
#[allow(unsafe_code)]
mod paging;
#[allow(unsafe_code)]
mod phys_window;
mod pvh;
#[allow(unsafe_code)]
mod serial;
#[allow(unsafe_code)]
mod smp;
#[allow(unsafe_code)]
mod space;
mod testing;

use core::sync::atomic::Ordering;

use memkit_types::{FrameSource, PhysAddr};

use crate::serial::{ExitCode, Serial, exit, println};

/// The Rust entry point, called by the binary's boot stub in long mode on the boot stack with
/// the physical address of the PVH start info. Runs the in-kernel tests and leaves QEMU.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn kernel_main(start_info: u32) -> ! {
    Serial::init();
    println!("memkit kernel: booted through PVH");
    smp::init_boot_cpu();
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
    let processors = firmware::processors(map.rsdp(), apic::id()).unwrap_or_else(|e| {
        println!("no processor list from ACPI ({e:?}): running on the boot CPU only");
        firmware::Processors::only(apic::id())
    });
    println!("ACPI: {} processors (APIC IDs {:?})", processors.apic_ids().len(), processors.apic_ids());
    let mut runner = testing::Runner::default();
    ktests::boot(&mut runner, &map);

    let frames = match memory::frames(&map, &FRAMES) {
        Ok(frames) => frames,
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
            println!("  pool {}: {}, {} frames, header {}", pool.id, pool.span, pool.total_frames.get(), pool.header);
        }
    });
    let carried = ktests::frames_identity(&mut runner, frames);

    let trampoline = smp::Trampoline::allocate(&frames.pool(memkit_phys::ISA_DMA_POOL));
    if let Err(e) = trampoline {
        println!("no frame below 1 MiB for the AP trampoline ({e:?}): running on the boot CPU only");
    }
    let trampoline = trampoline.ok();
    let space = match memory::switch_to_kernel_tables(&map, frames, trampoline.map(|t| t.frame())) {
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
    if let Err(e) = frames.enable_cache() {
        fatal("per-CPU frame caches", e);
    }

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
    if let Some(trampoline) = trampoline {
        match smp::start_aps(&processors, trampoline, space.root, frames) {
            Ok(_) => {}
            Err(e) => println!("an application processor did not start: {e:?}"),
        }
    }
    println!("memkit kernel: {} CPUs online", smp::online());
    smp::enable_interrupts();
    if map.command_line().split_whitespace().any(|word| word == "bench") {
        bench::run(frames, space.root);
        exit(ExitCode::Success);
    }
    ktests::smp(&mut runner, &processors, frames);
    ktests::heap(&mut runner, heaps, frames);
    ktests::spaces(&mut runner, frames, space.root);
    ktests::large(&mut runner, frames, space.root);
    ktests::concurrent(&mut runner, frames, space.root);

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

/// The kernel's frame allocator, built in place.
static FRAMES: frames::KernelFrames = frames::KernelFrames::new();

fn fatal(what: &str, error: impl core::fmt::Debug) -> ! {
    println!("cannot set up the {what}: {error:?}");
    exit(ExitCode::Failure)
}

/// What the binary's panic handler calls: prints the panic and leaves QEMU with the failure
/// status.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {info}");
    exit(ExitCode::Failure)
}
