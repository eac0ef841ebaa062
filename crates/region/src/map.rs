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

use alloc::vec::Vec;

use memkit_types::{Access, CacheMode, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};

use crate::backing::{Attachment, Backing};
use crate::error::{AttachError, DetachError, FaultError, FindError, FreeAreaError, ReserveError, WindowError};
use crate::flags::{DETACH_AGAIN, DetachFlags, DetachResult, Flags};
use crate::mmu::{Mmu, Translation};
use crate::tree::GapTree;
#[cfg(any(test, feature = "check"))]
use crate::tree::TreeStats;

/// The largest alignment (log2) a search accepts: the 47-bit address width.
pub const MAX_ALIGN: u8 = 47;

/// What `attach` should attach, where and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest<Id> {
    /// The fixed address; the hint with `SEARCH_ADDR`; an address in the area with `IN_AREA`.
    pub start: VirtAddr,
    /// Bytes to attach, rounded up to whole pages.
    pub size: usize,
    /// `SEARCH_ADDR`, `IN_AREA`, `EAGER_MAP`, `DETACH_FREE`.
    pub flags: Flags,
    /// The rights of the region: at most what the handle allows.
    pub rights: Rights,
    /// How the region's pages are cached.
    pub cache: CacheMode,
    /// The dataspace.
    pub dataspace: Id,
    /// Where in the dataspace the region starts (bytes, page aligned).
    pub offset: u64,
    /// The alignment of a searched start (log2, at least [`PAGE_SHIFT`]).
    pub align: u8,
    /// With `SEARCH_ADDR`: the searched region must end at or below this address (`None`:
    /// the end of the window or area).
    pub limit: Option<VirtAddr>,
}

impl<Id> AttachRequest<Id> {
    /// Attach `size` bytes of `dataspace` from offset 0 with `rights`, at address 0 (to be
    /// changed with [`at`](Self::at) or [`search`](Self::search)), write-back, page aligned.
    pub const fn new(dataspace: Id, size: usize, rights: Rights) -> Self {
        AttachRequest {
            start: VirtAddr::zero(),
            size,
            flags: Flags::empty(),
            rights,
            cache: CacheMode::WriteBack,
            dataspace,
            offset: 0,
            align: PAGE_SHIFT as u8,
            limit: None,
        }
    }

    /// With a searched region ending at or below `limit`.
    #[must_use]
    pub const fn below(mut self, limit: VirtAddr) -> Self {
        self.limit = Some(limit);
        self
    }

    /// At the fixed address `start`.
    #[must_use]
    pub const fn at(mut self, start: VirtAddr) -> Self {
        self.start = start;
        self
    }

    /// Searched at or above `hint` (`SEARCH_ADDR`).
    #[must_use]
    pub fn search(mut self, hint: VirtAddr) -> Self {
        self.start = hint;
        self.flags |= Flags::SEARCH_ADDR;
        self
    }

    /// With these flags added.
    #[must_use]
    pub fn flags(mut self, flags: Flags) -> Self {
        self.flags |= flags;
        self
    }

    /// From `offset` bytes into the dataspace.
    #[must_use]
    pub const fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// With a searched start aligned to `2^align` bytes.
    #[must_use]
    pub const fn align(mut self, align: u8) -> Self {
        self.align = align;
        self
    }

    /// With this cache mode.
    #[must_use]
    pub const fn cache(mut self, cache: CacheMode) -> Self {
        self.cache = cache;
        self
    }
}

/// A region as `find` and `get_regions` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo<Id> {
    /// First byte.
    pub start: VirtAddr,
    /// Bytes (whole pages).
    pub size: usize,
    /// Offset of the first byte in the dataspace.
    pub offset: u64,
    /// The region's rights.
    pub rights: Rights,
    /// The region's cache mode.
    pub cache: CacheMode,
    /// The region's flags (`EAGER_MAP`, `DETACH_FREE`).
    pub flags: Flags,
    /// The dataspace.
    pub dataspace: Id,
}

impl<Id> RegionInfo<Id> {
    /// Where the region shows its dataspace (what a [`Backing`] is told about it).
    pub const fn attachment(&self) -> Attachment {
        Attachment { start: self.start, size: self.size, offset: self.offset, rights: self.rights }
    }
}

/// An area as `find` and `get_areas` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaInfo {
    /// First byte.
    pub start: VirtAddr,
    /// Bytes (whole pages).
    pub size: usize,
    /// `RESERVED`, or empty for an area that accepts `IN_AREA` attachments.
    pub flags: Flags,
}

/// What `find` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<Id> {
    /// A region overlaps the range.
    Region(RegionInfo<Id>),
    /// No region, but an area overlaps the range.
    Area(AreaInfo),
}

impl<Id> Found<Id> {
    /// The start of what was found.
    pub const fn start(&self) -> VirtAddr {
        match self {
            Found::Region(r) => r.start,
            Found::Area(a) => a.start,
        }
    }

    /// The size of what was found.
    pub const fn size(&self) -> usize {
        match self {
            Found::Region(r) => r.size,
            Found::Area(a) => a.size,
        }
    }

    /// The flags as the seed returns them: the region's, or the area's with `IN_AREA` set.
    pub fn flags(&self) -> Flags {
        match self {
            Found::Region(r) => r.flags,
            Found::Area(a) => a.flags | Flags::IN_AREA,
        }
    }
}

/// The outcome of one `get_regions` or `get_areas` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    /// Entries written to the buffer.
    pub count: usize,
    /// The map's generation when they were read: when it differs between two calls, the
    /// map changed while the caller paged through it.
    pub generation: u64,
    /// Where the next call should start (one past the end of the last entry), or `None`
    /// when the listing is complete.
    pub next: Option<VirtAddr>,
}

/// What one detach step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached<Id> {
    /// `Detached_ds`, `Kept_ds` or `Split_ds`.
    pub result: DetachResult,
    /// `Detach_again`: other regions still overlap the range.
    pub again: bool,
    /// First byte of the detached part.
    pub start: VirtAddr,
    /// Bytes of the detached part.
    pub size: usize,
    /// Offset in the dataspace of the detached part.
    pub offset: u64,
    /// The dataspace that is affected.
    pub dataspace: Id,
}

impl<Id> Detached<Id> {
    /// The seed's return value: the result, with [`DETACH_AGAIN`] added when more remains.
    pub const fn code(&self) -> i32 {
        self.result as i32 | if self.again { DETACH_AGAIN } else { 0 }
    }
}

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

    /// Attaches a dataspace (`attach`) and returns the region's start.
    ///
    /// - At `req.start`, or with `SEARCH_ADDR` at the first free place at or above it
    ///   aligned to `2^req.align`.
    /// - With `IN_AREA` inside the area containing `req.start` (fixed or searched there);
    ///   without it, never inside an area.
    /// - With `EAGER_MAP` every page is mapped through `mmu` before the call returns.
    /// - `req.rights` must be within what the handle allows.
    ///
    /// # Errors
    /// See [`AttachError`]; a failed attach changes nothing in the map or the MMU.
    pub fn attach<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        req: &AttachRequest<Id>,
    ) -> Result<VirtAddr, AttachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if req.flags.contains(Flags::RESERVED) {
            return Err(AttachError::InvalidFlags(req.flags));
        }
        if req.size == 0 {
            return Err(AttachError::ZeroSize);
        }
        let size = page_round(req.size).ok_or(AttachError::SizeOverflow(req.size))?;
        if !req.offset.is_multiple_of(PAGE_SIZE as u64) {
            return Err(AttachError::UnalignedOffset(req.offset));
        }
        if req.offset.checked_add(size as u64).is_none() {
            return Err(AttachError::SizeOverflow(req.size));
        }
        let align = Self::align_bytes(req.align).ok_or(AttachError::BadAlignment(req.align))?;
        let allowed = backing.rights(req.dataspace).ok_or(AttachError::UnknownDataspace)?;
        if !allowed.contains(req.rights) {
            return Err(AttachError::PermissionDenied { requested: req.rights, allowed });
        }
        let s = req.start.as_usize();
        let in_area = req.flags.contains(Flags::IN_AREA);
        let (lo, hi, which) = if in_area {
            let a = self.areas.containing(s).ok_or(AttachError::NoArea(req.start))?;
            if a.value.contains(Flags::RESERVED) {
                return Err(AttachError::ReservedArea(VirtAddr::new(a.start)));
            }
            (a.start, a.end, Which::Regions)
        } else {
            (self.window_start, self.window_end, Which::Top)
        };
        let at = if req.flags.contains(Flags::SEARCH_ADDR) {
            let hi = req.limit.map_or(hi, |l| hi.min(l.as_usize()));
            self.place(which, s.max(lo), hi, size, align).ok_or(AttachError::NoSpace(size))?
        } else {
            if !req.start.is_aligned(PAGE_SIZE) {
                return Err(AttachError::Unaligned(req.start));
            }
            let end = s.checked_add(size).ok_or(AttachError::NotAvailable(req.start))?;
            let taken = match which {
                Which::Top => self.top_overlaps(s, end),
                Which::Regions => self.regions.overlaps(s, end),
            };
            if s < lo || end > hi || taken {
                return Err(AttachError::NotAvailable(req.start));
            }
            s
        };
        let data = RegionData {
            dataspace: req.dataspace,
            offset: req.offset,
            rights: req.rights,
            cache: req.cache,
            flags: (req.flags & RegionData::<Id>::KEPT).bits() as u8,
            in_area,
        };
        if req.flags.contains(Flags::EAGER_MAP) {
            Self::map_eagerly(backing, mmu, at, size, &data)?;
        }
        let attachment = Attachment { start: VirtAddr::new(at), size, offset: req.offset, rights: req.rights };
        backing.attached(req.dataspace, attachment);
        self.insert_region(at, at + size, data);
        self.generation += 1;
        Ok(VirtAddr::new(at))
    }

    /// Maps every page of a new region; on failure unmaps what it mapped.
    fn map_eagerly<B, M>(
        backing: &mut B,
        mmu: &mut M,
        at: usize,
        size: usize,
        r: &RegionData<Id>,
    ) -> Result<(), AttachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let access = if r.rights.contains(Rights::WRITE) {
            Access::Write
        } else if r.rights.contains(Rights::READ) {
            Access::Read
        } else if r.rights.contains(Rights::EXECUTE) {
            Access::Execute
        } else {
            return Ok(());
        };
        let mut done = 0;
        let result = loop {
            if done == size {
                break Ok(());
            }
            let (frame, now) = match backing.map(r.dataspace, r.offset + done as u64, access) {
                Ok(x) => x,
                Err(e) => break Err(AttachError::Backing(e)),
            };
            match mmu.map(page(at + done), frame, PageCount::new(1), r.rights & now, r.cache) {
                Ok(flush) => flush.flush(mmu),
                Err(e) => break Err(AttachError::Mmu(e)),
            }
            done += PAGE_SIZE;
        };
        if result.is_err() && done > 0 {
            // Undo: the pages were free before, and the same range unmaps without error.
            if let Ok(flush) = mmu.unmap(page(at), pages(done)) {
                flush.flush(mmu);
            }
        }
        result
    }

    /// One detach step over the pages holding `[start, start + size)` (the seed's
    /// `detach(start, size, mem, task)` with its flags):
    ///
    /// - `OVERLAP`: the lowest region overlapping the range is detached whole
    ///   (`DetachedDs`).
    /// - `EXACT` (or no mode): only the range is detached: a region inside it whole
    ///   (`DetachedDs`), its head or tail (`KeptDs`), or its middle, splitting it
    ///   (`SplitDs`).
    /// - `KEEP`: a region attached with `DETACH_FREE` does not free the detached memory.
    ///
    /// `again` is set when other regions still overlap the range. The detached range is
    /// unmapped through `mmu`.
    ///
    /// # Errors
    /// [`DetachError::NoRegion`] when no region overlaps the range, [`DetachError::Mmu`]
    /// when unmapping fails (nothing changes then), the `EINVAL` errors for malformed
    /// arguments.
    pub fn detach<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<Id>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        if flags.contains(DetachFlags::EXACT | DetachFlags::OVERLAP) {
            return Err(DetachError::InvalidFlags(flags.bits()));
        }
        if size == 0 {
            return Err(DetachError::ZeroSize);
        }
        let a = start.as_usize();
        let e = a.checked_add(size).and_then(page_round).ok_or(DetachError::SizeOverflow(size))?;
        let s = a & !(PAGE_SIZE - 1);
        let g = self.regions.first_overlapping(s, e).ok_or(DetachError::NoRegion(start))?;
        let whole = flags.contains(DetachFlags::OVERLAP) || (s <= g.start && e >= g.end);
        let (cut_start, cut_end, result) = if whole {
            (g.start, g.end, DetachResult::DetachedDs)
        } else if s <= g.start {
            (g.start, e, DetachResult::KeptDs)
        } else if e >= g.end {
            (s, g.end, DetachResult::KeptDs)
        } else {
            (s, e, DetachResult::SplitDs)
        };
        let cut = cut_end - cut_start;
        mmu.unmap(page(cut_start), pages(cut)).map_err(DetachError::Mmu)?.flush(mmu);
        let d = g.value;
        let cut_offset = d.offset + (cut_start - g.start) as u64;
        if d.flags().contains(Flags::DETACH_FREE) && !flags.contains(DetachFlags::KEEP) {
            backing.release(d.dataspace, cut_offset, cut as u64);
        }
        self.remove_region(g.start, d.in_area);
        let old =
            Attachment { start: VirtAddr::new(g.start), size: g.end - g.start, offset: d.offset, rights: d.rights };
        let head = (cut_start > g.start).then(|| Attachment { size: cut_start - g.start, ..old });
        let tail = (cut_end < g.end).then(|| Attachment {
            start: VirtAddr::new(cut_end),
            size: g.end - cut_end,
            offset: d.offset + (cut_end - g.start) as u64,
            rights: d.rights,
        });
        if let Some(h) = head {
            self.insert_region(g.start, cut_start, d);
            backing.trimmed(d.dataspace, old, h);
        }
        if let Some(t) = tail {
            self.insert_region(cut_end, g.end, RegionData { offset: t.offset, ..d });
            // A split's tail is a new region; a trimmed head leaves the tail as the region.
            if head.is_some() {
                backing.attached(d.dataspace, t);
            } else {
                backing.trimmed(d.dataspace, old, t);
            }
        }
        if head.is_none() && tail.is_none() {
            backing.detached(d.dataspace, old);
        }
        self.generation += 1;
        Ok(Detached {
            result,
            again: self.regions.overlaps(s, e),
            start: VirtAddr::new(cut_start),
            size: cut,
            offset: cut_offset,
            dataspace: d.dataspace,
        })
    }

    fn remove_region(&mut self, start: usize, in_area: bool) {
        self.regions.remove(start);
        if !in_area && self.top_kept {
            self.top.remove(start);
        }
    }

    fn insert_region(&mut self, start: usize, end: usize, d: RegionData<Id>) {
        self.regions.insert(start, end, d);
        if !d.in_area && self.top_kept {
            self.top.insert(start, end, ());
        }
    }

    /// Whether `[start, end)` overlaps an area or a region outside every area.
    fn top_overlaps(&self, start: usize, end: usize) -> bool {
        if self.top_kept { self.top.overlaps(start, end) } else { self.regions.overlaps(start, end) }
    }

    /// Detaches the whole region containing `addr` (the seed's `detach(addr, mem, task)`:
    /// `Detach_overlap` over one byte).
    ///
    /// # Errors
    /// As [`detach`](Self::detach).
    pub fn detach_at<B, M>(&mut self, backing: &mut B, mmu: &mut M, addr: VirtAddr) -> Result<Detached<Id>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        self.detach(backing, mmu, addr, 1, DetachFlags::OVERLAP)
    }

    /// Detaches everything in `[start, start + size)` in one call (repeating
    /// [`detach`](Self::detach) while it reports `again`) and reports every step.
    ///
    /// # Errors
    /// As [`detach`](Self::detach) for the first step (nothing changes then); a later step
    /// cannot fail for want of a region, and an MMU error there stops the loop with the
    /// steps done so far kept.
    pub fn detach_all<B, M>(
        &mut self,
        backing: &mut B,
        mmu: &mut M,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Vec<Detached<Id>>, DetachError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        let mut steps = Vec::new();
        loop {
            match self.detach(backing, mmu, start, size, flags) {
                Ok(d) => {
                    steps.push(d);
                    if !d.again {
                        return Ok(steps);
                    }
                }
                Err(e) if steps.is_empty() => return Err(e),
                Err(_) => return Ok(steps),
            }
        }
    }

    fn region_info(e: crate::tree::Entry<RegionData<Id>>) -> RegionInfo<Id> {
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

    /// Resolves a page fault (the seed's pager `page_fault`): finds the region containing
    /// `addr`, asks `backing` for the frame (allocating it, or breaking copy-on-write on a
    /// write) and maps the page through `mmu` with the region's rights, intersected with
    /// what the backing allows now, and its cache mode. Allocates no heap memory itself.
    ///
    /// # Errors
    /// [`FaultError::NoRegion`] outside every region, [`FaultError::Forbidden`] when the
    /// rights do not allow `access`, [`FaultError::Backing`], [`FaultError::Mmu`]: nothing
    /// is mapped then.
    pub fn resolve<B, M>(
        &self,
        backing: &mut B,
        mmu: &mut M,
        addr: VirtAddr,
        access: Access,
    ) -> Result<Translation, FaultError>
    where
        B: Backing<Id = Id> + ?Sized,
        M: Mmu + ?Sized,
    {
        // The page's current translation first: where the MMU keeps it depends on the
        // address alone, so its cache misses overlap the region lookup's.
        let pg = Page::containing_address(addr);
        let current = mmu.translate(pg);
        let r = self.regions.containing_cached(addr.as_usize()).ok_or(FaultError::NoRegion(addr))?;
        let d = r.value;
        if !d.rights.allows(access) {
            return Err(FaultError::Forbidden { addr, access, rights: d.rights });
        }
        let offset = d.offset + (pg.start_address().as_usize() - r.start) as u64;
        let (frame, now) = backing.map(d.dataspace, offset, access).map_err(FaultError::Backing)?;
        let rights = d.rights & now;
        if !rights.allows(access) {
            return Err(FaultError::Forbidden { addr, access, rights });
        }
        let one = PageCount::new(1);
        let t = Translation { frame, rights, cache: d.cache };
        match current {
            Some(old) if old == t => {}
            Some(old) if old.frame == frame && old.cache == d.cache => {
                mmu.protect(pg, one, rights).map_err(FaultError::Mmu)?.flush(mmu);
            }
            Some(_) => {
                mmu.unmap(pg, one).map_err(FaultError::Mmu)?.flush(mmu);
                mmu.map(pg, frame, one, rights, d.cache).map_err(FaultError::Mmu)?.flush(mmu);
            }
            None => mmu.map(pg, frame, one, rights, d.cache).map_err(FaultError::Mmu)?.flush(mmu),
        }
        Ok(t)
    }

    /// Takes `keep`'s complement away from the mapped pages that show bytes
    /// `offset .. offset + size` of `dataspace` (every right when `keep` is empty: the pages
    /// are unmapped). The next access faults and is resolved again. Visits every region:
    /// this is for a map used on its own; a set of spaces keeps a reverse index from each
    /// dataspace to its [`Attachment`]s and calls [`Attachment::revoke`] on those alone
    /// (`memkit-spaces`). Allocates nothing.
    ///
    /// # Errors
    /// The MMU's first error; the other regions are still processed.
    pub fn revoke<M: Mmu + ?Sized>(
        &self,
        mmu: &mut M,
        dataspace: Id,
        offset: u64,
        size: u64,
        keep: Rights,
    ) -> Result<(), crate::mmu::MapError> {
        let mut result = Ok(());
        self.regions.for_each(|r| {
            if r.value.dataspace != dataspace {
                return;
            }
            if let Err(e) = Self::region_info(r).attachment().revoke(mmu, offset, size, keep)
                && result.is_ok()
            {
                result = Err(e);
            }
        });
        result
    }

    /// Unmaps every page that shows byte `offset` of `dataspace` through the frame `stale`
    /// (after a copy-on-write break gave that page a new frame). Visits every region, as
    /// [`revoke`](Self::revoke) does ([`Attachment::unmap_stale`] is the one-region step).
    /// Allocates nothing.
    pub fn unmap_stale<M: Mmu + ?Sized>(&self, mmu: &mut M, dataspace: Id, offset: u64, stale: memkit_types::Frame) {
        self.regions.for_each(|r| {
            if r.value.dataspace == dataspace {
                Self::region_info(r).attachment().unmap_stale(mmu, offset, stale);
            }
        });
    }

    /// The structural changes of the map's trees so far (regions, areas, and the tree of
    /// areas and regions outside them, added up), for tests that show which paths of the
    /// trees they reached.
    #[cfg(any(test, feature = "check"))]
    pub fn tree_stats(&self) -> TreeStats {
        self.regions.stats().plus(&self.areas.stats()).plus(&self.top.stats())
    }

    /// Checks every invariant of the map.
    ///
    /// # Panics
    /// On the first broken invariant, naming it.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.regions.check_invariants();
        self.areas.check_invariants();
        self.top.check_invariants();
        let in_window = |s: usize, e: usize| s >= self.window_start && e <= self.window_end;
        let mut expected_top = Vec::new();
        for a in self.areas.entries() {
            assert!(in_window(a.start, a.end), "area outside the window");
            assert!(a.start.is_multiple_of(PAGE_SIZE) && a.end.is_multiple_of(PAGE_SIZE), "area not page aligned");
            assert!((Flags::RESERVED).contains(a.value), "area with region flags");
            expected_top.push((a.start, a.end));
        }
        for r in self.regions.entries() {
            assert!(in_window(r.start, r.end), "region outside the window");
            assert!(r.start.is_multiple_of(PAGE_SIZE) && r.end.is_multiple_of(PAGE_SIZE), "region not page aligned");
            assert!(r.value.offset.is_multiple_of(PAGE_SIZE as u64), "offset not page aligned");
            if r.value.in_area {
                let a = self.areas.containing(r.start).expect("in-area region outside every area");
                assert!(r.end <= a.end, "region sticks out of its area");
                assert!(!a.value.contains(Flags::RESERVED), "region in a reserved area");
            } else {
                assert!(!self.areas.overlaps(r.start, r.end), "region outside areas overlaps an area");
                expected_top.push((r.start, r.end));
            }
        }
        expected_top.sort_unstable();
        let top: Vec<(usize, usize)> = self.top.entries().iter().map(|e| (e.start, e.end)).collect();
        if self.top_kept {
            assert_eq!(top, expected_top, "top tree is not areas + regions outside areas");
        } else {
            assert!(top.is_empty() && self.areas.len() == 0, "top tree or areas before the first area");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Top,
    Regions,
}
