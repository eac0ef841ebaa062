//! Fault-around: a fault on a page whose aligned neighbours are still empty maps them all.
//!
//! A fault on a page whose aligned neighbours (a block of [`DEFAULT_FAULT_AROUND`] pages,
//! say) are still unmapped and have no frame yet gives the whole stretch one run of
//! contiguous frames ([`Manager::map_run`]) and maps it with one [`Mmu::map`], so that a
//! costly fault (a signal and an `mmap` when hosted) is paid once per run instead of once
//! per page, and the run can merge with its neighbours into one mapping. This is what Linux
//! does for file mappings (`fault_around_bytes`). The price: frames are committed for pages
//! that may never be touched (at most the block size minus one per fault). A block of one
//! page (the default of a [`Spaces`](crate::Spaces)) keeps strict one-page laziness.
//!
//! ```text
//!   block of 16 pages:  |....|....|....|.X..|   X faults, every page still empty
//!                        └──── one frame run, one map ─────┘
//!   otherwise (a neighbour mapped or populated, or a copy-on-write page): one page
//! ```

use core::fmt;

use memkit_dataspace::{DataspaceId, Manager};
use memkit_region::{AddressSpace, Mmu, Translation};
use memkit_types::{Access, FrameSource, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, PhysMemory, VirtAddr};

/// The number of pages a fault maps at once by default where fault-around is wanted
/// (64 KiB, as Linux's `fault_around_bytes`).
pub const DEFAULT_FAULT_AROUND: usize = 16;

/// The largest fault-around block: 512 pages (2 MiB).
pub const MAX_FAULT_AROUND: usize = 512;

/// Why a fault-around block size was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAroundError {
    /// The size (in pages) is zero, not a power of two, or above [`MAX_FAULT_AROUND`].
    BadSize(usize),
}

impl fmt::Display for FaultAroundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAroundError::BadSize(n) => {
                write!(f, "fault-around of {n} pages: must be a power of two from 1 to {MAX_FAULT_AROUND}")
            }
        }
    }
}

impl core::error::Error for FaultAroundError {}

impl FaultAroundError {
    /// The seed's code: `-L4_EINVAL` (-22).
    #[must_use]
    pub const fn code(self) -> i32 {
        -memkit_types::l4::L4_EINVAL
    }
}

/// The page numbered `n`.
fn page_numbered(n: usize) -> Page {
    Page::containing_address(VirtAddr::new(n << PAGE_SHIFT))
}

/// Maps the stretch of still-unmapped pages around `addr` inside its aligned block of
/// `block` pages, its region and its dataspace, onto one fresh run of contiguous frames, when
/// that stretch is longer than one page and none of its pages has a frame yet. Returns the
/// faulting page's translation when it did; `None` leaves the fault to the one-page path (a
/// frame run allocated but not mapped stays with the dataspace, and that path maps its
/// page). Allocation-free.
pub(crate) fn fault_around<S: FrameSource, P: PhysMemory, M: Mmu>(
    manager: &mut Manager<S, P>,
    space: &mut AddressSpace<DataspaceId, M>,
    addr: VirtAddr,
    access: Access,
    block: usize,
) -> Option<Translation> {
    let r = space.map.region_at(addr)?;
    if !r.rights.allows(access) {
        return None;
    }
    let size = manager.info(r.dataspace).map(|i| i.size).ok()?;
    let page = Page::containing_address(addr).number();
    let region_first = Page::containing_address(r.start).number();
    // Pages of the region that show bytes of the dataspace.
    let backed = size.div_ceil(PAGE_SIZE as u64).saturating_sub(r.offset / PAGE_SIZE as u64);
    let region_end = region_first + (r.size / PAGE_SIZE).min(usize::try_from(backed).unwrap_or(usize::MAX));
    let lo = (page & !(block - 1)).max(region_first);
    let hi = (page | (block - 1)).saturating_add(1).min(region_end);
    if page >= hi || space.mmu.translate(page_numbered(page)).is_some() {
        return None;
    }
    let mut first = page;
    while first > lo && space.mmu.translate(page_numbered(first - 1)).is_none() {
        first -= 1;
    }
    let mut end = page + 1;
    while end < hi && space.mmu.translate(page_numbered(end)).is_none() {
        end += 1;
    }
    if end - first < 2 {
        return None;
    }
    let offset = r.offset + ((first - region_first) * PAGE_SIZE) as u64;
    let frame = manager.map_run(r.dataspace, offset, (end - first) as u64).ok()??;
    // Fresh frames allow everything: the region's rights alone decide.
    let flush = space.mmu.map(page_numbered(first), frame, PageCount::new(end - first), r.rights, r.cache).ok()?;
    flush.flush(&space.mmu);
    space.mmu.translate(page_numbered(page))
}
