//! The boot: memory map, interrupts, SSE state, the fault path.
//!
//! # Unsafe
//! The tests raise a breakpoint and run SSE code around an interrupt.

use core::arch::asm;
use core::sync::atomic::Ordering;

use memkit_types::{Access, VirtAddr};

use crate::image;
use crate::interrupts::{self, BREAKPOINTS, FAULTS_REPORTED, PageFaultHandler};
use crate::pvh::MemoryMap;
use crate::testing::{Runner, TestResult, check, check_eq};

/// The boot: memory map, interrupts, SSE state, the fault path.
pub(crate) fn boot(runner: &mut Runner, map: &MemoryMap) {
    runner.run("boot::memory_map_has_ram_above_1mib", || memory_map_has_ram(map));
    runner.run("boot::breakpoint_returns", breakpoint_returns);
    runner.run("boot::sse_state_survives_an_interrupt", sse_state_survives_an_interrupt);
    runner.run("boot::unmapped_access_is_reported", unmapped_access_is_reported);
    runner.run("boot::fault_handler_is_consulted_before_reporting", fault_handler_is_consulted);
}

fn memory_map_has_ram(map: &MemoryMap) -> TestResult {
    let kernel = image::area();
    check!(map.ram().any(|r| r.start <= kernel.start && kernel.end() <= r.end.as_u64()));
    // -m 512M: all but the firmware's holes is RAM.
    check!(map.ram_bytes() > 500 << 20);
    check!(map.entries().windows(2).all(|w| w[0].end <= w[1].start || w[1].end <= w[0].start));
    Ok(())
}

fn breakpoint_returns() -> TestResult {
    let before = BREAKPOINTS.load(Ordering::SeqCst);
    // SAFETY: `int3` enters the breakpoint gate, whose handler counts it and returns.
    unsafe { asm!("int3") };
    check_eq!(BREAKPOINTS.load(Ordering::SeqCst), before + 1);
    Ok(())
}

fn sse_state_survives_an_interrupt() -> TestResult {
    let pattern: u64 = 0x0123_4567_89ab_cdef;
    let (a, b): (u64, u64);
    // SAFETY: the breakpoint handler clobbers every SSE register; the entry stub must give
    // the interrupted code its own back. Only the named registers are touched.
    unsafe {
        asm!(
            "movq xmm0, {p}",
            "movq xmm15, {p}",
            "int3",
            "movq {a}, xmm0",
            "movq {b}, xmm15",
            p = in(reg) pattern,
            a = out(reg) a,
            b = out(reg) b,
            out("xmm0") _,
            out("xmm15") _,
        );
    }
    check_eq!(a, pattern);
    check_eq!(b, pattern);
    Ok(())
}

fn unmapped_access_is_reported() -> TestResult {
    // Above the 4 GiB the boot tables map and below the higher half: never mapped.
    let addr = VirtAddr::new(0x40_0000_0000);
    let before = FAULTS_REPORTED.load(Ordering::SeqCst);
    let fault = interrupts::probe_read(addr);
    check_eq!(fault.map(|_| ()).map_err(|f| (f.addr, f.access)), Err((addr, Access::Read)));
    check_eq!(FAULTS_REPORTED.load(Ordering::SeqCst), before + 1);
    Ok(())
}

/// Records the faults it is asked about and resolves none.
#[derive(Debug, Default)]
struct Refuser {
    asked: u32,
    last: Option<(VirtAddr, Access)>,
}

impl PageFaultHandler for Refuser {
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        self.asked += 1;
        self.last = Some((addr, access));
        false
    }
}

fn fault_handler_is_consulted() -> TestResult {
    let addr = VirtAddr::new(0x40_0000_1234);
    let mut refuser = Refuser::default();
    let result = interrupts::with_fault_handler(&mut refuser, || interrupts::probe_write(addr, 7));
    check_eq!(result.map_err(|f| (f.addr, f.access)), Err((addr, Access::Write)));
    check_eq!(refuser.asked, 1);
    check_eq!(refuser.last, Some((addr, Access::Write)));
    Ok(())
}
