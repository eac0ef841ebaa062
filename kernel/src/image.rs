//! The kernel image's physical extent, from the linker script's symbols.
//!
//! # Unsafe
//! The linker script's symbols are declared in an `extern` block; only their addresses are
//! taken, never their contents.

use memkit_phys::MemoryArea;
use memkit_types::{PhysAddr, Rights};

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __text_end: u8;
    static __data_start: u8;
    #[link_name = "boot_stack_guard"]
    static BOOT_STACK_GUARD: u8;
}

/// The guard page below the boot stack (inside the image; left unmapped once the kernel has
/// its own page tables).
pub(crate) fn boot_stack_guard() -> PhysAddr {
    PhysAddr::new((&raw const BOOT_STACK_GUARD) as u64)
}

/// The image, from its first byte to the end of `.bss` (page aligned): code, data, the boot
/// page tables, the boot and IST stacks. Loaded where it is linked (identity).
pub(crate) fn area() -> MemoryArea {
    let start = (&raw const __kernel_start) as u64;
    let end = (&raw const __kernel_end) as u64;
    MemoryArea::from_bounds(PhysAddr::new(start), PhysAddr::new(end))
}

/// The image's parts as the kernel's page tables map them (W^X): the PVH note and the code
/// read and execute; read-only data (with the unwind tables) read only; data, `.bss` and the
/// stacks read and write.
pub(crate) fn sections() -> [(MemoryArea, Rights); 3] {
    let (start, end) = (area().start, PhysAddr::new(area().end()));
    let text_end = PhysAddr::new((&raw const __text_end) as u64);
    let data_start = PhysAddr::new((&raw const __data_start) as u64);
    [
        (MemoryArea::from_bounds(start, text_end), Rights::READ | Rights::EXECUTE),
        (MemoryArea::from_bounds(text_end, data_start), Rights::READ),
        (MemoryArea::from_bounds(data_start, end), Rights::RW),
    ]
}
