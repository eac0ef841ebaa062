//! The address-space operations beyond attach, detach and fault (`mprotect`, `mremap`, merging
//! neighbours, areas, randomised placement), for [`Spaces`] and [`SpaceSet`].

use memkit_dataspace::Manager;
use memkit_region::{AreaInfo, Flags, FreeAreaError, Mmu, ProtectError, Remap, RemapError, ReserveError};
use memkit_types::{FrameSource, PhysMemory, Rights, VirtAddr};

use super::{SpaceError, SpaceId, SpaceSet, Spaces};

impl<M: Mmu> Spaces<M> {
    /// Gives the pages of a range in space `id` new rights ([`RegionMap::protect`](memkit_region::RegionMap::protect)); the
    /// reverse index follows every split and merge. Flushes what it owes.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the protect error (nothing changed).
    pub fn protect<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        rights: Rights,
    ) -> Result<(), SpaceError<ProtectError>> {
        let (space, mut b) = self.op(manager, id).map_err(SpaceError::NoSpace)?;
        space.map.protect(&mut b, &mut space.mmu, start, size, rights).map_err(SpaceError::Op)?.flush(&space.mmu);
        Ok(())
    }

    /// Resizes or moves part of a region in space `id` ([`RegionMap::remap`](memkit_region::RegionMap::remap)), keeping its
    /// frames; `DETACH_FREE` bytes it gives up are cleared as a detach's are.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the remap error (nothing changed).
    pub fn remap<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        start: VirtAddr,
        old_size: usize,
        new_size: usize,
        how: Remap,
    ) -> Result<VirtAddr, SpaceError<RemapError>> {
        let (space, mut b) = self.op(manager, id).map_err(SpaceError::NoSpace)?;
        let r = space.map.remap(&mut b, &mut space.mmu, start, old_size, new_size, how).map_err(SpaceError::Op);
        let (replaced, release) = (core::mem::take(&mut b.replaced), core::mem::take(&mut b.release));
        self.finish(manager, &replaced, &release);
        r
    }

    /// Merges compatible neighbours in a range of space `id` ([`RegionMap::merge`](memkit_region::RegionMap::merge));
    /// returns the number of merges.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn merge<S: FrameSource, P: PhysMemory>(
        &mut self,
        manager: &mut Manager<S, P>,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
    ) -> Result<usize, SpaceError<core::convert::Infallible>> {
        let (space, mut b) = self.op(manager, id).map_err(SpaceError::NoSpace)?;
        Ok(space.map.merge(&mut b, start, size))
    }

    /// Reserves an area in space `id` ([`RegionMap::reserve_area_below`](memkit_region::RegionMap::reserve_area_below)).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the reserve error.
    pub fn reserve_area(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        flags: Flags,
        align: u8,
        limit: Option<VirtAddr>,
    ) -> Result<VirtAddr, SpaceError<ReserveError>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        space.map.reserve_area_below(start, size, flags, align, limit).map_err(SpaceError::Op)
    }

    /// Frees the area containing `addr` in space `id` ([`RegionMap::free_area`](memkit_region::RegionMap::free_area)).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the free error.
    pub fn free_area(&mut self, id: SpaceId, addr: VirtAddr) -> Result<AreaInfo, SpaceError<FreeAreaError>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        space.map.free_area(addr).map_err(SpaceError::Op)
    }

    /// Randomised placement in space `id` ([`RegionMap::set_randomized`](memkit_region::RegionMap::set_randomized)).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn set_randomized(
        &mut self,
        id: SpaceId,
        seed: Option<u64>,
    ) -> Result<(), SpaceError<core::convert::Infallible>> {
        let space = self.slots.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        space.map.set_randomized(seed);
        Ok(())
    }
}

impl<S: FrameSource, P: PhysMemory, M: Mmu> SpaceSet<S, P, M> {
    /// Reserves an area in space `id` ([`Spaces::reserve_area`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the reserve error.
    pub fn reserve_area(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        flags: Flags,
        align: u8,
        limit: Option<VirtAddr>,
    ) -> Result<VirtAddr, SpaceError<ReserveError>> {
        self.spaces.reserve_area(id, start, size, flags, align, limit)
    }

    /// Frees the area containing `addr` in space `id` ([`Spaces::free_area`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the free error.
    pub fn free_area(&mut self, id: SpaceId, addr: VirtAddr) -> Result<AreaInfo, SpaceError<FreeAreaError>> {
        self.spaces.free_area(id, addr)
    }

    /// New rights for a range of space `id` ([`Spaces::protect`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the protect error (nothing changed).
    pub fn protect(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        rights: Rights,
    ) -> Result<(), SpaceError<ProtectError>> {
        self.spaces.protect(&mut self.manager, id, start, size, rights)
    }

    /// Resizes or moves part of a region of space `id` ([`Spaces::remap`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], or the remap error (nothing changed).
    pub fn remap(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        old_size: usize,
        new_size: usize,
        how: Remap,
    ) -> Result<VirtAddr, SpaceError<RemapError>> {
        self.spaces.remap(&mut self.manager, id, start, old_size, new_size, how)
    }

    /// Merges compatible neighbours in a range of space `id` ([`Spaces::merge`]).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn merge(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
    ) -> Result<usize, SpaceError<core::convert::Infallible>> {
        self.spaces.merge(&mut self.manager, id, start, size)
    }
}
