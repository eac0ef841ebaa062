//! An address space: a region map and the MMU it maps through.

use memkit_types::{Access, PhysMemory, VirtAddr};

use crate::backing::Backing;
use crate::error::{AttachError, DetachError, FaultError};
use crate::flags::DetachFlags;
use crate::map::{AttachRequest, Detached, RegionMap};
use crate::mmu::{Mmu, Translation};
use crate::soft::{AccessFault, SoftMmu};

/// A region map together with its MMU.
#[derive(Debug, Clone)]
pub struct AddressSpace<Id, M> {
    /// The region map.
    pub map: RegionMap<Id>,
    /// The MMU the map installs translations in.
    pub mmu: M,
}

impl<Id: Copy + Eq + core::fmt::Debug, M: Mmu> AddressSpace<Id, M> {
    /// An address space over `map` and `mmu`.
    pub const fn new(map: RegionMap<Id>, mmu: M) -> Self {
        AddressSpace { map, mmu }
    }

    /// [`RegionMap::attach`] through this space's MMU.
    ///
    /// # Errors
    /// As [`RegionMap::attach`].
    pub fn attach<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        req: &AttachRequest<Id>,
    ) -> Result<VirtAddr, AttachError> {
        self.map.attach(backing, &mut self.mmu, req)
    }

    /// [`RegionMap::detach`] through this space's MMU.
    ///
    /// # Errors
    /// As [`RegionMap::detach`].
    pub fn detach<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<Id>, DetachError> {
        self.map.detach(backing, &mut self.mmu, start, size, flags)
    }

    /// [`RegionMap::resolve`] through this space's MMU.
    ///
    /// # Errors
    /// As [`RegionMap::resolve`].
    pub fn resolve<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, FaultError> {
        self.map.resolve(backing, &mut self.mmu, addr, access)
    }
}

impl<Id: Copy + Eq + core::fmt::Debug> AddressSpace<Id, SoftMmu> {
    /// Runs a simulated access, resolving each page fault it raises through the region map
    /// and retrying, as a CPU and its pager would.
    fn with_faults<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        mut access: impl FnMut(&SoftMmu) -> Result<(), AccessFault>,
    ) -> Result<(), FaultError> {
        let mut last = None;
        loop {
            match access(&self.mmu) {
                Ok(()) => return Ok(()),
                Err(f) => {
                    if last == Some(f) {
                        // Resolved, yet it faults again: the mapping cannot allow the access.
                        let rights =
                            self.mmu.translate(memkit_types::Page::containing_address(f.addr)).map(|t| t.rights);
                        return Err(FaultError::Forbidden {
                            addr: f.addr,
                            access: f.access,
                            rights: rights.unwrap_or_default(),
                        });
                    }
                    self.map.resolve(backing, &mut self.mmu, f.addr, f.access)?;
                    last = Some(f);
                }
            }
        }
    }

    /// Loads `buf.len()` bytes from `addr`, resolving page faults on the way.
    ///
    /// # Errors
    /// The [`FaultError`] of the first fault that cannot be resolved; `buf` is then
    /// unspecified, memory unchanged.
    pub fn load<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        mem: &(impl PhysMemory + ?Sized),
        addr: VirtAddr,
        buf: &mut [u8],
    ) -> Result<(), FaultError> {
        self.with_faults(backing, |mmu| mmu.load(mem, addr, buf))
    }

    /// Stores `buf` at `addr`, resolving page faults on the way.
    ///
    /// # Errors
    /// The [`FaultError`] of the first fault that cannot be resolved; nothing is written
    /// then.
    pub fn store<B: Backing<Id = Id> + ?Sized>(
        &mut self,
        backing: &mut B,
        mem: &(impl PhysMemory + ?Sized),
        addr: VirtAddr,
        buf: &[u8],
    ) -> Result<(), FaultError> {
        self.with_faults(backing, |mmu| mmu.store(mem, addr, buf))
    }
}
