//! The bootable image of memkit's kernel: the PVH entry, the C runtime symbols and the
//! panic handler around [`memkit_kernel::kernel_main`].
//!
//! `qemu-system-x86_64 -kernel` enters the image through its PVH note ([`boot`]); the boot
//! stub calls `kernel_main` in long mode. [`runtime`] provides what the target's `core`
//! expects from a C library. Both are here, in the binary, so that they are always linked
//! and never end up in a hosted program.
//!
//! The kernel is a workspace of its own (see `Cargo.toml`), so no hosted crate's features
//! reach the libraries it links: every build of this binary is the bootable image.
//!
//! Like the library, the binary denies `unsafe`; `boot` (the entry stub and its
//! statics) and `runtime` (the C runtime symbols, unmangled `unsafe extern "C"` functions
//! that copy with `rep movsb`) allow it and say why each step is sound.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod boot;
#[allow(unsafe_code)]
mod runtime;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    memkit_kernel::panic(info)
}
