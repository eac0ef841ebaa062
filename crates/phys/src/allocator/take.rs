//! Taking and giving back frames: whole blocks, runs, single frames (with their one-word fast
//! paths) and a frame at a fixed address.

use memkit_types::{Frame, PAGE_SHIFT, PhysAddr};

use super::layout::{W_FREE, W_HINT};
use super::levels::or_all;
use super::{Allocator, frame};
use crate::area::MemoryArea;
use crate::error::{AllocateAtError, FreeError};
use crate::reach::{Path, hit};

impl Allocator<'_> {
    /// Takes the free block of order `k >= 6` at frame `f`: whole words at the levels below
    /// `k / 6` empty, and `2^(k % 6)` bits of one word at level `k / 6` clear.
    #[inline]
    pub(super) fn take_block(&mut self, f: u64, k: u8) {
        let top = usize::from(k / 6);
        hit(if top > 1 { Path::BlockTakenUpper } else { Path::BlockTaken });
        let (off, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].lo);
        let (w0, n) = ((f / 64 - lo) as usize, 1usize << (k - 6));
        // The emptied frame words keep their summary bits (stale), as after `take_one`.
        self.words[off + w0..off + w0 + n].fill(0);
        for l in 1..top {
            let lv = &self.geo.level[l];
            let (off, n) = (lv.bits.offset, 1usize << (k as usize - 6 * (l + 1)));
            let w0 = ((f >> (6 * l)) / 64 - lv.lo) as usize;
            self.words[off + w0..off + w0 + n].fill(0);
            self.tree_clear_words(l, w0, w0 + n);
        }
        let lv = &self.geo.level[top];
        let u = f >> (6 * top);
        let wi = (u / 64 - lv.lo) as usize;
        let idx = lv.bits.offset + wi;
        let old = self.words[idx];
        let new = old & !(((1u64 << (1u32 << (k % 6))) - 1) << (u % 64));
        self.words[idx] = new;
        if new == 0 {
            self.tree_clear(top, wi);
        }
        if old == !0 && top + 1 < self.geo.levels {
            self.clear_unit(top + 1, u / 64);
        }
        self.words[W_FREE] -= 1 << k;
    }

    /// Frees the block of order `k >= 6` at frame `s` (aligned, inside the area) after
    /// checking that its frames are all allocated, as [`take_block`](Self::take_block) does
    /// the other way.
    pub(super) fn free_block(&mut self, s: u64, k: u8) -> Result<(), FreeError> {
        let (a0, r, lo) = (self.geo.level[0].bits.offset, self.geo.reserved.offset, self.geo.level[0].lo);
        let n = 1usize << (k - 6);
        let w0 = (s / 64 - lo) as usize;
        let busy = or_all(&self.words[a0 + w0..a0 + w0 + n]) | or_all(&self.words[r + w0..r + w0 + n]);
        if busy != 0 {
            return Err(self.free_error(s, s + (1 << k)));
        }
        self.words[a0 + w0..a0 + w0 + n].fill(!0);
        self.tree_set_words(0, w0, w0 + n);
        let top = usize::from(k / 6);
        hit(if top > 1 { Path::BlockFreedUpper } else { Path::BlockFreed });
        for l in 1..top {
            let lv = &self.geo.level[l];
            let (off, n) = (lv.bits.offset, 1usize << (k as usize - 6 * (l + 1)));
            let w0 = ((s >> (6 * l)) / 64 - lv.lo) as usize;
            self.words[off + w0..off + w0 + n].fill(!0);
            self.tree_set_words(l, w0, w0 + n);
            self.large_unit_freed(l, w0);
        }
        let lv = &self.geo.level[top];
        let u = s >> (6 * top);
        let wi = (u / 64 - lv.lo) as usize;
        let idx = lv.bits.offset + wi;
        let old = self.words[idx];
        let new = old | (((1u64 << (1u32 << (k % 6))) - 1) << (u % 64));
        self.words[idx] = new;
        self.large_unit_set(top, wi, new);
        if old == 0 {
            self.tree_set(top, wi);
        }
        if new == !0 && top + 1 < self.geo.levels {
            self.set_unit(top + 1, u / 64);
        }
        self.words[W_FREE] += 1 << k;
        Ok(())
    }

    /// The error of freeing frames `[s, e)` (inside the area) when one is free or reserved.
    #[cold]
    pub(super) fn free_error(&self, s: u64, e: u64) -> FreeError {
        if let Some(f) = self.first_with(self.geo.level[0].bits, s, e, true) {
            return FreeError::AlreadyFree(Frame::from_number(f));
        }
        let f = self.first_with(self.geo.reserved, s, e, true).unwrap_or(s);
        FreeError::Reserved(Frame::from_number(f))
    }

    /// Takes frames `[a, b)`, all free.
    pub(super) fn take_range(&mut self, a: u64, b: u64) {
        if b == a + 1 {
            self.clear_unit(0, a);
        } else if (a | b).is_multiple_of(64) {
            // Whole level-0 words, all ones: they empty, and so do their units above.
            hit(Path::RangeTakenWords);
            let (a0, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].lo);
            let (w0, w1) = ((a / 64 - lo) as usize, (b / 64 - lo) as usize);
            self.words[a0 + w0..a0 + w1].fill(0);
            self.tree_clear_words(0, w0, w1);
            if self.geo.levels > 1 {
                self.clear_units(1, a / 64, b / 64);
            }
        } else {
            self.clear_units(0, a, b);
        }
        self.words[W_FREE] -= b - a;
    }

    /// Takes one free frame below `limit`, trying the hint word first.
    #[inline]
    pub(super) fn take_one(&mut self, limit: u64) -> Option<u64> {
        let (off, count, lo) = (self.geo.level[0].bits.offset, self.geo.level[0].bits.words, self.geo.level[0].lo);
        let hint = self.words[W_HINT] as usize;
        let on_hint = hint < count && self.words[off + hint] != 0;
        let wi = if on_hint { hint } else { self.next_nonzero_cleaning(0)? };
        let old = self.words[off + wi];
        let f = (lo + wi as u64) * 64 + u64::from(old.trailing_zeros());
        if f >= limit {
            // The hint was above the limit: the lowest free frame decides.
            let wi = self.next_nonzero(0, 0)?;
            let f = (lo + wi as u64) * 64 + u64::from(self.words[off + wi].trailing_zeros());
            if f >= limit {
                return None;
            }
            hit(Path::TakeOneLimit);
            self.words[W_HINT] = wi as u64;
            self.take_range(f, f + 1);
            return Some(f);
        }
        // When the word becomes zero its summary bit is left set (stale): the next free in
        // the word would set it again, and searches skip stale bits (`next_nonzero`).
        hit(if on_hint { Path::TakeOneHint } else { Path::TakeOneSearch });
        self.words[off + wi] = old & (old - 1);
        if old == !0 && self.geo.levels > 1 {
            hit(Path::WordEmptiedFull);
            self.clear_unit(1, lo + wi as u64);
        }
        self.words[W_FREE] -= 1;
        self.words[W_HINT] = wi as u64;
        Some(f)
    }

    /// Takes the lowest free frame of the hint word when that touches the word alone: the
    /// word is neither empty nor full (a full word's level-1 unit would go too). `None`
    /// sends the caller to [`take_one`](Self::take_one).
    #[inline(always)]
    pub(super) fn take_one_fast(&mut self) -> Option<u64> {
        let lv0 = &self.geo.level[0];
        let hint = *self.words.get(W_HINT)? as usize;
        if hint >= lv0.bits.words {
            return None;
        }
        let w = self.words.get_mut(lv0.bits.offset + hint)?;
        let old = *w;
        if old == 0 || old == !0 {
            return None;
        }
        *w = old & (old - 1);
        self.words[W_FREE] -= 1;
        hit(Path::TakeOneFast);
        Some((lv0.lo + hint as u64) * 64 + u64::from(old.trailing_zeros()))
    }

    /// Takes frame `s` (inside the area): one word when the frame is free and its word is
    /// not full (no unit above to clear; an emptied word keeps its summary bit, as in
    /// `take_one`).
    #[inline]
    pub(super) fn take_at(&mut self, s: u64) -> Result<(), AllocateAtError> {
        let lv0 = &self.geo.level[0];
        let wi = (s / 64 - lv0.lo) as usize;
        let bit = 1u64 << (s % 64);
        let old = self.words[lv0.bits.offset + wi];
        if old & bit == 0 {
            return Err(if self.words[self.geo.reserved.offset + wi] & bit != 0 {
                AllocateAtError::Reserved(frame(s))
            } else {
                AllocateAtError::InUse(frame(s))
            });
        }
        if old == !0 {
            self.take_range(s, s + 1);
        } else {
            hit(Path::TakeAtOneWord);
            self.words[lv0.bits.offset + wi] = old & !bit;
            self.words[W_FREE] -= 1;
        }
        Ok(())
    }

    /// Frees frame `s` when that touches its word alone: the frame is allocated, its word
    /// does not fill up (no merge above) and either was not empty or still has its (stale)
    /// summary bit. `false` changes nothing and sends the caller to the general path, which
    /// also reports errors.
    ///
    /// Only the word index is range-checked: the frames of the edge words that lie outside
    /// the area are reserved, so the reserved bit turns them away.
    #[inline(always)]
    pub(super) fn free_one_fast(&mut self, s: u64) -> bool {
        let (lv0, r) = (&self.geo.level[0], self.geo.reserved.offset);
        let wi = (s / 64).wrapping_sub(lv0.lo) as usize;
        if wi >= lv0.bits.words {
            return false;
        }
        let bit = 1u64 << (s % 64);
        let (Some(&old), Some(&rv)) = (self.words.get(lv0.bits.offset + wi), self.words.get(r + wi)) else {
            return false;
        };
        let new = old | bit;
        if (old | rv) & bit != 0 || new == !0 {
            return false;
        }
        if old == 0 {
            if lv0.layers == 0 {
                return false;
            }
            match self.words.get(lv0.tree[0].offset + wi / 64) {
                Some(&t) if t & (1 << (wi % 64)) != 0 => {}
                _ => return false,
            }
        }
        self.words[lv0.bits.offset + wi] = new;
        self.words[W_FREE] += 1;
        self.words[W_HINT] = wi as u64;
        hit(Path::FreeOneFast);
        true
    }

    /// Frees frames `[s, s + n)` after checking that each is allocated.
    #[inline(never)]
    pub(super) fn free_frames_checked(&mut self, s: u64, n: u64) -> Result<(), FreeError> {
        if n == 1 && s >= self.geo.start && s < self.geo.end {
            return self.free_one(s);
        }
        self.free_many(s, n)
    }

    /// Frees frame `s`, inside the area.
    #[inline(always)]
    pub(super) fn free_one(&mut self, s: u64) -> Result<(), FreeError> {
        let lo = self.geo.level[0].lo;
        let wi = (s / 64 - lo) as usize;
        let bit = 1u64 << (s % 64);
        let a0 = self.geo.level[0].bits.offset + wi;
        let old = self.words[a0];
        if (old | self.words[self.geo.reserved.offset + wi]) & bit != 0 {
            return Err(if old & bit != 0 { FreeError::AlreadyFree(frame(s)) } else { FreeError::Reserved(frame(s)) });
        }
        let new = old | bit;
        self.words[a0] = new;
        hit(Path::FreeOneSlow);
        if old == 0 {
            self.tree_set(0, wi);
        }
        if new == !0 && self.geo.levels > 1 {
            hit(Path::WordFilled);
            self.set_unit(1, lo + wi as u64);
        }
        self.words[W_FREE] += 1;
        self.words[W_HINT] = wi as u64;
        Ok(())
    }

    /// Frees frames `[s, s + n)`, checking the range and every frame first.
    pub(super) fn free_many(&mut self, s: u64, n: u64) -> Result<(), FreeError> {
        if n == 0 || s < self.geo.start || s >= self.geo.end || n > self.geo.end - s {
            return Err(FreeError::OutsideArea(MemoryArea::new(PhysAddr::new(s << PAGE_SHIFT), n << PAGE_SHIFT)));
        }
        let e = s + n;
        if n >= 64 && n.is_power_of_two() && s & (n - 1) == 0 {
            return self.free_block(s, n.trailing_zeros() as u8);
        }
        if (s | n).is_multiple_of(64) {
            return self.free_words(s, e);
        }
        if self.any_free_or_reserved(s, e) {
            if let Some(f) = self.first_with(self.geo.level[0].bits, s, e, true) {
                return Err(FreeError::AlreadyFree(Frame::from_number(f)));
            }
            if let Some(f) = self.first_with(self.geo.reserved, s, e, true) {
                return Err(FreeError::Reserved(Frame::from_number(f)));
            }
        }
        self.set_units(0, s, e);
        self.words[W_FREE] += n;
        Ok(())
    }

    /// [`free_many`](Self::free_many) for frames `[s, e)` inside the area that cover whole
    /// level-0 words: the words are checked and filled whole, and the level above gets units
    /// `s / 64 .. e / 64`.
    pub(super) fn free_words(&mut self, s: u64, e: u64) -> Result<(), FreeError> {
        let (a0, r, lo) = (self.geo.level[0].bits.offset, self.geo.reserved.offset, self.geo.level[0].lo);
        let (w0, w1) = ((s / 64 - lo) as usize, (e / 64 - lo) as usize);
        let busy = or_all(&self.words[a0 + w0..a0 + w1]) | or_all(&self.words[r + w0..r + w1]);
        if busy != 0 {
            return Err(self.free_error(s, e));
        }
        hit(Path::RangeFreedWords);
        self.words[a0 + w0..a0 + w1].fill(!0);
        self.tree_set_words(0, w0, w1);
        if self.geo.levels > 1 {
            self.set_units(1, s / 64, e / 64);
        }
        self.words[W_FREE] += e - s;
        Ok(())
    }
}
