//! Size classes: which block size serves a request, and how many pages a span of each
//! class takes.
//!
//! ```text
//!   16 32 48 ... 256 | 272 288 ... 512 | 544 ... 1024 | ... | 30720 32768
//!   step 16          | 16 steps per doubling (at most 6.25 % rounding, ~3 % on average)
//! ```
//!
//! A span holds at most [`MAX_BLOCKS`] blocks so that its allocation bitmap fits in its
//! descriptor; its page count is chosen to waste little at its tail.

use memkit_types::PAGE_SIZE;

/// Classes per doubling above 256 bytes at most; no step is finer than 16 bytes.
const STEPS: usize = 8;
/// The largest block a span serves; larger requests take whole pages.
pub(crate) const MAX_SMALL: usize = 32 * 1024;
/// Classes in all.
pub(crate) const CLASS_COUNT: usize = count_classes();
/// Blocks per span at most (bits of a descriptor's bitmap).
pub(crate) const MAX_BLOCKS: usize = 512;
/// Pages per span at most.
const MAX_SPAN_PAGES: usize = 64;

/// One size class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Class {
    /// Block size in bytes (a multiple of 16).
    pub(crate) size: u32,
    /// Pages per span.
    pub(crate) pages: u32,
    /// Blocks per span.
    pub(crate) blocks: u32,
    /// `ceil(2^40 / size)`: `offset * magic >> 40` is `offset / size` for every offset
    /// inside a span (offsets below 2^18, sizes below 2^16: the error stays under 1/size).
    pub(crate) magic: u64,
}

impl Class {
    /// `offset / size` without a division, for offsets inside a span.
    #[inline]
    pub(crate) const fn index_of(&self, offset: usize) -> usize {
        ((offset as u64 * self.magic) >> 40) as usize
    }
}

/// The step between classes in the doubling `2^k .. 2^(k+1)`.
const fn step(k: usize) -> usize {
    let s = (1 << k) / STEPS;
    if s < 16 { 16 } else { s }
}

const fn count_classes() -> usize {
    let mut n = 16;
    let mut k = 8;
    while (1 << k) < MAX_SMALL {
        n += (1 << k) / step(k);
        k += 1;
    }
    n
}

/// The nominal sizes: 16-byte steps up to 256, then [`STEPS`] per doubling.
const fn nominal_sizes() -> [usize; CLASS_COUNT] {
    let mut out = [0; CLASS_COUNT];
    let mut i = 0;
    while i < 16 {
        out[i] = (i + 1) * 16;
        i += 1;
    }
    let mut k = 8;
    while (1 << k) < MAX_SMALL {
        let mut j = 1;
        while j <= (1 << k) / step(k) {
            out[i] = (1 << k) + j * step(k);
            i += 1;
            j += 1;
        }
        k += 1;
    }
    out
}

/// Pages of a span of blocks of `size` bytes: at least one page and room for about four
/// blocks (a partly used span of a rarely used class holds little beyond its live blocks,
/// and a span still gives neighbouring free blocks to merge when the page source is dry),
/// then the page count nearby that wastes least at the span's tail.
const fn span_pages(size: usize) -> usize {
    let target = if size * 4 > 4096 { size * 4 } else { 4096 };
    let cap = size * MAX_BLOCKS;
    let want = if target < cap { target } else { cap };
    let mut lo = want.div_ceil(PAGE_SIZE);
    if lo > MAX_SPAN_PAGES {
        lo = MAX_SPAN_PAGES;
    }
    let mut best = lo;
    let mut best_waste_ppm = usize::MAX;
    let mut p = lo;
    let hi = lo + if lo / 2 > 4 { lo / 2 } else { 4 };
    while p <= hi && p <= MAX_SPAN_PAGES {
        let bytes = p * PAGE_SIZE;
        let mut blocks = bytes / size;
        if blocks > MAX_BLOCKS {
            blocks = MAX_BLOCKS;
        }
        let waste_ppm = (bytes - blocks * size) * 1_000_000 / bytes;
        if waste_ppm < best_waste_ppm {
            best = p;
            best_waste_ppm = waste_ppm;
        }
        p += 1;
    }
    best
}

/// Each class's span holds as many blocks as its nominal size allows, and the block size
/// grows (in 16-byte steps, staying below the next class) to take the span's tail: the
/// bytes would be lost otherwise, and larger blocks round fewer requests up to the next
/// class.
const fn build() -> [Class; CLASS_COUNT] {
    let nominal = nominal_sizes();
    let mut out = [Class { size: 0, pages: 0, blocks: 0, magic: 0 }; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        let pages = span_pages(nominal[i]);
        let mut blocks = pages * PAGE_SIZE / nominal[i];
        if blocks > MAX_BLOCKS {
            blocks = MAX_BLOCKS;
        }
        let mut size = (pages * PAGE_SIZE / blocks) & !15;
        if i + 1 < CLASS_COUNT && size >= nominal[i + 1] {
            size = nominal[i + 1] - 16;
        }
        if size > MAX_SMALL {
            size = MAX_SMALL;
        }
        let magic = (1u64 << 40).div_ceil(size as u64);
        out[i] = Class { size: size as u32, pages: pages as u32, blocks: blocks as u32, magic };
        i += 1;
    }
    out
}

/// Every class, smallest first.
pub(crate) const CLASSES: [Class; CLASS_COUNT] = build();

/// The class of each size in 16-byte units (`LOOKUP[(s + 15) / 16]`).
static LOOKUP: [u8; MAX_SMALL / 16 + 1] = lookup();

const fn lookup() -> [u8; MAX_SMALL / 16 + 1] {
    let mut out = [0u8; MAX_SMALL / 16 + 1];
    let mut class = 0;
    let mut u = 0;
    while u <= MAX_SMALL / 16 {
        while (CLASSES[class].size as usize) < u * 16 {
            class += 1;
        }
        out[u] = class as u8;
        u += 1;
    }
    out
}

/// The smallest class whose blocks hold `size` bytes aligned to `align` (a power of two at
/// most a page), or `None` when the request is larger than [`MAX_SMALL`].
#[inline]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    // `align` is a power of two: masks instead of divisions.
    let mask = align - 1;
    let s = size.max(16).checked_add(mask)? & !mask;
    if s > MAX_SMALL {
        return None;
    }
    let mut i = LOOKUP[s.div_ceil(16)] as usize;
    // Blocks sit at multiples of the class size from a page-aligned start, so a class whose
    // size is a multiple of `align` aligns them all; powers of two are classes (and every
    // class size is a multiple of 16).
    if align > 16 {
        while CLASSES[i].size as usize & mask != 0 {
            i += 1;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_and_spans_fit() {
        for w in CLASSES.windows(2) {
            assert!(w[0].size < w[1].size);
        }
        assert_eq!(CLASSES[CLASS_COUNT - 1].size as usize, MAX_SMALL);
        for c in CLASSES {
            assert!(c.blocks >= 1 && c.blocks as usize <= MAX_BLOCKS);
            assert!(c.blocks as usize * c.size as usize <= c.pages as usize * PAGE_SIZE);
            let waste = c.pages as usize * PAGE_SIZE - c.blocks as usize * c.size as usize;
            assert!(waste * 8 <= c.pages as usize * PAGE_SIZE, "{c:?}");
        }
    }

    #[test]
    fn index_of_divides_exactly() {
        // Under Miri, every 97th offset and each block's first and last byte.
        let step = if cfg!(miri) { 97 } else { 1 };
        for c in CLASSES {
            let size = c.size as usize;
            for off in (0..(c.pages as usize * PAGE_SIZE)).step_by(step) {
                assert_eq!(c.index_of(off), off / size, "{c:?} {off}");
            }
            for i in 0..c.blocks as usize {
                assert_eq!(c.index_of(i * size), i, "{c:?} block {i}");
                assert_eq!(c.index_of(i * size + size - 1), i, "{c:?} block {i}");
            }
        }
    }

    #[test]
    fn class_for_is_the_smallest_fitting_aligned_class() {
        // Under Miri, every 97th size and the sizes around each class's.
        let step = if cfg!(miri) { 97 } else { 1 };
        let around = CLASSES.iter().flat_map(|c| {
            let s = c.size as usize;
            [s - 1, s, s + 1]
        });
        let extra =
            if cfg!(miri) { around.filter(|&s| s >= 1).collect::<std::vec::Vec<_>>() } else { std::vec::Vec::new() };
        for size in (1..=MAX_SMALL + 1).step_by(step).chain(extra) {
            for align_log2 in [0u32, 3, 4, 5, 6, 8, 12] {
                let align = 1usize << align_log2;
                let got = class_for(size, align);
                let want = (0..CLASS_COUNT).find(|&i| {
                    let s = CLASSES[i].size as usize;
                    s >= size && s.is_multiple_of(align)
                });
                assert_eq!(got, want, "size {size} align {align}");
            }
        }
    }
}
