//! The invariants of the header (feature `check`).

use super::Allocator;
use super::layout::{
    HEADER_MAGIC, W_CHECK, W_FREE, W_HEADER_FRAMES, W_HEADER_START, W_MAGIC, W_NO_FIT, W_ORDER_HINT, W_USABLE,
};
use super::levels::{aligned_runs, range_mask};

impl Allocator<'_> {
    /// Checks every invariant of the header and panics, naming it, when one fails.
    ///
    /// # Invariants
    /// - the magic, area and geometry checksum are intact;
    /// - no frame is both free and reserved; frames outside the area are reserved and not free;
    ///   the header region is reserved;
    /// - the free counter equals the number of free bits; the free count never exceeds the
    ///   managed count;
    /// - the remembered no-fit order has no free block; no block of order `k` lies below its
    ///   search hint;
    /// - a level-`L+1` bit is set exactly when its level-`L` word is all ones;
    /// - a summary bit is set exactly when the word it stands for is not zero, except that a
    ///   layer-0 summary bit of level 0 may stay set over a frame word an allocation emptied
    ///   (it is cleaned lazily).
    ///
    /// # Panics
    /// When an invariant does not hold. O(header words).
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let g = &self.geo;
        assert_eq!(self.words[W_MAGIC], HEADER_MAGIC, "magic");
        assert_eq!(self.words[W_CHECK], g.checksum(), "geometry checksum");
        let a0 = g.level[0].bits;
        let r = g.reserved;
        let mut free = 0u64;
        for i in 0..a0.words {
            let (f, rv) = (self.words[a0.offset + i], self.words[r.offset + i]);
            assert_eq!(f & rv, 0, "a frame is free and reserved (word {i})");
            let base = (g.level[0].lo + i as u64) * 64;
            let inside = range_mask(g.start.clamp(base, base + 64) - base, g.end.clamp(base, base + 64) - base);
            assert_eq!(rv | inside, !0, "a frame outside the area is not reserved (word {i})");
            free += u64::from(f.count_ones());
        }
        assert_eq!(free, self.words[W_FREE], "free counter");
        let no_fit = self.words[W_NO_FIT];
        if no_fit != u64::MAX {
            assert!(no_fit >= 6 && no_fit <= u64::from(g.max_order), "no-fit order {no_fit}");
            assert!(
                self.find_block(no_fit as u8, 1 << no_fit, u64::MAX, 0).is_none(),
                "no-fit order {no_fit} has a block"
            );
        }
        for k in 6..=g.max_order {
            let (l, r) = (usize::from(k / 6), u32::from(k % 6));
            let lv = g.level[l];
            let hint = (self.words[W_ORDER_HINT + k as usize] as usize).min(lv.bits.words);
            for w in 0..hint {
                assert_eq!(aligned_runs(self.words[lv.bits.offset + w], r), 0, "order {k} block below its search hint");
            }
        }
        assert!(free <= self.words[W_USABLE], "more free than managed frames");
        let (hs, hn) = (self.words[W_HEADER_START], self.words[W_HEADER_FRAMES]);
        assert!(self.first_with(r, hs, hs + hn, false).is_none(), "the header is not reserved");
        for l in 0..g.levels {
            let lv = g.level[l];
            if l > 0 {
                let below = g.level[l - 1];
                for i in 0..lv.bits.words {
                    let w = self.words[lv.bits.offset + i];
                    for b in 0..64u64 {
                        let abs = (lv.lo + i as u64) * 64 + b;
                        let full = abs >= below.lo
                            && abs < below.lo + below.bits.words as u64
                            && self.words[below.bits.offset + (abs - below.lo) as usize] == !0;
                        assert_eq!(w & (1 << b) != 0, full, "level {l} unit {abs} disagrees with level {}", l - 1);
                    }
                }
            }
            let mut src = lv.bits;
            for j in 0..lv.layers {
                let t = lv.tree[j];
                for k in 0..t.words * 64 {
                    let set = self.words[t.offset + k / 64] & (1 << (k % 64)) != 0;
                    let nonzero = k < src.words && self.words[src.offset + k] != 0;
                    if j == 0 && l == 0 {
                        // Layer 0 of the frame words may keep stale bits over zero words, never
                        // miss a non-zero one.
                        assert!(set || !nonzero, "summary layer 0 of level {l} misses word {k}");
                        assert!(!set || k < src.words, "summary layer 0 of level {l} bit {k} past the end");
                    } else {
                        assert_eq!(set, nonzero, "summary layer {j} of level {l} bit {k}");
                    }
                }
                src = t;
            }
        }
    }
}
