//! What callers hand a region map and what it answers: attach requests, region and area
//! descriptions, lookups, listings and detached regions.

use memkit_types::{CacheMode, PAGE_SHIFT, Rights, VirtAddr};

use crate::backing::Attachment;
use crate::flags::{DETACH_AGAIN, DetachResult, Flags};

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
    /// At a fixed address, replace the regions there (`MAP_FIXED`): the parts of them in
    /// the range are detached (released with `DETACH_FREE`) in the same step.
    pub replace: bool,
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
            replace: false,
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

    /// Replacing the regions in the fixed range (`MAP_FIXED`; see [`replace`](Self::replace)).
    #[must_use]
    pub const fn replacing(mut self) -> Self {
        self.replace = true;
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
    /// Where the region shows its dataspace (what a [`Backing`](crate::Backing) is told about it).
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
