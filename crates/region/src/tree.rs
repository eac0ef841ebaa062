//! A B+-tree of disjoint intervals in an index arena, augmented with each child's largest
//! gap, so that a free range is found in O(log n) and a lookup touches few cache lines.
//!
//! ```text
//!   internal node:  child │ min_start │ max_end │ max_gap    (one row per child, ≤ 32)
//!                    ─────┼───────────┼─────────┼────────
//!                      7  │    10     │   50    │   10      gaps between children:
//!                      3  │    60     │   90    │    0        60 - 50 = 10
//!                      │
//!                      ▼
//!   leaf:           start │ end │ value                      (≤ 32 intervals, chained
//!                     10  │ 30  │  ..                        to the next leaf)
//!                     40  │ 50  │  ..
//!
//!   free space:  ..10 | 30..40 | 50..60 | 90..
//! ```
//!
//! Every node holds up to [`B`] rows and, unless it is the root, at least `B / 8`; every
//! leaf lies at the same depth. A full node splits in halves, except when the new row goes
//! to its end (addresses handed out in ascending order): the left node then keeps 29 rows,
//! so that such a tree stays shallow and dense. An internal node keeps, for each child, the
//! smallest start, the largest end and the largest gap *between* two intervals of the
//! child's subtree. Every node also keeps its own largest gap, so that the row describing it
//! in its parent is read, not computed, after a change. An insertion, a removal or a
//! changed row updates it in one step unless the change takes away the node's largest gap
//! and brings none as large; only then are the node's rows scanned. (Scanning every node on
//! the path was more than half of an attach and a detach at 100 000 regions.)
//!
//! Internal nodes and leaves are two types in two arenas. A leaf holds only what a lookup
//! needs (starts, ends, values, and the lengths again in one cache line), so a large tree
//! stays small: 100 000 one-page regions of the region map take about 3.9 MiB of leaves
//! and 0.1 MiB of internal nodes. On the machines measured (2 MiB of second-level cache per
//! core), a chain of random loads costs about 8 ns a load within 1 MiB, 20 ns within 2 MiB,
//! 40 ns within 4 MiB and 180 ns within 64 MiB, so the size of a leaf decides what a lookup
//! in a large map costs more than the number of levels does. A lookup reads the starts of
//! one node per level (counted without branches, one cache line of them at a time) and so
//! visits about `log32 n` nodes: three internal levels for 100 000 regions, which stay in
//! the second-level cache, and one leaf. Lookups by address (`find`, page faults) first try
//! a leaf hinted for the address's granule in a small table (64 bytes per leaf) and skip the
//! descent when the address lies within that leaf's span; at 100 000 regions this took a
//! random lookup from about 90 ns to under 40 ns. What is left there is two dependent reads
//! from the second-level cache (the hint, then the leaf's starts and lengths, which stay
//! cached because every lookup in the leaf reads them) and, for an address inside a region,
//! the line of its value, which does not stay cached: about 28 ns for an address in a hole
//! and 39 ns for one in a region, against 15 ns for either among 100 regions.
//!
//! A first-fit search walks the rows in address order and skips every child whose largest
//! inner gap is too small: it descends along the path to the lower bound of the search and
//! then to the first gap that fits, so it visits O(log n) nodes when the alignment is at
//! most a page (a gap that is large enough then always fits). With a larger alignment a large-enough gap may still not hold an
//! aligned run; the search then moves on to the next candidate, as Zircon's VMAR does.
//!
//! A change to a few neighbouring rows is one splice ([`GapTree::splice`]): the rows are
//! replaced in their leaf and the summaries on the path updated once on the way back, so a
//! split in three, a cut or a merge of three regions costs one descent (row by row only when
//! the rows span leaves or the leaf would over- or underflow). A [`Cursor`] from one search
//! reads a row's neighbours through the leaf and its chain, so the region map decides such a
//! change with one search and makes it with one descent.
//!
//! The tree works on plain numbers (bytes, or anything ordered); the region map gives them
//! their meaning. Nodes live in a `Vec` and refer to each other by index: no pointers, no
//! `unsafe`, and freed nodes are reused.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// "No node".
const NIL: u32 = u32::MAX;

/// The most rows a node holds.
const B: usize = 32;

/// Rows per group in [`Rows::count_le`]: the starts in one 64-byte cache line.
const GROUP: usize = 64 / size_of::<usize>();

/// The fewest rows a node other than the root holds.
const MIN: usize = B / 8;

/// A subtree's extent and its largest inner gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    min_start: usize,
    max_end: usize,
    max_gap: usize,
}

/// One row of a node, as it moves between nodes: an interval and its value (leaf), or a
/// child and its summary (internal node: `lo`, `hi`, `gap` are the child's smallest start,
/// largest end and largest inner gap).
#[derive(Debug, Clone, Copy)]
struct Row<V> {
    lo: usize,
    hi: usize,
    gap: usize,
    child: u32,
    value: Option<V>,
}

/// What every node has: the rows' starts and ends, their number, a link and the largest
/// gap.
#[derive(Debug, Clone)]
#[repr(C)]
struct Keys {
    lo: [usize; B],
    hi: [usize; B],
    len: u32,
    /// Leaves: the next leaf in address order. Free nodes: the next free node.
    next: u32,
    /// The largest gap inside the node's subtree (kept up to date by [`Rows`]).
    max_gap: usize,
}

impl Keys {
    const EMPTY: Keys = Keys { lo: [0; B], hi: [0; B], len: 0, next: NIL, max_gap: 0 };
}

/// An internal node: one row per child, as parallel arrays, so that a descent reads only
/// `lo` and one entry of `child`.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct Inner {
    keys: Keys,
    child: [u32; B],
    gap: [usize; B],
}

/// A leaf: one row per interval, and only what a lookup needs (the starts, the ends and
/// the values), so that a large tree stays small (see the module documentation).
///
/// `lens` repeats each interval's length in [`GRAIN`]s, in one cache line, when it is a
/// whole number of grains below [`LONG`] ([`LONG`] otherwise: read `hi`). A lookup then
/// finds where its interval ends (or that the key lies in the hole after it) from the
/// starts and this line alone: in a large map these lines stay in the cache, the ends
/// (read by a lookup once per leaf visit, a different line each time) do not.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct Leaf<V> {
    lens: [u16; B],
    keys: Keys,
    value: [Option<V>; B],
}

/// The unit of [`Leaf::lens`]: a 4 KiB page, the grain of the region map's keys.
const GRAIN_SHIFT: u32 = 12;
const GRAIN: usize = 1 << GRAIN_SHIFT;
/// In [`Leaf::lens`]: the length is not kept there (too long, or not whole grains).
const LONG: u16 = u16::MAX;

/// `end - start` in grains for [`Leaf::lens`].
#[inline]
fn grains(start: usize, end: usize) -> u16 {
    let len = end - start;
    if len.is_multiple_of(GRAIN) { u16::try_from(len >> GRAIN_SHIFT).unwrap_or(LONG) } else { LONG }
}

impl<V> Leaf<V> {
    /// The end of row `p`, from its start and [`Leaf::lens`] unless the length is long.
    #[inline]
    fn end(&self, p: usize) -> usize {
        match self.lens[p] {
            LONG => self.keys.hi[p],
            g => self.keys.lo[p] + (usize::from(g) << GRAIN_SHIFT),
        }
    }
}

/// What internal nodes and leaves share: rows ordered by `lo`, moved as [`Row`]s, and a
/// link for the free list (and the leaf chain).
trait Rows<V: Copy>: Clone {
    fn empty() -> Self;
    fn keys(&self) -> &Keys;
    fn keys_mut(&mut self) -> &mut Keys;
    /// The largest gap inside row `i`'s subtree (0 in a leaf).
    fn gap(&self, i: usize) -> usize;
    fn row(&self, i: usize) -> Row<V>;
    /// Writes row `i` and leaves `max_gap` alone (see [`Rows::update`]).
    fn set_raw(&mut self, i: usize, r: Row<V>);
    /// Moves the node's own arrays (not the keys) of rows `from..from + n` to `to`.
    fn shift_own(&mut self, from: usize, n: usize, to: usize);

    #[inline]
    fn len(&self) -> usize {
        self.keys().len as usize
    }
    #[inline]
    fn set_len(&mut self, n: usize) {
        self.keys_mut().len = n as u32;
    }
    #[inline]
    fn next(&self) -> u32 {
        self.keys().next
    }
    #[inline]
    fn set_next(&mut self, next: u32) {
        self.keys_mut().next = next;
    }
    #[inline]
    fn lo(&self) -> &[usize; B] {
        &self.keys().lo
    }
    #[inline]
    fn hi(&self) -> &[usize; B] {
        &self.keys().hi
    }
    /// The largest gap inside the subtree, as kept.
    #[inline]
    fn max_gap(&self) -> usize {
        self.keys().max_gap
    }
    #[inline]
    fn set_max_gap(&mut self, gap: usize) {
        self.keys_mut().max_gap = gap;
    }

    /// Moves rows `from..from + n` to start at `to`.
    fn shift(&mut self, from: usize, n: usize, to: usize) {
        let k = self.keys_mut();
        k.lo.copy_within(from..from + n, to);
        k.hi.copy_within(from..from + n, to);
        self.shift_own(from, n, to);
    }

    /// The largest of what row `i` brings to the node's largest gap: its own inner gap and
    /// the gaps to its neighbours.
    #[inline]
    fn gaps_at(&self, i: usize) -> usize {
        let (n, lo, hi) = (self.len(), self.lo(), self.hi());
        let left = if i > 0 { lo[i] - hi[i - 1] } else { 0 };
        let right = if i + 1 < n { lo[i + 1] - hi[i] } else { 0 };
        self.gap(i).max(left).max(right)
    }

    /// Sets `max_gap` after a change that took away gaps of at most `lost` and brought
    /// gaps of at most `added` (the largest of them): in one step when the new gaps are
    /// at least as large as the old largest, or the old largest was not among those taken
    /// away; else by a scan of the rows.
    fn settle_gap(&mut self, lost: usize, added: usize) {
        let old = self.max_gap();
        if added >= old {
            self.set_max_gap(added);
        } else if lost < old || lost == 0 {
            self.set_max_gap(old);
        } else {
            self.recompute_gap();
        }
    }

    /// The largest gap inside the subtree, from a scan of the rows.
    fn scan_gap(&self) -> usize {
        let (n, lo, hi) = (self.len(), self.lo(), self.hi());
        let mut gap = if n > 0 { self.gap(0) } else { 0 };
        for i in 1..n {
            gap = gap.max(self.gap(i)).max(lo[i] - hi[i - 1]);
        }
        gap
    }

    /// Sets `max_gap` from a scan of the rows.
    fn recompute_gap(&mut self) {
        let gap = self.scan_gap();
        self.set_max_gap(gap);
    }

    /// Replaces row `i`.
    fn update(&mut self, i: usize, r: Row<V>) {
        let lost = self.gaps_at(i);
        self.set_raw(i, r);
        let added = self.gaps_at(i);
        self.settle_gap(lost, added);
    }

    /// The number of rows whose `lo` is `<= key` (the rows are ordered by `lo`), counted
    /// without branches: first the groups of [`GROUP`] rows that start at or below `key`,
    /// then the rows of the last such group (3 + 8 comparisons instead of 32).
    #[inline]
    fn count_le(&self, key: usize) -> usize {
        let (n, lo) = (self.len(), self.lo());
        let groups: usize = (GROUP..B).step_by(GROUP).map(|k| usize::from(k < n && lo[k] <= key)).sum();
        let first = groups * GROUP;
        let last = (first + GROUP).min(n);
        first + lo[first..last].iter().map(|&s| usize::from(s <= key)).sum::<usize>()
    }

    /// Replaces rows `i` and `i + 1` together, as after two siblings evened out their rows:
    /// the boundary between them moved, so neither row can be written alone while the
    /// other still holds its old extent (the gap between them would be computed from one
    /// new and one old row, and is negative when the left one grew).
    fn update_pair(&mut self, i: usize, left: Row<V>, right: Row<V>) {
        let lost = self.gaps_at(i).max(self.gaps_at(i + 1));
        self.set_raw(i, left);
        self.set_raw(i + 1, right);
        let added = self.gaps_at(i).max(self.gaps_at(i + 1));
        self.settle_gap(lost, added);
    }

    /// Inserts `r` at `i`; the node has room.
    fn insert(&mut self, i: usize, r: Row<V>) {
        let n = self.len();
        debug_assert!(n < B && i <= n);
        // The gap between the rows on either side of `i`, which `r` splits.
        let lost = if 0 < i && i < n { self.lo()[i] - self.hi()[i - 1] } else { 0 };
        self.shift(i, n - i, i + 1);
        self.set_raw(i, r);
        self.set_len(n + 1);
        let added = self.gaps_at(i);
        self.settle_gap(lost, added);
    }

    fn remove(&mut self, i: usize) -> Row<V> {
        let n = self.len();
        let r = self.row(i);
        let lost = self.gaps_at(i);
        self.shift(i + 1, n - i - 1, i);
        self.set_len(n - 1);
        // The rows on either side of `i` are now neighbours.
        let added = if 0 < i && i < n - 1 { self.lo()[i] - self.hi()[i - 1] } else { 0 };
        self.settle_gap(lost, added);
        r
    }

    /// The node's extent and largest gap; the node is not empty.
    fn summary(&self) -> Summary {
        let (n, lo, hi) = (self.len(), self.lo(), self.hi());
        Summary { min_start: lo[0], max_end: hi[n - 1], max_gap: self.max_gap() }
    }
}

impl<V: Copy> Rows<V> for Inner {
    fn empty() -> Self {
        Inner { keys: Keys::EMPTY, child: [NIL; B], gap: [0; B] }
    }
    #[inline]
    fn keys(&self) -> &Keys {
        &self.keys
    }
    #[inline]
    fn keys_mut(&mut self) -> &mut Keys {
        &mut self.keys
    }
    #[inline]
    fn gap(&self, i: usize) -> usize {
        self.gap[i]
    }
    #[inline]
    fn row(&self, i: usize) -> Row<V> {
        let k = &self.keys;
        Row { lo: k.lo[i], hi: k.hi[i], gap: self.gap[i], child: self.child[i], value: None }
    }
    #[inline]
    fn set_raw(&mut self, i: usize, r: Row<V>) {
        (self.keys.lo[i], self.keys.hi[i], self.gap[i], self.child[i]) = (r.lo, r.hi, r.gap, r.child);
    }
    fn shift_own(&mut self, from: usize, n: usize, to: usize) {
        self.gap.copy_within(from..from + n, to);
        self.child.copy_within(from..from + n, to);
    }
}

impl<V: Copy> Rows<V> for Leaf<V> {
    fn empty() -> Self {
        Leaf { lens: [LONG; B], keys: Keys::EMPTY, value: [None; B] }
    }
    #[inline]
    fn keys(&self) -> &Keys {
        &self.keys
    }
    #[inline]
    fn keys_mut(&mut self) -> &mut Keys {
        &mut self.keys
    }
    #[inline]
    fn gap(&self, _: usize) -> usize {
        0
    }
    #[inline]
    fn row(&self, i: usize) -> Row<V> {
        Row { lo: self.keys.lo[i], hi: self.keys.hi[i], gap: 0, child: NIL, value: self.value[i] }
    }
    #[inline]
    fn set_raw(&mut self, i: usize, r: Row<V>) {
        (self.keys.lo[i], self.keys.hi[i], self.value[i]) = (r.lo, r.hi, r.value);
        self.lens[i] = grains(r.lo, r.hi);
    }
    fn shift_own(&mut self, from: usize, n: usize, to: usize) {
        self.lens.copy_within(from..from + n, to);
        self.value.copy_within(from..from + n, to);
    }
}

/// Nodes of one kind in a `Vec`, named by index, with a free list through `next`.
#[derive(Debug, Clone)]
struct Arena<N> {
    nodes: Vec<N>,
    free: u32,
    /// Nodes in use (not on the free list).
    live: usize,
}

impl<N> Arena<N> {
    const fn new() -> Self {
        Arena { nodes: Vec::new(), free: NIL, live: 0 }
    }

    #[inline]
    fn get(&self, i: u32) -> &N {
        &self.nodes[i as usize]
    }

    #[inline]
    fn get_mut(&mut self, i: u32) -> &mut N {
        &mut self.nodes[i as usize]
    }

    fn allocate<V: Copy>(&mut self) -> u32
    where
        N: Rows<V>,
    {
        self.live += 1;
        if self.free != NIL {
            let i = self.free;
            self.free = self.get(i).next();
            *self.get_mut(i) = N::empty();
            i
        } else {
            let i = u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes");
            self.nodes.push(N::empty());
            i
        }
    }

    fn release<V: Copy>(&mut self, i: u32)
    where
        N: Rows<V>,
    {
        self.live -= 1;
        let free = self.free;
        let n = self.get_mut(i);
        n.set_len(0);
        n.set_next(free);
        self.free = i;
    }

    /// The number of nodes on the free list.
    #[cfg(any(test, feature = "check"))]
    fn free_count<V: Copy>(&self) -> usize
    where
        N: Rows<V>,
    {
        let mut count = 0;
        let mut f = self.free;
        while f != NIL {
            count += 1;
            assert!(count <= self.nodes.len(), "free list loops");
            f = self.get(f).next();
        }
        count
    }

    /// Puts `row` at `p` in node `i`, splitting a full node (in halves, or all but
    /// [`MIN`] rows kept when `row` goes to the end); returns the new right node.
    fn put<V: Copy>(&mut self, i: u32, p: usize, row: Row<V>) -> Option<u32>
    where
        N: Rows<V>,
    {
        if self.get(i).len() < B {
            self.get_mut(i).insert(p, row);
            return None;
        }
        let keep = if p == B { B + 1 - MIN } else { B / 2 };
        let r = self.allocate();
        for k in keep..B {
            let moved = self.get(i).row(k);
            self.get_mut(r).set_raw(k - keep, moved);
        }
        self.get_mut(r).set_len(B - keep);
        self.get_mut(i).set_len(keep);
        self.get_mut(r).recompute_gap();
        self.get_mut(i).recompute_gap();
        if p <= keep {
            self.get_mut(i).insert(p, row);
        } else {
            self.get_mut(r).insert(p - keep, row);
        }
        Some(r)
    }

    /// Siblings `l` and `r` (in this order) together: merges `r` into `l` when their rows
    /// fit in one node (and returns true; `r` is then free), else evens them out.
    fn merge_or_even<V: Copy>(&mut self, l: u32, r: u32) -> bool
    where
        N: Rows<V>,
    {
        let total = self.get(l).len() + self.get(r).len();
        if total <= B {
            for k in 0..self.get(r).len() {
                let moved = self.get(r).row(k);
                let at = self.get(l).len();
                self.get_mut(l).insert(at, moved);
            }
            return true;
        }
        let want = total / 2;
        while self.get(l).len() > want {
            let last = self.get(l).len() - 1;
            let moved = self.get_mut(l).remove(last);
            self.get_mut(r).insert(0, moved);
        }
        while self.get(l).len() < want {
            let moved = self.get_mut(r).remove(0);
            let at = self.get(l).len();
            self.get_mut(l).insert(at, moved);
        }
        false
    }
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

/// Levels of [`TreeStats`]: heights 0 (leaves) to `LEVELS - 1`; higher nodes are counted
/// in the last.
#[cfg(any(test, feature = "check"))]
pub(crate) const LEVELS: usize = 4;

/// How often each structural change happened in a tree, by height (0: leaves), so that
/// random tests can show they reached every path of the tree at every level.
#[cfg(any(test, feature = "check"))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// A full node split in two (by the node's height).
    pub splits: [u64; LEVELS],
    /// An underfull node merged with a sibling (by their height).
    pub merges: [u64; LEVELS],
    /// An underfull node and a sibling evened out their rows (by their height).
    pub evens: [u64; LEVELS],
    /// The root split and the tree grew a level (by the new height).
    pub grows: [u64; LEVELS],
    /// The root kept one child and the tree lost a level (by the old height).
    pub shrinks: [u64; LEVELS],
}

#[cfg(any(test, feature = "check"))]
impl TreeStats {
    /// Nothing counted yet.
    pub const NONE: TreeStats = TreeStats {
        splits: [0; LEVELS],
        merges: [0; LEVELS],
        evens: [0; LEVELS],
        grows: [0; LEVELS],
        shrinks: [0; LEVELS],
    };

    fn at(h: usize) -> usize {
        h.min(LEVELS - 1)
    }

    /// The sum of two records, field by field.
    #[must_use]
    pub fn plus(&self, other: &TreeStats) -> TreeStats {
        let add = |a: [u64; LEVELS], b: [u64; LEVELS]| core::array::from_fn(|k| a[k] + b[k]);
        TreeStats {
            splits: add(self.splits, other.splits),
            merges: add(self.merges, other.merges),
            evens: add(self.evens, other.evens),
            grows: add(self.grows, other.grows),
            shrinks: add(self.shrinks, other.shrinks),
        }
    }
}

/// Counts one structural change of kind `$kind` at height `$h` in `$tree`'s [`TreeStats`]
/// (nothing outside tests and the `check` feature).
macro_rules! count {
    ($tree:expr, $kind:ident, $h:expr) => {
        #[cfg(any(test, feature = "check"))]
        {
            $tree.stats.$kind[TreeStats::at($h)] += 1;
        }
    };
}

/// Disjoint half-open intervals `[start, end)` with values, ordered by start.
///
/// # Invariants
/// Intervals are non-empty and disjoint, ordered by start within and across the leaves;
/// every leaf has depth `height`; every node holds at most [`B`] rows and, except the root,
/// at least [`MIN`] (an internal root at least two); every internal row describes its
/// child's subtree; the leaf chain visits the leaves in address order; each free list holds
/// exactly the nodes of its kind not in the tree.
#[derive(Debug)]
pub(crate) struct GapTree<V> {
    inner: Arena<Inner>,
    leaves: Arena<Leaf<V>>,
    /// A leaf when `height` is 0, else an internal node; `NIL` when the tree is empty.
    root: u32,
    /// The number of internal levels above the leaves.
    height: usize,
    len: usize,
    /// The leaf [`containing_cached`](GapTree::containing_cached) found last (or `NIL`);
    /// reset by every change of the tree. Atomic (relaxed) so that lookups stay `&self`
    /// and the tree stays `Sync`.
    last_hit: AtomicU32,
    /// Leaf hints: slot `(key >> hint_shift) % hints.len()` names a leaf that a lookup of
    /// a key of that granule found last (or `NIL`). See [`GapTree::leaf_near`].
    hints: Vec<AtomicU32>,
    hint_shift: u32,
    /// Structural changes so far.
    #[cfg(any(test, feature = "check"))]
    stats: TreeStats,
    /// Walks from the root to a leaf so far (see [`GapTree::descents`]).
    #[cfg(any(test, feature = "check"))]
    descents: core::sync::atomic::AtomicU64,
    /// Lookups that a leaf hint answered without a descent so far.
    #[cfg(any(test, feature = "check"))]
    hinted: core::sync::atomic::AtomicU64,
}

/// A row of a [`GapTree`] (its leaf and place), valid until the tree next changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    leaf: u32,
    p: usize,
}

/// What [`GapTree::splice_at`] did.
#[derive(Debug, Clone, Copy)]
enum Spliced {
    /// The rows were replaced in their leaf.
    Done,
    /// No row starts at the key: nothing changed.
    Missing,
    /// The rows span leaves, or the leaf would over- or underflow: nothing changed.
    Apart,
}

/// The intervals of a [`GapTree`] in address order from one on ([`GapTree::iter_from`]).
#[derive(Debug)]
pub(crate) struct Iter<'a, V> {
    tree: &'a GapTree<V>,
    leaf: u32,
    p: usize,
}

impl<V: Copy> Iterator for Iter<'_, V> {
    type Item = Entry<V>;

    fn next(&mut self) -> Option<Entry<V>> {
        while self.leaf != NIL {
            let n = self.tree.leaf(self.leaf);
            if self.p < n.len() {
                let e = self.tree.entry(self.leaf, self.p);
                self.p += 1;
                return Some(e);
            }
            self.leaf = n.keys.next;
            self.p = 0;
        }
        None
    }
}

/// Hint slots per leaf in the tree when the hint table is sized.
const HINTS_PER_LEAF: usize = 16;

/// A hint table of `slots` empty slots.
fn no_hints(slots: usize) -> Vec<AtomicU32> {
    (0..slots).map(|_| AtomicU32::new(NIL)).collect()
}

impl<V: Clone> Clone for GapTree<V> {
    fn clone(&self) -> Self {
        GapTree {
            inner: self.inner.clone(),
            leaves: self.leaves.clone(),
            root: self.root,
            height: self.height,
            len: self.len,
            last_hit: AtomicU32::new(NIL),
            hints: no_hints(self.hints.len()),
            hint_shift: self.hint_shift,
            #[cfg(any(test, feature = "check"))]
            stats: self.stats,
            #[cfg(any(test, feature = "check"))]
            descents: core::sync::atomic::AtomicU64::new(self.descents.load(Ordering::Relaxed)),
            #[cfg(any(test, feature = "check"))]
            hinted: core::sync::atomic::AtomicU64::new(self.hinted.load(Ordering::Relaxed)),
        }
    }
}

impl<V: Copy> GapTree<V> {
    /// An empty tree.
    pub(crate) const fn new() -> Self {
        GapTree {
            inner: Arena::new(),
            leaves: Arena::new(),
            root: NIL,
            height: 0,
            len: 0,
            last_hit: AtomicU32::new(NIL),
            hints: Vec::new(),
            hint_shift: 0,
            #[cfg(any(test, feature = "check"))]
            stats: TreeStats::NONE,
            #[cfg(any(test, feature = "check"))]
            descents: core::sync::atomic::AtomicU64::new(0),
            #[cfg(any(test, feature = "check"))]
            hinted: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Walks from the root to a leaf so far: every lookup that its leaf hint or the cached
    /// leaf did not answer, every insertion, removal and in-place change of a row that had
    /// to update the summaries on its path, every free-space search and every walk from
    /// the first leaf. A lookup answered from a hint is not a descent.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn descents(&self) -> u64 {
        self.descents.load(Ordering::Relaxed)
    }

    /// Lookups that a leaf hint (or the leaf found last) answered without a descent so far:
    /// each still reads a leaf.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn hinted(&self) -> u64 {
        self.hinted.load(Ordering::Relaxed)
    }

    /// Counts one hinted lookup (nothing outside tests and the `check` feature).
    #[inline]
    fn hint_used(&self) {
        // A load and a store, not a locked add: a statistic, which lookups from several
        // threads at once may undercount.
        #[cfg(any(test, feature = "check"))]
        self.hinted.store(self.hinted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// `f` on the tree without counting its searches (for debug assertions).
    #[inline]
    fn uncounted<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        #[cfg(any(test, feature = "check"))]
        let before = (self.descents(), self.hinted());
        let out = f(self);
        #[cfg(any(test, feature = "check"))]
        {
            self.descents.store(before.0, Ordering::Relaxed);
            self.hinted.store(before.1, Ordering::Relaxed);
        }
        out
    }

    /// Counts one descent (nothing outside tests and the `check` feature).
    #[inline]
    fn descended(&self) {
        #[cfg(any(test, feature = "check"))]
        self.descents.store(self.descents.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Structural changes so far.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn stats(&self) -> TreeStats {
        self.stats
    }

    /// The number of intervals.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn leaf(&self, i: u32) -> &Leaf<V> {
        self.leaves.get(i)
    }

    /// The row describing node `i` (at height `h`) in its parent.
    #[inline]
    fn row_of(&self, i: u32, h: usize) -> Row<V> {
        let s = if h == 0 { self.leaf(i).summary() } else { Rows::<V>::summary(self.inner.get(i)) };
        Row { lo: s.min_start, hi: s.max_end, gap: s.max_gap, child: i, value: None }
    }

    /// The leaf where the interval with the largest start `<= key` lies, if there is one
    /// (else the leftmost leaf). The tree is not empty.
    #[inline]
    fn leaf_for(&self, key: usize) -> u32 {
        self.descended();
        let mut i = self.root;
        for _ in 0..self.height {
            let n = self.inner.get(i);
            i = n.child[Rows::<V>::count_le(n, key).saturating_sub(1)];
        }
        i
    }

    /// The leaf where the interval with the largest start `<= key` lies, like
    /// [`leaf_for`](GapTree::leaf_for), but trying the leaf hinted for `key`'s granule
    /// first: when `key` lies within that leaf's span (its first start to its last end),
    /// or past it but below the next leaf's first start (or no leaf follows), the answer
    /// is there, whatever changed since the hint was left (a freed leaf is empty and so
    /// holds no key), and the descent is skipped. In a large map the descent
    /// is a chain of cache misses, one level waiting for the one above; the hint table is
    /// small (64 bytes per leaf) and stays in the second-level cache. Linux kept a
    /// per-thread cache of VMAs found by address for the same reason. The tree is not
    /// empty.
    fn leaf_near(&self, key: usize) -> u32 {
        if self.hints.is_empty() {
            return self.leaf_for(key);
        }
        let slot = &self.hints[(key >> self.hint_shift) & (self.hints.len() - 1)];
        let hint = slot.load(Ordering::Relaxed);
        if hint != NIL {
            let n = self.leaf(hint);
            let len = n.len();
            if len > 0 && n.keys.lo[0] <= key && (key < n.end(len - 1) || self.starts_after(n.keys.next, key)) {
                self.hint_used();
                return hint;
            }
        }
        let leaf = self.leaf_for(key);
        slot.store(leaf, Ordering::Relaxed);
        leaf
    }

    /// Whether `leaf` is `NIL` (no leaf follows) or starts above `key`.
    #[inline]
    fn starts_after(&self, leaf: u32, key: usize) -> bool {
        leaf == NIL || self.leaf(leaf).keys.lo[0] > key
    }

    /// Sizes the hint table for the leaves in use ([`HINTS_PER_LEAF`] slots each), with
    /// granules of a quarter of a leaf's average span, when the tree has outgrown it. A
    /// granule that two leaves share sends about half its lookups down the tree; at
    /// 100 000 regions, granules of half a leaf's span cost 4 ns a random lookup more than
    /// these, and an eighth gained nothing.
    fn size_hints(&mut self) {
        let leaves = self.leaves.live;
        if leaves < 4 || leaves * HINTS_PER_LEAF <= self.hints.len() * 2 {
            return;
        }
        let top = self.row_of(self.root, self.height);
        let per_leaf = (top.hi - top.lo) / leaves;
        self.hint_shift = (per_leaf / 4).max(1).ilog2();
        self.hints = no_hints((leaves * HINTS_PER_LEAF).next_power_of_two());
    }

    #[inline]
    fn entry(&self, leaf: u32, p: usize) -> Entry<V> {
        let n = self.leaf(leaf);
        Entry { start: n.keys.lo[p], end: n.end(p), value: n.value[p].expect("a leaf row has a value") }
    }

    /// Inserts `[start, end)`; the caller has checked that it overlaps nothing.
    pub(crate) fn insert(&mut self, start: usize, end: usize, value: V) {
        debug_assert!(start < end && self.uncounted(|t| !t.overlaps(start, end)));
        let inserted = self.insert_checked::<false>(start, end, value);
        debug_assert!(inserted);
    }

    /// Inserts `[start, end)` carrying `value` if it overlaps no interval: the check and the
    /// insertion in one descent (the leaf that takes the row holds its predecessor, and its
    /// successor is there or first in the next leaf). False, and nothing changed, if it
    /// overlaps one.
    pub(crate) fn insert_free(&mut self, start: usize, end: usize, value: V) -> bool {
        debug_assert!(start < end);
        self.insert_checked::<true>(start, end, value)
    }

    fn insert_checked<const CHECK: bool>(&mut self, start: usize, end: usize, value: V) -> bool {
        if self.root == NIL {
            self.root = self.leaves.allocate();
            self.height = 0;
        }
        let row = Row { lo: start, hi: end, gap: 0, child: NIL, value: Some(value) };
        self.descended();
        let Ok(split) = self.insert_at::<CHECK>(self.root, self.height, row) else { return false };
        *self.last_hit.get_mut() = NIL;
        if let Some(split) = split {
            let (old, root) = (self.root, self.inner.allocate::<V>());
            let (a, b) = (self.row_of(old, self.height), self.row_of(split, self.height));
            self.inner.get_mut(root).insert(0, a);
            self.inner.get_mut(root).insert(1, b);
            self.root = root;
            self.height += 1;
            count!(self, grows, self.height);
        }
        self.len += 1;
        self.size_hints();
        true
    }

    /// Inserts `row` into the subtree of node `i` at height `h`; returns the new right
    /// sibling of `i` if `i` had to split. With `CHECK`, refuses (changing nothing) a row
    /// that overlaps one of the tree.
    fn insert_at<const CHECK: bool>(&mut self, i: u32, h: usize, row: Row<V>) -> Result<Option<u32>, ()> {
        if h == 0 {
            let leaf = self.leaf(i);
            let p = leaf.count_le(row.lo);
            if CHECK {
                // Every internal row routes by its subtree's smallest start, so the
                // interval before `row.lo`, if any, is in this leaf.
                let before = p > 0 && leaf.keys.hi[p - 1] > row.lo;
                let after = if p < leaf.len() {
                    leaf.keys.lo[p] < row.hi
                } else {
                    leaf.keys.next != NIL && self.leaf(leaf.keys.next).keys.lo[0] < row.hi
                };
                if before || after {
                    return Err(());
                }
            }
            let Some(r) = self.leaves.put(i, p, row) else { return Ok(None) };
            count!(self, splits, 0);
            let next = self.leaf(i).keys.next;
            self.leaves.get_mut(r).keys.next = next;
            self.leaves.get_mut(i).keys.next = r;
            return Ok(Some(r));
        }
        let c = Rows::<V>::count_le(self.inner.get(i), row.lo).saturating_sub(1);
        let child = self.inner.get(i).child[c];
        let split = self.insert_at::<CHECK>(child, h - 1, row)?;
        let r = self.row_of(child, h - 1);
        self.inner.get_mut(i).update(c, r);
        let Some(s) = split else { return Ok(None) };
        let r = self.row_of(s, h - 1);
        let split = self.inner.put(i, c + 1, r);
        if split.is_some() {
            count!(self, splits, h);
        }
        Ok(split)
    }

    /// Removes the interval starting at `start` and returns it.
    pub(crate) fn remove(&mut self, start: usize) -> Option<Entry<V>> {
        *self.last_hit.get_mut() = NIL;
        if self.root == NIL {
            return None;
        }
        self.descended();
        let e = self.remove_at(self.root, self.height, start)?;
        self.len -= 1;
        let root = self.root;
        if self.height > 0 && self.inner.get(root).keys.len == 1 {
            self.root = self.inner.get(root).child[0];
            count!(self, shrinks, self.height);
            self.height -= 1;
            self.inner.release::<V>(root);
        } else if self.height == 0 && self.leaf(root).keys.len == 0 {
            self.root = NIL;
            self.leaves.release(root);
        }
        Some(e)
    }

    fn remove_at(&mut self, i: u32, h: usize, start: usize) -> Option<Entry<V>> {
        if h == 0 {
            let n = self.leaf(i);
            let p = n.count_le(start).checked_sub(1)?;
            if n.keys.lo[p] != start {
                return None;
            }
            let r = self.leaves.get_mut(i).remove(p);
            return Some(Entry { start: r.lo, end: r.hi, value: r.value.expect("a leaf row has a value") });
        }
        let p = Rows::<V>::count_le(self.inner.get(i), start).checked_sub(1)?;
        let child = self.inner.get(i).child[p];
        let e = self.remove_at(child, h - 1, start)?;
        let child_len = if h == 1 { self.leaf(child).len() } else { Rows::<V>::len(self.inner.get(child)) };
        if child_len < MIN {
            self.refill(i, p, h);
        } else {
            let r = self.row_of(child, h - 1);
            self.inner.get_mut(i).update(p, r);
        }
        Some(e)
    }

    /// Child `c` of node `i` (at height `h`) has too few rows: merges it with a
    /// neighbour, or evens the two out when they do not fit in one node.
    fn refill(&mut self, i: u32, c: usize, h: usize) {
        let n = self.inner.get(i);
        let (l, r) = if c + 1 < n.keys.len as usize { (c, c + 1) } else { (c - 1, c) };
        let (li, ri) = (n.child[l], n.child[r]);
        let merged = if h == 1 {
            let merged = self.leaves.merge_or_even(li, ri);
            if merged {
                let next = self.leaf(ri).keys.next;
                self.leaves.get_mut(li).keys.next = next;
                self.leaves.release(ri);
            }
            merged
        } else {
            let merged = self.inner.merge_or_even::<V>(li, ri);
            if merged {
                self.inner.release::<V>(ri);
            }
            merged
        };
        if merged {
            count!(self, merges, h - 1);
            Rows::<V>::remove(self.inner.get_mut(i), r);
            let lr = self.row_of(li, h - 1);
            self.inner.get_mut(i).update(l, lr);
        } else {
            count!(self, evens, h - 1);
            let (lr, rr) = (self.row_of(li, h - 1), self.row_of(ri, h - 1));
            self.inner.get_mut(i).update_pair(l, lr, rr);
        }
    }

    /// The interval with the largest start `<= key`.
    #[inline]
    pub(crate) fn floor(&self, key: usize) -> Option<Entry<V>> {
        if self.root == NIL {
            return None;
        }
        let leaf = self.leaf_near(key);
        let p = self.leaf(leaf).count_le(key).checked_sub(1)?;
        Some(self.entry(leaf, p))
    }

    /// The first row at or after position `p` of `leaf`, following the leaf chain.
    #[inline]
    fn at_or_next(&self, leaf: u32, p: usize) -> Option<(u32, usize)> {
        let n = self.leaf(leaf);
        if p < n.len() { Some((leaf, p)) } else { (n.keys.next != NIL).then_some((n.keys.next, 0)) }
    }

    /// The leaf and row of the interval with the smallest start `>= key`.
    #[inline]
    fn first_from(&self, key: usize) -> Option<(u32, usize)> {
        if self.root == NIL {
            return None;
        }
        let leaf = self.leaf_for(key);
        let n = self.leaf(leaf);
        let p = n.keys.lo[..n.len()].iter().filter(|&&s| s < key).count();
        self.at_or_next(leaf, p)
    }

    /// The interval with the smallest start `>= key`.
    #[cfg(test)]
    pub(crate) fn ceil(&self, key: usize) -> Option<Entry<V>> {
        self.first_from(key).map(|(l, p)| self.entry(l, p))
    }

    /// The interval that contains `key`.
    #[inline]
    pub(crate) fn containing(&self, key: usize) -> Option<Entry<V>> {
        self.floor(key).filter(|e| key < e.end)
    }

    /// Whether `key` lies within the span of `leaf`, and if so the interval of the leaf
    /// that contains it (none means no interval of the tree contains it).
    #[inline]
    fn within_leaf(&self, leaf: u32, key: usize) -> Option<Option<Entry<V>>> {
        let n = self.leaf(leaf);
        let len = n.len();
        if len == 0 || key < n.keys.lo[0] || key >= n.end(len - 1) {
            return None;
        }
        let p = n.count_le(key) - 1;
        Some((key < n.end(p)).then(|| self.entry(leaf, p)))
    }

    /// The interval that contains `key`, trying the leaf found last and the one after it
    /// first: a stream of lookups with locality (page faults walking through the regions)
    /// skips the descent.
    pub(crate) fn containing_cached(&self, key: usize) -> Option<Entry<V>> {
        let hit = self.last_hit.load(Ordering::Relaxed);
        if hit != NIL {
            if let Some(found) = self.within_leaf(hit, key) {
                return found;
            }
            let n = self.leaf(hit);
            let next = if n.keys.len > 0 && key >= n.end(n.len() - 1) { n.keys.next } else { NIL };
            if next != NIL
                && let Some(found) = self.within_leaf(next, key)
            {
                self.last_hit.store(next, Ordering::Relaxed);
                return found;
            }
        }
        if self.root == NIL {
            return None;
        }
        let leaf = self.leaf_near(key);
        let p = self.leaf(leaf).count_le(key).checked_sub(1)?;
        let e = self.entry(leaf, p);
        if key < e.end {
            self.last_hit.store(leaf, Ordering::Relaxed);
            return Some(e);
        }
        None
    }

    /// The lowest interval that overlaps `[start, end)`, in one descent: the interval with
    /// the largest start `<= start` if it reaches past `start`, else the next one if it
    /// starts before `end`.
    pub(crate) fn first_overlapping(&self, start: usize, end: usize) -> Option<Entry<V>> {
        if self.root == NIL {
            return None;
        }
        let leaf = self.leaf_near(start);
        let n = self.leaf(leaf);
        let p = n.count_le(start);
        if p > 0 && n.end(p - 1) > start {
            return Some(self.entry(leaf, p - 1));
        }
        let (l, q) = self.at_or_next(leaf, p)?;
        (self.leaf(l).keys.lo[q] < end).then(|| self.entry(l, q))
    }

    /// The intervals in address order from the first that ends above `start` on (the one
    /// containing `start`, else the next): one descent, then the leaf chain. Allocates
    /// nothing.
    pub(crate) fn iter_from(&self, start: usize) -> Iter<'_, V> {
        if self.root == NIL {
            return Iter { tree: self, leaf: NIL, p: 0 };
        }
        let leaf = self.leaf_near(start);
        let n = self.leaf(leaf);
        let p = n.count_le(start);
        let p = if p > 0 && n.end(p - 1) > start { p - 1 } else { p };
        Iter { tree: self, leaf, p }
    }

    /// Whether any interval overlaps `[start, end)`.
    #[inline]
    pub(crate) fn overlaps(&self, start: usize, end: usize) -> bool {
        self.first_overlapping(start, end).is_some()
    }

    /// Changes the interval starting at `old` to `[start, end)` carrying `value`, in place:
    /// one descent, the summaries updated on the way back, no node split or merged. The
    /// caller has checked that the new interval overlaps no other and keeps its place in
    /// the order. False if no interval starts at `old`.
    pub(crate) fn set_row(&mut self, old: usize, start: usize, end: usize, value: V) -> bool {
        debug_assert!(start < end);
        if self.root == NIL {
            return false;
        }
        let row = Row { lo: start, hi: end, gap: 0, child: NIL, value: Some(value) };
        self.descended();
        self.set_row_at(self.root, self.height, old, row)
    }

    fn set_row_at(&mut self, i: u32, h: usize, old: usize, row: Row<V>) -> bool {
        if h == 0 {
            let n = self.leaf(i);
            match n.count_le(old).checked_sub(1) {
                Some(p) if n.keys.lo[p] == old => {
                    self.leaves.get_mut(i).update(p, row);
                    return true;
                }
                _ => return false,
            }
        }
        let c = Rows::<V>::count_le(self.inner.get(i), old).saturating_sub(1);
        let child = self.inner.get(i).child[c];
        if !self.set_row_at(child, h - 1, old, row) {
            return false;
        }
        let r = self.row_of(child, h - 1);
        self.inner.get_mut(i).update(c, r);
        true
    }

    /// The row with the largest start `<= key` (one search), if any.
    pub(crate) fn seek(&self, key: usize) -> Option<Cursor> {
        if self.root == NIL {
            return None;
        }
        let leaf = self.leaf_near(key);
        let p = self.leaf(leaf).count_le(key).checked_sub(1)?;
        Some(Cursor { leaf, p })
    }

    /// The first row that ends above `key` (the one containing `key`, else the next; one
    /// search), if any.
    pub(crate) fn seek_from(&self, key: usize) -> Option<Cursor> {
        let it = self.iter_from(key);
        (it.leaf != NIL).then_some(Cursor { leaf: it.leaf, p: it.p }).and_then(|c| self.valid(c))
    }

    /// `c`, or the first row after it when `c` is one past the end of its leaf.
    #[inline]
    fn valid(&self, c: Cursor) -> Option<Cursor> {
        self.at_or_next(c.leaf, c.p).map(|(leaf, p)| Cursor { leaf, p })
    }

    /// The interval at `c` (a cursor of the tree as it is: taken since its last change).
    #[inline]
    pub(crate) fn at(&self, c: Cursor) -> Entry<V> {
        self.entry(c.leaf, c.p)
    }

    /// The row after `c`, through the leaf chain (no search).
    #[inline]
    pub(crate) fn after(&self, c: Cursor) -> Option<Cursor> {
        self.valid(Cursor { leaf: c.leaf, p: c.p + 1 })
    }

    /// The interval before `c`: in `c`'s leaf without a search, else (the first row of its
    /// leaf) one search.
    pub(crate) fn before(&self, c: Cursor) -> Option<Entry<V>> {
        if c.p > 0 {
            return Some(self.entry(c.leaf, c.p - 1));
        }
        let start = self.leaf(c.leaf).keys.lo[0];
        self.floor(start.checked_sub(1)?)
    }

    /// Replaces the `old` rows from the one starting at `first` on (consecutive, at least
    /// one) by `new` (in order, overlapping no other interval and keeping the order): one
    /// descent, the summaries updated once on the way back, when the old rows lie in one
    /// leaf and it keeps between [`MIN`] and [`B`] rows; else row by row. False (nothing
    /// changed) when no row starts at `first` or fewer than `old` rows follow it.
    pub(crate) fn splice(&mut self, first: usize, old: usize, new: &[Entry<V>]) -> bool {
        debug_assert!(old > 0 && new.iter().all(|e| e.start < e.end));
        debug_assert!(new.windows(2).all(|w| w[0].end <= w[1].start));
        if self.root == NIL {
            return false;
        }
        *self.last_hit.get_mut() = NIL;
        self.descended();
        match self.splice_at(self.root, self.height, first, old, new) {
            Spliced::Done => {
                self.len = self.len + new.len() - old;
                self.size_hints();
                true
            }
            Spliced::Missing => false,
            Spliced::Apart => {
                // Row by row: the removals first (each a descent), then the insertions.
                let Some(c) = self.uncounted(|t| t.seek(first)) else { return false };
                let mut starts = [0usize; 4];
                let mut c = Some(c);
                for k in 0..old {
                    let Some(at) = c.filter(|_| k < starts.len()) else { return false };
                    starts[k] = self.at(at).start;
                    c = self.after(at);
                }
                if starts[0] != first {
                    return false;
                }
                for &st in &starts[..old] {
                    self.remove(st);
                }
                for e in new {
                    self.insert(e.start, e.end, e.value);
                }
                true
            }
        }
    }

    fn splice_at(&mut self, i: u32, h: usize, first: usize, old: usize, new: &[Entry<V>]) -> Spliced {
        if h == 0 {
            let n = self.leaf(i);
            let len = n.len();
            let Some(p) = n.count_le(first).checked_sub(1).filter(|&p| n.keys.lo[p] == first) else {
                return Spliced::Missing;
            };
            if p + old > len {
                return Spliced::Apart;
            }
            let now = len - old + new.len();
            let floor = if self.height == 0 { 1 } else { MIN };
            if now > B || now < floor {
                return Spliced::Apart;
            }
            let n = self.leaves.get_mut(i);
            // The gaps around the old rows go, those around the new ones come (or, with no
            // new row, the one between the rows on either side).
            let lost = (p..p + old).map(|k| n.gaps_at(k)).max().unwrap_or(0);
            n.shift(p + old, len - p - old, p + new.len());
            for (k, e) in new.iter().enumerate() {
                n.set_raw(p + k, Row { lo: e.start, hi: e.end, gap: 0, child: NIL, value: Some(e.value) });
            }
            n.set_len(now);
            let added = if new.is_empty() {
                if 0 < p && p < now { n.keys.lo[p] - n.keys.hi[p - 1] } else { 0 }
            } else {
                (p..p + new.len()).map(|k| n.gaps_at(k)).max().unwrap_or(0)
            };
            n.settle_gap(lost, added);
            return Spliced::Done;
        }
        let c = Rows::<V>::count_le(self.inner.get(i), first).saturating_sub(1);
        let child = self.inner.get(i).child[c];
        let done = self.splice_at(child, h - 1, first, old, new);
        if let Spliced::Done = done {
            let r = self.row_of(child, h - 1);
            self.inner.get_mut(i).update(c, r);
        }
        done
    }

    /// Replaces the value of the interval starting at `start`; false if there is none.
    pub(crate) fn set_value(&mut self, start: usize, value: V) -> bool {
        if self.root == NIL {
            return false;
        }
        let leaf = self.leaf_for(start);
        let n = self.leaves.get_mut(leaf);
        match n.count_le(start).checked_sub(1) {
            Some(p) if n.keys.lo[p] == start => {
                n.value[p] = Some(value);
                true
            }
            _ => false,
        }
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
        self.descended();
        if let Some(a) = self.fit(self.root, self.height, lo, &q) {
            return Some(a);
        }
        q.fit(self.row_of(self.root, self.height).hi, hi)
    }

    /// The first fit among the gap in front of node `i` (at height `h`, the gap starting at
    /// `before`) and the gaps inside it.
    fn fit(&self, i: u32, h: usize, mut before: usize, q: &Query) -> Option<usize> {
        if h == 0 {
            let n = self.leaf(i);
            for k in 0..n.len() {
                if before >= q.hi {
                    return None;
                }
                if let Some(a) = q.fit(before, n.keys.lo[k]) {
                    return Some(a);
                }
                before = n.keys.hi[k];
            }
            return None;
        }
        let n = self.inner.get(i);
        for k in 0..n.keys.len as usize {
            if before >= q.hi {
                return None;
            }
            if n.gap[k] >= q.size && n.keys.hi[k] > q.lo && n.keys.lo[k] < q.hi {
                // An inner gap of the child may hold the request: the child tries its
                // leading gap and its inner gaps in order.
                if let Some(a) = self.fit(n.child[k], h - 1, before, q) {
                    return Some(a);
                }
            } else if let Some(a) = q.fit(before, n.keys.lo[k]) {
                return Some(a);
            }
            before = n.keys.hi[k];
        }
        None
    }

    /// The leftmost leaf (the tree is not empty).
    fn first_leaf(&self) -> u32 {
        self.descended();
        let mut i = self.root;
        for _ in 0..self.height {
            i = self.inner.get(i).child[0];
        }
        i
    }

    /// Calls `f` on the intervals in address order from row `p` of `leaf` on, until `f`
    /// returns false.
    fn walk_from(&self, mut leaf: u32, mut p: usize, mut f: impl FnMut(Entry<V>) -> bool) {
        while leaf != NIL {
            let n = self.leaf(leaf);
            while p < n.len() {
                if !f(self.entry(leaf, p)) {
                    return;
                }
                p += 1;
            }
            leaf = n.keys.next;
            p = 0;
        }
    }

    /// Calls `f` on every interval in address order from the first whose start is `>= from`,
    /// until `f` returns false.
    pub(crate) fn for_each_from(&self, from: usize, f: impl FnMut(Entry<V>) -> bool) {
        if let Some((leaf, p)) = self.first_from(from) {
            self.walk_from(leaf, p, f);
        }
    }

    /// Calls `f` on every interval in address order (allocates nothing).
    pub(crate) fn for_each(&self, mut f: impl FnMut(Entry<V>)) {
        if self.root != NIL {
            self.walk_from(self.first_leaf(), 0, |e| {
                f(e);
                true
            });
        }
    }

    /// Every interval in address order.
    pub(crate) fn entries(&self) -> Vec<Entry<V>> {
        let mut out = Vec::with_capacity(self.len);
        self.for_each(|e| out.push(e));
        out
    }

    /// Checks every invariant of the tree.
    ///
    /// # Panics
    /// On the first broken invariant, naming it.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn check_invariants(&self) {
        let mut leaves = Vec::new();
        let mut inner = 0;
        if self.root == NIL {
            assert_eq!(self.len, 0, "an empty tree has intervals");
        } else {
            let count = self.check_node(self.root, self.height, true, &mut leaves, &mut inner);
            assert_eq!(count, self.len, "length does not match the tree");
            let mut chained = Vec::new();
            let mut l = self.first_leaf();
            while l != NIL {
                chained.push(l);
                assert!(chained.len() <= leaves.len(), "leaf chain too long or looping");
                l = self.leaf(l).keys.next;
            }
            assert_eq!(chained, leaves, "leaf chain out of order");
        }
        let es = self.entries();
        assert_eq!(es.len(), self.len, "walk misses intervals");
        for w in es.windows(2) {
            assert!(w[0].end <= w[1].start, "intervals overlap or are out of order");
        }
        assert_eq!(self.leaves.free_count() + leaves.len(), self.leaves.nodes.len(), "leaves are lost");
        assert_eq!(self.inner.free_count::<V>() + inner, self.inner.nodes.len(), "internal nodes are lost");
        assert_eq!((self.leaves.live, self.inner.live), (leaves.len(), inner), "live node counts wrong");
        for slot in &self.hints {
            let hint = slot.load(Ordering::Relaxed);
            assert!(hint == NIL || (hint as usize) < self.leaves.nodes.len(), "hint names no leaf");
        }
    }

    #[cfg(any(test, feature = "check"))]
    fn check_node(&self, i: u32, h: usize, root: bool, leaves: &mut Vec<u32>, inner: &mut usize) -> usize {
        let (len, lo, hi, kept, scanned) = if h == 0 {
            let n = self.leaf(i);
            for k in 0..n.len() {
                assert_eq!(n.lens[k], grains(n.keys.lo[k], n.keys.hi[k]), "kept length wrong");
                assert_eq!(n.end(k), n.keys.hi[k], "end from the kept length wrong");
            }
            (n.len(), &n.keys.lo, &n.keys.hi, n.keys.max_gap, n.scan_gap())
        } else {
            let n = self.inner.get(i);
            (n.keys.len as usize, &n.keys.lo, &n.keys.hi, n.keys.max_gap, Rows::<V>::scan_gap(n))
        };
        assert_eq!(kept, scanned, "largest gap kept wrong");
        assert!(len <= B, "node overfull");
        if !root {
            assert!(len >= MIN, "node underfull");
        } else if h > 0 {
            assert!(len >= 2, "internal root with one child");
        } else {
            assert!(len >= 1, "empty root leaf");
        }
        for k in 0..len {
            assert!(lo[k] < hi[k], "empty interval");
            if k > 0 {
                assert!(hi[k - 1] <= lo[k], "rows overlap or are out of order");
            }
        }
        if h == 0 {
            leaves.push(i);
            assert!(self.leaf(i).value[..len].iter().all(Option::is_some), "leaf row without a value");
            return len;
        }
        *inner += 1;
        let n = self.inner.get(i);
        let mut count = 0;
        for k in 0..len {
            let c = n.child[k];
            count += self.check_node(c, h - 1, false, leaves, inner);
            let s = self.row_of(c, h - 1);
            assert_eq!((n.keys.lo[k], n.keys.hi[k], n.gap[k]), (s.lo, s.hi, s.gap), "summary wrong");
        }
        count
    }
}

#[cfg(test)]
mod tests;
