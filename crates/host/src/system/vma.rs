//! The address-space operations of [`Stack`] beyond attach, detach and fault: areas,
//! `mprotect`, `mremap` and merging neighbours, each through [`memkit_spaces::Spaces`].

use memkit_region::{AreaInfo, Flags, FreeAreaError, ProtectError, Remap, RemapError, ReserveError};
use memkit_types::{FrameSource, Rights, VirtAddr};

use super::{HostSpaceId, Stack, SystemError};

impl<S: FrameSource> Stack<S> {
    /// Reserves an area in space `id` ([`RegionMap::reserve_area_below`](memkit_region::RegionMap::reserve_area_below)).
    ///
    /// # Errors
    /// [`SystemError::NoSpace`]; the reserve error inside.
    pub fn reserve_area(
        &mut self,
        id: HostSpaceId,
        start: VirtAddr,
        size: usize,
        flags: Flags,
        align: u8,
        limit: Option<VirtAddr>,
    ) -> Result<Result<VirtAddr, ReserveError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        Self::inner(id, self.spaces.reserve_area(index, start, size, flags, align, limit))
    }

    /// Frees the area containing `addr` in space `id` ([`RegionMap::free_area`](memkit_region::RegionMap::free_area)).
    ///
    /// # Errors
    /// [`SystemError::NoSpace`]; the free error inside.
    pub fn free_area(
        &mut self,
        id: HostSpaceId,
        addr: VirtAddr,
    ) -> Result<Result<AreaInfo, FreeAreaError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        Self::inner(id, self.spaces.free_area(index, addr))
    }

    /// New rights for the pages of a range of space `id` (`mprotect`;
    /// [`RegionMap::protect`](memkit_region::RegionMap::protect)): rights taken away are taken from the mapped pages now,
    /// rights given fault in lazily.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`]; the protect error inside (nothing changed).
    pub fn protect(
        &mut self,
        id: HostSpaceId,
        start: VirtAddr,
        size: usize,
        rights: Rights,
    ) -> Result<Result<(), ProtectError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        Self::inner(id, self.spaces.protect(&mut self.manager, index, start, size, rights))
    }

    /// Resizes or moves part of a region of space `id` (`mremap`; [`RegionMap::remap`](memkit_region::RegionMap::remap)),
    /// keeping its frames.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`]; the remap error inside (nothing changed).
    pub fn remap(
        &mut self,
        id: HostSpaceId,
        start: VirtAddr,
        old_size: usize,
        new_size: usize,
        how: Remap,
    ) -> Result<Result<VirtAddr, RemapError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        Self::inner(id, self.spaces.remap(&mut self.manager, index, start, old_size, new_size, how))
    }

    /// Merges compatible neighbours in a range of space `id` ([`RegionMap::merge`](memkit_region::RegionMap::merge));
    /// returns the number of merges.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`].
    pub fn merge(&mut self, id: HostSpaceId, start: VirtAddr, size: usize) -> Result<usize, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        self.spaces.merge(&mut self.manager, index, start, size).map_err(|_| SystemError::NoSpace(id))
    }
}
