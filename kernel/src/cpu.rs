//! Processor features the page tables use: write protection in ring 0 (`CR0.WP`, without
//! which the kernel's own stores ignore read-only pages and copy-on-write could not work),
//! no-execute pages (`EFER.NXE`) and the PAT entry for write-combining.
//!
//! # Unsafe
//! Writes to control registers and MSRs: each changes only what the kernel's own mappings
//! expect (every page it writes is mapped writable; no mapping uses NX or PAT entry 1 before
//! these are set), and `switch_root` is an `unsafe fn` whose caller promises that the new
//! table maps everything the kernel uses.

use core::arch::x86_64::__cpuid;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};
use x86_64::structures::paging::PhysFrame;

use memkit_types::Frame;

static NO_EXECUTE: AtomicBool = AtomicBool::new(false);

const IA32_PAT: u32 = 0x277;
/// The power-on PAT (WB, WT, UC-, UC, ×2) with entry 1 changed from WT to WC, as Linux does.
const PAT_WITH_WC: u64 = 0x0007_0406_0007_0401;

/// Makes read-only pages read-only for the kernel too, turns on no-execute pages when the
/// CPU has them and makes PAT entry 1 write-combining.
pub(crate) fn init() {
    // SAFETY: every page the kernel writes (image, stacks, direct map) is mapped writable;
    // only pages meant to be read-only change behaviour.
    unsafe { Cr0::update(|flags| *flags |= Cr0Flags::WRITE_PROTECT) };
    let extended = __cpuid(0x8000_0001);
    if extended.edx & (1 << 20) != 0 {
        // SAFETY: the CPU reports NX support, so setting EFER.NXE is allowed; no existing
        // mapping has the NX bit, so nothing changes for them.
        unsafe { Efer::update(|flags| *flags |= EferFlags::NO_EXECUTE_ENABLE) };
        NO_EXECUTE.store(true, Ordering::SeqCst);
    }
    let features = __cpuid(1);
    if features.edx & (1 << 16) != 0 {
        // SAFETY: the CPU has a PAT; entry 1 is only selected by mappings this kernel makes
        // with `CacheMode::WriteCombining`, and none exists yet.
        unsafe { Msr::new(IA32_PAT).write(PAT_WITH_WC) };
    }
}

/// Whether page-table entries may carry the no-execute bit.
pub(crate) fn no_execute_enabled() -> bool {
    NO_EXECUTE.load(Ordering::SeqCst)
}

/// The root page table in use.
pub(crate) fn active_root() -> Frame {
    let (frame, _) = Cr3::read();
    Frame::from_number(frame.start_address().as_u64() >> 12)
}

/// Makes the page table at `root` the active one.
///
/// # Safety
/// The table maps everything the kernel touches from now on: its image, stacks and the
/// physical window in use, at the same virtual addresses as the current table.
pub(crate) unsafe fn switch_root(root: Frame) {
    let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(root.start_address().as_u64()));
    // Recorded first: a shootdown that looks after this sees the new table; one that looked
    // before changed entries this CPU's TLB drops with the switch.
    crate::smp::set_active_root(root);
    // SAFETY: the caller guarantees the new table maps all the kernel uses.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}
