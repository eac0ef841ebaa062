//! The kernel's memory: the frame allocator from the memory map, the kernel's own page
//! tables with the higher-half direct map, and the switch to them.
//!
//! ```text
//!   boot tables (identity 0..4 GiB)          kernel tables (frames from the allocator)
//!   ┌──────────────────────────────┐         ┌──────────────────────────────────────────────┐
//!   │ 0 .. 4 GiB ─▶ 0 .. 4 GiB     │ switch  │ kernel image ─▶ itself (4 KiB pages)         │
//!   │                              │ ──────▶ │ 0xffff_8000_0000_0000 + p ─▶ p for all RAM   │
//!   └──────────────────────────────┘  CR3    │ (2 MiB pages, no-execute); nothing else      │
//!                                            └──────────────────────────────────────────────┘
//! ```
//!
//! After the switch, RAM outside the kernel image is reachable only through the direct map:
//! the frame allocator's header is re-attached there.
//!
//! # Unsafe
//! The switch to the kernel's page tables: the new table maps the kernel image where it runs
//! and all RAM at the direct map, and the physical window moves to the direct map only once
//! that table is active.

use memkit_region::Mmu;
use memkit_types::{CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, Rights, SUPERPAGE_SIZE, VirtAddr};
use x86_64::structures::paging::PageTableFlags;

use crate::frames::{FramesError, KernelFrames};
use crate::paging::PageTableMmu;
use crate::phys_window::{self, DIRECT_MAP_BASE};
use crate::pvh::MemoryMap;
use crate::{apic, cpu, image};

/// Why the kernel's memory could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryError {
    /// The frame allocator failed.
    Frames(FramesError),
    /// The kernel's page tables could not be built.
    Map(memkit_region::MapError),
}

/// Builds `frames`, the frame pools of the machine the memory map describes, the kernel
/// image reserved; their headers are written through the boot identity map.
///
/// # Errors
/// [`MemoryError`] when the pools cannot be set up.
pub(crate) fn frames(map: &MemoryMap, frames: &'static KernelFrames) -> Result<&'static KernelFrames, MemoryError> {
    let machine = crate::frames::machine(map, image::area()).map_err(MemoryError::Frames)?;
    frames.build(machine).map_err(MemoryError::Frames)?;
    Ok(frames)
}

/// What the switch built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelSpace {
    /// The kernel's root table.
    pub(crate) root: Frame,
    /// The end of the direct map's physical range.
    pub(crate) direct_map_end: PhysAddr,
    /// Frames taken for the kernel's page tables.
    pub(crate) table_frames: u64,
}

/// Builds the kernel's page tables from `frames`, switches to them, and re-attaches the
/// allocator's header through the direct map.
///
/// # Errors
/// [`MemoryError`] when the tables cannot be built or the header not re-attached.
pub(crate) fn switch_to_kernel_tables(
    map: &MemoryMap,
    frames: &KernelFrames,
    trampoline: Option<Frame>,
) -> Result<KernelSpace, MemoryError> {
    let mut mmu = PageTableMmu::new(frames, None, None).map_err(MemoryError::Map)?;
    let huge = SUPERPAGE_SIZE as u64;
    let mut direct_map_end = 0;
    let mut flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    if cpu::no_execute_enabled() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    let mut mapped_end = 0;
    for range in map.ram() {
        let start = (range.start.as_u64() & !(huge - 1)).max(mapped_end);
        let end = range.end.as_u64().next_multiple_of(huge);
        if start >= end {
            continue;
        }
        let page = Page::containing_address(VirtAddr::new((DIRECT_MAP_BASE + start) as usize));
        let frame = Frame::containing_address(PhysAddr::new(start));
        mmu.map_huge(page, frame, ((end - start) / huge) as usize, flags).map_err(MemoryError::Map)?;
        mapped_end = end;
        direct_map_end = direct_map_end.max(end);
    }
    // The image, identity-mapped with W^X rights per part, except the boot stack's guard page.
    let guard = image::boot_stack_guard().as_u64();
    for (part, rights) in image::sections() {
        let mut ranges = [(part.start.as_u64(), part.end()), (0, 0)];
        if part.start.as_u64() <= guard && guard < part.end() {
            ranges = [(part.start.as_u64(), guard), (guard + PAGE_SIZE as u64, part.end())];
        }
        for (start, end) in ranges.into_iter().filter(|(s, e)| s < e) {
            let frame = Frame::containing_address(PhysAddr::new(start));
            let pages = PageCount::new(((end - start) / PAGE_SIZE as u64) as usize);
            let page = Page::containing_address(VirtAddr::new(start as usize));
            mmu.map(page, frame, pages, rights, CacheMode::WriteBack).map_err(MemoryError::Map)?.ignore();
        }
    }
    // The local APIC's registers, uncached, where the boot tables had them; and the page the
    // other CPUs start in, read and execute at its physical address (it is written through
    // the direct map).
    let apic = Page::containing_address(VirtAddr::new(apic::BASE.as_u64() as usize));
    let one = PageCount::new(1);
    mmu.map(apic, Frame::containing_address(apic::BASE), one, Rights::RW, CacheMode::Uncached)
        .map_err(MemoryError::Map)?
        .ignore();
    if let Some(frame) = trampoline {
        let page = Page::containing_address(VirtAddr::new(frame.start_address().as_u64() as usize));
        mmu.map(page, frame, one, Rights::READ | Rights::EXECUTE, CacheMode::WriteBack)
            .map_err(MemoryError::Map)?
            .ignore();
    }
    let root = mmu.root();
    let table_frames = mmu.table_frames();
    // SAFETY: the new table maps the kernel image (code, data, stacks) where it is now and
    // all RAM at DIRECT_MAP_BASE; the only other thing the kernel touched through the boot
    // identity map is the allocator's header, which is re-attached through the direct map
    // right below before any further use.
    unsafe { cpu::switch_root(root) };
    let end = PhysAddr::new(direct_map_end);
    // SAFETY: the active table maps all RAM below `end` at DIRECT_MAP_BASE and is never
    // changed there.
    unsafe { phys_window::switch_to_direct_map(end) };
    frames.reattach().map_err(MemoryError::Frames)?;
    Ok(KernelSpace { root, direct_map_end: end, table_frames })
}
