//! Attach, area and detach flags, and detach results (the seed's `Rm::F`,
//! `Detach_flags`, `Detach_result`).

use memkit_types::CacheMode;

bitflags::bitflags! {
    /// Flags of `attach` and `reserve_area` (the seed's `Rm::F` attach and region flags).
    ///
    /// Rights and the cache mode are typed fields of their own ([`memkit_types::Rights`],
    /// [`CacheMode`]) rather than bits of this word.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u32 {
        /// `Search_addr`: search a free place at or above the start address.
        const SEARCH_ADDR = 1 << 0;
        /// `In_area`: attach inside the area containing the start address. Set by `find`
        /// when only an area covers the address.
        const IN_AREA = 1 << 1;
        /// `Eager_map`: map every page at attach time.
        const EAGER_MAP = 1 << 2;
        /// `Detach_free`: free the detached part of the dataspace on detach.
        const DETACH_FREE = 1 << 3;
        /// `Reserved`: an area that accepts no attachment.
        const RESERVED = 1 << 4;
    }
}

bitflags::bitflags! {
    /// Flags of `detach` (the seed's `Detach_flags`, with its values).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DetachFlags: u8 {
        /// `Detach_exact`: unmap exactly the given range (split or trim regions).
        const EXACT = 1;
        /// `Detach_overlap`: detach every whole region that overlaps the range.
        const OVERLAP = 2;
        /// `Detach_keep`: do not free the dataspace's memory even with `DETACH_FREE`.
        const KEEP = 4;
    }
}

/// What one detach step did (the seed's `Detach_result`, with its values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DetachResult {
    /// `Detached_ds`: a whole region was detached.
    DetachedDs = 0,
    /// `Kept_ds`: the head or tail of a region was detached; the rest stays attached.
    KeptDs = 1,
    /// `Split_ds`: the middle of a region was detached; the region is now two.
    SplitDs = 2,
}

/// `Detach_result_mask`: the bits of a result code that hold the [`DetachResult`].
pub const DETACH_RESULT_MASK: i32 = 3;
/// `Detach_again`: the bit of a result code that says more regions overlap the range.
pub const DETACH_AGAIN: i32 = 4;
/// `Caching_shift`: where the cache mode sits in the seed's flag word; see
/// [`cache_bits`].
pub const CACHING_SHIFT: u32 = 4;

/// The cache mode as the seed's flag word encodes it (`mode << Caching_shift`): normal
/// (write-back) 0, bufferable (write-combining) 1, uncached 2.
#[must_use]
pub const fn cache_bits(mode: CacheMode) -> u32 {
    let m = match mode {
        CacheMode::WriteBack => 0,
        CacheMode::WriteCombining => 1,
        CacheMode::Uncached => 2,
    };
    m << CACHING_SHIFT
}
