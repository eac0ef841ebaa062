//! Address spaces on real page tables: memkit's region maps over x86_64 page tables,
//! backed by memkit's dataspace manager, with page faults resolved by the region map.
//!
//! ```text
//!   CPU #PF (IST stack) ─▶ interrupts::page_fault ─▶ SetPager::page_fault(addr, access)
//!        ─▶ SpaceSet::resolve ─▶ region (O(log n)) ─▶ Manager::map
//!           (first touch: zeroed frame; write to a COW page: copy, and the old frame
//!            unmapped from every mapping of that page, in every space)
//!        ─▶ PageTableMmu::map / protect ─▶ iretq retries the access
//! ```
//!
//! The kernel keeps its address spaces in a [`SpaceSet`] (`memkit-spaces`, the one owner
//! of a dataspace manager and its spaces on every machine), even when there is only one:
//! a copy-on-write copy write-protects the source in every space, a copy-on-write break
//! unmaps the old frame from every other mapping of the page (in the faulting space too,
//! where the same dataspace may be attached twice), a shrink or a clear revokes the lost
//! pages everywhere (each through the set's reverse index, visiting only the regions that
//! show the pages), `DETACH_FREE` clears the detached part, and one reference per
//! dataspace is held while any region shows it. There is no second copy of that wiring
//! here.
//!
//! Each address space has its own PML4: its window (one PML4 slot of the lower half) holds
//! the regions; the kernel's entries (image, direct map) are copied into it, so the kernel
//! keeps running while the space is active.

use memkit_dataspace::{DataspaceId, Manager};
use memkit_region::{AddressSpace, FaultError, RegionMap};
use memkit_spaces::{SpaceError, SpaceId, SpaceSet};
use memkit_types::{Access, Frame, PAGE_SIZE, Page, PageCount, VirtAddr};

use crate::cpu;
use crate::frames::{KernelFrames, PoolFrames};
use crate::interrupts::PageFaultHandler;
use crate::paging::PageTableMmu;
use crate::phys_window::KernelPhysMemory;

/// The dataspace manager of the kernel: frames from the kernel's pools, contents through the
/// direct map.
pub(crate) type KernelManager = Manager<PoolFrames<'static>, KernelPhysMemory>;
/// An address space of the kernel.
pub(crate) type Space = AddressSpace<DataspaceId, PageTableMmu<'static, KernelFrames>>;

/// Several address spaces over one manager, kept coherent by `memkit-spaces`.
pub(crate) type Spaces = SpaceSet<PoolFrames<'static>, KernelPhysMemory, PageTableMmu<'static, KernelFrames>>;

/// Where address spaces' windows start: PML4 slot 1 (512 GiB), which the kernel leaves empty.
pub(crate) const WINDOW_START: usize = 0x80_0000_0000;
/// The size of the window: 1 GiB.
pub(crate) const WINDOW_SIZE: usize = 1 << 30;

/// The page table of a new, empty address space sharing the kernel's part of `kernel_root`,
/// and its region map.
///
/// # Errors
/// [`memkit_region::MapError::OutOfMemory`] when no frame is left for its root table.
pub(crate) fn new_tables(
    frames: &'static KernelFrames,
    kernel_root: Frame,
) -> Result<(RegionMap<DataspaceId>, PageTableMmu<'static, KernelFrames>), memkit_region::MapError> {
    let first = Page::containing_address(VirtAddr::new(WINDOW_START));
    let window = Some((first, PageCount::new(WINDOW_SIZE / PAGE_SIZE)));
    let mmu = PageTableMmu::new(frames, window, Some(kernel_root))?;
    Ok((RegionMap::new(VirtAddr::new(WINDOW_START), WINDOW_SIZE), mmu))
}

/// Runs `body` with the page table of the space whose root is `space_root` active, then
/// switches back to `kernel_root`.
pub(crate) fn with_space_active<R>(space_root: Frame, kernel_root: Frame, body: impl FnOnce() -> R) -> R {
    // SAFETY: the space's table holds every present PML4 entry of the kernel's table (the
    // image and the direct map), so all the kernel touches stays mapped where it is.
    unsafe { cpu::switch_root(space_root) };
    let result = body();
    // SAFETY: the kernel's own table, active before.
    unsafe { cpu::switch_root(kernel_root) };
    result
}

/// Resolves the page faults of space `id` of a [`SpaceSet`], which keeps every space's
/// mappings coherent (a copy-on-write break in one space unmaps the stale frame elsewhere).
#[derive(Debug)]
pub(crate) struct SetPager<'a> {
    /// The spaces and their manager.
    pub(crate) set: &'a mut Spaces,
    /// The space whose faults this pager serves (the active one).
    pub(crate) id: SpaceId,
    /// Faults resolved.
    pub(crate) served: u64,
    /// The last fault the region map refused, and why.
    pub(crate) refused: Option<FaultError>,
}

impl<'a> SetPager<'a> {
    /// A pager for space `id` of `set`.
    pub(crate) fn new(set: &'a mut Spaces, id: SpaceId) -> Self {
        SetPager { set, id, served: 0, refused: None }
    }
}

impl PageFaultHandler for SetPager<'_> {
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        match self.set.resolve(self.id, addr, access) {
            Ok(_) => {
                self.served += 1;
                true
            }
            Err(SpaceError::Op(e)) => {
                self.refused = Some(e);
                false
            }
            // No such space, or a refusal a later region crate adds: not served.
            Err(_) => false,
        }
    }
}
