//! The in-kernel test suite, layer by layer. Each group runs at the point of the boot where
//! its layer exists.
//!
//! # Unsafe
//! The tests raise a breakpoint, touch memory they own (heap blocks they allocated, pages of
//! spaces they attached) and free blocks they allocated and no longer use.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::ptr::NonNull;

use core::sync::atomic::Ordering;
use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, Placement as DsPlacement, PoolId};
use memkit_heap::{HeapId, XmallocError, XmfreeError};
use memkit_region::{AttachRequest, DetachFlags, FaultError, Flags, Mmu};
use memkit_spaces::SpaceId;

use memkit_phys::{AllocateError, DEFAULT_POOL, FreeError, HEADER_MAGIC, ISA_DMA_LIMIT, ISA_DMA_POOL, MemoryArea};
use memkit_types::{
    Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Page, PhysAddr, PhysMemory, Rights, VirtAddr,
};

use crate::frames::KernelFrames;
use crate::heap::Heaps;
use crate::interrupts::{self, BREAKPOINTS, FAULTS_REPORTED, FAULTS_RESOLVED, Fault, PageFaultHandler};
use crate::memory::KernelSpace;
use crate::phys_window::{DIRECT_MAP_BASE, KernelPhysMemory};
use crate::pvh::MemoryMap;
use crate::serial::println;
use crate::space::{KernelManager, SetPager, Space, Spaces, WINDOW_SIZE, WINDOW_START, new_tables, with_space_active};
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
    runner.run("phys::pools_from_the_memory_map", || pools_from_the_memory_map(frames));
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
    // An order above the area is not valid.
    check!(matches!(frames.allocate_block(Order::new(30)), Err(AllocateError::NotValid(_))));
    // The kernel image (in pool 7's span) is reserved: never handed out, never freed.
    let kernel = MemoryArea::from_frames(Frame::containing_address(image::area().start), FrameCount::new(1));
    let freed = frames.with_pools(|pools| pools.pool(ISA_DMA_POOL).map(|p| p.allocator().lock().free(kernel)));
    check!(matches!(freed, Some(Err(FreeError::Reserved(_)))));
    frames.check_invariants();
    Ok(())
}

fn frame_source_runs(frames: &KernelFrames) -> TestResult {
    let before = frames.free_frames();
    // A run that is not a power of two, below a limit, without wasting the rounding.
    let limit = PhysAddr::new(32 << 20);
    let run = frames.allocate(FrameCount::new(5), Order::ZERO, Some(limit));
    let Ok(run) = run else { return Err(fail("run below 32 MiB")) };
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

fn pools_from_the_memory_map(frames: &KernelFrames) -> TestResult {
    let isa_limit = ISA_DMA_LIMIT.as_u64();
    let (default_span, isa_span) = frames.with_pools(|pools| {
        (pools.pool(DEFAULT_POOL).map(|p| p.stats().span), pools.pool(ISA_DMA_POOL).map(|p| p.stats().span))
    });
    let (Some(default_span), Some(isa_span)) = (default_span, isa_span) else { return Err(fail("pools 0 and 7")) };
    // Pool 7 is the RAM below 16 MiB, pool 0 the rest; neither holds the kernel image.
    check!(isa_span.end() <= isa_limit);
    check!(default_span.start.as_u64() >= isa_limit);
    check!(!frames.with_pools(|pools| pools.iter().any(|p| p.stats().header.overlaps(image::area()))));
    let isa = frames.pool(ISA_DMA_POOL);
    let Ok(dma) = isa.allocate(FrameCount::new(3), Order::ZERO, None) else { return Err(fail("ISA DMA frames")) };
    check!(dma.start_address().as_u64() + 3 * PAGE_SIZE as u64 <= isa_limit);
    check!(!MemoryArea::from_frames(dma, FrameCount::new(3)).overlaps(image::area()));
    check_eq!(isa.free(dma, FrameCount::new(3)), Ok(()));
    // A pool without memory serves nothing.
    check!(frames.pool(3).allocate(FrameCount::new(1), Order::ZERO, None).is_err());
    frames.check_invariants();
    Ok(())
}

/// A failure at the caller's line.
#[track_caller]
fn fail(what: &'static str) -> crate::testing::Failure {
    crate::testing::Failure { what, line: core::panic::Location::caller().line() }
}

/// The frame allocator through the higher-half direct map, after the switch.
pub(crate) fn frames_direct(runner: &mut Runner, frames: &KernelFrames, space: &KernelSpace, carried: Carried) {
    runner.run("switch::kernel_runs_on_its_own_tables", || {
        check_eq!(cpu::active_root(), space.root);
        check!(space.table_frames >= 3);
        Ok(())
    });
    runner.run("switch::kernel_image_is_mapped_w_xor_x", || {
        for (part, rights) in image::sections() {
            check!(!(rights.contains(Rights::WRITE) && rights.contains(Rights::EXECUTE)));
            if rights.contains(Rights::WRITE) {
                continue;
            }
            // A write to code or read-only data faults and is reported; the byte written back
            // is the one already there, so nothing could change even if it were not.
            let addr = VirtAddr::new(part.start.as_u64() as usize + 64);
            let Ok(byte) = interrupts::probe_read(addr) else { return Err(fail("the image is readable")) };
            check_eq!(interrupts::probe_write(addr, byte).map_err(|f| (f.addr, f.access)), Err((addr, Access::Write)));
        }
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
    runner.run("switch::every_pool_header_is_reattached", || {
        let mut headers = [None; 8];
        frames.with_pools(|pools| pools.stats().for_each(|p| headers[p.id] = Some(p.header)));
        check_eq!(headers.iter().flatten().count(), 2);
        for header in headers.iter().flatten() {
            // Only the direct map reaches it now.
            check!(interrupts::probe_read(VirtAddr::new(header.start.as_u64() as usize)).is_err());
            let mut magic = [0; 8];
            KernelPhysMemory.read(header.start, &mut magic);
            check_eq!(u64::from_le_bytes(magic), HEADER_MAGIC);
        }
        // The ISA DMA pool works through its re-attached header too.
        let isa = frames.pool(ISA_DMA_POOL);
        let Ok(frame) = isa.allocate(FrameCount::new(1), Order::ZERO, None) else { return Err(fail("pool 7")) };
        check_eq!(isa.free(frame, FrameCount::new(1)), Ok(()));
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

/// `xmfree` as the heap tests use it.
fn xmfree(heaps: &Heaps, ptr: NonNull<u8>, heap: HeapId) -> Result<(), XmfreeError> {
    // SAFETY: the heap tests free only blocks they took with `xmalloc` themselves and use
    // only as addresses, each once; their bad frees (the wrong heap, inside a block, a
    // block just freed, with no allocation between: the check macros allocate nothing)
    // name no live block, so the heap refuses them.
    unsafe { heaps.xmfree(ptr, heap) }
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
    check!(matches!(xmfree(heaps, p, HeapId::Pinned), Err(XmfreeError::OtherHeap(_) | XmfreeError::NotOwned(_))));
    let inside = NonNull::new(p.as_ptr().wrapping_add(8)).expect("not null");
    check!(matches!(xmfree(heaps, inside, HeapId::Kernel), Err(XmfreeError::NotBlockStart(_))));
    check_eq!(xmfree(heaps, p, HeapId::Kernel), Ok(()));
    check!(matches!(xmfree(heaps, p, HeapId::Kernel), Err(XmfreeError::NotAllocated(_))));
    check_eq!(xmfree(heaps, q, HeapId::Kernel), Ok(()));
    check_eq!(xmfree(heaps, m, HeapId::Kernel), Ok(()));
    check!(matches!(heaps.try_xmalloc(16, 40, HeapId::Kernel), Err(XmallocError::BadAlignment(40))));
    heaps.check_invariants();
    Ok(())
}

fn pinned_heap(heaps: &Heaps) -> TestResult {
    let Some(k) = heaps.xmalloc(512, 3, HeapId::Kernel) else { return Err(fail("xmalloc")) };
    check_eq!(heaps.pin(k, HeapId::Kernel), Ok(1));
    check!(matches!(xmfree(heaps, k, HeapId::Kernel), Err(XmfreeError::StillPinned(_, 1))));
    check_eq!(heaps.unpin(k, HeapId::Kernel), Ok(0));
    check_eq!(xmfree(heaps, k, HeapId::Kernel), Ok(()));
    let Some(p) = heaps.xmalloc(256, 3, HeapId::Pinned) else { return Err(fail("pinned xmalloc")) };
    check!(heaps.unpin(p, HeapId::Pinned).is_err());
    check_eq!(xmfree(heaps, p, HeapId::Pinned), Ok(()));
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
        check_eq!(xmfree(heaps, block, HeapId::Kernel4K64K), Ok(()));
        heap.trim();
        *round = frames.free_frames().get();
    }
    check_eq!(after_round[0], after_round[1]);
    heaps.check_invariants();
    Ok(())
}

/// Bytes the kernel heaps hold in pages for blocks (all four backing heaps).
pub(crate) fn heap_block_bytes(heaps: &Heaps) -> usize {
    let ids = [HeapId::Kernel4K64K, HeapId::Pinned4K64K];
    let regular: usize = ids.iter().map(|&id| heaps.regular_heap(id).stats().pages).sum();
    let large: usize = ids.iter().map(|&id| heaps.large_heap(id).stats().pages).sum();
    (regular + large) * PAGE_SIZE
}

/// The backing heap `HeapId::Kernel` allocates from (16M when large pages are on).
fn kernel_heap_stats(heaps: &Heaps) -> memkit_heap::HeapStats {
    if heaps.large_pages_enabled() { heaps.large_heap(HeapId::Kernel).stats() } else { kernel_heap_stats(heaps) }
}

/// Address spaces: region maps on real page tables, faults resolved through them.
pub(crate) fn spaces(runner: &mut Runner, frames: &'static KernelFrames, kernel_root: Frame) {
    runner.run("space::lazy_pages_are_mapped_on_first_touch", || lazy_pages(frames, kernel_root));
    runner.run("space::copy_on_write_is_broken_by_a_write_fault", || copy_on_write(frames, kernel_root));
    runner.run("space::forbidden_access_is_reported_not_mapped", || forbidden_access(frames, kernel_root));
    runner.run("space::detach_unmaps_and_frames_go_back", || detach_gives_back(frames, kernel_root));
    runner.run("space::isa_dma_dataspace_is_contiguous_below_16mib", || isa_dma_dataspace(frames, kernel_root));
    runner.run("space::copy_on_write_across_two_address_spaces", || fork(frames, kernel_root));
    runner.run("space::copy_on_write_break_unmaps_the_old_frame_in_its_own_space", || {
        cow_break_in_own_space(frames, kernel_root)
    });
    runner.run("space::detach_free_gives_the_frames_back", || detach_free(frames, kernel_root));
    runner.run("space::thousand_lazy_pages_in_random_order", || many_lazy_pages(frames, kernel_root));
    runner.run("space::execute_needs_the_execute_right", || execute_right(frames, kernel_root));
}

const CLIENT: ClientId = ClientId::new(1, 0);
const PAGE: usize = PAGE_SIZE;

fn new_manager(frames: &'static KernelFrames) -> KernelManager {
    let mut manager = Manager::new(Config::new(64 << 20), KernelPhysMemory);
    manager.set_pool(PoolId::DEFAULT, frames.pool(DEFAULT_POOL));
    if let Some(isa) = PoolId::new(ISA_DMA_POOL as u32) {
        manager.set_pool(isa, frames.pool(ISA_DMA_POOL));
    }
    manager
}

fn at(start: VirtAddr, offset: usize) -> VirtAddr {
    start.checked_add(offset).expect("inside the window")
}

fn page(addr: VirtAddr) -> Page {
    Page::containing_address(addr)
}

/// Everything a space test needs, built fresh: one address space in a [`Spaces`] set (the
/// same wiring as several spaces).
struct Fixture {
    set: Spaces,
    id: SpaceId,
    kernel_root: Frame,
}

impl Fixture {
    fn new(frames: &'static KernelFrames, kernel_root: Frame) -> Result<Self, crate::testing::Failure> {
        let mut set = Spaces::new(new_manager(frames));
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("no frame for the space's root"))?;
        let id = set.add_space(map, mmu);
        Ok(Fixture { set, id, kernel_root })
    }

    fn manager(&self) -> &KernelManager {
        self.set.manager()
    }

    fn space(&self) -> &Space {
        self.set.space(self.id).expect("the fixture's space exists")
    }

    fn open(&mut self, pages: usize, name: &str) -> Result<DataspaceId, crate::testing::Failure> {
        self.set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, (pages * PAGE) as u64, 12, DmFlags::empty(), name)
            .map_err(|_| fail("mem_open"))
    }

    fn attach(&mut self, ds: DataspaceId, pages: usize, rights: Rights) -> Result<VirtAddr, crate::testing::Failure> {
        self.attach_with(ds, pages, rights, Flags::empty())
    }

    fn attach_with(
        &mut self,
        ds: DataspaceId,
        pages: usize,
        rights: Rights,
        flags: Flags,
    ) -> Result<VirtAddr, crate::testing::Failure> {
        let request = AttachRequest::new(ds, pages * PAGE, rights).search(VirtAddr::new(WINDOW_START)).flags(flags);
        self.set.attach(self.id, &request).map_err(|_| fail("attach"))
    }

    fn detach(&mut self, start: VirtAddr, size: usize) -> bool {
        self.set.detach(self.id, start, size, DetachFlags::empty()).is_ok()
    }

    /// A copy-on-write copy of `ds`: its pages are write-protected in the space first.
    fn copy_on_write(&mut self, ds: DataspaceId) -> Result<DataspaceId, crate::testing::Failure> {
        self.set.copy_on_write(CLIENT, ds, "copy").map_err(|_| fail("COW copy"))
    }

    /// Detaches every region and closes every dataspace (`close_all`): afterwards the
    /// manager holds no frame, and dropping the fixture gives back the space's tables.
    fn teardown(mut self) -> TestResult {
        for region in self.space().map.regions() {
            check!(self.detach(region.start, region.size));
        }
        self.set.check_invariants();
        check!(self.set.manager_mut().close_all(CLIENT, CLIENT, DmFlags::empty()).is_ok());
        check_eq!(self.manager().frames_held(PoolId::DEFAULT), 0);
        check_eq!(self.manager().frames_held(PoolId::new(ISA_DMA_POOL as u32).expect("pool 7")), 0);
        Ok(())
    }

    /// Runs `body` in the space with its faults resolved by a pager; returns what `body`
    /// returned, the faults served, the last refusal and the copy-on-write breaks.
    fn run<R>(&mut self, body: impl FnOnce() -> R) -> (R, u64, Option<FaultError>, u64) {
        let breaks_before = self.set.cow_breaks();
        let space_root = self.space().mmu.root();
        let mut pager = SetPager::new(&mut self.set, self.id);
        let result =
            with_space_active(space_root, self.kernel_root, || interrupts::with_fault_handler(&mut pager, body));
        let (served, refused) = (pager.served, pager.refused);
        (result, served, refused, self.set.cow_breaks() - breaks_before)
    }
}

fn lazy_pages(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    {
        let mut f = Fixture::new(frames, kernel_root)?;
        let ds = f.open(16, "lazy")?;
        let start = f.attach(ds, 16, Rights::RW)?;
        check!((0..16).all(|i| f.space().mmu.translate(page(at(start, i * PAGE))).is_none()));
        check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
        let resolved_before = FAULTS_RESOLVED.load(Ordering::SeqCst);
        let (result, served, refused, _) = f.run(|| -> Result<[u8; 16], Fault> {
            for i in 0..8 {
                interrupts::probe_write(at(start, i * PAGE + i), i as u8 + 1)?;
            }
            let mut seen = [0; 16];
            for (i, value) in seen.iter_mut().enumerate() {
                *value = interrupts::probe_read(at(start, i * PAGE + i))?;
            }
            Ok(seen)
        });
        let Ok(seen) = result else { return Err(fail("a lazy page faulted unresolved")) };
        check_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        // One fault per page: 8 first writes, 8 first reads; the read-back of the written
        // pages does not fault.
        check_eq!(served, 16);
        check_eq!(FAULTS_RESOLVED.load(Ordering::SeqCst) - resolved_before, 16);
        check!(refused.is_none());
        check_eq!(f.manager().frames_held(PoolId::DEFAULT), 16);
        let first = f.space().mmu.translate(page(start));
        check!(first.is_some_and(|t| t.rights.contains(Rights::WRITE)));
        check!(f.space().mmu.table_frames() >= 4);
        println!(
            "    lazy: {served} faults served, {} frames held, {} page-table frames",
            f.manager().frames_held(PoolId::DEFAULT),
            f.space().mmu.table_frames()
        );
        f.set.check_invariants();
        f.set.manager_mut().check_invariants();
        check!(f.detach(start, 16 * PAGE));
        check_eq!(f.set.manager_mut().close(CLIENT, ds), Ok(()));
    }
    // Detached and closed, the dataspace's frames are back; the dropped space gave back its
    // tables.
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn copy_on_write(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let a = f.open(4, "source")?;
    let ra = f.attach(a, 4, Rights::RW)?;
    let (result, _, _, _) = f.run(|| -> Result<(), Fault> {
        for i in 0..4 {
            interrupts::probe_write(at(ra, i * PAGE), 0xa0 + i as u8)?;
        }
        Ok(())
    });
    check!(result.is_ok());
    let b = f.copy_on_write(a)?;
    // The source's pages are write-protected now; nothing was copied.
    check!(f.space().mmu.translate(page(ra)).is_some_and(|t| !t.rights.contains(Rights::WRITE)));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 4);
    let rb = f.attach(b, 4, Rights::RW)?;
    let (result, served, refused, breaks) = f.run(|| -> Result<[u8; 6], Fault> {
        let shared = interrupts::probe_read(rb)?; // read: maps the shared frame
        interrupts::probe_write(rb, 0xb0)?; // write: breaks COW in the copy
        interrupts::probe_write(at(ra, PAGE), 0xc1)?; // write: breaks COW in the source
        Ok([
            shared,
            interrupts::probe_read(rb)?,
            interrupts::probe_read(ra)?,
            interrupts::probe_read(at(ra, PAGE))?,
            interrupts::probe_read(at(rb, PAGE))?,
            interrupts::probe_read(at(rb, 3 * PAGE))?,
        ])
    });
    let Ok(seen) = result else { return Err(fail("a COW page faulted unresolved")) };
    check_eq!(seen, [0xa0, 0xb0, 0xa0, 0xc1, 0xa1, 0xa3]);
    check!(refused.is_none());
    check_eq!(breaks, 2);
    let (ta, tb) = (f.space().mmu.translate(page(ra)), f.space().mmu.translate(page(rb)));
    let (Some(ta), Some(tb)) = (ta, tb) else { return Err(fail("pages mapped")) };
    check!(ta.frame != tb.frame);
    check!(tb.rights.contains(Rights::WRITE));
    // Pages 2 and 3 are still shared: 4 + 2 frames in all.
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 6);
    println!("    copy-on-write: {served} faults served, {breaks} breaks, 6 frames for 8 pages");
    f.set.check_invariants();
    f.set.manager_mut().check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn forbidden_access(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(2, "read-only")?;
    let ro = f.attach(ds, 2, Rights::READ)?;
    let outside = VirtAddr::new(WINDOW_START + WINDOW_SIZE / 2);
    let reported_before = FAULTS_REPORTED.load(Ordering::SeqCst);
    let (results, served, refused, _) = f.run(|| {
        let read = interrupts::probe_read(ro);
        let write = interrupts::probe_write(at(ro, PAGE), 1);
        let stray = interrupts::probe_read(outside);
        (read, write, stray)
    });
    let (read, write, stray) = results;
    check_eq!(read, Ok(0));
    check_eq!(write.map_err(|e| (e.addr, e.access)), Err((at(ro, PAGE), Access::Write)));
    check_eq!(stray.map_err(|e| (e.addr, e.access)), Err((outside, Access::Read)));
    check_eq!(refused, Some(FaultError::NoRegion(outside)));
    check_eq!(served, 1);
    check_eq!(FAULTS_REPORTED.load(Ordering::SeqCst) - reported_before, 2);
    // The write was not mapped, the stray access neither.
    check!(f.space().mmu.translate(page(at(ro, PAGE))).is_none_or(|t| !t.rights.contains(Rights::WRITE)));
    check!(f.space().mmu.translate(page(outside)).is_none());
    check!(f.space().mmu.translate(page(ro)).is_some_and(|t| !t.rights.contains(Rights::WRITE)));
    // A forbidden write of a mapped read-only page is refused as Forbidden.
    let (write, _, refused, _) = f.run(|| interrupts::probe_write(ro, 1));
    check!(write.is_err());
    check!(matches!(refused, Some(FaultError::Forbidden { access: Access::Write, .. })));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn detach_gives_back(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(8, "detached")?;
    let start = f.attach(ds, 8, Rights::RW)?;
    let (result, served, _, _) = f.run(|| (0..8).try_for_each(|i| interrupts::probe_write(at(start, i * PAGE), 9)));
    check!(result.is_ok());
    check_eq!(served, 8);
    check!(f.detach(start, 8 * PAGE));
    check!((0..8).all(|i| f.space().mmu.translate(page(at(start, i * PAGE))).is_none()));
    // After the detach the region is gone: a touch is refused, not mapped.
    let (after, _, refused, _) = f.run(|| interrupts::probe_read(start));
    check!(after.is_err());
    check_eq!(refused, Some(FaultError::NoRegion(start)));
    check_eq!(f.set.manager_mut().close(CLIENT, ds), Ok(()));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
    drop(f);
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn isa_dma_dataspace(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let mut f = Fixture::new(frames, kernel_root)?;
    let size = 4 * PAGE as u64;
    let ds = f
        .set
        .manager_mut()
        .memphys_open(
            FactoryId::ROOT,
            CLIENT,
            ISA_DMA_POOL as u32,
            DsPlacement::AnyAddr,
            size,
            12,
            DmFlags::CONTIGUOUS,
            "dma",
        )
        .map_err(|_| fail("memphys_open in pool 7"))?;
    let Ok((addr, contiguous)) = f.set.manager_mut().phys_addr(ds, 0) else { return Err(fail("phys_addr")) };
    check!(addr.as_u64() + size <= ISA_DMA_LIMIT.as_u64());
    check!(contiguous >= size);
    // Mapped into an address space, the device's view and the CPU's agree.
    let start = f.attach(ds, 4, Rights::RW)?;
    let (result, served, _, _) = f.run(|| interrupts::probe_write(at(start, PAGE + 5), 0x5d));
    check!(result.is_ok());
    check_eq!(served, 1);
    let mut byte = [0];
    KernelPhysMemory.read(addr.checked_add(PAGE as u64 + 5).expect("in RAM"), &mut byte);
    check_eq!(byte, [0x5d]);
    f.teardown()
}

/// Runs `body` in space `id` of `set` with the set resolving its faults; returns what `body`
/// returned and the faults served.
fn run_in<R>(set: &mut Spaces, id: SpaceId, kernel_root: Frame, body: impl FnOnce() -> R) -> (R, u64) {
    let root = set.space(id).map(|s| s.mmu.root()).expect("the space exists");
    let mut pager = SetPager::new(set, id);
    let result = with_space_active(root, kernel_root, || interrupts::with_fault_handler(&mut pager, body));
    (result, pager.served)
}

/// A fork: a parent space's dataspace copied on write into a child space at the same
/// virtual address; each side's writes stay its own.
fn fork(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    {
        let mut set = Spaces::new(new_manager(frames));
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("parent tables"))?;
        let parent = set.add_space(map, mmu);
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("child tables"))?;
        let child = set.add_space(map, mmu);
        let a = set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, 2 * PAGE as u64, 12, DmFlags::empty(), "parent")
            .map_err(|_| fail("mem_open"))?;
        let base = VirtAddr::new(WINDOW_START);
        let request = AttachRequest::new(a, 2 * PAGE, Rights::RW).at(base);
        check!(set.attach(parent, &request).is_ok());
        let (wrote, _) = run_in(&mut set, parent, kernel_root, || {
            interrupts::probe_write(base, 0x11).and_then(|()| interrupts::probe_write(at(base, PAGE), 0x22))
        });
        check!(wrote.is_ok());

        let b = set.copy_on_write(CLIENT, a, "child").map_err(|_| fail("COW copy"))?;
        let request = AttachRequest::new(b, 2 * PAGE, Rights::RW).at(base);
        check!(set.attach(child, &request).is_ok());
        // The child sees the parent's bytes at the same address, then writes its own.
        let (child_view, child_faults) = run_in(&mut set, child, kernel_root, || {
            let before = interrupts::probe_read(base)?;
            interrupts::probe_write(base, 0x33)?;
            Ok::<_, Fault>([before, interrupts::probe_read(base)?, interrupts::probe_read(at(base, PAGE))?])
        });
        check_eq!(child_view.map_err(|f| f.addr), Ok([0x11, 0x33, 0x22]));
        check!(child_faults >= 2);
        // The parent still sees its own bytes; its write to the second page breaks COW on
        // its side, which the child does not see.
        let (parent_view, _) = run_in(&mut set, parent, kernel_root, || {
            interrupts::probe_write(at(base, PAGE), 0x44)?;
            Ok::<_, Fault>([interrupts::probe_read(base)?, interrupts::probe_read(at(base, PAGE))?])
        });
        check_eq!(parent_view.map_err(|f| f.addr), Ok([0x11, 0x44]));
        let (child_view, _) = run_in(&mut set, child, kernel_root, || interrupts::probe_read(at(base, PAGE)));
        check_eq!(child_view.map_err(|f| f.addr), Ok(0x22));
        let parent_frame = set.space(parent).and_then(|s| s.mmu.translate(page(base))).map(|t| t.frame);
        let child_frame = set.space(child).and_then(|s| s.mmu.translate(page(base))).map(|t| t.frame);
        check!(parent_frame.is_some() && child_frame.is_some() && parent_frame != child_frame);
        set.check_invariants();
        println!("    fork: {} frames for 2 spaces of 2 pages", set.manager().frames_held(PoolId::DEFAULT));

        for id in [parent, child] {
            check!(set.remove_space(id).is_ok());
        }
        check_eq!(set.manager_mut().close(CLIENT, a), Ok(()));
        check_eq!(set.manager_mut().close(CLIENT, b), Ok(()));
        check_eq!(set.manager().frames_held(PoolId::DEFAULT), 0);
    }
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// One dataspace attached twice in one space, both regions mapped; a copy-on-write copy,
/// then a write through the first region gives the page a new frame: the second region
/// must not keep the old one (it would read the bytes from before the write).
fn cow_break_in_own_space(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(1, "twice")?;
    let first = f.attach(ds, 1, Rights::RW)?;
    let second = f.attach(ds, 1, Rights::RW)?;
    let (seen, _, _, _) = f.run(|| interrupts::probe_write(first, 0x0d).and_then(|()| interrupts::probe_read(second)));
    check_eq!(seen.map_err(|e| e.addr), Ok(0x0d));
    check!(f.space().mmu.translate(page(second)).is_some());
    f.copy_on_write(ds)?;
    let (seen, _, refused, _) =
        f.run(|| interrupts::probe_write(first, 0x0e).and_then(|()| interrupts::probe_read(second)));
    check!(refused.is_none());
    check_eq!(seen.map_err(|e| e.addr), Ok(0x0e));
    let (t1, t2) = (f.space().mmu.translate(page(first)), f.space().mmu.translate(page(second)));
    check!(t2.is_none_or(|t2| t1.is_some_and(|t1| t1.frame == t2.frame)));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// A region attached with `DETACH_FREE`: its detach frees the dataspace's memory behind
/// it (the dataspace stays open), and the next attachment reads zeros.
fn detach_free(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(2, "freed")?;
    let start = f.attach_with(ds, 2, Rights::RW, Flags::DETACH_FREE)?;
    let (wrote, _, _, _) =
        f.run(|| interrupts::probe_write(start, 0x77).and_then(|()| interrupts::probe_write(at(start, PAGE), 0x78)));
    check!(wrote.is_ok());
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 2);
    check!(f.detach(start, 2 * PAGE));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
    let again = f.attach(ds, 2, Rights::READ)?;
    let (seen, _, _, _) =
        f.run(|| Ok::<_, Fault>([interrupts::probe_read(again)?, interrupts::probe_read(at(again, PAGE))?]));
    check_eq!(seen.map_err(|e| e.addr), Ok([0, 0]));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn many_lazy_pages(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    const PAGES: usize = 1024;
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(PAGES, "many")?;
    let start = f.attach(ds, PAGES, Rights::RW)?;
    // A full-period walk of the pages (an odd step modulo a power of two), two bytes each.
    let order = |i: usize| (i * 617 + 5) % PAGES;
    let (result, served, refused, _) = f.run(|| -> Result<usize, Fault> {
        for i in 0..PAGES {
            let p = order(i);
            interrupts::probe_write(at(start, p * PAGE + p % 4000), p as u8)?;
            interrupts::probe_write(at(start, p * PAGE + 4095), (p >> 8) as u8)?;
        }
        let mut wrong = 0;
        for p in 0..PAGES {
            let low = interrupts::probe_read(at(start, p * PAGE + p % 4000))?;
            let high = interrupts::probe_read(at(start, p * PAGE + 4095))?;
            wrong += usize::from(usize::from(low) | usize::from(high) << 8 != p);
        }
        Ok(wrong)
    });
    check_eq!(result.map_err(|f| f.addr), Ok(0));
    check_eq!(served, PAGES as u64);
    check!(refused.is_none());
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), PAGES as u64);
    println!(
        "    {PAGES} pages: {served} faults served, {} frames held, {} page-table frames",
        f.manager().frames_held(PoolId::DEFAULT),
        f.space().mmu.table_frames()
    );
    f.set.check_invariants();
    f.set.manager_mut().check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// Code in a region runs only when the region allows `EXECUTE`: a fetch from a region
/// without it faults and is refused (with no-execute pages on, as QEMU's CPUs have them).
fn execute_right(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    const RET: u8 = 0xc3;
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    check!(crate::cpu::no_execute_enabled());
    let ds = f.open(1, "code")?;
    let data = f.attach(ds, 1, Rights::RW)?;
    let code = f.attach(ds, 1, Rights::READ | Rights::EXECUTE)?;
    let (results, _, refused, _) = f.run(|| {
        let wrote = interrupts::probe_write(data, RET);
        let ran = interrupts::probe_execute(code);
        let refused_run = interrupts::probe_execute(data);
        (wrote, ran, refused_run)
    });
    let (wrote, ran, refused_run) = results;
    check_eq!(wrote, Ok(()));
    check_eq!(ran, Ok(()));
    check_eq!(refused_run.map_err(|e| (e.addr, e.access)), Err((data, Access::Execute)));
    check!(matches!(refused, Some(FaultError::Forbidden { access: Access::Execute, .. })));
    check!(f.space().mmu.translate(page(data)).is_some_and(|t| !t.rights.contains(Rights::EXECUTE)));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}
