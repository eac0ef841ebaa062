//! The local APIC in xAPIC mode: its ID, and the inter-processor interrupts that start the
//! other CPUs.
//!
//! ```text
//!   0xfee0_0000 (MMIO page, uncached, mapped at the same address in the boot and kernel tables)
//!     +0x020 ID (bits 31..24)   +0x0f0 spurious vector, bit 8 enables
//!     +0x0b0 EOI
//!     +0x300 ICR low: vector, delivery mode, level, status (bit 12)   +0x310 ICR high: target
//! ```
//!
//! QEMU's TCG before version 8 has no x2APIC, so the registers are reached through the MMIO
//! page; every access is one aligned 32-bit volatile load or store, as the SDM requires.
//!
//! The legacy 8259 PICs are masked, so the only interrupts are the IPIs the kernel sends.
//!
//! # Unsafe
//! Port writes that mask the 8259s; volatile accesses to the local APIC's registers at [`BASE`]: the page is identity-mapped
//! uncached in the boot tables (all of the first 4 GiB) and in the kernel's tables (mapped
//! explicitly by `memory`), and is no RAM the allocators hand out.

use core::ptr;

use memkit_types::PhysAddr;

/// Where the local APIC's registers are: the architectural default, which QEMU keeps.
pub(crate) const BASE: PhysAddr = PhysAddr::new(0xfee0_0000);

const ID: usize = 0x20;
const EOI: usize = 0xb0;
const SPURIOUS: usize = 0xf0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const ICR_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;
const SPURIOUS_VECTOR: u32 = 0xff;
const APIC_ENABLE: u32 = 1 << 8;

fn read(register: usize) -> u32 {
    // SAFETY: an aligned register of the local APIC's page (see the module's documentation).
    unsafe { ptr::read_volatile((BASE.as_u64() as usize + register) as *const u32) }
}

fn write(register: usize, value: u32) {
    // SAFETY: as in `read`; writing the registers used here has no effect on memory.
    unsafe { ptr::write_volatile((BASE.as_u64() as usize + register) as *mut u32, value) }
}

/// This CPU's local APIC ID.
pub(crate) fn id() -> u8 {
    (read(ID) >> 24) as u8
}

/// Software-enables this CPU's local APIC (spurious vector 0xff), which it must be to send
/// or accept IPIs other than INIT and STARTUP.
pub(crate) fn enable() {
    write(SPURIOUS, read(SPURIOUS) | APIC_ENABLE | SPURIOUS_VECTOR);
}

fn send(target: u8, command: u32) {
    write(ICR_HIGH, u32::from(target) << 24);
    write(ICR_LOW, command);
    while read(ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// Sends the fixed interrupt `vector` to the CPU whose APIC ID is `target`.
pub(crate) fn send_fixed(target: u8, vector: u8) {
    send(target, ICR_ASSERT | u32::from(vector));
}

/// Ends the interrupt being handled (every fixed interrupt needs it, spurious ones must not).
pub(crate) fn end_of_interrupt() {
    write(EOI, 0);
}

/// Masks every line of the two legacy 8259 interrupt controllers, which the firmware left
/// set up with vectors that collide with exceptions: only local APIC interrupts arrive.
pub(crate) fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing the interrupt mask registers of the 8259s (ports 0x21 and 0xa1) only
    // masks their lines.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
    }
    // SAFETY: as above, for the second controller.
    unsafe {
        Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Sends INIT to the CPU whose APIC ID is `target`: it resets and waits for a STARTUP.
pub(crate) fn send_init(target: u8) {
    send(target, DELIVERY_INIT | ICR_ASSERT);
}

/// Sends STARTUP to `target`: it starts in real mode at `page`'s physical address
/// (`CS = page << 8`, `IP = 0`), which must be below 1 MiB.
pub(crate) fn send_startup(target: u8, page: u8) {
    send(target, DELIVERY_STARTUP | ICR_ASSERT | u32::from(page));
}
