//! Several CPUs: the application processors started through a real-mode trampoline, each
//! CPU's own data, and running a job on every CPU at once.
//!
//! ```text
//!   BSP: MADT ─▶ APIC IDs          trampoline page < 1 MiB (from pool 7, memkit's ISA DMA pool),
//!                                   identity-mapped read+execute in the kernel's tables
//!   for each AP:  stack (frames) ─▶ INIT ─▶ STARTUP(page) ─▶ STARTUP(page) ─▶ wait "online"
//!   AP: real mode ─▶ lgdt (trampoline GDT, accessed bits preset: the page is read-only) ─▶ CR4.PAE, CR3 = kernel tables, EFER.LME|NXE
//!       ─▶ CR0.PG|PE|WP ─▶ far jump to 64-bit `ap_long_mode_entry` (kernel image)
//!       ─▶ ap_main(index): its GDT/TSS/IST stacks, the IDT, CR0/EFER/PAT, GS = its PerCpu
//!       ─▶ "online" ─▶ waits for jobs (interrupts off)
//! ```
//!
//! Each CPU's [`PerCpu`] is reached through its GS base, so [`current`] is one load.
//!
//! **TLB shootdown.** Each CPU records the page table it has active. A change that takes
//! rights away ([`flush`], called by the page-table MMU for every flush) is flushed here and
//! on every other CPU with that table active, by IPI; the caller waits for every
//! acknowledgement, so no frame is reused while a CPU may still translate to it. Up to
//! [`FULL_FLUSH_PAGES`] pages go one by one (`invlpg`), more empty the whole TLB. One flush is
//! one round of IPIs, and so is one batch ([`flush_batch`]: the ranges of a [`TlbFlush`] that
//! gathered the changes of one operation); a CPU waiting to start its own round answers the one in progress, so
//! two CPUs flushing at once never wait for each other.
//! The APs start one after the other: the stack and index they take are in two statics the
//! BSP fills before each STARTUP.
//!
//! # Unsafe
//! The trampoline and entry stub are assembly; the BSP writes the trampoline into a frame it
//! owns (through the direct map) before any AP runs it; each AP's stack is frames allocated
//! for it and never freed; the GS base of each CPU points at its own `PerCpu` static, which
//! lives forever, and `current` only reads its first word.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memkit_region::TlbFlush;
use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Page, PageCount, PhysAddr};
use x86_64::registers::model_specific::GsBase;

use crate::firmware::Processors;
use crate::frames::KernelFrames;
use crate::phys_window;
use crate::{apic, cpu, interrupts};

/// The most CPUs the kernel runs (its static per-CPU tables have this many rows).
pub(crate) const MAX_CPUS: usize = 8;
/// Frames of each AP's stack (64 KiB).
const AP_STACK_FRAMES: u64 = 16;
/// How many times the BSP polls an AP's "online" flag before it gives up on it (TCG starts
/// an AP within a few thousand polls; real hardware within 10 ms).
const ONLINE_POLLS: u64 = 200_000_000;

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .p2align 12
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (ap_trampoline_gdt_pointer - ap_trampoline_start)
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl (ap_trampoline_cr3 - ap_trampoline_start), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl (ap_trampoline_efer - ap_trampoline_start), %eax
    wrmsr
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax
    orl $0x80010003, %eax
    movl %eax, %cr0
    ljmpl *(ap_trampoline_far - ap_trampoline_start)

    .p2align 3
ap_trampoline_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .global ap_trampoline_gdt_pointer
ap_trampoline_gdt_pointer:
    .word 23
    .long 0
    .global ap_trampoline_far
ap_trampoline_far:
    .long 0
    .word 0x08
    .global ap_trampoline_cr3
ap_trampoline_cr3:
    .long 0
    .global ap_trampoline_efer
ap_trampoline_efer:
    .long 0
    .global ap_trampoline_end
ap_trampoline_end:

    .section .text.ap_entry, "ax"
    .code64
    .global ap_long_mode_entry
ap_long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq AP_BOOT_STACK(%rip), %rsp
    movq AP_BOOT_INDEX(%rip), %rdi
    xorl %ebp, %ebp
    call ap_main
1:
    cli
    hlt
    jmp 1b
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_gdt_pointer: u8;
    static ap_trampoline_far: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_efer: u8;
    fn ap_long_mode_entry();
}

/// The stack top and CPU index of the AP being started (read by `ap_long_mode_entry`).
#[unsafe(no_mangle)]
static AP_BOOT_STACK: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static AP_BOOT_INDEX: AtomicU64 = AtomicU64::new(0);

/// One CPU's own data. `index` is the first field: [`current`] reads it at `gs:0`.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct PerCpu {
    index: usize,
    apic_id: AtomicUsize,
    online: AtomicBool,
    /// The generation of the last job this CPU finished.
    done: AtomicU64,
    /// The frame number of the page table this CPU has active (what its TLB may cache).
    active_root: AtomicU64,
}

static PER_CPU: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const {
        PerCpu {
            index: 0,
            apic_id: AtomicUsize::new(0),
            online: AtomicBool::new(false),
            done: AtomicU64::new(0),
            active_root: AtomicU64::new(0),
        }
    }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].index = i;
        i += 1;
    }
    cpus
};

static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// The job every CPU runs: a function, its argument and its generation.
type Job = (fn(usize, usize), usize);
static JOB: spin::Mutex<Option<Job>> = spin::Mutex::new(None);
static JOB_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The index (0 = the bootstrap processor) of the CPU running this.
pub(crate) fn current() -> usize {
    let index: usize;
    // SAFETY: every CPU's GS base points at its `PerCpu` static (set in `init_cpu` before any
    // code asks), whose first word is its index.
    unsafe { asm!("mov {}, qword ptr gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}

/// The running CPU's index, for the per-CPU structures of memkit's crates: the frame
/// cache's slots and the heap's shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThisCpu;

impl memkit_types::CpuId for ThisCpu {
    fn current_cpu(&self) -> usize {
        current()
    }
}

/// How many CPUs are running.
pub(crate) fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// The local APIC ID of CPU `index`, as it read it itself.
pub(crate) fn apic_id(index: usize) -> usize {
    PER_CPU[index].apic_id.load(Ordering::SeqCst)
}

/// What every CPU does first on itself: its descriptor tables, control registers and GS.
fn init_cpu(index: usize) {
    interrupts::init(index);
    cpu::init();
    // GS is used for nothing else: its base is this CPU's PerCpu static, which `current` reads.
    GsBase::write(x86_64::VirtAddr::new(core::ptr::from_ref(&PER_CPU[index]) as u64));
    apic::enable();
    PER_CPU[index].apic_id.store(usize::from(apic::id()), Ordering::SeqCst);
    PER_CPU[index].online.store(true, Ordering::SeqCst);
    ONLINE.fetch_add(1, Ordering::SeqCst);
}

/// Sets up the bootstrap processor as CPU 0 (call once, early), with the legacy PICs
/// masked: from here on the only interrupts are the IPIs the kernel sends.
pub(crate) fn init_boot_cpu() {
    apic::mask_legacy_pic();
    init_cpu(0);
}

/// The trampoline page: below 1 MiB, from memkit's ISA DMA pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trampoline {
    page: Frame,
}

impl Trampoline {
    /// Takes a frame below 1 MiB from `pool` for the trampoline, never frame 0: its
    /// identity mapping would make null pointers valid.
    ///
    /// # Errors
    /// When the pool has no such frame.
    pub(crate) fn allocate(pool: &impl FrameSource) -> Result<Self, memkit_types::FrameSourceError> {
        let below_1m = Some(PhysAddr::new(1 << 20));
        let mut page = pool.allocate(FrameCount::new(1), Order::new(0), below_1m)?;
        if page.number() == 0 {
            let other = pool.allocate(FrameCount::new(1), Order::new(0), below_1m);
            pool.free(page, FrameCount::new(1))?;
            page = other?;
        }
        Ok(Trampoline { page })
    }

    /// The trampoline's frame (identity-mapped read+execute by the kernel's tables).
    pub(crate) fn frame(&self) -> Frame {
        self.page
    }
}

/// Why an AP did not come online.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SmpError {
    /// No frames for its stack.
    NoStack,
    /// It did not report online in time.
    Timeout {
        /// Its local APIC ID.
        #[expect(dead_code, reason = "printed with the error")]
        apic_id: u8,
    },
}

/// Starts every AP of `processors` with the kernel's tables at `root`, one after the other.
/// Returns how many CPUs are online (the BSP included).
///
/// # Errors
/// [`SmpError`] for the first AP that could not be started; those before it run.
pub(crate) fn start_aps(
    processors: &Processors,
    trampoline: Trampoline,
    root: Frame,
    frames: &KernelFrames,
) -> Result<usize, SmpError> {
    write_trampoline(trampoline, root);
    let vector = u8::try_from(trampoline.page.number()).expect("the trampoline is below 1 MiB");
    for (index, &apic_id) in processors.apic_ids().iter().enumerate().skip(1) {
        let stack =
            frames.allocate(FrameCount::new(AP_STACK_FRAMES), Order::new(0), None).map_err(|_| SmpError::NoStack)?;
        let top = phys_window::current().ptr(stack.start_address(), (AP_STACK_FRAMES as usize) * PAGE_SIZE) as u64
            + AP_STACK_FRAMES * PAGE_SIZE as u64;
        AP_BOOT_STACK.store(top, Ordering::SeqCst);
        AP_BOOT_INDEX.store(index as u64, Ordering::SeqCst);
        apic::send_init(apic_id);
        settle(10_000);
        apic::send_startup(apic_id, vector);
        settle(200);
        if !PER_CPU[index].online.load(Ordering::SeqCst) {
            apic::send_startup(apic_id, vector);
        }
        let mut polls = 0;
        while !PER_CPU[index].online.load(Ordering::SeqCst) {
            polls += 1;
            if polls == ONLINE_POLLS {
                return Err(SmpError::Timeout { apic_id });
            }
            core::hint::spin_loop();
        }
    }
    Ok(online())
}

/// Waits about `micros` microseconds (roughly: the delays INIT and STARTUP ask for; nothing
/// depends on their length under QEMU).
fn settle(micros: u64) {
    for _ in 0..micros * 100 {
        core::hint::spin_loop();
    }
}

/// The trampoline's size limit (it is about a hundred bytes).
const TRAMPOLINE_MAX: usize = 256;

/// Copies the trampoline into its page (through the direct map) with its GDT's address, the
/// 64-bit entry, the kernel's root table and the EFER bits filled in.
fn write_trampoline(trampoline: Trampoline, root: Frame) {
    let start = (&raw const ap_trampoline_start) as usize;
    let len = (&raw const ap_trampoline_end) as usize - start;
    assert!(len <= TRAMPOLINE_MAX, "the trampoline fits its buffer");
    // SAFETY: `start .. start + len` is the trampoline in the image's read-only data.
    let blob = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
    let mut code = [0u8; TRAMPOLINE_MAX];
    code[..len].copy_from_slice(blob);
    let offset = |symbol: *const u8| symbol as usize - start;
    let mut patch = |at: usize, value: u32| code[at..at + 4].copy_from_slice(&value.to_le_bytes());
    let base = trampoline.page.start_address().as_u64() as u32;
    let gdt_pointer = offset(&raw const ap_trampoline_gdt_pointer);
    // The GDT is the 24 bytes before its pointer; the pointer's base follows its 16-bit limit.
    patch(gdt_pointer + 2, base + gdt_pointer as u32 - 24);
    let entry = u32::try_from(ap_long_mode_entry as *const () as usize).expect("the kernel image is below 4 GiB");
    patch(offset(&raw const ap_trampoline_far), entry);
    let root = u32::try_from(root.start_address().as_u64()).expect("the kernel's root table is below 4 GiB");
    patch(offset(&raw const ap_trampoline_cr3), root);
    patch(offset(&raw const ap_trampoline_efer), 0x100 | if cpu::no_execute_enabled() { 0x800 } else { 0 });
    let dst = phys_window::current().ptr(trampoline.page.start_address(), PAGE_SIZE);
    // SAFETY: `dst` is the trampoline's frame (owned, one page) through the direct map, and
    // no AP runs it yet.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), dst, len) };
}

/// The Rust entry of an AP, on its own stack, in long mode on the kernel's tables.
#[unsafe(no_mangle)]
extern "C" fn ap_main(index: usize) -> ! {
    init_cpu(index);
    PER_CPU[index].active_root.store(cpu::active_root().number(), Ordering::SeqCst);
    let mut seen = 0;
    loop {
        // Interrupts off while looking, so that a wake-up between the look and the `hlt`
        // is taken by the `hlt` (`sti; hlt` opens interrupts only for the `hlt`).
        x86_64::instructions::interrupts::disable();
        let generation = JOB_GENERATION.load(Ordering::SeqCst);
        if generation == seen {
            x86_64::instructions::interrupts::enable_and_hlt();
            continue;
        }
        x86_64::instructions::interrupts::enable();
        seen = generation;
        let job = *JOB.lock();
        if let Some((job, arg)) = job {
            job(index, arg);
        }
        PER_CPU[index].done.store(generation, Ordering::SeqCst);
    }
}

/// Runs `job(cpu, arg)` on every online CPU at once (this one included, as CPU 0) and
/// returns when all have finished. Only the bootstrap processor calls it.
pub(crate) fn run_on_all(job: fn(usize, usize), arg: usize) {
    *JOB.lock() = Some((job, arg));
    let generation = JOB_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    for cpu in PER_CPU.iter().skip(1).filter(|c| c.online.load(Ordering::SeqCst)) {
        apic::send_fixed(cpu.apic_id.load(Ordering::SeqCst) as u8, interrupts::WAKE_VECTOR as u8);
    }
    job(0, arg);
    PER_CPU[0].done.store(generation, Ordering::SeqCst);
    for cpu in PER_CPU.iter().filter(|c| c.online.load(Ordering::SeqCst)) {
        while cpu.done.load(Ordering::SeqCst) < generation {
            core::hint::spin_loop();
        }
    }
    *JOB.lock() = None;
}

/// Records that this CPU now uses the page table at `root` (called before CR3 is loaded).
pub(crate) fn set_active_root(root: Frame) {
    PER_CPU[current()].active_root.store(root.number(), Ordering::SeqCst);
}

/// Lets the bootstrap processor take interrupts (IPIs) from now on.
pub(crate) fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// From this many pages on a flush empties the whole TLB instead of one `invlpg` per page
/// (Linux's `tlb_single_page_flush_ceiling` is 33): memkit-region's threshold, at which a
/// [`TlbFlush`] becomes full.
pub(crate) const FULL_FLUSH_PAGES: u64 = memkit_region::mmu::FULL_FLUSH_PAGES as u64;

/// What TLB maintenance cost so far, in events (timings mean nothing under emulation).
#[derive(Debug)]
pub(crate) struct FlushCounts {
    /// Shootdown rounds (one per flush that had other CPUs to tell).
    pub(crate) rounds: AtomicU64,
    /// IPIs sent for shootdowns.
    pub(crate) ipis: AtomicU64,
    /// Pages flushed one by one (`invlpg`), on any CPU.
    pub(crate) pages: AtomicU64,
    /// Whole-TLB flushes, on any CPU.
    pub(crate) full: AtomicU64,
    /// Large (2 MiB) entries flushed as such (one `invlpg` each, counted in `pages` too).
    pub(crate) large: AtomicU64,
}

/// The kernel's flush counters.
pub(crate) static FLUSHES: FlushCounts = FlushCounts {
    rounds: AtomicU64::new(0),
    ipis: AtomicU64::new(0),
    pages: AtomicU64::new(0),
    full: AtomicU64::new(0),
    large: AtomicU64::new(0),
};

impl FlushCounts {
    /// The counters now: (rounds, IPIs, single pages, full flushes).
    pub(crate) fn snapshot(&self) -> [u64; 4] {
        [&self.rounds, &self.ipis, &self.pages, &self.full].map(|c| c.load(Ordering::SeqCst))
    }
}

/// The shootdown in progress: which table, which pages (up to [`TlbFlush::RANGES`] ranges,
/// or the whole TLB), and the CPUs yet to acknowledge. Written only by the holder of
/// [`SHOOTDOWN_LOCK`] while no bit is pending.
struct Shootdown {
    /// The table's frame number, or 0 for the kernel's part of every table.
    root: AtomicU64,
    /// Everything: the whole TLB.
    full: AtomicBool,
    /// The ranges in use.
    len: AtomicUsize,
    starts: [AtomicU64; TlbFlush::RANGES],
    counts: [AtomicU64; TlbFlush::RANGES],
    pending: AtomicU64,
}

static SHOOTDOWN: Shootdown = Shootdown {
    root: AtomicU64::new(0),
    full: AtomicBool::new(false),
    len: AtomicUsize::new(0),
    starts: [const { AtomicU64::new(0) }; TlbFlush::RANGES],
    counts: [const { AtomicU64::new(0) }; TlbFlush::RANGES],
    pending: AtomicU64::new(0),
};
static SHOOTDOWN_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Flushes `count` pages from `start` from this CPU's TLB: one by one up to
/// [`FULL_FLUSH_PAGES`], the whole TLB beyond.
fn flush_local(start: Page, count: u64) {
    if count >= FULL_FLUSH_PAGES {
        flush_local_all();
        return;
    }
    for i in 0..count {
        let addr = start.start_address().as_u64() + i * PAGE_SIZE as u64;
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(addr));
    }
    FLUSHES.pages.fetch_add(count, Ordering::Relaxed);
}

/// Empties this CPU's TLB.
fn flush_local_all() {
    x86_64::instructions::tlb::flush_all();
    FLUSHES.full.fetch_add(1, Ordering::Relaxed);
}

/// Flushes what `batch` names from this CPU's TLB: its pages one by one, or the whole TLB
/// when it is full.
fn flush_local_batch(batch: &TlbFlush) {
    if batch.is_full() {
        flush_local_all();
        return;
    }
    for (start, count) in batch.ranges() {
        flush_local(start, count.get() as u64);
    }
}

/// Flushes `count` pages from `start` from every TLB that may cache them ([`flush_batch`]
/// of one range).
pub(crate) fn flush(root: Option<Frame>, start: Page, count: u64) {
    flush_batch(root, &TlbFlush::new(start, PageCount::new(count as usize)));
}

/// Flushes what `batch` names from every TLB that may cache it: this CPU's, and those of
/// the other CPUs that have the table at `root` active (`None`: the kernel's own part,
/// cached by every CPU), in one round of IPIs whatever the number of ranges. Returns once
/// every CPU told has flushed, so the frames the pages showed may be reused then.
pub(crate) fn flush_batch(root: Option<Frame>, batch: &TlbFlush) {
    if batch.is_empty() {
        return;
    }
    flush_local_batch(batch);
    if online() <= 1 {
        return;
    }
    let me = current();
    let root = root.map_or(0, |r| r.number());
    // The page-table change is visible before the look at which CPUs use the table; a CPU
    // that loads the table later walks the changed entries.
    core::sync::atomic::fence(Ordering::SeqCst);
    let targets = PER_CPU
        .iter()
        .filter(|c| c.index != me && c.online.load(Ordering::SeqCst))
        .filter(|c| root == 0 || c.active_root.load(Ordering::SeqCst) == root)
        .fold(0u64, |mask, c| mask | 1 << c.index);
    if targets == 0 {
        return;
    }
    let guard = lock_answering();
    SHOOTDOWN.root.store(root, Ordering::SeqCst);
    SHOOTDOWN.full.store(batch.is_full(), Ordering::SeqCst);
    let mut len = 0;
    if !batch.is_full() {
        for (i, (start, count)) in batch.ranges().enumerate().take(TlbFlush::RANGES) {
            SHOOTDOWN.starts[i].store(start.start_address().as_u64(), Ordering::SeqCst);
            SHOOTDOWN.counts[i].store(count.get() as u64, Ordering::SeqCst);
            len = i + 1;
        }
    }
    SHOOTDOWN.len.store(len, Ordering::SeqCst);
    SHOOTDOWN.pending.store(targets, Ordering::SeqCst);
    for cpu in PER_CPU.iter().filter(|c| targets & (1 << c.index) != 0) {
        apic::send_fixed(cpu.apic_id.load(Ordering::SeqCst) as u8, interrupts::SHOOTDOWN_VECTOR as u8);
        FLUSHES.ipis.fetch_add(1, Ordering::Relaxed);
    }
    FLUSHES.rounds.fetch_add(1, Ordering::Relaxed);
    while SHOOTDOWN.pending.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    drop(guard);
}

/// Takes the shootdown lock, answering the holder's request meanwhile: two CPUs that flush
/// at once never wait for each other with interrupts off.
fn lock_answering() -> spin::MutexGuard<'static, ()> {
    loop {
        if let Some(guard) = SHOOTDOWN_LOCK.try_lock() {
            return guard;
        }
        service_shootdown();
        core::hint::spin_loop();
    }
}

/// Answers the shootdown in progress if it asks this CPU: flushes the pages (when this CPU
/// still has that table active; a CPU that switched tables since has no entry left), then
/// acknowledges. Called from the shootdown IPI and by CPUs waiting for the lock.
pub(crate) fn service_shootdown() {
    let me = current();
    let bit = 1u64 << me;
    if SHOOTDOWN.pending.load(Ordering::SeqCst) & bit == 0 {
        return;
    }
    let root = SHOOTDOWN.root.load(Ordering::SeqCst);
    if root == 0 || PER_CPU[me].active_root.load(Ordering::SeqCst) == root {
        if SHOOTDOWN.full.load(Ordering::SeqCst) {
            flush_local_all();
        } else {
            let len = SHOOTDOWN.len.load(Ordering::SeqCst).min(TlbFlush::RANGES);
            for (start, count) in SHOOTDOWN.starts.iter().zip(&SHOOTDOWN.counts).take(len) {
                let start =
                    Page::containing_address(memkit_types::VirtAddr::new(start.load(Ordering::SeqCst) as usize));
                flush_local(start, count.load(Ordering::SeqCst));
            }
        }
    }
    SHOOTDOWN.pending.fetch_and(!bit, Ordering::SeqCst);
}
