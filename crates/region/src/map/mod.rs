//! The region map of one address space: areas, regions, attach, detach, find, listing and
//! page-fault resolution.
//!
//! ```text
//!   window ──────────────────────────────────────────────────────────────────────────┐
//!   │  region A   │ free │ area (In_area)              │ free │ area (Reserved) │ ... │
//!   │ ds1 @ 0x0   │      │ ┌ region B ┐  free  ┌ C ┐   │      │  nothing here   │     │
//!   └─────────────┴──────┴─┴──────────┴────────┴───┴───┴──────┴─────────────────┴─────┘
//!
//!   regions: every region (A, B, C)               → find, faults, search inside an area
//!   areas:   every area                           → In_area, find, get_areas
//!   top:     areas + regions outside every area   → search and overlap checks outside areas
//! ```
//!
//! Three [`GapTree`]s index the map, each keeping its subtrees' largest gaps, so that
//! a search for free space, a lookup and a fault all take O(log n) steps. Until the first
//! area is reserved, `top` would hold exactly what `regions` holds, so it stays empty and
//! `regions` serves in its place: a map without areas updates one tree per attach and
//! detach, not two. The first area builds `top` from the regions (once in the map's life).
//!
//! This file holds the map and its placement of new ranges; the operations live one group
//! per file: `areas`, `attach` (and detach), `query`, `fault` (faults and revocation),
//! `vma` (protect, remap, merge, iteration over a range) and `check`; `request` holds the types callers hand in and get back.

use memkit_types::{CacheMode, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

use crate::error::WindowError;
use crate::flags::Flags;
use crate::tree::GapTree;

mod areas;
mod attach;
#[cfg(any(test, feature = "check"))]
mod check;
mod fault;
mod query;
mod request;
mod vma;

pub use request::{AreaInfo, AttachRequest, Detached, Found, Listing, RegionInfo};
pub use vma::{Regions, Remap};

/// The largest alignment (log2) a search accepts: the 47-bit address width.
pub const MAX_ALIGN: u8 = 47;

/// A region as the tree holds it: 16 bytes with a 4-byte dataspace id, so that a leaf's
/// values take 8 cache lines and a map of 100 000 regions about 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RegionData<Id> {
    dataspace: Id,
    offset: u64,
    rights: Rights,
    cache: CacheMode,
    /// The region's own flags (`EAGER_MAP`, `DETACH_FREE`: the low byte of [`Flags`]).
    flags: u8,
    /// The region lies inside an area (and so is not in the `top` tree).
    in_area: bool,
}

// The footprint promised above, with and without the tree's `Option`.
const _: () = assert!(size_of::<RegionData<u32>>() == 16 && size_of::<Option<RegionData<u32>>>() == 16);

impl<Id> RegionData<Id> {
    /// The flags a region keeps.
    const KEPT: Flags = Flags::EAGER_MAP.union(Flags::DETACH_FREE);

    fn flags(&self) -> Flags {
        Flags::from_bits_truncate(u32::from(self.flags))
    }
}

/// The region map of one address space.
///
/// # Invariants
/// - Areas are disjoint; regions are disjoint; every one lies inside the window.
/// - A region either lies inside one area (`in_area`) or overlaps no area.
/// - Once an area has been reserved (`top_kept`), `top` holds exactly the areas and the
///   regions outside every area; before that it is empty and there are no areas.
/// - Regions are page aligned, and so are their dataspace offsets.
#[derive(Debug, Clone)]
pub struct RegionMap<Id> {
    regions: GapTree<RegionData<Id>>,
    areas: GapTree<Flags>,
    top: GapTree<()>,
    /// An area has been reserved: `top` is kept (else `regions` serves as `top`).
    top_kept: bool,
    window_start: usize,
    window_end: usize,
    generation: u64,
    random: Option<u64>,
}

/// Bytes rounded up to whole pages.
fn page_round(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(PAGE_SIZE)
}

fn page(addr: usize) -> Page {
    Page::containing_address(VirtAddr::new(addr))
}

fn pages(bytes: usize) -> PageCount {
    PageCount::new(bytes >> PAGE_SHIFT)
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Top,
    Regions,
}

impl<Id: Copy + Eq + core::fmt::Debug> RegionMap<Id> {
    /// A region map over the `size` bytes from `start` on (the part of the address space
    /// it manages).
    ///
    /// # Panics
    /// Where [`try_new`](Self::try_new) returns an error, with its message.
    #[must_use]
    pub fn new(start: VirtAddr, size: usize) -> Self {
        match Self::try_new(start, size) {
            Ok(map) => map,
            Err(e) => panic!("{e}"),
        }
    }

    /// A region map over the `size` bytes from `start` on, for a window that comes from
    /// outside.
    ///
    /// # Errors
    /// [`WindowError::Empty`] when `size` is zero, [`WindowError::Unaligned`] when `start`
    /// or `size` is not page aligned, [`WindowError::OutOfRange`] when the window leaves
    /// the canonical range or its end (one past its last byte) does not fit in a `usize`
    /// (its last page is the last page of the address space).
    pub fn try_new(start: VirtAddr, size: usize) -> Result<Self, WindowError> {
        if size == 0 {
            return Err(WindowError::Empty);
        }
        if !start.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(WindowError::Unaligned { start, size });
        }
        // Ends are kept one past the last byte: the window's end must be a number.
        let canonical = start.checked_add(size - 1).is_some();
        if !canonical || start.as_usize().checked_add(size).is_none() {
            return Err(WindowError::OutOfRange { start, size });
        }
        Ok(RegionMap {
            regions: GapTree::new(),
            areas: GapTree::new(),
            top: GapTree::new(),
            top_kept: false,
            window_start: start.as_usize(),
            window_end: start.as_usize() + size,
            generation: 0,
            random: None,
        })
    }

    /// The first byte of the window.
    pub fn window_start(&self) -> VirtAddr {
        VirtAddr::new(self.window_start)
    }

    /// The bytes of the window.
    pub fn window_size(&self) -> usize {
        self.window_end - self.window_start
    }

    /// The number of regions.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// The number of areas.
    pub fn area_count(&self) -> usize {
        self.areas.len()
    }

    /// Counts changes: every successful reserve, free, attach and detach adds one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Randomised placement: a searched attach or area starts at a pseudo-random free place
    /// (from this seed on) instead of the first one. `None` returns to first fit.
    pub fn set_randomized(&mut self, seed: Option<u64>) {
        self.random = seed.map(|s| s | 1);
    }

    fn next_random(&mut self) -> Option<u64> {
        let s = self.random.as_mut()?;
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        Some(s.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    /// Searches `tree` for `size` bytes aligned to `align` in `[lo, hi)`; randomised when
    /// asked to (a random aligned start, then first fit from there, then from `lo`).
    fn place(&mut self, which: Which, lo: usize, hi: usize, size: usize, align: usize) -> Option<usize> {
        let random = if hi > lo && hi - lo > size { self.next_random() } else { None };
        let tree_fit = |m: &Self, lo, hi| match which {
            Which::Top if m.top_kept => m.top.first_fit(lo, hi, size, align),
            Which::Top | Which::Regions => m.regions.first_fit(lo, hi, size, align),
        };
        if let Some(r) = random {
            let span = (hi - lo - size) as u64;
            let hint = (lo + (r % (span + 1)) as usize) & !(align - 1);
            if let Some(a) = tree_fit(self, hint.max(lo), hi) {
                return Some(a);
            }
        }
        tree_fit(self, lo, hi)
    }

    fn align_bytes(align: u8) -> Option<usize> {
        (align <= MAX_ALIGN).then(|| 1usize << align.max(PAGE_SHIFT as u8))
    }
}
