//! The bootable image of memkit's kernel: the PVH entry, the C runtime symbols and the
//! panic handler around [`memkit_kernel::kernel_main`].
//!
//! `qemu-system-x86_64 -kernel` enters the image through its PVH note ([`boot`]); the boot
//! stub calls `kernel_main` in long mode. [`runtime`] provides what the target's `core`
//! expects from a C library. Both are here, in the binary, so that they are always linked
//! and never end up in a hosted program.
//!
//! With the feature `hosted-stub` the binary is a hosted placeholder instead. Cargo turns it
//! on whenever dev-dependencies are in play (tests, `--all-targets`) or with `--all-features`:
//! then other crates' std-using test features reach the libraries the kernel links, and a
//! `no_std` image cannot be linked. `tests/boot.rs` then builds the real image itself with
//! `cargo build -p memkit-kernel`. The kernel's code, in the library, is checked either way.
//!
//! Like the library, the binary denies `unsafe`; `boot` (the entry stub and its
//! statics) and `runtime` (the C runtime symbols, unmangled `unsafe extern "C"` functions
//! that copy with `rep movsb`) allow it and say why each step is sound.
#![cfg_attr(not(feature = "hosted-stub"), no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(not(feature = "hosted-stub"))]
#[allow(unsafe_code)]
mod boot;
#[cfg(not(feature = "hosted-stub"))]
#[allow(unsafe_code)]
mod runtime;

#[cfg(not(feature = "hosted-stub"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    memkit_kernel::panic(info)
}

/// The hosted placeholder: says where the real image comes from.
#[cfg(feature = "hosted-stub")]
fn main() {
    eprintln!("memkit-kernel was built with `hosted-stub`: this is not the bootable image.");
    eprintln!("Build it with `cargo build -p memkit-kernel` (no features).");
    std::process::exit(2);
}
