//! Bit and summary operations: frame-indexed bitmaps, the fully-free-unit levels and the
//! 64-ary summaries over them, and the search hints that moving units invalidate.

use memkit_types::Order;

use super::Allocator;
use super::layout::{Bitmap, Level, W_NO_FIT, W_ORDER_HINT};
use crate::reach::{Path, hit};

impl Allocator<'_> {
    #[inline]
    pub(super) fn bit(&self, bm: Bitmap, frame: u64) -> bool {
        let lo = self.geo.level[0].lo;
        let w = self.words[bm.offset + (frame / 64 - lo) as usize];
        w & (1 << (frame % 64)) != 0
    }

    /// Sets bits `[a, b)` of a frame-indexed bitmap (A0 indexing), without summaries.
    #[inline]
    pub(super) fn bits_set(&mut self, bm: Bitmap, a: u64, b: u64) {
        self.bits_apply(bm, a, b, true);
    }

    #[inline]
    pub(super) fn bits_clear(&mut self, bm: Bitmap, a: u64, b: u64) {
        self.bits_apply(bm, a, b, false);
    }

    #[inline]
    pub(super) fn bits_apply(&mut self, bm: Bitmap, a: u64, b: u64, set: bool) {
        let lo = self.geo.level[0].lo;
        for (w, m) in word_masks(a, b) {
            let word = &mut self.words[bm.offset + (w - lo) as usize];
            if set {
                *word |= m;
            } else {
                *word &= !m;
            }
        }
    }

    /// The first frame in `[a, b)` whose bit in `bm` is `value`, if any.
    #[inline]
    pub(super) fn first_with(&self, bm: Bitmap, a: u64, b: u64, value: bool) -> Option<u64> {
        let lo = self.geo.level[0].lo;
        word_masks(a, b).find_map(|(w, m)| {
            let word = self.words[bm.offset + (w - lo) as usize];
            let hits = if value { word & m } else { !word & m };
            (hits != 0).then(|| w * 64 + u64::from(hits.trailing_zeros()))
        })
    }

    /// Whether a frame in `[a, b)` is free or reserved (one pass over both bitmaps).
    #[inline]
    pub(super) fn any_free_or_reserved(&self, a: u64, b: u64) -> bool {
        let (lo, f, r) = (self.geo.level[0].lo, self.geo.level[0].bits.offset, self.geo.reserved.offset);
        word_masks(a, b).any(|(w, m)| {
            let wi = (w - lo) as usize;
            (self.words[f + wi] | self.words[r + wi]) & m != 0
        })
    }

    /// Rebuilds every level above 0 and every summary from A0.
    pub(super) fn rebuild_upper(&mut self) {
        for l in 0..self.geo.levels {
            let lv = self.geo.level[l];
            if l > 0 {
                let below = self.geo.level[l - 1];
                for i in 0..lv.bits.words {
                    let mut v = 0u64;
                    for b in 0..64u64 {
                        let abs = (lv.lo + i as u64) * 64 + b;
                        if abs >= below.lo && abs < below.lo + below.bits.words as u64 {
                            let bw = self.words[below.bits.offset + (abs - below.lo) as usize];
                            if bw == !0 {
                                v |= 1 << b;
                            }
                        }
                    }
                    self.words[lv.bits.offset + i] = v;
                }
            }
            let mut src = lv.bits;
            for j in 0..lv.layers {
                let t = lv.tree[j];
                for i in 0..t.words {
                    let mut v = 0u64;
                    for b in 0..64 {
                        let k = i * 64 + b;
                        if k < src.words && self.words[src.offset + k] != 0 {
                            v |= 1 << b;
                        }
                    }
                    self.words[t.offset + i] = v;
                }
                src = t;
            }
        }
    }

    /// Marks summary bit `i` of level `l`'s layer 0 (word `i` of the level is not zero).
    #[inline(always)]
    pub(super) fn tree_set(&mut self, l: usize, mut i: usize) {
        let lv = &self.geo.level[l];
        for j in 0..lv.layers {
            let idx = lv.tree[j].offset + i / 64;
            let old = self.words[idx];
            self.words[idx] = old | (1 << (i % 64));
            if old != 0 {
                break;
            }
            if j + 1 < lv.layers {
                hit(Path::SummaryUpperSet);
            }
            i /= 64;
        }
    }

    #[inline]
    pub(super) fn tree_clear(&mut self, l: usize, mut i: usize) {
        let lv = &self.geo.level[l];
        for j in 0..lv.layers {
            let idx = lv.tree[j].offset + i / 64;
            let new = self.words[idx] & !(1 << (i % 64));
            self.words[idx] = new;
            if new != 0 {
                break;
            }
            if j + 1 < lv.layers {
                hit(Path::SummaryUpperCleared);
            }
            i /= 64;
        }
    }

    /// Sets unit `u` (absolute) of level `l`, keeping summaries and upper levels.
    #[inline]
    pub(super) fn set_unit(&mut self, mut l: usize, mut u: u64) {
        loop {
            let lv = self.geo.level[l];
            let wi = (u / 64 - lv.lo) as usize;
            let idx = lv.bits.offset + wi;
            let old = self.words[idx];
            let new = old | (1 << (u % 64));
            self.words[idx] = new;
            if l > 0 {
                self.large_unit_set(l, wi, new);
            }
            if old == 0 {
                self.tree_set(l, wi);
            }
            if new != !0 || l + 1 >= self.geo.levels {
                return;
            }
            hit(if l == 0 { Path::WordFilled } else { Path::MergeUpper });
            l += 1;
            u /= 64;
        }
    }

    #[inline]
    pub(super) fn clear_unit(&mut self, mut l: usize, mut u: u64) {
        loop {
            let lv = self.geo.level[l];
            let wi = (u / 64 - lv.lo) as usize;
            let idx = lv.bits.offset + wi;
            let old = self.words[idx];
            let new = old & !(1 << (u % 64));
            self.words[idx] = new;
            if new == 0 {
                self.tree_clear(l, wi);
            }
            if old != !0 || l + 1 >= self.geo.levels {
                return;
            }
            hit(if l == 0 { Path::WordEmptiedFull } else { Path::SplitUpper });
            l += 1;
            u /= 64;
        }
    }

    /// Sets units `[a, b)` of level `l` and everything above.
    pub(super) fn set_units(&mut self, l: usize, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (off, lo) = (self.geo.level[l].bits.offset, self.geo.level[l].lo);
        if l > 0 {
            hit(Path::UnitsSetUpper);
            self.large_unit_freed(l, (a / 64 - lo) as usize);
        }
        let (first, last) = (a / 64, (b - 1) / 64);
        let put = |words: &mut [u64], w: u64, m: u64| -> (bool, bool) {
            let idx = off + (w - lo) as usize;
            let old = words[idx];
            words[idx] = old | m;
            (old == 0, old | m == !0 && old != !0)
        };
        // Which words became full: the interior, and the edges that filled up.
        let (any_was_zero, fs, ft) = if first == last {
            let (z, full) = put(self.words, first, range_mask(a % 64, b - first * 64));
            (z, first, if full { first + 1 } else { first })
        } else {
            if l == 0 {
                hit(Path::RangeFreedBits);
            }
            let (z0, f0) = put(self.words, first, range_mask(a % 64, 64));
            let (z1, f1) = put(self.words, last, range_mask(0, b - last * 64));
            let mut z = z0 | z1;
            let (s0, s1) = (off + (first + 1 - lo) as usize, off + (last - lo) as usize);
            for v in &mut self.words[s0..s1] {
                z |= *v == 0;
                *v = !0;
            }
            (z, if f0 { first } else { first + 1 }, if f1 { last + 1 } else { last })
        };
        if any_was_zero {
            // Every touched word is non-zero now.
            self.tree_set_range(l, 0, (first - lo) as usize, (last - lo) as usize + 1);
        }
        if fs < ft && l + 1 < self.geo.levels {
            self.set_units(l + 1, fs, ft);
        }
    }

    /// Clears units `[a, b)` of level `l` and the units above that cover them.
    pub(super) fn clear_units(&mut self, l: usize, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (off, lo) = (self.geo.level[l].bits.offset, self.geo.level[l].lo);
        if l > 0 {
            hit(Path::UnitsClearedUpper);
        }
        let (first, last) = (a / 64, (b - 1) / 64);
        let take = |words: &mut [u64], w: u64, m: u64| -> (bool, bool) {
            let idx = off + (w - lo) as usize;
            let old = words[idx];
            words[idx] = old & !m;
            (old == !0, old & !m == 0)
        };
        // Clear the edge words with masks and the interior whole.
        let (was_full, first_zero, last_zero) = if first == last {
            let (f, z) = take(self.words, first, range_mask(a % 64, b - first * 64));
            (f, z, z)
        } else {
            if l == 0 {
                hit(Path::RangeTakenBits);
            }
            let (f0, z0) = take(self.words, first, range_mask(a % 64, 64));
            let (f1, z1) = take(self.words, last, range_mask(0, b - last * 64));
            let mut f = f0 | f1;
            let (s0, s1) = (off + (first + 1 - lo) as usize, off + (last - lo) as usize);
            for v in &mut self.words[s0..s1] {
                f |= *v == !0;
                *v = 0;
            }
            (f, z0, z1)
        };
        // The words that are zero now: the interior, and the edges if they emptied.
        let zf = if first_zero { first } else { first + 1 };
        let zt = if last_zero { last + 1 } else { last };
        if zf < zt {
            self.tree_clear_range(l, 0, (zf - lo) as usize, (zt - lo) as usize);
        }
        if was_full && l + 1 < self.geo.levels {
            self.clear_units(l + 1, first, last + 1);
        }
    }

    /// Sets bits `[a, b)` of summary layer `j` of level `l`, and the layers above.
    pub(super) fn tree_set_range(&mut self, l: usize, j: usize, a: usize, b: usize) {
        if j >= self.geo.level[l].layers || a >= b {
            return;
        }
        let off = self.geo.level[l].tree[j].offset;
        if a / 64 != (b - 1) / 64 {
            hit(Path::SummaryRangeSet);
        }
        let mut any_was_zero = false;
        for (w, m) in word_masks(a as u64, b as u64) {
            let w = w as usize;
            let old = self.words[off + w];
            self.words[off + w] = old | m;
            any_was_zero |= old == 0;
        }
        if any_was_zero {
            if j + 1 < self.geo.level[l].layers {
                hit(Path::SummaryUpperSet);
            }
            self.tree_set_range(l, j + 1, a / 64, (b - 1) / 64 + 1);
        }
    }

    /// Clears bits `[a, b)` of summary layer `j` of level `l`, and in the layers above the
    /// bits of the words that became zero.
    pub(super) fn tree_clear_range(&mut self, l: usize, j: usize, a: usize, b: usize) {
        if j >= self.geo.level[l].layers || a >= b {
            return;
        }
        let off = self.geo.level[l].tree[j].offset;
        if a / 64 != (b - 1) / 64 {
            hit(Path::SummaryRangeCleared);
        }
        let mut zero: Option<(usize, usize)> = None;
        for (w, m) in word_masks(a as u64, b as u64) {
            let w = w as usize;
            let old = self.words[off + w];
            let new = old & !m;
            self.words[off + w] = new;
            if new == 0 && old != 0 {
                zero = match zero {
                    Some((f, _)) => Some((f, w + 1)),
                    None => Some((w, w + 1)),
                };
            }
        }
        if let Some((f, t)) = zero {
            if j + 1 < self.geo.level[l].layers {
                hit(Path::SummaryUpperCleared);
            }
            self.tree_clear_range(l, j + 1, f, t);
        }
    }

    /// Marks words `[w0, w1)` of level `l` non-zero in the summaries: one summary word and
    /// one walk up when they share a summary word (a block of up to 64 words).
    #[inline(always)]
    pub(super) fn tree_set_words(&mut self, l: usize, w0: usize, w1: usize) {
        let lv = &self.geo.level[l];
        if lv.layers == 0 || w0 / 64 != (w1 - 1) / 64 {
            return self.tree_set_range(l, 0, w0, w1);
        }
        // Bit `w0` walks up; the others join it in its now non-zero summary word.
        let idx = lv.tree[0].offset + w0 / 64;
        self.tree_set(l, w0);
        self.words[idx] |= range_mask((w0 % 64) as u64, (w1 - w0 / 64 * 64) as u64);
    }

    /// Marks words `[w0, w1)` of level `l` zero in the summaries, as
    /// [`tree_set_words`](Self::tree_set_words) does the other way.
    #[inline]
    pub(super) fn tree_clear_words(&mut self, l: usize, w0: usize, w1: usize) {
        let lv = &self.geo.level[l];
        if lv.layers == 0 || w0 / 64 != (w1 - 1) / 64 {
            return self.tree_clear_range(l, 0, w0, w1);
        }
        // The others leave first; bit `w0` walks up if the summary word empties.
        let idx = lv.tree[0].offset + w0 / 64;
        let others = range_mask((w0 % 64) as u64, (w1 - w0 / 64 * 64) as u64) & !(1 << (w0 % 64));
        self.words[idx] &= !others;
        self.tree_clear(l, w0);
    }

    /// The index of the first non-zero word at or after `from` in level `l`'s bitmap.
    ///
    /// Layer-0 summary bits may be stale (set over a zero word, see `take_one`); they are
    /// skipped here. Upper summary layers are exact.
    #[inline]
    pub(super) fn next_nonzero(&self, l: usize, mut from: usize) -> Option<usize> {
        let lv = &self.geo.level[l];
        if lv.layers == 0 {
            return (from..lv.bits.words).find(|&i| self.words[lv.bits.offset + i] != 0);
        }
        loop {
            let i = self.next_set(lv, 0, from)?;
            if self.words[lv.bits.offset + i] != 0 {
                return Some(i);
            }
            from = i + 1;
        }
    }

    /// [`next_nonzero`](Self::next_nonzero) from the start of level 0, clearing the stale
    /// summary bits it meets on the way.
    pub(super) fn next_nonzero_cleaning(&mut self, l: usize) -> Option<usize> {
        let lv = self.geo.level[l];
        if lv.layers == 0 {
            return self.next_nonzero(l, 0);
        }
        let mut from = 0;
        loop {
            let i = self.next_set(&lv, 0, from)?;
            if self.words[lv.bits.offset + i] != 0 {
                return Some(i);
            }
            hit(Path::StaleSummaryCleaned);
            self.tree_clear(l, i);
            from = i + 1;
        }
    }

    /// The first set bit at or after `from` in summary layer `j` of `lv`.
    pub(super) fn next_set(&self, lv: &Level, j: usize, from: usize) -> Option<usize> {
        let t = lv.tree[j];
        let wi = from / 64;
        if wi >= t.words {
            return None;
        }
        let w = self.words[t.offset + wi] & (!0u64 << (from % 64));
        if w != 0 {
            return Some(wi * 64 + w.trailing_zeros() as usize);
        }
        let next = if j + 1 < lv.layers {
            self.next_set(lv, j + 1, wi + 1)?
        } else {
            (wi + 1..t.words).find(|&i| self.words[t.offset + i] != 0)?
        };
        Some(next * 64 + self.words[t.offset + next].trailing_zeros() as usize)
    }

    /// A unit of level `l >= 1` in word `wi` (or from it on) became free: blocks of orders
    /// `6l .. 6l + 5` may exist from word `wi` on again.
    #[inline]
    pub(super) fn large_unit_freed(&mut self, l: usize, wi: usize) {
        self.words[W_NO_FIT] = u64::MAX;
        for k in 6 * l..(6 * l + 6).min(Order::MAX.get() as usize + 1) {
            let h = &mut self.words[W_ORDER_HINT + k];
            *h = (*h).min(wi as u64);
        }
    }

    /// A unit of level `l >= 1` in word `wi` was set, leaving the word `new`: only the orders
    /// `6l + r` whose aligned runs of `2^r` units exist in `new` may have gained a free block,
    /// so only their hints move back, and the no-fit order is forgotten only when one of them
    /// is at or above it.
    #[inline(always)]
    pub(super) fn large_unit_set(&mut self, l: usize, wi: usize, new: u64) {
        let first = W_ORDER_HINT + 6 * l;
        let orders = (Order::MAX.get() as usize + 1).saturating_sub(6 * l).min(6);
        // `x` holds the starts of aligned runs of `2^r` set bits (before the mask), one more
        // halving step per order; the no-fit order is checked once, against the largest.
        let mut x = new;
        let mut top = None;
        for (r, h) in self.words[first..first + orders].iter_mut().enumerate() {
            if x & RUN_STARTS[r] == 0 {
                break;
            }
            *h = (*h).min(wi as u64);
            top = Some(6 * l + r);
            x &= x >> (1u32 << r);
        }
        if let Some(k) = top
            && k as u64 >= self.words[W_NO_FIT]
        {
            self.words[W_NO_FIT] = u64::MAX;
        }
    }
}

/// The OR of all words (zero exactly when every bit is clear); a plain reduction the
/// compiler vectorises.
#[inline]
pub(super) fn or_all(words: &[u64]) -> u64 {
    words.iter().fold(0, |acc, w| acc | w)
}

/// The words that bits `[a, b)` touch, in order: each word's number (`bit / 64`) and the
/// mask of its bits inside the range. The one walk of a bit range, for the frame bitmaps
/// and the summary layers alike.
#[inline]
pub(super) fn word_masks(a: u64, b: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut u = a;
    core::iter::from_fn(move || {
        (u < b).then(|| {
            let w = u / 64;
            let end = (w * 64).saturating_add(64).min(b);
            let m = range_mask(u % 64, end - w * 64);
            u = end;
            (w, m)
        })
    })
}

/// Bits `[from, to)` of a word (`from <= to <= 64`).
#[inline]
pub(super) fn range_mask(from: u64, to: u64) -> u64 {
    let hi = if to >= 64 { !0 } else { (1u64 << to) - 1 };
    hi & !((1u64 << from) - 1)
}

/// The bits `i` of `w`, `i` a multiple of `2^r`, that start a run of `2^r` set bits.
#[inline(always)]
pub(super) fn aligned_runs(w: u64, r: u32) -> u64 {
    let mut x = w;
    for i in 0..r {
        x &= x >> (1 << i);
    }
    x & RUN_STARTS[r as usize]
}

/// `RUN_STARTS[r]`: the bits that may start an aligned run of `2^r` bits.
pub(super) const RUN_STARTS: [u64; 6] = [
    !0,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
];

#[cfg(test)]
mod tests {
    use super::{range_mask, word_masks};

    /// `word_masks` names every bit of `[a, b)` once, in order, and no other, for ranges
    /// that start and end anywhere in a word, span several words or are empty.
    #[test]
    fn word_masks_cover_exactly_the_range() {
        for a in 0..200u64 {
            for b in 0..200u64 {
                let mut bits = std::vec::Vec::new();
                let mut last = None;
                for (w, m) in word_masks(a, b) {
                    assert!(m != 0 && last.is_none_or(|l| l < w), "[{a}, {b}): word {w} mask {m:#x}");
                    last = Some(w);
                    bits.extend((0..64).filter(|i| m & (1 << i) != 0).map(|i| w * 64 + i));
                }
                let want: std::vec::Vec<u64> = (a..b).collect();
                assert_eq!(bits, want, "[{a}, {b})");
            }
        }
        let top = u64::MAX - 1;
        assert_eq!(word_masks(top - 70, top).count(), 2);
        assert_eq!(range_mask(0, 64), !0);
    }
}
