//! Finding free blocks and runs: first fit over the levels, with the order hints of the header,
//! and the walk over maximal free runs.

use super::Allocator;
use super::layout::{W_NO_FIT, W_ORDER_HINT};
use super::levels::aligned_runs;
use crate::reach::{Path, hit};

impl Allocator<'_> {
    /// [`find_block`](Self::find_block), remembering for orders >= 6 where the search may
    /// start (`W_ORDER_HINT`) and which orders have no free block at all (`W_NO_FIT`), so that
    /// first-fit searches skip what earlier searches found full.
    #[inline(always)]
    pub(super) fn find_block_cached(&mut self, k: u8, need: u64, limit: u64) -> Option<u64> {
        if k < 6 {
            return self.find_block(k, need, limit, 0);
        }
        if u64::from(k) >= self.words[W_NO_FIT] {
            hit(Path::NoFitSkip);
            return None;
        }
        let from = self.words[W_ORDER_HINT + k as usize] as usize;
        if from > 0 {
            hit(Path::HintSkip);
        }
        // The superpage orders (9: 2 MiB, 18: 1 GiB; also 12) search inline, the others
        // through the shared dispatch.
        let found = match k % 6 {
            0 => self.find_block_r::<0>(k, need, limit, from),
            3 => self.find_block_r::<3>(k, need, limit, from),
            _ => self.find_block(k, need, limit, from),
        };
        match found {
            Some(f) => {
                let l = usize::from(k / 6);
                let wi = ((f >> (6 * l)) / 64 - self.geo.level[l].lo) as usize;
                self.words[W_ORDER_HINT + k as usize] = wi as u64;
            }
            None if limit == u64::MAX && need == 1 << k => {
                // No block of order `k` anywhere: later searches start past the end until
                // a freed unit moves the hint back.
                hit(Path::NoFitRecorded);
                self.words[W_NO_FIT] = self.words[W_NO_FIT].min(u64::from(k));
                self.words[W_ORDER_HINT + k as usize] = self.geo.level[usize::from(k / 6)].bits.words as u64;
            }
            None => {}
        }
        found
    }

    /// The lowest free block of order `k` whose first `need` frames end at or below `limit`.
    ///
    /// Walks the non-zero words of level `k / 6` in address order (through the bits of one
    /// summary word at a time) and asks each for an aligned run of `2^(k % 6)` units.
    #[inline]
    pub(super) fn find_block(&self, k: u8, need: u64, limit: u64, from: usize) -> Option<u64> {
        match k % 6 {
            0 => self.find_block_r::<0>(k, need, limit, from),
            1 => self.find_block_r::<1>(k, need, limit, from),
            2 => self.find_block_r::<2>(k, need, limit, from),
            3 => self.find_block_r::<3>(k, need, limit, from),
            4 => self.find_block_r::<4>(k, need, limit, from),
            _ => self.find_block_r::<5>(k, need, limit, from),
        }
    }

    /// [`find_block`](Self::find_block) for `k % 6 == R`, the run test fixed at compile time.
    #[inline(always)]
    pub(super) fn find_block_r<const R: u32>(&self, k: u8, need: u64, limit: u64, from: usize) -> Option<u64> {
        let l = (k / 6) as usize;
        let lv = &self.geo.level[l];
        let shift = 6 * l as u32;
        // Words in address order: the first word with a run decides (its block is the lowest;
        // when it ends above the limit, every later one does too).
        let test = |wi: usize| -> Option<Option<u64>> {
            let m = aligned_runs(self.words[lv.bits.offset + wi], R);
            if m == 0 {
                return None;
            }
            let f = ((lv.lo + wi as u64) * 64 + u64::from(m.trailing_zeros())) << shift;
            Some((f.saturating_add(need) <= limit).then_some(f))
        };
        if lv.layers == 0 {
            return (from..lv.bits.words).find_map(test).flatten();
        }
        let t0 = lv.tree[0];
        let mut tw = from / 64;
        if tw >= t0.words {
            return None;
        }
        let mut bits = self.words[t0.offset + tw] & (!0u64 << (from % 64));
        loop {
            while bits != 0 {
                let wi = tw * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(found) = test(wi) {
                    return found;
                }
            }
            tw = if lv.layers > 1 {
                hit(Path::SearchUpperLayer);
                self.next_set(lv, 1, tw + 1)?
            } else {
                (tw + 1..t0.words).find(|&i| self.words[t0.offset + i] != 0)?
            };
            bits = self.words[t0.offset + tw];
        }
    }

    /// The lowest start of `n` free frames aligned to `2^align` ending at or below `limit`,
    /// by scanning the free runs.
    pub(super) fn find_run(&self, n: u64, align: u8, limit: u64) -> Option<u64> {
        let mut found = None;
        let a = 1u64 << align;
        self.for_each_free_run(|s, e| {
            let s = s.next_multiple_of(a);
            if s.saturating_add(n) > limit {
                return false;
            }
            if s + n <= e {
                found = Some(s);
                return false;
            }
            true
        });
        found
    }

    /// Calls `f(start, end)` for every maximal run of free frames in address order until it
    /// returns `false`.
    pub(super) fn for_each_free_run(&self, mut f: impl FnMut(u64, u64) -> bool) {
        let lv0 = self.geo.level[0];
        let mut open: Option<u64> = None;
        let mut wi = 0;
        while wi < lv0.bits.words {
            let w = self.words[lv0.bits.offset + wi];
            let base = (lv0.lo + wi as u64) * 64;
            if w == 0 && open.is_none() {
                // Skip to the next word with a free frame.
                match self.next_nonzero(0, wi) {
                    Some(n) => {
                        wi = n;
                        continue;
                    }
                    None => return,
                }
            }
            if w == !0 {
                open.get_or_insert(base);
                wi += 1;
                continue;
            }
            let mut pos = 0u32;
            while pos < 64 {
                let rest = w >> pos;
                if let Some(s) = open {
                    let ones = (!rest).trailing_zeros().min(64 - pos);
                    pos += ones;
                    if pos < 64 {
                        open = None;
                        if !f(s, base + u64::from(pos)) {
                            return;
                        }
                    }
                } else {
                    let zeros = if rest == 0 { 64 - pos } else { rest.trailing_zeros() };
                    pos += zeros;
                    if pos < 64 {
                        open = Some(base + u64::from(pos));
                    }
                }
            }
            wi += 1;
        }
        if let Some(s) = open {
            f(s, (lv0.lo + lv0.bits.words as u64) * 64);
        }
    }
}
