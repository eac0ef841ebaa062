//! Areas: reserving a range of the window (anywhere, at a fixed address, or below a limit) and
//! freeing it.

use alloc::vec::Vec;

use memkit_types::{PAGE_SIZE, VirtAddr};

use super::request::AreaInfo;
use super::{RegionMap, Which, page_round};
use crate::error::{FreeAreaError, ReserveError};
use crate::flags::Flags;

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// Reserves an area (`reserve_area`): at `start`, or with `SEARCH_ADDR` at the first
    /// free place at or above `start` aligned to `2^align`. With `RESERVED` the area accepts
    /// no attachment; without it, regions are attached into it with `IN_AREA`. Returns the
    /// area's start.
    ///
    /// # Errors
    /// [`ReserveError::NotAvailable`] when the fixed range is outside the window or overlaps
    /// an area or a region, [`ReserveError::NoSpace`] when a search finds nothing, and the
    /// `EINVAL` errors for malformed arguments.
    pub fn reserve_area(
        &mut self,
        start: VirtAddr,
        size: usize,
        flags: Flags,
        align: u8,
    ) -> Result<VirtAddr, ReserveError> {
        self.reserve_area_below(start, size, flags, align, None)
    }

    /// [`reserve_area`](Self::reserve_area) whose searched area must end at or below
    /// `limit` (`None`: the end of the window).
    ///
    /// # Errors
    /// As [`reserve_area`](Self::reserve_area).
    pub fn reserve_area_below(
        &mut self,
        start: VirtAddr,
        size: usize,
        flags: Flags,
        align: u8,
        limit: Option<VirtAddr>,
    ) -> Result<VirtAddr, ReserveError> {
        if !(Flags::SEARCH_ADDR | Flags::RESERVED).contains(flags) {
            return Err(ReserveError::InvalidFlags(flags));
        }
        if size == 0 {
            return Err(ReserveError::ZeroSize);
        }
        let size = page_round(size).ok_or(ReserveError::SizeOverflow(size))?;
        let align = Self::align_bytes(align).ok_or(ReserveError::BadAlignment(align))?;
        let s = start.as_usize();
        let at = if flags.contains(Flags::SEARCH_ADDR) {
            let lo = s.max(self.window_start);
            let hi = limit.map_or(self.window_end, |l| self.window_end.min(l.as_usize()));
            self.place(Which::Top, lo, hi, size, align).ok_or(ReserveError::NoSpace(size))?
        } else {
            if !start.is_aligned(PAGE_SIZE) {
                return Err(ReserveError::Unaligned(start));
            }
            let end = s.checked_add(size).ok_or(ReserveError::SizeOverflow(size))?;
            if s < self.window_start || end > self.window_end || self.top_overlaps(s, end) {
                return Err(ReserveError::NotAvailable(start));
            }
            s
        };
        if !self.top_kept {
            // The first area: from now on `top` is kept. Every region lies outside areas.
            self.regions.for_each(|r| self.top.insert(r.start, r.end, ()));
            self.top_kept = true;
        }
        self.areas.insert(at, at + size, flags & Flags::RESERVED);
        self.top.insert(at, at + size, ());
        self.generation += 1;
        Ok(VirtAddr::new(at))
    }

    /// Frees the area containing `addr` (`free_area`). Regions attached in it stay attached
    /// (they now lie outside every area).
    ///
    /// # Errors
    /// [`FreeAreaError::NoArea`] when no area contains `addr`.
    pub fn free_area(&mut self, addr: VirtAddr) -> Result<AreaInfo, FreeAreaError> {
        let a = self.areas.containing(addr.as_usize()).ok_or(FreeAreaError::NoArea(addr))?;
        self.areas.remove(a.start);
        self.top.remove(a.start);
        let mut inside = Vec::new();
        self.regions.for_each_from(a.start, |r| {
            if r.start >= a.end {
                return false;
            }
            inside.push(r);
            true
        });
        for mut r in inside {
            r.value.in_area = false;
            self.regions.set_value(r.start, r.value);
            self.top.insert(r.start, r.end, ());
        }
        self.generation += 1;
        Ok(AreaInfo { start: VirtAddr::new(a.start), size: a.end - a.start, flags: a.value })
    }
}
