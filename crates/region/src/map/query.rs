//! Lookups and listings: a region or area by address, and the regions and areas of a range.

use alloc::vec::Vec;

use memkit_types::VirtAddr;

use super::request::{AreaInfo, Found, Listing, RegionInfo};
use super::{RegionData, RegionMap};
use crate::error::FindError;
use crate::flags::Flags;

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    pub(super) fn region_info(e: crate::tree::Entry<RegionData<Id>>) -> RegionInfo<Id> {
        RegionInfo {
            start: VirtAddr::new(e.start),
            size: e.end - e.start,
            offset: e.value.offset,
            rights: e.value.rights,
            cache: e.value.cache,
            flags: e.value.flags(),
            dataspace: e.value.dataspace,
        }
    }

    fn area_info(e: crate::tree::Entry<Flags>) -> AreaInfo {
        AreaInfo { start: VirtAddr::new(e.start), size: e.end - e.start, flags: e.value }
    }

    /// The lowest region overlapping `[addr, addr + size)`, else the lowest area overlapping
    /// it (`find`; `size` 1 names the region containing `addr` unambiguously).
    ///
    /// # Errors
    /// [`FindError::NotFound`] when neither exists, [`FindError::ZeroSize`],
    /// [`FindError::SizeOverflow`].
    pub fn find(&self, addr: VirtAddr, size: usize) -> Result<Found<Id>, FindError> {
        if size == 0 {
            return Err(FindError::ZeroSize);
        }
        let a = addr.as_usize();
        let e = a.checked_add(size).ok_or(FindError::SizeOverflow(size))?;
        if let Some(r) = self.regions.first_overlapping(a, e) {
            return Ok(Found::Region(Self::region_info(r)));
        }
        if let Some(ar) = self.areas.first_overlapping(a, e) {
            return Ok(Found::Area(Self::area_info(ar)));
        }
        Err(FindError::NotFound(addr))
    }

    /// The region containing `addr`, if any.
    pub fn region_at(&self, addr: VirtAddr) -> Option<RegionInfo<Id>> {
        self.regions.containing(addr.as_usize()).map(Self::region_info)
    }

    /// Fills `out` with the regions starting at or above `start`, in address order
    /// (`get_regions`). Call again from [`Listing::next`] for more.
    pub fn get_regions(&self, start: VirtAddr, out: &mut [RegionInfo<Id>]) -> Listing {
        let mut count = 0;
        let mut next = None;
        self.regions.for_each_from(start.as_usize(), |e| {
            if count == out.len() {
                next = Some(VirtAddr::new(e.start));
                return false;
            }
            out[count] = Self::region_info(e);
            count += 1;
            true
        });
        Listing { count, generation: self.generation, next }
    }

    /// Fills `out` with the areas starting at or above `start`, in address order
    /// (`get_areas`). Call again from [`Listing::next`] for more.
    pub fn get_areas(&self, start: VirtAddr, out: &mut [AreaInfo]) -> Listing {
        let mut count = 0;
        let mut next = None;
        self.areas.for_each_from(start.as_usize(), |e| {
            if count == out.len() {
                next = Some(VirtAddr::new(e.start));
                return false;
            }
            out[count] = Self::area_info(e);
            count += 1;
            true
        });
        Listing { count, generation: self.generation, next }
    }

    /// Every region, in address order.
    pub fn regions(&self) -> Vec<RegionInfo<Id>> {
        self.regions.entries().into_iter().map(Self::region_info).collect()
    }

    /// Every area, in address order.
    pub fn areas(&self) -> Vec<AreaInfo> {
        self.areas.entries().into_iter().map(Self::area_info).collect()
    }
}
