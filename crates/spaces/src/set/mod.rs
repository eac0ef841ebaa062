//! Several address spaces over one dataspace manager, kept coherent.
//!
//! ```text
//!   SpaceSet ─┬─ Manager (dataspaces, copy-on-write, references)
//!             │      ▲ map(ds, offset, access)      │ revoke(ds, pages, Write | All)
//!             │      │                              ▼
//!             └─ Spaces ─┬─ slots: [AddressSpace = RegionMap + Mmu]
//!                        └─ ReverseIndex: ds ─▶ (space, region start, offset range):
//!                           only the regions that show the pages lose the rights
//! ```
//!
//! The set owns the manager and the spaces, so that whatever the manager does to a
//! dataspace reaches every mapping of it:
//! - a copy-on-write copy write-protects the source's pages in **every** space (the
//!   manager calls the set's [`Revoker`] before it starts sharing frames);
//! - shrinking or clearing a dataspace unmaps the pages whose frames go away;
//! - a write fault that breaks copy-on-write gives the page a new frame
//!   ([`Mapping::replaced`](memkit_dataspace::Mapping::replaced) names the old one); every
//!   mapping of that page of that dataspace still on the old frame, in any space (the
//!   faulting one included, where the dataspace may be attached twice), is unmapped so it
//!   faults again and sees the new frame.
//!
//! Each of these finds the regions to change through the [`ReverseIndex`], not by walking
//! every region of every space: its cost grows with the number of regions that show the
//! dataspace, not with the size of the spaces.
//!
//! References: the set holds one manager reference per dataspace for as long as any region
//! of any space shows it ([`Manager::inc_ref`] on the first attachment, [`Manager::dec_ref`]
//! after the last detach), so closing a dataspace never pulls memory from under a region,
//! and a split region needs no new reference.
//!
//! [`Spaces`] is the part without the manager (the spaces, the index, the options), whose
//! operations take the manager as an argument: the hosted runtime keeps the manager beside
//! it behind one lock. [`SpaceSet`] is the two together.

use alloc::vec::Vec;
use memkit_dataspace::{ClientId, CopyError, DataspaceId, DmFlags, Manager};
use memkit_region::{
    AddressSpace, AttachError, AttachRequest, Attachment, DetachError, DetachFlags, Detached, FaultError, Mmu,
    RegionMap, Translation,
};
#[cfg(any(test, feature = "check"))]
use memkit_types::Page;
use memkit_types::{Access, Frame, FrameSource, PAGE_SIZE, PhysMemory, VirtAddr};

use crate::around::{FaultAroundError, MAX_FAULT_AROUND, fault_around};
use crate::rmap::ReverseIndex;

mod backing;
mod error;
mod vma;

pub use backing::SpacesRevoker;
use backing::{ManagerBacking, Replaced, Slot, SpaceOp};
pub use error::SpaceError;

/// An address space of a [`SpaceSet`]: its slot. The slot of a removed space is given to
/// the next space added (as a file descriptor is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(pub usize);

/// Address spaces that show the dataspaces of one manager, kept coherent, without the
/// manager: every operation that may reach it takes it as an argument (always the same
/// manager). [`SpaceSet`] keeps the two together.
#[derive(Debug)]
pub struct Spaces<M> {
    slots: Vec<Slot<M>>,
    index: ReverseIndex,
    /// Copy-on-write breaks so far.
    cow_breaks: u64,
    /// The fault-around block in pages (1: off).
    fault_around: usize,
    /// Attachments are checked against their dataspace's size.
    check_sizes: bool,
}

impl<M> Default for Spaces<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> Spaces<M> {
    /// No spaces; fault-around off.
    #[must_use]
    pub const fn new() -> Self {
        Spaces { slots: Vec::new(), index: ReverseIndex::new(), cow_breaks: 0, fault_around: 1, check_sizes: false }
    }
}

impl<M: Mmu> Spaces<M> {
    /// Adds an address space (a region map and its MMU) in the lowest free slot.
    pub fn add(&mut self, map: RegionMap<DataspaceId>, mmu: M) -> SpaceId {
        let space = Some(AddressSpace::new(map, mmu));
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = space;
            SpaceId(i)
        } else {
            self.slots.push(space);
            SpaceId(self.slots.len() - 1)
        }
    }

    /// Removes a space: detaches all its regions with `KEEP` (dropping their references)
    /// and returns it.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`]; the detach error of an MMU that refuses to unmap (the space
    /// stays then).
    pub fn remove<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
    ) -> Result<AddressSpace<DataspaceId, M>, SpaceError<DetachError>> {
        let mut space = self.slots.get_mut(id.0).and_then(Option::take).ok_or(SpaceError::NoSpace(id))?;
        let (start, size) = (space.map.window_start(), space.map.window_size());
        let mut b = ManagerBacking::new(manager, &mut self.index, id, self.check_sizes);
        match space.map.detach_range(
            &mut b,
            &mut space.mmu,
            start,
            size,
            DetachFlags::OVERLAP | DetachFlags::KEEP,
            |_| {},
        ) {
            Ok(_) | Err(DetachError::NoRegion(_)) => Ok(space),
            Err(e) => {
                self.slots[id.0] = Some(space);
                Err(SpaceError::Op(e))
            }
        }
    }

    /// The space `id`.
    pub fn get(&self, id: SpaceId) -> Option<&AddressSpace<DataspaceId, M>> {
        self.slots.get(id.0).and_then(Option::as_ref)
    }

    /// The space `id`, for its MMU (a test that plants a translation, a revoker of its
    /// own). A change of its region map here bypasses the reverse index and the references:
    /// attach, detach, protect, remap, merge, areas and faults go through the set.
    pub fn get_mut(&mut self, id: SpaceId) -> Option<&mut AddressSpace<DataspaceId, M>> {
        self.slots.get_mut(id.0).and_then(Option::as_mut)
    }

    /// The ids of the spaces, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = SpaceId> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| SpaceId(i))
    }

    /// A revoker over every space, for the manager operations that invalidate mappings
    /// (`copy`, `resize`, `clear`, `allocate`, `write`).
    pub fn revoker(&mut self) -> SpacesRevoker<'_, M> {
        SpacesRevoker { spaces: &mut self.slots, index: &self.index }
    }

    /// The reverse index: which regions show each dataspace.
    pub const fn index(&self) -> &ReverseIndex {
        &self.index
    }

    /// The number of regions of all spaces showing `ds`.
    pub fn attachments(&self, ds: DataspaceId) -> u32 {
        u32::try_from(self.index.count(ds)).unwrap_or(u32::MAX)
    }

    /// The faults so far that broke copy-on-write (gave a page of a dataspace a frame of
    /// its own).
    pub const fn cow_breaks(&self) -> u64 {
        self.cow_breaks
    }

    /// Whether an attach, a resize or a move must keep a region within its dataspace's
    /// size (off by default: as the seed's `attach`, a region may reach past its
    /// dataspace, whose pages there fail to fault in with `-L4_ERANGE`).
    pub const fn set_check_sizes(&mut self, on: bool) {
        self.check_sizes = on;
    }

    /// The fault-around block in pages (1: off, the default).
    pub const fn fault_around(&self) -> usize {
        self.fault_around
    }

    /// Sets how many pages a fault maps at once when its neighbours are still empty: a
    /// power of two up to [`MAX_FAULT_AROUND`]; 1 turns fault-around off (every page
    /// faults and gets its frame on its own). See [`crate::around`].
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    pub fn set_fault_around(&mut self, pages: usize) -> Result<(), FaultAroundError> {
        if !pages.is_power_of_two() || pages > MAX_FAULT_AROUND {
            return Err(FaultAroundError::BadSize(pages));
        }
        self.fault_around = pages;
        Ok(())
    }

    /// Attaches a dataspace in space `id` ([`RegionMap::attach`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the attach error.
    pub fn attach<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        req: &AttachRequest<DataspaceId>,
    ) -> Result<VirtAddr, SpaceError<AttachError>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut b = ManagerBacking::new(manager, &mut self.index, id, self.check_sizes);
        let r = space.map.attach(&mut b, &mut space.mmu, req).map_err(SpaceError::Op);
        let (replaced, release) = (core::mem::take(&mut b.replaced), core::mem::take(&mut b.release));
        self.finish(manager, &replaced, &release);
        r
    }

    /// One detach step in space `id` ([`RegionMap::detach`]). With `DETACH_FREE` (and no
    /// `KEEP`) the detached part of the dataspace is cleared through the manager (its
    /// frames freed, its mappings elsewhere revoked), when the dataspace is still open.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the detach error.
    pub fn detach<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<DataspaceId>, SpaceError<DetachError>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut b = ManagerBacking::new(manager, &mut self.index, id, self.check_sizes);
        let d = space.map.detach(&mut b, &mut space.mmu, start, size, flags).map_err(SpaceError::Op)?;
        let release = core::mem::take(&mut b.release);
        self.finish(manager, &Replaced::default(), &release);
        Ok(d)
    }

    /// What an operation leaves to do once the region map is done: unmap the frames its
    /// copy-on-write breaks replaced, and clear the `DETACH_FREE` bytes it released (their
    /// frames freed, their mappings elsewhere revoked) when the dataspace is still open.
    fn finish<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        replaced: &Replaced,
        release: &Replaced<u64>,
    ) {
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        for (ds, offset, len) in release.iter() {
            let mut r = self.revoker();
            if let Ok(info) = manager.info(ds) {
                let owner = info.owner;
                let len = len.min(info.size.saturating_sub(offset));
                // Clearing may fail only for want of a frame to unshare an edge page; the
                // operation itself has happened either way.
                let _ = manager.clear(owner, ds, offset, len, &mut r);
            }
        }
    }

    /// The space `id` and a backing over `manager` for it.
    fn op<'a, S, P>(
        &'a mut self,
        manager: &'a mut Manager<S, P>,
        id: SpaceId,
    ) -> Result<SpaceOp<'a, M, S, P>, SpaceId> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(id)?;
        Ok((space, ManagerBacking::new(manager, &mut self.index, id, self.check_sizes)))
    }

    /// Resolves a page fault in space `id`: by fault-around when it is on and applies,
    /// else through [`RegionMap::resolve`]. When the fault broke copy-on-write, every
    /// mapping of the page still on its old frame for this dataspace is unmapped, in every
    /// space. Allocates no heap memory.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the fault error (nothing mapped then).
    pub fn resolve<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, SpaceError<FaultError>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        if self.fault_around > 1
            && let Some(t) = fault_around(manager, space, addr, access, self.fault_around)
        {
            return Ok(t);
        }
        let mut b = ManagerBacking::new(manager, &mut self.index, id, self.check_sizes);
        let r = space.map.resolve(&mut b, &mut space.mmu, addr, access).map_err(SpaceError::Op);
        let replaced = core::mem::take(&mut b.replaced);
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        r
    }

    /// Unmaps the frame a copy-on-write break replaced from every mapping of that page of
    /// `ds` that still shows it, in every space: the faulting one included, where the
    /// dataspace may be attached more than once. Visits the regions the index names for
    /// the page, and allocates nothing.
    fn unmap_replaced(&mut self, ds: DataspaceId, offset: u64, old: Frame) {
        self.cow_breaks += 1;
        let slots = &mut self.slots;
        self.index.for_each_showing(ds, offset, 1, |space, region| {
            if let Some(Some(s)) = slots.get_mut(space.0) {
                region.unmap_stale(&mut s.mmu, offset, old);
            }
        });
    }

    /// Checks the invariants of every space, that every translation lies in a region and
    /// within its rights, and that the reverse index holds exactly the regions a scan of
    /// every space finds (so the reference bookkeeping matches them too).
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let mut scanned = Vec::new();
        for id in self.ids() {
            let s = self.get(id).expect("a listed space exists");
            s.map.check_invariants();
            for r in s.map.regions() {
                scanned.push((r.dataspace, id, r.attachment()));
                let first = Page::containing_address(r.start);
                for i in 0..r.size / PAGE_SIZE {
                    if let Some(p) = first.checked_add(memkit_types::PageCount::new(i))
                        && let Some(t) = s.mmu.translate(p)
                    {
                        assert!(r.rights.contains(t.rights), "a translation beyond its region's rights");
                    }
                }
            }
        }
        let key = |&(ds, space, a): &(DataspaceId, SpaceId, Attachment)| (ds, a.offset, space, a.start);
        scanned.sort_unstable_by_key(key);
        let indexed = self.index.entries();
        assert_eq!(indexed.len(), scanned.len(), "the reverse index and the regions differ in number");
        for (i, s) in indexed.iter().zip(&scanned) {
            assert_eq!(i.0, s.0, "the reverse index names another dataspace");
            assert_eq!((i.1, i.2), (s.1, s.2), "the reverse index differs from the regions for {:?}", s.0);
        }
    }
}

/// A dataspace manager and the address spaces that show its dataspaces.
#[derive(Debug)]
pub struct SpaceSet<S, P, M> {
    manager: Manager<S, P>,
    spaces: Spaces<M>,
}

impl<S: FrameSource, P: PhysMemory, M: Mmu> SpaceSet<S, P, M> {
    /// A set over `manager` without spaces; fault-around off.
    pub const fn new(manager: Manager<S, P>) -> Self {
        SpaceSet { manager, spaces: Spaces::new() }
    }

    /// Adds an address space (a region map and its MMU) in the lowest free slot.
    pub fn add_space(&mut self, map: RegionMap<DataspaceId>, mmu: M) -> SpaceId {
        self.spaces.add(map, mmu)
    }

    /// Removes a space: detaches all its regions (dropping their references) and returns it.
    ///
    /// # Errors
    /// As [`Spaces::remove`].
    pub fn remove_space(&mut self, id: SpaceId) -> Result<AddressSpace<DataspaceId, M>, SpaceError<DetachError>> {
        self.spaces.remove(&mut self.manager, id)
    }

    /// The dataspace manager, to look at.
    pub const fn manager(&self) -> &Manager<S, P> {
        &self.manager
    }

    /// The dataspace manager, for operations that take no [`Revoker`](memkit_dataspace::Revoker) (creating
    /// dataspaces and factories, `info`, `read`). Operations that take one go through
    /// [`manager_and_revoker`](Self::manager_and_revoker).
    pub const fn manager_mut(&mut self) -> &mut Manager<S, P> {
        &mut self.manager
    }

    /// The manager and a revoker over every space, for the manager operations that
    /// invalidate mappings (`copy`, `resize`, `clear`, `allocate`, `write`).
    pub fn manager_and_revoker(&mut self) -> (&mut Manager<S, P>, SpacesRevoker<'_, M>) {
        (&mut self.manager, self.spaces.revoker())
    }

    /// The spaces without the manager.
    pub const fn spaces(&self) -> &Spaces<M> {
        &self.spaces
    }

    /// A copy-on-write copy of `ds` (`l4dm_copy` with `L4DM_COW`): the source's pages are
    /// write-protected in every space first.
    ///
    /// # Errors
    /// As [`Manager::copy`].
    pub fn copy_on_write(&mut self, caller: ClientId, ds: DataspaceId, name: &str) -> Result<DataspaceId, CopyError> {
        let (m, mut r) = self.manager_and_revoker();
        m.copy(caller, ds, DmFlags::COW, name, &mut r)
    }

    /// The space `id`.
    pub fn space(&self, id: SpaceId) -> Option<&AddressSpace<DataspaceId, M>> {
        self.spaces.get(id)
    }

    /// The faults so far that broke copy-on-write.
    pub const fn cow_breaks(&self) -> u64 {
        self.spaces.cow_breaks()
    }

    /// The number of regions of all spaces showing `ds`.
    pub fn attachments(&self, ds: DataspaceId) -> u32 {
        self.spaces.attachments(ds)
    }

    /// The reverse index: which regions show each dataspace.
    pub const fn index(&self) -> &ReverseIndex {
        self.spaces.index()
    }

    /// Checks attachments against their dataspace's size ([`Spaces::set_check_sizes`]).
    pub const fn set_check_sizes(&mut self, on: bool) {
        self.spaces.set_check_sizes(on);
    }

    /// Sets the fault-around block ([`Spaces::set_fault_around`]).
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    pub fn set_fault_around(&mut self, pages: usize) -> Result<(), FaultAroundError> {
        self.spaces.set_fault_around(pages)
    }

    /// Attaches a dataspace in space `id` ([`RegionMap::attach`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the attach error.
    pub fn attach(
        &mut self,
        id: SpaceId,
        req: &AttachRequest<DataspaceId>,
    ) -> Result<VirtAddr, SpaceError<AttachError>> {
        self.spaces.attach(&mut self.manager, id, req)
    }

    /// One detach step in space `id` ([`Spaces::detach`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the detach error.
    pub fn detach(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<DataspaceId>, SpaceError<DetachError>> {
        self.spaces.detach(&mut self.manager, id, start, size, flags)
    }

    /// Resolves a page fault in space `id` ([`Spaces::resolve`]). Allocates no heap memory.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the fault error (nothing mapped then).
    pub fn resolve(
        &mut self,
        id: SpaceId,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, SpaceError<FaultError>> {
        self.spaces.resolve(&mut self.manager, id, addr, access)
    }

    /// Checks the invariants of every space and of the reverse index
    /// ([`Spaces::check_invariants`]).
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.spaces.check_invariants();
    }
}

impl<S: FrameSource, P: PhysMemory> SpaceSet<S, P, memkit_region::SoftMmu> {
    fn with_faults(
        &mut self,
        id: SpaceId,
        mut access: impl FnMut(&memkit_region::SoftMmu, &P) -> Result<(), memkit_region::AccessFault>,
    ) -> Result<(), SpaceError<FaultError>> {
        let mut last = None;
        loop {
            let space = self.spaces.get(id).ok_or(SpaceError::NoSpace(id))?;
            match access(&space.mmu, self.manager.memory()) {
                Ok(()) => return Ok(()),
                Err(f) => {
                    if last == Some(f) {
                        let page = memkit_types::Page::containing_address(f.addr);
                        let rights = space.mmu.translate(page).map(|t| t.rights).unwrap_or_default();
                        return Err(SpaceError::Op(FaultError::Forbidden { addr: f.addr, access: f.access, rights }));
                    }
                    self.resolve(id, f.addr, f.access)?;
                    last = Some(f);
                }
            }
        }
    }

    /// Loads through space `id`'s software MMU, resolving faults on the way.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the first fault that cannot be resolved.
    pub fn load(&mut self, id: SpaceId, addr: VirtAddr, buf: &mut [u8]) -> Result<(), SpaceError<FaultError>> {
        self.with_faults(id, |mmu, mem| mmu.load(mem, addr, buf))
    }

    /// Stores through space `id`'s software MMU, resolving faults on the way.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the first fault that cannot be resolved (nothing written).
    pub fn store(&mut self, id: SpaceId, addr: VirtAddr, buf: &[u8]) -> Result<(), SpaceError<FaultError>> {
        self.with_faults(id, |mmu, mem| mmu.store(mem, addr, buf))
    }
}
