//! Several address spaces over one dataspace manager, kept coherent.
//!
//! ```text
//!   SpaceSet ─┬─ Manager (dataspaces, copy-on-write, references)
//!             │      ▲ map(ds, offset, access)      │ revoke(ds, pages, Write | All)
//!             │      │                              ▼
//!             └─ spaces: [AddressSpace = RegionMap + Mmu] ... every space's mappings of
//!                                                            the pages lose the rights
//! ```
//!
//! The set owns the manager and the spaces, so that whatever the manager does to a
//! dataspace reaches every mapping of it:
//! - a copy-on-write copy write-protects the source's pages in **every** space (the
//!   manager calls the set's [`Revoker`] before it starts sharing frames);
//! - shrinking or clearing a dataspace unmaps the pages whose frames go away;
//! - a write fault that breaks copy-on-write gives the page a new frame
//!   ([`Mapping::replaced`](memkit_dataspace::Mapping::replaced) names the old one); every
//!   other mapping of that page of that dataspace, in any space, is unmapped so it faults
//!   again and sees the new frame.
//!
//! References: the set holds one manager reference per dataspace for as long as any region
//! of any space shows it ([`Manager::inc_ref`] on the first attachment, [`Manager::dec_ref`]
//! after the last detach), so closing a dataspace never pulls memory from under a region,
//! and a split region needs no new reference.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use memkit_dataspace::{ClientId, CopyError, DataspaceId, DmFlags, Manager, PageRange, RevokeKind, Revoker};
use memkit_types::{Access, Frame, FrameSource, PAGE_SIZE, Page, PhysMemory, Rights, VirtAddr};

use crate::backing::{Backing, BackingError};
use crate::error::{AttachError, DetachError, FaultError, L4_EINVAL};
use crate::flags::DetachFlags;
use crate::map::{AttachRequest, Detached, RegionMap};
use crate::mmu::{Mmu, Translation};
use crate::soft::{AccessFault, SoftMmu};
use crate::space::AddressSpace;

/// An address space of a [`SpaceSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(pub usize);

/// An operation on a space of a [`SpaceSet`] failed: there is no such space, or the
/// operation itself failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceError<E> {
    /// No space has this id.
    NoSpace(SpaceId),
    /// The operation's own error.
    Op(E),
}

impl<E: fmt::Display> fmt::Display for SpaceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::NoSpace(id) => write!(f, "no address space {}", id.0),
            SpaceError::Op(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for SpaceError<E> {}

impl SpaceError<AttachError> {
    /// `-L4_EINVAL` for a missing space, else the attach error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<DetachError> {
    /// `-L4_EINVAL` for a missing space, else the detach error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

impl SpaceError<FaultError> {
    /// `-L4_EINVAL` for a missing space, else the fault error's code.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            SpaceError::NoSpace(_) => L4_EINVAL,
            SpaceError::Op(e) => e.code(),
        }
    }
}

/// The frames copy-on-write breaks replaced during one operation: the first without
/// allocating, any further ones in a list.
#[derive(Debug, Default)]
struct Replaced {
    first: Option<(DataspaceId, u64, Frame)>,
    more: Vec<(DataspaceId, u64, Frame)>,
}

impl Replaced {
    fn push(&mut self, r: (DataspaceId, u64, Frame)) {
        if self.first.is_none() {
            self.first = Some(r);
        } else {
            self.more.push(r);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (DataspaceId, u64, Frame)> + '_ {
        self.first.iter().chain(self.more.iter()).copied()
    }
}

/// The manager as a region map's [`Backing`], for one operation.
struct ManagerBacking<'a, S, P> {
    manager: &'a mut Manager<S, P>,
    attachments: &'a mut BTreeMap<DataspaceId, u32>,
    /// The copy-on-write breaks during this operation: (dataspace, offset, old frame). A
    /// fault maps one page, so it breaks at most one and allocates nothing; an eager attach
    /// may break one per page.
    replaced: Replaced,
    /// A `DETACH_FREE` release to carry out once the region map is done.
    release: Option<(DataspaceId, u64, u64)>,
}

impl<S: FrameSource, P: PhysMemory> Backing for ManagerBacking<'_, S, P> {
    type Id = DataspaceId;

    fn rights(&self, id: DataspaceId) -> Option<Rights> {
        // The rights of the handle: attaching beyond them is refused.
        self.manager.rights(id).ok()
    }

    fn map(&mut self, id: DataspaceId, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        match self.manager.map(id, offset, access) {
            Ok(m) => {
                if let Some(old) = m.replaced {
                    self.replaced.push((id, offset, old));
                }
                Ok((m.frame, m.rights))
            }
            Err(memkit_dataspace::MapError::InvalidId(_)) => Err(BackingError::UnknownDataspace),
            Err(memkit_dataspace::MapError::OffsetOutOfRange(o, _)) => Err(BackingError::OutOfRange(o)),
            Err(memkit_dataspace::MapError::Forbidden(_, access)) => Err(BackingError::Forbidden(access)),
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => Err(BackingError::OutOfMemory),
            // A refusal a later manager adds: the access is refused.
            Err(_) => Err(BackingError::Forbidden(access)),
        }
    }

    fn attached(&mut self, id: DataspaceId) {
        let n = self.attachments.entry(id).or_insert(0);
        if *n == 0 {
            // The attach checked `rights` (an open handle) just before: this succeeds.
            let _ = self.manager.inc_ref(id);
        }
        *n += 1;
    }

    fn detached(&mut self, id: DataspaceId) {
        if let Some(n) = self.attachments.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.attachments.remove(&id);
                let _ = self.manager.dec_ref(id);
            }
        }
    }

    fn release(&mut self, id: DataspaceId, offset: u64, size: u64) {
        self.release = Some((id, offset, size));
    }
}

/// Takes rights away from every mapping of a dataspace's pages, in every space.
#[derive(Debug)]
pub struct SpacesRevoker<'a, M> {
    spaces: &'a mut [Option<AddressSpace<DataspaceId, M>>],
}

impl<M: Mmu> Revoker for SpacesRevoker<'_, M> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let offset = pages.start.saturating_mul(PAGE_SIZE as u64);
        let size = pages.end.saturating_sub(pages.start).saturating_mul(PAGE_SIZE as u64);
        for s in self.spaces.iter_mut().flatten() {
            // A protect the MMU refuses falls back to unmapping, which always leaves a
            // correct state: the pages fault again and are resolved with the right rights.
            if s.map.revoke(&mut s.mmu, ds, offset, size, keep).is_err() {
                let _ = s.map.revoke(&mut s.mmu, ds, offset, size, Rights::empty());
            }
        }
    }
}

/// A dataspace manager and the address spaces that show its dataspaces.
#[derive(Debug)]
pub struct SpaceSet<S, P, M> {
    manager: Manager<S, P>,
    spaces: Vec<Option<AddressSpace<DataspaceId, M>>>,
    attachments: BTreeMap<DataspaceId, u32>,
    /// Copy-on-write breaks so far.
    cow_breaks: u64,
}

impl<S: FrameSource, P: PhysMemory, M: Mmu> SpaceSet<S, P, M> {
    /// A set over `manager` without spaces.
    pub const fn new(manager: Manager<S, P>) -> Self {
        SpaceSet { manager, spaces: Vec::new(), attachments: BTreeMap::new(), cow_breaks: 0 }
    }

    /// Adds an address space (a region map and its MMU).
    pub fn add_space(&mut self, map: RegionMap<DataspaceId>, mmu: M) -> SpaceId {
        self.spaces.push(Some(AddressSpace::new(map, mmu)));
        SpaceId(self.spaces.len() - 1)
    }

    /// Removes a space: detaches all its regions (dropping their references) and returns it.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn remove_space(&mut self, id: SpaceId) -> Result<AddressSpace<DataspaceId, M>, SpaceError<DetachError>> {
        let mut space = self.spaces.get_mut(id.0).and_then(Option::take).ok_or(SpaceError::NoSpace(id))?;
        let (start, size) = (space.map.window_start(), space.map.window_size());
        let mut b = self.backing();
        match space.map.detach_all(&mut b, &mut space.mmu, start, size, DetachFlags::OVERLAP | DetachFlags::KEEP) {
            Ok(_) | Err(DetachError::NoRegion(_)) => Ok(space),
            Err(e) => {
                self.spaces[id.0] = Some(space);
                Err(SpaceError::Op(e))
            }
        }
    }

    fn backing(&mut self) -> ManagerBacking<'_, S, P> {
        ManagerBacking {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        }
    }

    /// The dataspace manager, to look at.
    pub const fn manager(&self) -> &Manager<S, P> {
        &self.manager
    }

    /// The dataspace manager, for operations that take no [`Revoker`] (creating
    /// dataspaces and factories, `info`, `read`). Operations that take one go through
    /// [`manager_and_revoker`](Self::manager_and_revoker).
    pub const fn manager_mut(&mut self) -> &mut Manager<S, P> {
        &mut self.manager
    }

    /// The manager and a revoker over every space, for the manager operations that
    /// invalidate mappings (`copy`, `resize`, `clear`, `allocate`, `write`).
    pub fn manager_and_revoker(&mut self) -> (&mut Manager<S, P>, SpacesRevoker<'_, M>) {
        (&mut self.manager, SpacesRevoker { spaces: &mut self.spaces })
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
        self.spaces.get(id.0).and_then(Option::as_ref)
    }

    /// The space `id`, to reserve and free areas or look at its MMU.
    pub fn space_mut(&mut self, id: SpaceId) -> Option<&mut AddressSpace<DataspaceId, M>> {
        self.spaces.get_mut(id.0).and_then(Option::as_mut)
    }

    /// The faults so far that broke copy-on-write (gave a page of a dataspace a frame of
    /// its own).
    pub const fn cow_breaks(&self) -> u64 {
        self.cow_breaks
    }

    /// The number of regions of all spaces showing `ds`.
    pub fn attachments(&self, ds: DataspaceId) -> u32 {
        self.attachments.get(&ds).copied().unwrap_or(0)
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
        let space = self.spaces.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut b = ManagerBacking {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let r = space.map.attach(&mut b, &mut space.mmu, req).map_err(SpaceError::Op);
        let replaced = core::mem::take(&mut b.replaced);
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        r
    }

    /// One detach step in space `id` ([`RegionMap::detach`]). With `DETACH_FREE` (and no
    /// `KEEP`) the detached part of the dataspace is cleared through the manager (its
    /// frames freed, its mappings elsewhere revoked), when the dataspace is still open.
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
        let space = self.spaces.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut b = ManagerBacking {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let d = space.map.detach(&mut b, &mut space.mmu, start, size, flags).map_err(SpaceError::Op)?;
        if let Some((ds, offset, len)) = b.release {
            let (m, mut r) = self.manager_and_revoker();
            if let Ok(info) = m.info(ds) {
                let owner = info.owner;
                let len = len.min(info.size.saturating_sub(offset));
                // Clearing may fail only for want of a frame to unshare an edge page; the
                // detach itself has happened either way.
                let _ = m.clear(owner, ds, offset, len, &mut r);
            }
        }
        Ok(d)
    }

    /// Resolves a page fault in space `id` ([`RegionMap::resolve`]). When the fault broke
    /// copy-on-write, every other mapping of the page's old frame for this dataspace is
    /// unmapped, in every space. Allocates no heap memory.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the fault error (nothing mapped then).
    pub fn resolve(
        &mut self,
        id: SpaceId,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, SpaceError<FaultError>> {
        let space = self.spaces.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut b = ManagerBacking {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let r = space.map.resolve(&mut b, &mut space.mmu, addr, access).map_err(SpaceError::Op);
        let replaced = core::mem::take(&mut b.replaced);
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        r
    }

    /// Unmaps the frame a copy-on-write break replaced from every mapping of that page of
    /// `ds`, in every space: the faulting one included, where the dataspace may be attached
    /// more than once.
    fn unmap_replaced(&mut self, ds: DataspaceId, offset: u64, old: Frame) {
        self.cow_breaks += 1;
        for s in self.spaces.iter_mut().flatten() {
            s.map.unmap_stale(&mut s.mmu, ds, offset, old);
        }
    }

    /// Checks the invariants of every space and that the reference bookkeeping matches the
    /// regions.
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let mut counted: BTreeMap<DataspaceId, u32> = BTreeMap::new();
        for s in self.spaces.iter().flatten() {
            s.map.check_invariants();
            for r in s.map.regions() {
                *counted.entry(r.dataspace).or_insert(0) += 1;
            }
            for (page, t) in s.mmu_translations() {
                let r = s.map.region_at(page.start_address()).expect("a translation outside every region");
                assert!(r.rights.contains(t.rights), "a translation beyond its region's rights");
            }
        }
        assert_eq!(counted, self.attachments, "attachment counts do not match the regions");
    }
}

impl<M: Mmu> AddressSpace<DataspaceId, M> {
    /// The translations of the space's regions' pages (probing the MMU page by page).
    #[cfg(any(test, feature = "check"))]
    fn mmu_translations(&self) -> Vec<(Page, Translation)> {
        use memkit_types::PageCount;
        let mut out = Vec::new();
        for r in self.map.regions() {
            let first = Page::containing_address(r.start);
            for i in 0..r.size / PAGE_SIZE {
                if let Some(p) = first.checked_add(PageCount::new(i))
                    && let Some(t) = self.mmu.translate(p)
                {
                    out.push((p, t));
                }
            }
        }
        out
    }
}

impl<S: FrameSource, P: PhysMemory> SpaceSet<S, P, SoftMmu> {
    fn with_faults(
        &mut self,
        id: SpaceId,
        mut access: impl FnMut(&SoftMmu, &P) -> Result<(), AccessFault>,
    ) -> Result<(), SpaceError<FaultError>> {
        let mut last = None;
        loop {
            let space = self.spaces.get(id.0).and_then(Option::as_ref).ok_or(SpaceError::NoSpace(id))?;
            match access(&space.mmu, self.manager.memory()) {
                Ok(()) => return Ok(()),
                Err(f) => {
                    if last == Some(f) {
                        let rights = space.mmu.translate(Page::containing_address(f.addr)).map(|t| t.rights);
                        let rights = rights.unwrap_or_default();
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
