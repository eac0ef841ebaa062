//! The header's layout: the fixed words (magic, area, counters, hints), the geometry of the
//! bitmaps and summaries computed from the area alone, and the seed's header-size and
//! header-placement functions.

use memkit_types::{Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr};

use crate::area::MemoryArea;
use crate::error::{AreaError, GetHeaderError};

/// The header's first word.
pub const HEADER_MAGIC: u64 = 0x6d6b_7068_7973_0001;

pub(super) const W_MAGIC: usize = 0;
pub(super) const W_START: usize = 1;
pub(super) const W_END: usize = 2;
pub(super) const W_HEADER_START: usize = 3;
pub(super) const W_HEADER_FRAMES: usize = 4;
pub(super) const W_FREE: usize = 5;
pub(super) const W_USABLE: usize = 6;
pub(super) const W_HINT: usize = 7;
pub(super) const W_WORDS: usize = 8;
pub(super) const W_CHECK: usize = 9;
/// The smallest order >= 6 known to have no free block (`u64::MAX`: none known). Valid until
/// a bit at level 1 or above is set: only that can make a block of order >= 6 free.
pub(super) const W_NO_FIT: usize = 10;
/// Word `W_ORDER_HINT + k` (k >= 6): no word of level `k / 6` below this index holds a free
/// block of order `k`, so searches start there.
pub(super) const W_ORDER_HINT: usize = 16;
/// Words before the first bitmap.
pub(super) const FIXED_WORDS: usize = W_ORDER_HINT + Order::MAX.get() as usize + 1;

/// Levels of "fully free unit" bitmaps: level `L` units are `64^L` frames; 8 levels reach
/// 2^48 frames, beyond the physical limit.
pub(super) const MAX_LEVELS: usize = 8;
/// Summary layers over one level's bitmap (64-ary): 8 reach 2^48 words.
pub(super) const MAX_LAYERS: usize = 8;

/// A bitmap inside the header: `words` words from word `offset` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Bitmap {
    pub(super) offset: usize,
    pub(super) words: usize,
}

/// One level: its bitmap (word `i` is absolute word `lo + i`) and the summaries over it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Level {
    pub(super) bits: Bitmap,
    pub(super) lo: u64,
    pub(super) layers: usize,
    pub(super) tree: [Bitmap; MAX_LAYERS],
}

/// Where everything is in a header for a given area. Computed from the area alone, so the
/// same area always gives the same header layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// First frame number of the area.
    pub(super) start: u64,
    /// One past the last frame number.
    pub(super) end: u64,
    pub(super) levels: usize,
    pub(super) level: [Level; MAX_LEVELS],
    pub(super) reserved: Bitmap,
    pub(super) total_words: usize,
    pub(super) max_order: u8,
}

impl Geometry {
    pub(super) fn new(start: u64, end: u64) -> Geometry {
        let span = end - start;
        let mut g = Geometry {
            start,
            end,
            levels: 0,
            level: [Level::default(); MAX_LEVELS],
            reserved: Bitmap::default(),
            total_words: 0,
            max_order: 0,
        };
        let mut offset = FIXED_WORDS;
        // Level 0 and R share the frame indexing.
        let (mut us, mut ue) = (start, end);
        let mut l = 0;
        loop {
            let lo = us / 64;
            let hi = ue.div_ceil(64);
            let words = (hi - lo) as usize;
            let bits = Bitmap { offset, words };
            offset += words;
            if l == 0 {
                g.reserved = Bitmap { offset, words };
                offset += words;
            }
            let mut lv = Level { bits, lo, layers: 0, tree: [Bitmap::default(); MAX_LAYERS] };
            let mut cur = words;
            while cur > 1 {
                let w = cur.div_ceil(64);
                lv.tree[lv.layers] = Bitmap { offset, words: w };
                lv.layers += 1;
                offset += w;
                cur = w;
            }
            g.level[l] = lv;
            l += 1;
            // Level l-1 reaches blocks of order 6(l-1)+5; stop once that covers the span.
            if 6 * l as u32 >= 64 || (1u64 << (6 * l)) > span || l == MAX_LEVELS {
                break;
            }
            us = lo;
            ue = hi;
        }
        g.levels = l;
        g.total_words = offset;
        g.max_order = (63 - span.leading_zeros()).min(u32::from(Order::MAX.get())) as u8;
        g
    }

    pub(super) fn checksum(&self) -> u64 {
        (self.start.rotate_left(7) ^ self.end.rotate_left(29) ^ (self.total_words as u64).rotate_left(41))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The frame range of a 4 KiB aligned, non-empty area inside the physical limit.
pub(super) fn area_frames(area: MemoryArea) -> Result<(u64, u64), AreaError> {
    if !area.is_frame_aligned() {
        return Err(AreaError::Unaligned(area));
    }
    if area.size == 0 {
        return Err(AreaError::Empty(area));
    }
    match area.start.as_u64().checked_add(area.size) {
        Some(end) if end <= PhysAddr::LIMIT => Ok((area.start.as_u64() >> PAGE_SHIFT, end >> PAGE_SHIFT)),
        _ => Err(AreaError::TooLarge(area)),
    }
}

/// The seed's `pmallocator_get_header_size`: the bytes of header an area needs, a multiple of
/// 4 KiB.
///
/// # Errors
/// [`AreaError`] when the area is not 4 KiB aligned, empty or past the physical limit.
pub fn header_size(area: MemoryArea) -> Result<u64, AreaError> {
    let (s, e) = area_frames(area)?;
    Ok(header_bytes(&Geometry::new(s, e)))
}

pub(super) fn header_bytes(g: &Geometry) -> u64 {
    ((g.total_words * 8) as u64).next_multiple_of(PAGE_SIZE as u64)
}

/// The number of `u64` words the header mapping of `area` must hold (its header size / 8).
///
/// # Errors
/// [`AreaError`] when the area is not 4 KiB aligned, empty or past the physical limit.
pub fn header_words(area: MemoryArea) -> Result<usize, AreaError> {
    Ok((header_size(area)? / 8) as usize)
}

/// The seed's `pmallocator_get_header`: finds a 4 KiB aligned region of
/// [`header_size`]`(area)` bytes inside `area` that avoids every reserved region, as high in
/// the area as possible (so that low memory stays for users that need it).
///
/// `reserved` enumerates the reserved regions (the seed's enumerator); it is walked several
/// times, hence `Clone`. Regions need not be aligned or inside the area.
///
/// # Errors
/// [`GetHeaderError::OutOfMemory`] when no such region exists,
/// [`GetHeaderError::BadArea`] when the area itself cannot be managed.
pub fn get_header<I>(area: MemoryArea, reserved: I) -> Result<MemoryArea, GetHeaderError>
where
    I: IntoIterator<Item = MemoryArea> + Clone,
{
    let size = header_size(area).map_err(GetHeaderError::BadArea)?;
    let needed = GetHeaderError::OutOfMemory { needed: size };
    let lowest = area.start.as_u64();
    let mut top = area.end().checked_sub(size).ok_or(needed)?;
    if top < lowest {
        return Err(needed);
    }
    // Move the candidate down below every reserved region it overlaps until none does.
    loop {
        let candidate = MemoryArea::new(PhysAddr::new(top), size);
        let mut moved = false;
        for r in reserved.clone() {
            if candidate.overlaps(r) {
                let below = r.start.as_u64().checked_sub(size).ok_or(needed)? & !(PAGE_SIZE as u64 - 1);
                if below < lowest {
                    return Err(needed);
                }
                top = top.min(below);
                moved = true;
            }
        }
        if !moved {
            return Ok(candidate);
        }
    }
}
