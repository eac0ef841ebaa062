//! An AVL tree of disjoint intervals in an index arena, augmented with each subtree's
//! largest gap, so that a free range is found in O(log n).
//!
//! ```text
//!                 [40,50) gap:max(10, 5, 40-30, 60-50)=10
//!                /                    \
//!        [10,30) gap:0            [60,90) gap:0
//!   subtree: min_start 10, max_end 30       min_start 60, max_end 90
//!
//!   free space:  ..10 | 30..40 | 50..60 | 90..
//! ```
//!
//! Every node keeps the smallest start and the largest end of its subtree and the largest
//! gap *between* two intervals of its subtree. A first-fit search walks the tree in address
//! order and skips every subtree whose largest inner gap is too small: it descends along one
//! path to the lower bound of the search and then along one path to the first gap that fits,
//! so it visits O(log n) nodes when the alignment is at most a page (a gap that is large
//! enough then always fits). With a larger alignment a large-enough gap may still not hold an
//! aligned run; the search then moves on to the next candidate, as Zircon's VMAR does.
//!
//! The tree works on plain numbers (bytes, or anything ordered); the region map gives them
//! their meaning. Nodes live in a `Vec` and refer to each other by index: no pointers, no
//! `unsafe`, and freed slots are reused.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// "No node".
const NIL: u32 = u32::MAX;

/// What a lookup reads: the interval and the children (24 bytes, so that a descent
/// touches as few cache lines as possible).
#[derive(Debug, Clone, Copy)]
struct Link {
    start: usize,
    end: usize,
    left: u32,
    right: u32,
}

/// What a free-space search and rebalancing read: the subtree's summary.
#[derive(Debug, Clone, Copy)]
struct Summary {
    min_start: usize,
    max_end: usize,
    max_gap: usize,
    height: u8,
}

/// A free-space query: the first `size` bytes aligned to `align` in `[lo, hi)`.
#[derive(Debug, Clone, Copy)]
struct Query {
    lo: usize,
    hi: usize,
    size: usize,
    align: usize,
}

impl Query {
    /// The first aligned place for the query in the free range `[start, end)`.
    fn fit(&self, start: usize, end: usize) -> Option<usize> {
        let s = start.max(self.lo);
        let e = end.min(self.hi);
        let a = s.checked_add(self.align - 1)? & !(self.align - 1);
        let last = a.checked_add(self.size)?;
        (last <= e).then_some(a)
    }
}

/// One interval of the tree, as the accessors return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<V> {
    /// First number of the interval.
    pub(crate) start: usize,
    /// One past the last number of the interval.
    pub(crate) end: usize,
    /// What the interval carries.
    pub(crate) value: V,
}

/// Disjoint half-open intervals `[start, end)` with values, ordered by start.
///
/// Node `i` is `links[i]`, `sums[i]` and `values[i]`: three arrays, so that a lookup reads
/// only the links.
///
/// # Invariants
/// Intervals are non-empty and disjoint; the tree is an AVL tree ordered by start; every
/// node's summary describes its subtree; the free list holds exactly the slots not in the
/// tree.
#[derive(Debug)]
pub(crate) struct GapTree<V> {
    links: Vec<Link>,
    sums: Vec<Summary>,
    values: Vec<V>,
    root: u32,
    free: u32,
    len: usize,
    /// The node [`containing_cached`](GapTree::containing_cached) found last (or `NIL`);
    /// reset by every change of the tree. Atomic (relaxed) so that lookups stay `&self`
    /// and the tree stays `Sync`.
    last_hit: AtomicU32,
}

impl<V: Clone> Clone for GapTree<V> {
    fn clone(&self) -> Self {
        GapTree {
            links: self.links.clone(),
            sums: self.sums.clone(),
            values: self.values.clone(),
            root: self.root,
            free: self.free,
            len: self.len,
            last_hit: AtomicU32::new(NIL),
        }
    }
}

impl<V: Copy> GapTree<V> {
    /// An empty tree.
    pub(crate) const fn new() -> Self {
        GapTree {
            links: Vec::new(),
            sums: Vec::new(),
            values: Vec::new(),
            root: NIL,
            free: NIL,
            len: 0,
            last_hit: AtomicU32::new(NIL),
        }
    }

    /// The number of intervals.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn link(&self, i: u32) -> &Link {
        &self.links[i as usize]
    }

    fn link_mut(&mut self, i: u32) -> &mut Link {
        &mut self.links[i as usize]
    }

    fn sum(&self, i: u32) -> &Summary {
        &self.sums[i as usize]
    }

    fn height(&self, i: u32) -> u8 {
        if i == NIL { 0 } else { self.sum(i).height }
    }

    /// Recomputes `i`'s summary from its children.
    fn update(&mut self, i: u32) {
        let n = *self.link(i);
        let (mut min_start, mut max_end, mut gap) = (n.start, n.end, 0);
        let mut height = 0;
        if n.left != NIL {
            let l = self.sum(n.left);
            min_start = l.min_start;
            gap = gap.max(l.max_gap).max(n.start - l.max_end);
            height = l.height;
        }
        if n.right != NIL {
            let r = self.sum(n.right);
            max_end = r.max_end;
            gap = gap.max(r.max_gap).max(r.min_start - n.end);
            height = height.max(r.height);
        }
        self.sums[i as usize] = Summary { min_start, max_end, max_gap: gap, height: height + 1 };
    }

    fn rotate_right(&mut self, i: u32) -> u32 {
        let l = self.link(i).left;
        self.link_mut(i).left = self.link(l).right;
        self.link_mut(l).right = i;
        self.update(i);
        self.update(l);
        l
    }

    fn rotate_left(&mut self, i: u32) -> u32 {
        let r = self.link(i).right;
        self.link_mut(i).right = self.link(r).left;
        self.link_mut(r).left = i;
        self.update(i);
        self.update(r);
        r
    }

    /// Restores the AVL balance at `i` (whose children are balanced) and returns the new
    /// subtree root.
    fn balance(&mut self, i: u32) -> u32 {
        self.update(i);
        let (l, r) = (self.link(i).left, self.link(i).right);
        let (hl, hr) = (self.height(l), self.height(r));
        if hl > hr + 1 {
            if self.height(self.link(l).left) < self.height(self.link(l).right) {
                let nl = self.rotate_left(l);
                self.link_mut(i).left = nl;
            }
            return self.rotate_right(i);
        }
        if hr > hl + 1 {
            if self.height(self.link(r).right) < self.height(self.link(r).left) {
                let nr = self.rotate_right(r);
                self.link_mut(i).right = nr;
            }
            return self.rotate_left(i);
        }
        i
    }

    fn allocate(&mut self, start: usize, end: usize, value: V) -> u32 {
        let link = Link { start, end, left: NIL, right: NIL };
        let sum = Summary { min_start: start, max_end: end, max_gap: 0, height: 1 };
        if self.free != NIL {
            let i = self.free;
            self.free = self.link(i).left;
            self.links[i as usize] = link;
            self.sums[i as usize] = sum;
            self.values[i as usize] = value;
            i
        } else {
            let i = u32::try_from(self.links.len()).expect("fewer than 2^32 intervals");
            self.links.push(link);
            self.sums.push(sum);
            self.values.push(value);
            i
        }
    }

    fn release(&mut self, i: u32) {
        let free = self.free;
        let l = self.link_mut(i);
        l.left = free;
        l.right = NIL;
        self.free = i;
    }

    /// Inserts `[start, end)`; the caller has checked that it overlaps nothing.
    pub(crate) fn insert(&mut self, start: usize, end: usize, value: V) {
        debug_assert!(start < end && !self.overlaps(start, end));
        *self.last_hit.get_mut() = NIL;
        let new = self.allocate(start, end, value);
        self.root = self.insert_at(self.root, new);
        self.len += 1;
    }

    fn insert_at(&mut self, i: u32, new: u32) -> u32 {
        if i == NIL {
            return new;
        }
        if self.link(new).start < self.link(i).start {
            let l = self.insert_at(self.link(i).left, new);
            self.link_mut(i).left = l;
        } else {
            let r = self.insert_at(self.link(i).right, new);
            self.link_mut(i).right = r;
        }
        self.balance(i)
    }

    /// Removes the interval starting at `start` and returns it.
    pub(crate) fn remove(&mut self, start: usize) -> Option<Entry<V>> {
        let mut removed = NIL;
        *self.last_hit.get_mut() = NIL;
        self.root = self.remove_at(self.root, start, &mut removed);
        if removed == NIL {
            return None;
        }
        let e = self.entry(removed);
        self.release(removed);
        self.len -= 1;
        Some(e)
    }

    fn remove_at(&mut self, i: u32, start: usize, removed: &mut u32) -> u32 {
        if i == NIL {
            return NIL;
        }
        let n = *self.link(i);
        if start < n.start {
            let l = self.remove_at(n.left, start, removed);
            self.link_mut(i).left = l;
        } else if start > n.start {
            let r = self.remove_at(n.right, start, removed);
            self.link_mut(i).right = r;
        } else {
            *removed = i;
            if n.left == NIL {
                return n.right;
            }
            if n.right == NIL {
                return n.left;
            }
            let mut min = NIL;
            let r = self.remove_min(n.right, &mut min);
            self.link_mut(min).left = n.left;
            self.link_mut(min).right = r;
            return self.balance(min);
        }
        self.balance(i)
    }

    fn remove_min(&mut self, i: u32, min: &mut u32) -> u32 {
        let l = self.link(i).left;
        if l == NIL {
            *min = i;
            return self.link(i).right;
        }
        let nl = self.remove_min(l, min);
        self.link_mut(i).left = nl;
        self.balance(i)
    }

    fn entry(&self, i: u32) -> Entry<V> {
        let n = self.link(i);
        Entry { start: n.start, end: n.end, value: self.values[i as usize] }
    }

    /// The interval with the largest start `<= key`.
    pub(crate) fn floor(&self, key: usize) -> Option<Entry<V>> {
        let (mut i, mut best) = (self.root, NIL);
        while i != NIL {
            // Selects rather than branches: the direction is unpredictable.
            let n = self.link(i);
            let right = n.start <= key;
            best = if right { i } else { best };
            i = if right { n.right } else { n.left };
        }
        (best != NIL).then(|| self.entry(best))
    }

    /// The interval with the smallest start `>= key`.
    pub(crate) fn ceil(&self, key: usize) -> Option<Entry<V>> {
        let (mut i, mut best) = (self.root, NIL);
        while i != NIL {
            let n = self.link(i);
            if n.start >= key {
                best = i;
                i = n.left;
            } else {
                i = n.right;
            }
        }
        (best != NIL).then(|| self.entry(best))
    }

    /// The interval that contains `key`.
    pub(crate) fn containing(&self, key: usize) -> Option<Entry<V>> {
        self.floor(key).filter(|e| key < e.end)
    }

    /// The interval that contains `key`, trying the one found last first: a stream of
    /// lookups with locality (page faults walking through a region) skips the descent.
    pub(crate) fn containing_cached(&self, key: usize) -> Option<Entry<V>> {
        let hit = self.last_hit.load(Ordering::Relaxed);
        if hit != NIL {
            let l = self.link(hit);
            if l.start <= key && key < l.end {
                return Some(self.entry(hit));
            }
        }
        let (mut i, mut best) = (self.root, NIL);
        while i != NIL {
            let n = self.link(i);
            let right = n.start <= key;
            best = if right { i } else { best };
            i = if right { n.right } else { n.left };
        }
        if best != NIL && key < self.link(best).end {
            self.last_hit.store(best, Ordering::Relaxed);
            return Some(self.entry(best));
        }
        None
    }

    /// The lowest interval that overlaps `[start, end)`, in one descent: the interval with
    /// the largest start `<= start` if it reaches past `start`, else the next one if it
    /// starts before `end`.
    pub(crate) fn first_overlapping(&self, start: usize, end: usize) -> Option<Entry<V>> {
        let (mut i, mut floor, mut next) = (self.root, NIL, NIL);
        while i != NIL {
            // Selects rather than branches: the direction is unpredictable.
            let n = self.link(i);
            let right = n.start <= start;
            floor = if right { i } else { floor };
            next = if right { next } else { i };
            i = if right { n.right } else { n.left };
        }
        if floor != NIL && self.link(floor).end > start {
            return Some(self.entry(floor));
        }
        (next != NIL && self.link(next).start < end).then(|| self.entry(next))
    }

    /// Whether any interval overlaps `[start, end)`.
    pub(crate) fn overlaps(&self, start: usize, end: usize) -> bool {
        self.first_overlapping(start, end).is_some()
    }

    /// Replaces the value of the interval starting at `start`; false if there is none.
    pub(crate) fn set_value(&mut self, start: usize, value: V) -> bool {
        let mut i = self.root;
        while i != NIL {
            let n = *self.link(i);
            if start == n.start {
                self.values[i as usize] = value;
                return true;
            }
            i = if start < n.start { n.left } else { n.right };
        }
        false
    }

    /// The first `size` numbers aligned to `align` (a power of two) in `[lo, hi)` that no
    /// interval covers.
    pub(crate) fn first_fit(&self, lo: usize, hi: usize, size: usize, align: usize) -> Option<usize> {
        debug_assert!(align.is_power_of_two() && size > 0);
        let q = Query { lo, hi, size, align };
        if lo >= hi {
            return None;
        }
        if self.root == NIL {
            return q.fit(lo, hi);
        }
        if let Some(a) = self.fit(self.root, lo, &q) {
            return Some(a);
        }
        q.fit(self.sum(self.root).max_end, hi)
    }

    /// The first fit among the gap in front of subtree `i` (starting at `before`) and the
    /// gaps inside it.
    fn fit(&self, i: u32, before: usize, q: &Query) -> Option<usize> {
        if before >= q.hi {
            return None;
        }
        let (n, sum) = (*self.link(i), *self.sum(i));
        if sum.max_gap < q.size || sum.max_end <= q.lo || sum.min_start >= q.hi {
            // No inner gap can hold the request within [lo, hi): only the leading gap.
            return q.fit(before, sum.min_start);
        }
        let lead_end = if n.left != NIL {
            if let Some(a) = self.fit(n.left, before, q) {
                return Some(a);
            }
            self.sum(n.left).max_end
        } else {
            before
        };
        if let Some(a) = q.fit(lead_end, n.start) {
            return Some(a);
        }
        if n.right != NIL {
            return self.fit(n.right, n.end, q);
        }
        None
    }

    /// Calls `f` on every interval in address order from the first whose start is `>= from`,
    /// until `f` returns false.
    pub(crate) fn for_each_from(&self, from: usize, mut f: impl FnMut(Entry<V>) -> bool) {
        let mut key = from;
        while let Some(e) = self.ceil(key) {
            if !f(e) {
                return;
            }
            key = e.end;
        }
    }

    /// Calls `f` on every interval in address order (allocates nothing).
    pub(crate) fn for_each(&self, mut f: impl FnMut(Entry<V>)) {
        self.walk(self.root, &mut f);
    }

    fn walk(&self, i: u32, f: &mut impl FnMut(Entry<V>)) {
        if i != NIL {
            let n = *self.link(i);
            self.walk(n.left, f);
            f(self.entry(i));
            self.walk(n.right, f);
        }
    }

    /// Every interval in address order.
    pub(crate) fn entries(&self) -> Vec<Entry<V>> {
        let mut out = Vec::with_capacity(self.len);
        self.collect(self.root, &mut out);
        out
    }

    fn collect(&self, i: u32, out: &mut Vec<Entry<V>>) {
        if i != NIL {
            let n = *self.link(i);
            self.collect(n.left, out);
            out.push(self.entry(i));
            self.collect(n.right, out);
        }
    }

    /// Checks every invariant of the tree.
    ///
    /// # Panics
    /// On the first broken invariant, naming it.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn check_invariants(&self) {
        let count = self.check_node(self.root);
        assert_eq!(count, self.len, "length does not match the tree");
        let es = self.entries();
        for w in es.windows(2) {
            assert!(w[0].end <= w[1].start, "intervals overlap or are out of order");
        }
        let mut free = 0;
        let mut f = self.free;
        while f != NIL {
            free += 1;
            assert!(free <= self.links.len(), "free list loops");
            f = self.link(f).left;
        }
        assert_eq!(free + self.len, self.links.len(), "slots are lost");
        assert!(self.sums.len() == self.links.len() && self.values.len() == self.links.len(), "arrays differ");
    }

    #[cfg(any(test, feature = "check"))]
    fn check_node(&self, i: u32) -> usize {
        if i == NIL {
            return 0;
        }
        let n = *self.link(i);
        assert!(n.start < n.end, "empty interval");
        let cl = self.check_node(n.left);
        let cr = self.check_node(n.right);
        let (hl, hr) = (self.height(n.left), self.height(n.right));
        assert!(hl.abs_diff(hr) <= 1, "AVL balance broken");
        let (mut min_start, mut max_end, mut gap) = (n.start, n.end, 0);
        if n.left != NIL {
            let l = self.sum(n.left);
            assert!(l.max_end <= n.start, "left subtree reaches into its parent");
            min_start = l.min_start;
            gap = gap.max(l.max_gap).max(n.start - l.max_end);
        }
        if n.right != NIL {
            let r = self.sum(n.right);
            assert!(r.min_start >= n.end, "right subtree reaches into its parent");
            max_end = r.max_end;
            gap = gap.max(r.max_gap).max(r.min_start - n.end);
        }
        let s = self.sum(i);
        assert_eq!(s.height, hl.max(hr) + 1, "height summary wrong");
        assert_eq!((s.min_start, s.max_end, s.max_gap), (min_start, max_end, gap), "summary wrong");
        cl + cr + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The reference first fit: a linear scan over the gaps.
    fn model_fit(m: &BTreeMap<usize, usize>, lo: usize, hi: usize, size: usize, align: usize) -> Option<usize> {
        let q = Query { lo, hi, size, align };
        let mut prev = 0;
        for (&s, &e) in m {
            if let Some(a) = q.fit(prev, s) {
                return Some(a);
            }
            prev = e;
        }
        q.fit(prev, usize::MAX)
    }

    proptest! {
        #[test]
        fn matches_a_linear_scan(ops in proptest::collection::vec((0usize..200, 1usize..12, any::<bool>()), 1..200),
                                 queries in proptest::collection::vec((0usize..220, 0usize..260, 1usize..20, 0u32..4), 1..30)) {
            let mut t = GapTree::new();
            let mut m = BTreeMap::new();
            for (s, len, insert) in ops {
                if insert {
                    if !t.overlaps(s, s + len) {
                        t.insert(s, s + len, ());
                        m.insert(s, s + len);
                    }
                } else {
                    let got = t.remove(s).map(|e| (e.start, e.end));
                    let want = m.remove(&s).map(|e| (s, e));
                    prop_assert_eq!(got, want);
                }
                t.check_invariants();
                for (lo, hi, size, align) in &queries {
                    let align = 1 << align;
                    prop_assert_eq!(t.first_fit(*lo, *hi, *size, align), model_fit(&m, *lo, *hi, *size, align));
                    let over = t.first_overlapping(*lo, lo + size).map(|e| (e.start, e.end));
                    let want = m.iter().find(|(s, e)| **s < lo + size && **e > *lo).map(|(s, e)| (*s, *e));
                    prop_assert_eq!(over, want);
                    prop_assert_eq!(t.containing_cached(*lo), t.containing(*lo));
                    prop_assert_eq!(t.containing_cached(*hi), t.containing(*hi));
                }
            }
            let got: Vec<_> = t.entries().iter().map(|e| (e.start, e.end)).collect();
            let want: Vec<_> = m.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
