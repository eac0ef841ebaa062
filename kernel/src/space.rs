//! Address spaces on real page tables: memkit's region maps over x86_64 page tables,
//! backed by memkit's dataspace manager, with page faults resolved by the region map.
//!
//! ```text
//!   CPU #PF (IST stack) ─▶ interrupts::page_fault ─▶ Pager::page_fault(addr, access)
//!        ─▶ AddressSpace::resolve ─▶ region (O(log n)) ─▶ DataspaceBacking::map
//!        ─▶ Manager::map (first touch: zeroed frame; write to a COW page: copy)
//!        ─▶ PageTableMmu::map / protect ─▶ iretq retries the access
//! ```
//!
//! Each address space has its own PML4: its window (one PML4 slot of the lower half) holds
//! the regions; the kernel's entries (image, direct map) are copied into it, so the kernel
//! keeps running while the space is active.

use memkit_dataspace::{DataspaceId, Manager, PageRange, RevokeKind, Revoker};
use memkit_region::{AddressSpace, Backing, BackingError, FaultError, RegionMap, SpaceId, SpaceSet};
use memkit_types::{Access, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

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

/// Several address spaces over one manager, kept coherent by the region layer.
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

/// A new, empty address space sharing the kernel's part of `kernel_root`.
///
/// # Errors
/// [`memkit_region::MapError::OutOfMemory`] when no frame is left for its root table.
pub(crate) fn new_space(frames: &'static KernelFrames, kernel_root: Frame) -> Result<Space, memkit_region::MapError> {
    let (map, mmu) = new_tables(frames, kernel_root)?;
    Ok(AddressSpace::new(map, mmu))
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

/// The dataspace manager as the region map's [`Backing`].
#[derive(Debug)]
pub(crate) struct DataspaceBacking<'m> {
    manager: &'m mut KernelManager,
    /// Copy-on-write breaks: pages that got a frame of their own on a write.
    pub(crate) cow_breaks: u64,
}

impl<'m> DataspaceBacking<'m> {
    /// The backing over `manager`.
    pub(crate) fn new(manager: &'m mut KernelManager) -> Self {
        DataspaceBacking { manager, cow_breaks: 0 }
    }
}

impl Backing for DataspaceBacking<'_> {
    type Id = DataspaceId;

    fn rights(&self, id: DataspaceId) -> Option<Rights> {
        // The rights of the handle: attaching beyond them is refused.
        self.manager.rights(id).ok()
    }

    fn map(&mut self, id: DataspaceId, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        match self.manager.map(id, offset, access) {
            Ok(mapping) => {
                if mapping.replaced.is_some() {
                    self.cow_breaks += 1;
                }
                Ok((mapping.frame, mapping.rights))
            }
            Err(memkit_dataspace::MapError::InvalidId(_)) => Err(BackingError::UnknownDataspace),
            Err(memkit_dataspace::MapError::OffsetOutOfRange(offset, _)) => Err(BackingError::OutOfRange(offset)),
            Err(memkit_dataspace::MapError::Forbidden(_, access)) => Err(BackingError::Forbidden(access)),
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => Err(BackingError::OutOfMemory),
        }
    }

    fn attached(&mut self, id: DataspaceId) {
        let _ = self.manager.inc_ref(id);
    }

    fn detached(&mut self, id: DataspaceId) {
        let _ = self.manager.dec_ref(id);
    }

    fn release(&mut self, _id: DataspaceId, _offset: u64, _size: u64) {}
}

/// Takes rights away from `space`'s mappings of a dataspace when the manager asks (a
/// copy-on-write copy write-protects the source's pages).
#[derive(Debug)]
pub(crate) struct SpaceRevoker<'s> {
    /// The address space whose mappings are revoked.
    pub(crate) space: &'s mut Space,
    /// Revocations done.
    pub(crate) revoked: u64,
}

impl Revoker for SpaceRevoker<'_> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let (offset, size) = (pages.start * PAGE_SIZE as u64, (pages.end - pages.start) * PAGE_SIZE as u64);
        let space = &mut *self.space;
        let result = space.map.revoke(&mut space.mmu, ds, offset, size, keep);
        debug_assert!(result.is_ok(), "revoking inside the space's own window cannot fail: {result:?}");
        self.revoked += 1;
    }
}

/// Resolves the page faults of one address space through its region map.
#[derive(Debug)]
pub(crate) struct Pager<'a, 'm> {
    /// The address space.
    pub(crate) space: &'a mut Space,
    /// Where its dataspaces' frames come from.
    pub(crate) backing: &'a mut DataspaceBacking<'m>,
    /// Faults resolved (mapped).
    pub(crate) served: u64,
    /// The last fault the region map refused, and why.
    pub(crate) refused: Option<FaultError>,
}

impl<'a, 'm> Pager<'a, 'm> {
    /// A pager for `space` over `backing`.
    pub(crate) fn new(space: &'a mut Space, backing: &'a mut DataspaceBacking<'m>) -> Self {
        Pager { space, backing, served: 0, refused: None }
    }
}

impl PageFaultHandler for Pager<'_, '_> {
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        match self.space.resolve(self.backing, addr, access) {
            Ok(_) => {
                self.served += 1;
                true
            }
            Err(e) => {
                self.refused = Some(e);
                false
            }
        }
    }
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
}

impl PageFaultHandler for SetPager<'_> {
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        let resolved = self.set.resolve(self.id, addr, access).is_ok();
        self.served += u64::from(resolved);
        resolved
    }
}
