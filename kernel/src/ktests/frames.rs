//! The frame allocator, through the boot identity map and then through the higher-half
//! direct map.
//!
//! # Unsafe
//! The tests write a pattern into a frame they allocated.

use memkit_phys::{AllocateError, DEFAULT_POOL, FreeError, HEADER_MAGIC, ISA_DMA_LIMIT, ISA_DMA_POOL, MemoryArea};
use memkit_types::{Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, PhysMemory, Rights, VirtAddr};

use super::fail;
use crate::frames::KernelFrames;
use crate::interrupts;
use crate::memory::KernelSpace;
use crate::phys_window::{DIRECT_MAP_BASE, KernelPhysMemory};
use crate::serial::println;
use crate::testing::{Runner, TestResult, check, check_eq};
use crate::{cpu, image};

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
