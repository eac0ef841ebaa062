//! Interrupts: the GDT with its TSS, the IDT, the assembly entry stubs and the dispatcher.
//!
//! The target's `core` is compiled for user space and assumes a red zone (128 bytes below
//! `rsp` that a leaf function may use without moving `rsp`), so an interrupt must never push
//! onto the interrupted stack: **every** gate switches to an IST stack. Rust code may use
//! SSE registers anywhere, so the common entry stub saves the whole FPU/SSE state with
//! `fxsave` before calling Rust and restores it before `iretq`.
//!
//! ```text
//!  vector n ──▶ IST stack ──▶ stub n: push 0 (if no error code), push n ──▶ isr_common:
//!     push 15 GPRs ─▶ fxsave (64-byte aligned) ─▶ interrupt_dispatch(&mut InterruptFrame)
//!     ─▶ fxrstor ─▶ pop GPRs ─▶ drop vector and error code ─▶ iretq
//! ```
//!
//! Page faults go to the handler installed with [`with_fault_handler`]. A fault it does not
//! resolve at one of the probe instructions ([`probe_read`], [`probe_write`], or the fetch of
//! [`probe_execute`]) resumes at the probe's fixup, which reports the fault to the caller (as Linux's exception tables do);
//! any other unresolved fault is fatal.
//!
//! # Unsafe
//! Loading the descriptor tables and segment registers, the entry stubs in assembly and the
//! probes: the tables and IST stacks are statics that live for the whole run and are never
//! changed once loaded; the stubs save every register the Rust dispatcher may clobber; a probe
//! is an access whose fault the dispatcher turns into a failure return.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use memkit_types::{Access, VirtAddr};
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use crate::apic;
use crate::serial::{ExitCode, exit, println};
use crate::smp::{self, MAX_CPUS};

/// The inter-processor interrupt that asks a CPU to flush TLB entries ([`smp::flush`]).
pub(crate) const SHOOTDOWN_VECTOR: u64 = 0xf0;
/// The inter-processor interrupt that wakes a halted CPU for a job.
pub(crate) const WAKE_VECTOR: u64 = 0xf1;
/// The local APIC's spurious vector (no EOI).
const SPURIOUS_VECTOR: u64 = 0xff;

// The entry stubs: 256 of them, 16 bytes apart from `isr_stubs`, then the common path.
// The vectors 8, 10..=14, 17, 21, 29 and 30 push an error code; the others get a 0.
global_asm!(
    r#"
    .section .text.isr, "ax"
    .code64
    .p2align 4
    .global isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp isr_common
    .set vector, vector + 1
    .endr

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rbx
    subq $512, %rsp
    andq $-64, %rsp
    fxsave (%rsp)
    movq %rbx, %rdi
    cld
    call interrupt_dispatch
    fxrstor (%rsp)
    movq %rbx, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    .global kernel_probe_read
kernel_probe_read:
    xorl %eax, %eax
    .global kernel_probe_read_insn
kernel_probe_read_insn:
    movzbl (%rdi), %eax
    ret

    .global kernel_probe_write
kernel_probe_write:
    xorl %eax, %eax
    .global kernel_probe_write_insn
kernel_probe_write_insn:
    movb %sil, (%rdi)
    ret

    .global kernel_probe_exec
kernel_probe_exec:
    xorl %eax, %eax
    call *%rdi
    ret

    .global kernel_probe_fixup
kernel_probe_fixup:
    movq $-1, %rax
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn isr_stubs();
    fn kernel_probe_read(addr: usize) -> u64;
    fn kernel_probe_write(addr: usize, value: u8) -> u64;
    fn kernel_probe_read_insn();
    fn kernel_probe_write_insn();
    fn kernel_probe_fixup();
    fn kernel_probe_exec(addr: usize) -> u64;
}

/// What the entry stub saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct InterruptFrame {
    gprs: [u64; 15],
    /// The vector number.
    pub(crate) vector: u64,
    /// The CPU's error code, or 0.
    pub(crate) error_code: u64,
    /// Where the interrupted code resumes.
    pub(crate) rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const PAGE_FAULT: u64 = 14;
const BREAKPOINT: u64 = 3;
const IST_PAGE_FAULT: u8 = 1;
const IST_DOUBLE_FAULT: u8 = 2;
const IST_OTHER: u8 = 3;
const IST_STACK_BYTES: usize = 64 * 1024;

/// One IST stack; the CPU writes it, so it lives in `.bss` behind an `UnsafeCell`.
#[repr(C, align(64))]
struct IstStack(UnsafeCell<[u8; IST_STACK_BYTES]>);

// SAFETY: only the CPU touches the stack's memory (when it takes an interrupt); Rust code only
// takes its address.
unsafe impl Sync for IstStack {}

/// Each CPU's three IST stacks.
static IST_STACKS: [[IstStack; 3]; MAX_CPUS] =
    [const { [const { IstStack(UnsafeCell::new([0; IST_STACK_BYTES])) }; 3] }; MAX_CPUS];

/// Each CPU's TSS (its IST stacks) and GDT (the same code and data segments, its own TSS).
static TSS: [spin::Once<TaskStateSegment>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];
/// A GDT with the selectors of its code, data and TSS entries.
type Gdt = (GlobalDescriptorTable, SegmentSelector, SegmentSelector, SegmentSelector);
static GDT: [spin::Once<Gdt>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];
/// One IDT for every CPU: the gates are the same, each CPU's TSS gives the stacks.
static IDT: spin::Once<Idt> = spin::Once::new();

/// An interrupt gate, as the CPU reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    fn interrupt(handler: u64, selector: SegmentSelector, ist: u8) -> Self {
        Gate {
            offset_low: handler as u16,
            selector: selector.0,
            ist,
            attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate (interrupts off inside)
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
#[derive(Debug)]
struct Idt([Gate; 256]);

/// Loads CPU `cpu`'s GDT (code, data, its TSS with its three IST stacks) and the IDT; each
/// CPU calls it once, on itself, with its own index (below [`MAX_CPUS`]).
pub(crate) fn init(cpu: usize) {
    let tss = TSS[cpu].call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (i, stack) in IST_STACKS[cpu].iter().enumerate() {
            let top = stack.0.get() as u64 + IST_STACK_BYTES as u64;
            tss.interrupt_stack_table[i] = x86_64::VirtAddr::new(top);
        }
        tss
    });
    let (gdt, code, data, tss_selector) = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_selector = gdt.append(Descriptor::tss_segment(tss));
        (gdt, code, data, tss_selector)
    });
    gdt.load();
    // SAFETY: `code` is the 64-bit code segment of the GDT just loaded.
    unsafe { CS::set_reg(*code) };
    // SAFETY: `data` is a flat data segment of that GDT.
    unsafe { SS::set_reg(*data) };
    // SAFETY: as above.
    unsafe { DS::set_reg(*data) };
    // SAFETY: as above.
    unsafe { ES::set_reg(*data) };
    // SAFETY: `tss_selector` is the TSS of that GDT, loaded once.
    unsafe { load_tss(*tss_selector) };

    let stubs = isr_stubs as *const () as u64;
    let idt = IDT.call_once(|| {
        Idt(core::array::from_fn(|vector| {
            let ist = match vector as u64 {
                PAGE_FAULT => IST_PAGE_FAULT,
                8 => IST_DOUBLE_FAULT,
                _ => IST_OTHER,
            };
            Gate::interrupt(stubs + 16 * vector as u64, *code, ist)
        }))
    });
    let pointer = DescriptorTablePointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(ptr::from_ref(idt) as u64),
    };
    // SAFETY: the IDT is a static that lives forever; every gate points at an entry stub
    // of `isr_stubs` that saves the interrupted state and returns with `iretq`.
    unsafe { lidt(&pointer) };
}

/// Resolves page faults while installed with [`with_fault_handler`].
pub(crate) trait PageFaultHandler {
    /// Resolves a fault at `addr` by `access`; `true` when the access may be retried.
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool;
}

/// Each CPU's handler [`with_fault_handler`] installed: a thin pointer to a `&mut dyn
/// PageFaultHandler` on that function's stack, or null.
static FAULT_HANDLER: [AtomicPtr<()>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];

/// Counters of what the interrupt path did.
pub(crate) static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
/// Page faults the installed handler resolved.
pub(crate) static FAULTS_RESOLVED: AtomicU64 = AtomicU64::new(0);
/// Page faults at a probe that were reported to the probe's caller.
pub(crate) static FAULTS_REPORTED: AtomicU64 = AtomicU64::new(0);

/// Runs `body` with `handler` resolving its page faults.
pub(crate) fn with_fault_handler<R>(handler: &mut dyn PageFaultHandler, body: impl FnOnce() -> R) -> R {
    let mut handler = handler;
    let slot: *mut &mut dyn PageFaultHandler = &mut handler;
    let cpu = smp::current();
    let previous = FAULT_HANDLER[cpu].swap(slot.cast(), Ordering::SeqCst);
    let result = body();
    FAULT_HANDLER[cpu].store(previous, Ordering::SeqCst);
    result
}

/// A page fault a probe reported: where and by what access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The faulting address (CR2).
    pub(crate) addr: VirtAddr,
    /// The access that faulted.
    pub(crate) access: Access,
}

/// Each CPU's last fault at a probe.
static LAST_FAULT: [spin::Mutex<Option<Fault>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

/// The address [`probe_execute`] is calling on each CPU, while it calls it (0 otherwise).
static EXEC_PROBE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Calls the code at `addr` (which must be a lone `ret`, byte 0xc3, or fault), letting the
/// installed handler resolve a page fault: a fetch that faults unresolved returns to the
/// caller instead of running anything.
///
/// Only for addresses of test address spaces whose contents the test wrote.
///
/// # Errors
/// The fault, when no handler resolved it (nothing runs then).
pub(crate) fn probe_execute(addr: VirtAddr) -> Result<(), Fault> {
    let cpu = smp::current();
    *LAST_FAULT[cpu].lock() = None;
    EXEC_PROBE[cpu].store(addr.as_u64(), Ordering::SeqCst);
    // SAFETY: the caller wrote a `ret` at `addr` in a test address space, so a successful
    // fetch returns at once with every register as the C ABI allows; a faulting fetch
    // resumes at the fixup, which returns from the `call` with -1 in rax.
    let status = unsafe { kernel_probe_exec(addr.as_usize()) };
    EXEC_PROBE[cpu].store(0, Ordering::SeqCst);
    if status == u64::MAX { Err(last_fault()) } else { Ok(()) }
}

/// Reads the byte at `addr`, letting the installed handler resolve a page fault.
///
/// # Errors
/// The fault, when no handler resolved it (nothing is read then).
pub(crate) fn probe_read(addr: VirtAddr) -> Result<u8, Fault> {
    *LAST_FAULT[smp::current()].lock() = None;
    // SAFETY: the probe reads one byte; a fault on it resumes at the fixup instead of
    // reading, so any address is allowed. Kernel memory is only read, never changed.
    let value = unsafe { kernel_probe_read(addr.as_usize()) };
    if value == u64::MAX { Err(last_fault()) } else { Ok(value as u8) }
}

/// Writes `value` at `addr`, letting the installed handler resolve a page fault.
///
/// Only for addresses of test address spaces, never the kernel's own memory.
///
/// # Errors
/// The fault, when no handler resolved it (nothing is written then).
pub(crate) fn probe_write(addr: VirtAddr, value: u8) -> Result<(), Fault> {
    *LAST_FAULT[smp::current()].lock() = None;
    // SAFETY: callers pass addresses of a test address space's regions, which no Rust object
    // occupies; a fault resumes at the fixup without writing.
    let status = unsafe { kernel_probe_write(addr.as_usize(), value) };
    if status == u64::MAX { Err(last_fault()) } else { Ok(()) }
}

fn last_fault() -> Fault {
    LAST_FAULT[smp::current()]
        .lock()
        .take()
        .expect("a probe's fixup runs only after the fault handler recorded the fault")
}

fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Clobbers every SSE register, as any Rust code in a handler may; the breakpoint handler
/// calls it so that the tests see the entry stub restore the interrupted code's registers.
fn clobber_sse() {
    // SAFETY: only SSE registers are written, and all are declared clobbered.
    unsafe {
        asm!(
            "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2", "pcmpeqd xmm3, xmm3",
            "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5", "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7",
            "pcmpeqd xmm8, xmm8", "pcmpeqd xmm9, xmm9", "pcmpeqd xmm10, xmm10", "pcmpeqd xmm11, xmm11",
            "pcmpeqd xmm12, xmm12", "pcmpeqd xmm13, xmm13", "pcmpeqd xmm14, xmm14", "pcmpeqd xmm15, xmm15",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Called by `isr_common` with the saved state; returning resumes the interrupted code.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    match frame.vector {
        BREAKPOINT => {
            BREAKPOINTS.fetch_add(1, Ordering::SeqCst);
            clobber_sse();
        }
        PAGE_FAULT => page_fault(frame),
        SHOOTDOWN_VECTOR => {
            smp::service_shootdown();
            apic::end_of_interrupt();
        }
        WAKE_VECTOR => apic::end_of_interrupt(),
        SPURIOUS_VECTOR => {}
        _ => fatal(frame, "unexpected exception"),
    }
}

fn page_fault(frame: &mut InterruptFrame) {
    let addr = read_cr2();
    // Error code bit 1: the access was a write; bit 4: an instruction fetch.
    let access = if frame.error_code & 0x10 != 0 {
        Access::Execute
    } else if frame.error_code & 0x2 != 0 {
        Access::Write
    } else {
        Access::Read
    };
    let cpu = smp::current();
    let slot = FAULT_HANDLER[cpu].swap(ptr::null_mut(), Ordering::SeqCst);
    let resolved = match VirtAddr::try_new(addr as usize) {
        Ok(vaddr) if !slot.is_null() => {
            // SAFETY: a non-null slot is the `&mut dyn PageFaultHandler` on the stack of the
            // `with_fault_handler` call that is running the faulting code on this CPU; that
            // code holds no reference to the handler, and taking the slot out keeps a nested
            // fault from reaching it twice.
            let handler = unsafe { &mut *slot.cast::<&mut dyn PageFaultHandler>() };
            // The handler may wait for a lock another CPU holds while it waits for this one
            // to answer a TLB shootdown: take interrupts meanwhile (the shootdown gate has an
            // IST stack of its own, and its handler takes no lock).
            let enabled = x86_64::instructions::interrupts::are_enabled();
            x86_64::instructions::interrupts::enable();
            let resolved = handler.page_fault(vaddr, access);
            if !enabled {
                x86_64::instructions::interrupts::disable();
            }
            resolved
        }
        _ => false,
    };
    FAULT_HANDLER[cpu].store(slot, Ordering::SeqCst);
    if resolved {
        FAULTS_RESOLVED.fetch_add(1, Ordering::SeqCst);
        return;
    }
    // An instruction fetch that faults at the address `probe_execute` calls: the `call` has
    // pushed its return address, so the fixup's `ret` goes back into the probe.
    let exec_probe = EXEC_PROBE[cpu].load(Ordering::SeqCst);
    let at_probe = (exec_probe != 0 && frame.rip == exec_probe && addr == exec_probe)
        || frame.rip == kernel_probe_read_insn as *const () as u64
        || frame.rip == kernel_probe_write_insn as *const () as u64;
    if at_probe && let Ok(vaddr) = VirtAddr::try_new(addr as usize) {
        *LAST_FAULT[cpu].lock() = Some(Fault { addr: vaddr, access });
        FAULTS_REPORTED.fetch_add(1, Ordering::SeqCst);
        frame.rip = kernel_probe_fixup as *const () as u64;
        return;
    }
    println!("page fault at {addr:#x} ({access:?}), error code {:#x}", frame.error_code);
    fatal(frame, "unresolved page fault");
}

fn fatal(frame: &InterruptFrame, what: &str) -> ! {
    println!(
        "FATAL: {what}: vector {} error {:#x} rip {:#x} rsp {:#x} cr2 {:#x}",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp,
        read_cr2()
    );
    exit(ExitCode::Failure)
}
