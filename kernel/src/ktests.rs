//! The in-kernel test suite, layer by layer. Each group runs at the point of the boot where
//! its layer exists.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::ptr::NonNull;

use core::sync::atomic::Ordering;
use memkit_heap::{HeapId, XmallocError, XmfreeError};

use memkit_phys::{AllocateError, FreeError, MemoryArea};
use memkit_types::{Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, PhysMemory, VirtAddr};

use crate::frames::KernelFrames;
use crate::heap::Heaps;
use crate::interrupts::{self, BREAKPOINTS, FAULTS_REPORTED, PageFaultHandler};
use crate::memory::KernelSpace;
use crate::phys_window::{DIRECT_MAP_BASE, KernelPhysMemory};
use crate::pvh::MemoryMap;
use crate::serial::println;
use crate::testing::{Runner, TestResult, check, check_eq};
use crate::{cpu, image};

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

/// What the identity-mapped phase hands to the direct-mapped one: a block allocated before
/// the switch (to be freed after it), a frame with a pattern written through the identity
/// map, and the statistics just before the switch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Carried {
    block: Option<Frame>,
    free_before: FrameCount,
}

const CARRIED_ORDER: Order = Order::new(3);
const PATTERN: u64 = 0x6d65_6d6b_6974_2121;

/// The frame allocator through the boot identity map.
pub(crate) fn frames_identity(runner: &mut Runner, frames: &KernelFrames) -> Carried {
    runner.run("phys::header_is_in_ram_off_the_kernel_image", || {
        let header = frames.header();
        check!(!header.overlaps(image::area()));
        check!(header.start.as_u64() >= image::area().end());
        // Identity: the view reads the header at its physical address.
        check_eq!(frames.header_mapping_address().as_u64(), header.start.as_u64());
        frames.check_invariants();
        Ok(())
    });
    runner.run("phys::seed_allocate_and_free_through_identity_map", || seed_allocate_and_free(frames));
    runner.run("phys::frame_source_runs_and_fixed_addresses", || frame_source_runs(frames));
    let block = frames.allocate_block(CARRIED_ORDER).ok();
    if let Some(block) = block {
        let window = crate::phys_window::current();
        let ptr = window.ptr(block.start_address(), PAGE_SIZE).cast::<u64>();
        // SAFETY: the block was just allocated to this test: nothing else uses it.
        unsafe { ptr.write(PATTERN) };
    }
    let free_before = frames.free_frames();
    println!("carried across the switch: block {block:?}, {} free frames", free_before.get());
    Carried { block, free_before }
}

fn seed_allocate_and_free(frames: &KernelFrames) -> TestResult {
    let before = frames.stats();
    let a = frames.allocate_block(Order::ZERO);
    let b = frames.allocate_block(Order::new(9));
    let (Ok(a), Ok(b)) = (a, b) else { return Err(fail("allocation failed")) };
    check!(b.is_aligned_to(Order::new(9)));
    check!(!frames.is_free(a) && !frames.is_free(b));
    check_eq!(frames.free_frames().get(), before.free_frames.get() - 1 - 512);
    frames.check_invariants();
    // A double free is NotValid-style and changes nothing.
    let area_a = MemoryArea::from_frames(a, FrameCount::new(1));
    check_eq!(frames.free_block(area_a), Ok(()));
    check!(matches!(frames.free_block(area_a), Err(FreeError::AlreadyFree(_))));
    check_eq!(frames.free_block(MemoryArea::from_frames(b, FrameCount::new(512))), Ok(()));
    check_eq!(frames.stats(), before);
    // An order above the area is not valid; the kernel image is never handed out.
    check!(matches!(frames.allocate_block(Order::new(30)), Err(AllocateError::NotValid(_))));
    let kernel = Frame::containing_address(image::area().start);
    check!(matches!(
        frames.free_block(MemoryArea::from_frames(kernel, FrameCount::new(1))),
        Err(FreeError::Reserved(_))
    ));
    frames.check_invariants();
    Ok(())
}

fn frame_source_runs(frames: &KernelFrames) -> TestResult {
    let before = frames.free_frames();
    // A run that is not a power of two, below 16 MiB (ISA DMA), without wasting the rounding.
    let limit = PhysAddr::new(16 << 20);
    let run = frames.allocate(FrameCount::new(5), Order::ZERO, Some(limit));
    let Ok(run) = run else { return Err(fail("run below 16 MiB")) };
    check!(run.start_address().as_u64() + 5 * PAGE_SIZE as u64 <= limit.as_u64());
    check_eq!(frames.free_frames().get(), before.get() - 5);
    // A fixed address: taken once, refused the second time.
    let fixed = Frame::containing_address(PhysAddr::new(64 << 20));
    check_eq!(frames.allocate_at(fixed, FrameCount::new(2)), Ok(()));
    check!(frames.allocate_at(fixed, FrameCount::new(1)).is_err());
    check_eq!(frames.free(fixed, FrameCount::new(2)), Ok(()));
    check_eq!(frames.free(run, FrameCount::new(5)), Ok(()));
    check!(frames.free(run, FrameCount::new(5)).is_err());
    check_eq!(frames.free_frames(), before);
    frames.check_invariants();
    Ok(())
}

fn fail(what: &'static str) -> crate::testing::Failure {
    crate::testing::Failure { what, line: line!() }
}

/// The frame allocator through the higher-half direct map, after the switch.
pub(crate) fn frames_direct(runner: &mut Runner, frames: &KernelFrames, space: &KernelSpace, carried: Carried) {
    runner.run("switch::kernel_runs_on_its_own_tables", || {
        check_eq!(cpu::active_root(), space.root);
        check!(space.table_frames >= 3);
        Ok(())
    });
    runner.run("switch::header_is_reached_through_the_direct_map", || {
        let header = frames.header();
        check_eq!(frames.header_mapping_address().as_u64(), DIRECT_MAP_BASE + header.start.as_u64());
        // The old identity address of the header is no longer mapped.
        let identity = VirtAddr::new(header.start.as_u64() as usize);
        check!(interrupts::probe_read(identity).is_err());
        frames.check_invariants();
        Ok(())
    });
    runner.run("switch::allocator_state_survives_the_switch", || {
        let Some(block) = carried.block else { return Err(fail("no block was carried")) };
        // The page tables took frames after the snapshot: exactly the kernel's tables.
        check_eq!(frames.free_frames().get() + space.table_frames, carried.free_before.get());
        check!(!frames.is_free(block));
        let mut bytes = [0; 8];
        KernelPhysMemory.read(block.start_address(), &mut bytes);
        check_eq!(u64::from_le_bytes(bytes), PATTERN);
        let area = MemoryArea::from_frames(block, CARRIED_ORDER.frame_count());
        check_eq!(frames.free_block(area), Ok(()));
        check!(frames.is_free(block));
        check!(matches!(frames.free_block(area), Err(FreeError::AlreadyFree(_))));
        frames.check_invariants();
        Ok(())
    });
    runner.run("switch::direct_map_zero_and_copy", || {
        let Ok(src) = frames.allocate(FrameCount::new(2), Order::ZERO, None) else { return Err(fail("no frames")) };
        let Ok(dst) = frames.allocate(FrameCount::new(2), Order::ZERO, None) else { return Err(fail("no frames")) };
        KernelPhysMemory.zero(src, FrameCount::new(2));
        KernelPhysMemory.write(src.start_address().checked_add(4090).expect("in RAM"), b"memkit!!");
        KernelPhysMemory.copy(src, dst, FrameCount::new(2));
        let mut bytes = [0; 10];
        KernelPhysMemory.read(dst.start_address().checked_add(4089).expect("in RAM"), &mut bytes);
        check_eq!(&bytes, b"\0memkit!!\0");
        check_eq!(frames.free(src, FrameCount::new(2)), Ok(()));
        check_eq!(frames.free(dst, FrameCount::new(2)), Ok(()));
        Ok(())
    });
}

/// The kernel heap: memkit's xmalloc heaps as the global allocator.
pub(crate) fn heap(runner: &mut Runner, heaps: &'static Heaps, frames: &KernelFrames) {
    runner.run("heap::collections_use_the_global_allocator", || collections_use_the_heap(heaps));
    runner.run("heap::xmalloc_xmfree_and_their_errors", || xmalloc_and_errors(heaps));
    runner.run("heap::pinned_heap_and_pins", || pinned_heap(heaps));
    runner.run("heap::large_blocks_come_from_frames_and_go_back", || large_blocks(heaps, frames));
    let stats = kernel_heap_stats(heaps);
    println!(
        "kernel heap after its tests: {} spans, {} pages for blocks, {} pages of metadata",
        stats.spans, stats.pages, stats.metadata_pages
    );
}

fn collections_use_the_heap(heaps: &Heaps) -> TestResult {
    let before = kernel_heap_stats(heaps);
    let values: Vec<u64> = (0..10_000).collect();
    check_eq!(values.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    let address = values.as_ptr() as u64;
    check!(address >= DIRECT_MAP_BASE);
    let mut map = BTreeMap::new();
    for i in 0..2_000u32 {
        map.insert(i.wrapping_mul(2_654_435_761), Box::new(i));
    }
    check_eq!(map.len(), 2_000);
    check!(map.iter().all(|(k, v)| *k == v.wrapping_mul(2_654_435_761)));
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(if i % 2 == 0 { "mem" } else { "kit" });
    }
    check_eq!(text.len(), 300);
    let during = kernel_heap_stats(heaps);
    check!(during.small_blocks > before.small_blocks + 2_000);
    println!(
        "    heap during: {} small blocks, {} large blocks, {} pages ({} bytes)",
        during.small_blocks,
        during.large_blocks,
        during.pages,
        during.pages * PAGE_SIZE
    );
    drop((values, map, text));
    let after = kernel_heap_stats(heaps);
    check_eq!(after.small_blocks, before.small_blocks);
    check_eq!(after.large_blocks, before.large_blocks);
    heaps.check_invariants();
    Ok(())
}

fn xmalloc_and_errors(heaps: &Heaps) -> TestResult {
    let Some(p) = heaps.xmalloc(100, 4, HeapId::Kernel) else { return Err(fail("xmalloc")) };
    check!((p.as_ptr() as usize).is_multiple_of(16));
    // SAFETY: the block is 100 bytes, allocated just above.
    unsafe { p.as_ptr().write_bytes(0xa5, 100) };
    let Some(q) = heaps.palloc(3000, 12) else { return Err(fail("palloc")) };
    check!((q.as_ptr() as usize).is_multiple_of(4096));
    let Some(m) = heaps.malloc(24) else { return Err(fail("malloc")) };
    // The wrong heap, the middle of a block, a double free: errors, nothing changes.
    check!(matches!(heaps.xmfree(p, HeapId::Pinned), Err(XmfreeError::OtherHeap(_) | XmfreeError::NotOwned(_))));
    let inside = NonNull::new(p.as_ptr().wrapping_add(8)).expect("not null");
    check!(matches!(heaps.xmfree(inside, HeapId::Kernel), Err(XmfreeError::NotBlockStart(_))));
    check_eq!(heaps.xmfree(p, HeapId::Kernel), Ok(()));
    check!(matches!(heaps.xmfree(p, HeapId::Kernel), Err(XmfreeError::NotAllocated(_))));
    check_eq!(heaps.xmfree(q, HeapId::Kernel), Ok(()));
    check_eq!(heaps.xmfree(m, HeapId::Kernel), Ok(()));
    check!(matches!(heaps.try_xmalloc(16, 40, HeapId::Kernel), Err(XmallocError::BadAlignment(40))));
    heaps.check_invariants();
    Ok(())
}

fn pinned_heap(heaps: &Heaps) -> TestResult {
    let Some(k) = heaps.xmalloc(512, 3, HeapId::Kernel) else { return Err(fail("xmalloc")) };
    check_eq!(heaps.pin(k, HeapId::Kernel), Ok(1));
    check!(matches!(heaps.xmfree(k, HeapId::Kernel), Err(XmfreeError::StillPinned(_, 1))));
    check_eq!(heaps.unpin(k, HeapId::Kernel), Ok(0));
    check_eq!(heaps.xmfree(k, HeapId::Kernel), Ok(()));
    let Some(p) = heaps.xmalloc(256, 3, HeapId::Pinned) else { return Err(fail("pinned xmalloc")) };
    check!(heaps.unpin(p, HeapId::Pinned).is_err());
    check_eq!(heaps.xmfree(p, HeapId::Pinned), Ok(()));
    heaps.check_invariants();
    Ok(())
}

fn large_blocks(heaps: &Heaps, frames: &KernelFrames) -> TestResult {
    let heap = heaps.regular_heap(HeapId::Kernel4K64K);
    // Two rounds: the first may take metadata (descriptor chunks) the heap keeps; the second
    // must give back exactly what it took.
    let mut after_round = [0; 2];
    for round in &mut after_round {
        let free = frames.free_frames().get();
        let Some(block) = heaps.xmalloc(1 << 20, 12, HeapId::Kernel4K64K) else { return Err(fail("1 MiB block")) };
        check!(frames.free_frames().get() <= free - 256);
        // SAFETY: the block is 1 MiB, just allocated.
        unsafe { block.as_ptr().write_bytes(0x5a, 1 << 20) };
        check!(heap.owns(block));
        check_eq!(heaps.xmfree(block, HeapId::Kernel4K64K), Ok(()));
        heap.trim();
        *round = frames.free_frames().get();
    }
    check_eq!(after_round[0], after_round[1]);
    heaps.check_invariants();
    Ok(())
}

/// The backing heap `HeapId::Kernel` allocates from (16M when large pages are on).
fn kernel_heap_stats(heaps: &Heaps) -> memkit_heap::HeapStats {
    if heaps.large_pages_enabled() { heaps.large_heap(HeapId::Kernel).stats() } else { kernel_heap_stats(heaps) }
}
