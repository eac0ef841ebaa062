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
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]
    #[test]
    fn matches_a_linear_scan(ops in proptest::collection::vec((0usize..200, 1usize..12, any::<bool>()), 1..if cfg!(miri) { 40 } else { 200 }),
                             queries in proptest::collection::vec((0usize..220, 0usize..260, 1usize..20, 0u32..4), 1..if cfg!(miri) { 4 } else { 30 })) {
        let mut t = GapTree::new();
        let mut m = BTreeMap::new();
        for (s, len, insert) in ops {
            if insert {
                // `insert_free` checks for overlaps itself: against the model.
                let free = !m.iter().any(|(a, b)| *a < s + len && *b > s);
                prop_assert_eq!(t.insert_free(s, s + len, ()), free);
                if free {
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

/// Many intervals: several levels of nodes, splits, merges and evening-out. Keys are
/// whole grains (as in the region map), and one length in eight is not, so that both
/// ways of finding an end ([`Leaf::lens`] and `hi`) are taken.
#[test]
fn deep_tree_matches_a_btreemap() {
    // Keys and steps enough for three internal levels (asserted at the end).
    // (Under Miri a small tree of one level.)
    const KEYS: u64 = if cfg!(miri) { 300 } else { 200_000 };
    const STEPS: u32 = if cfg!(miri) { 400 } else { 200_000 };
    let mut t = GapTree::new();
    let mut m = BTreeMap::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let (mut deepest, mut hinted) = (0, false);
    for step in 0..STEPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = (x % KEYS) as usize * GRAIN;
        let len = (((x >> 32) % 4) as usize + 1) * GRAIN - usize::from((x >> 50).is_multiple_of(8));
        // Grow for the first half, then shrink.
        let insert = ((x >> 40) % 8) < if step < STEPS / 2 { 6 } else { 2 };
        if insert {
            let free = !t.overlaps(s, s + len);
            // Every other insertion checks for overlaps itself, in its one descent (its
            // successor often first in the next leaf): it must agree with `overlaps`.
            if step % 2 == 0 {
                assert_eq!(t.insert_free(s, s + len, step), free, "insert_free of [{s:#x}, {:#x})", s + len);
            } else if free {
                t.insert(s, s + len, step);
            }
            if free {
                m.insert(s, (s + len, step));
            }
        } else {
            let got = t.remove(s).map(|e| (e.start, e.end, e.value));
            let want = m.remove(&s).map(|(e, v)| (s, e, v));
            assert_eq!(got, want);
        }
        if step % 997 == 0 {
            t.check_invariants();
        }
        deepest = deepest.max(t.height);
        hinted |= !t.hints.is_empty();
        let k = ((x >> 16) % (KEYS + 10)) as usize * GRAIN + (x >> 44) as usize % GRAIN;
        let want = m.range(..=k).next_back().filter(|(_, (e, _))| k < *e).map(|(s, (e, v))| (*s, *e, *v));
        assert_eq!(t.containing_cached(k).map(|e| (e.start, e.end, e.value)), want);
        assert_eq!(t.ceil(k).map(|e| e.start), m.range(k..).next().map(|(s, _)| *s));
        let size = (((x >> 24) % 6) as usize + 1) * GRAIN;
        let plain: BTreeMap<usize, usize> =
            if step % 499 == 0 { m.iter().map(|(s, (e, _))| (*s, *e)).collect() } else { BTreeMap::new() };
        if step % 499 == 0 {
            let hi = (KEYS as usize + 20) * GRAIN;
            assert_eq!(t.first_fit(k, hi, size, 1), model_fit(&plain, k, hi, size, 1));
            assert_eq!(t.first_fit(k, hi, size, 4 * GRAIN), model_fit(&plain, k, hi, size, 4 * GRAIN));
        }
    }
    t.check_invariants();
    let got: Vec<_> = t.entries().iter().map(|e| (e.start, e.end, e.value)).collect();
    let want: Vec<_> = m.iter().map(|(s, (e, v))| (*s, *e, *v)).collect();
    assert_eq!(got, want);
    // Internal nodes split, merged and evened out too, not only leaves.
    assert!(cfg!(miri) || deepest >= 3, "the tree grew only {deepest} internal levels");
    // Lookups went through leaf hints that insertions and removals had made stale.
    assert!(cfg!(miri) || hinted, "the tree never sized its hint table");
}

/// An order in which a test inserts or removes a run of intervals.
#[derive(Debug, Clone, Copy)]
enum Order {
    Ascending,
    Descending,
    /// Shuffled with this seed.
    Random(u64),
    /// From both ends towards the middle.
    OutsideIn,
}

/// `0..n` in `order`.
fn ordered(n: usize, order: Order) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    match order {
        Order::Ascending => {}
        Order::Descending => v.reverse(),
        Order::Random(seed) => {
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        Order::OutsideIn => {
            v = (0..n).map(|k| if k % 2 == 0 { k / 2 } else { n - 1 - k / 2 }).collect();
        }
    }
    v
}

/// The tree against a `BTreeMap` after a change: the same intervals, and the first
/// fit of a few sizes where the model finds it.
fn agrees(t: &GapTree<usize>, m: &BTreeMap<usize, usize>, deep: bool) {
    t.check_invariants();
    assert_eq!(t.len(), m.len());
    if deep {
        let got: Vec<_> = t.entries().iter().map(|e| (e.start, e.end)).collect();
        let want: Vec<_> = m.iter().map(|(s, e)| (*s, *e)).collect();
        assert_eq!(got, want);
        for size in [1, 2, 3, 5] {
            let size = size * GRAIN;
            assert_eq!(t.first_fit(0, usize::MAX, size, GRAIN), model_fit(m, 0, usize::MAX, size, GRAIN));
        }
    }
}

/// `n` one-grain intervals, interval `i` starting at `starts[i]`, inserted in one order
/// and removed in another, with every invariant checked after each step. Returns the
/// structural changes and the greatest height.
fn run_shape(starts: &[usize], insert: Order, remove: Order) -> (TreeStats, usize) {
    let n = starts.len();
    let mut t = GapTree::new();
    let mut m = BTreeMap::new();
    let mut height = 0;
    for (k, i) in ordered(n, insert).into_iter().enumerate() {
        t.insert(starts[i], starts[i] + GRAIN, i);
        m.insert(starts[i], starts[i] + GRAIN);
        agrees(&t, &m, k.is_multiple_of(97));
        height = height.max(t.height);
    }
    agrees(&t, &m, true);
    for (k, i) in ordered(n, remove).into_iter().enumerate() {
        let e = t.remove(starts[i]).expect("the interval is there");
        assert_eq!((e.start, e.end, e.value), (starts[i], starts[i] + GRAIN, i));
        assert_eq!(t.remove(starts[i]), None, "removed twice");
        m.remove(&starts[i]);
        agrees(&t, &m, k.is_multiple_of(97));
    }
    assert_eq!((t.root, t.len(), t.leaves.live, t.inner.live), (NIL, 0, 0, 0), "nodes left over");
    (t.stats(), height)
}

/// Every remove order over runs of one-grain intervals with gaps of several sizes
/// (none, one grain, three, and irregular ones), small and large enough for three
/// levels. Evening out two siblings used to write the left one's row in the parent
/// while the right one's still held its old start (a negative gap: an overflow panic,
/// or a wrong largest gap without overflow checks).
#[test]
fn every_order_and_gap_over_runs_of_intervals() {
    let sizes: &[usize] = if cfg!(miri) { &[24] } else { &[60, 700, 2500] };
    let gaps: [fn(usize) -> usize; 4] = [|_| 0, |_| 1, |_| 3, |i| (i * 7) % 5];
    let gaps = if cfg!(miri) { &gaps[1..2] } else { &gaps[..] };
    let orders = [Order::Ascending, Order::Descending, Order::Random(0x9e37_79b9), Order::OutsideIn];
    let mut total = TreeStats::NONE;
    for &n in sizes {
        for &gap in gaps {
            let mut starts = Vec::with_capacity(n);
            let mut at = 0x10_0000;
            for i in 0..n {
                starts.push(at);
                at += (1 + gap(i)) * GRAIN;
            }
            let inserts: &[Order] =
                if cfg!(miri) { &[Order::Ascending] } else { &[Order::Ascending, Order::Descending, Order::Random(7)] };
            for &insert in inserts {
                for remove in orders {
                    // The largest runs once per remove order, inserted ascending.
                    if n > 1000 && !matches!(insert, Order::Ascending) && gap(2) != 1 {
                        continue;
                    }
                    let (stats, height) = run_shape(&starts, insert, remove);
                    if n > 1000 {
                        assert!(height >= 2, "{n} intervals made only {height} internal levels");
                    }
                    total = total.plus(&stats);
                }
            }
        }
    }
    if cfg!(miri) {
        // Too few intervals for the tree to grow a level.
        return;
    }
    // Leaves and internal nodes split and merged, leaves evened out; the root grew and
    // shrank at both heights.
    assert!(total.evens[0] > 0, "{total:?}");
    for h in 0..2 {
        assert!(total.splits[h] > 0 && total.merges[h] > 0, "height {h}: {total:?}");
    }
    for h in 1..3 {
        assert!(total.grows[h] > 0 && total.shrinks[h] > 0, "height {h}: {total:?}");
    }
}

/// Inserts and removes interleaved: the tree grows to thousands of intervals with
/// gaps of random sizes and shrinks back to none, several times, removing near where
/// it inserts (ascending and descending sweeps) and at random.
#[test]
fn interleaved_growth_and_shrinking() {
    let (keys, rounds) = if cfg!(miri) { (40, 1) } else { (6000, 3) };
    let mut t = GapTree::new();
    let mut m: BTreeMap<usize, usize> = BTreeMap::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut height = 0;
    let mut step = 0usize;
    for round in 0..rounds {
        // Grow: mostly inserts, at the sweep's position or at random.
        let mut cursor = if round % 2 == 0 { 0 } else { keys * 4 };
        while m.len() < keys {
            let r = rand();
            let key = if r % 4 == 0 { (r >> 8) as usize % (keys * 4) } else { cursor };
            cursor = if round % 2 == 0 {
                cursor + 1 + (r >> 40) as usize % 3
            } else {
                cursor.saturating_sub(1 + (r >> 40) as usize % 3)
            };
            let (s, e) = (key * GRAIN, key * GRAIN + (1 + (r >> 50) as usize % 2) * GRAIN);
            if r % 5 == 0 {
                if let Some((&ks, &ke)) = m.range(..=s).next_back() {
                    assert_eq!(t.remove(ks).map(|e| (e.start, e.end)), Some((ks, ke)));
                    m.remove(&ks);
                }
            } else if !t.overlaps(s, e) {
                t.insert(s, e, step);
                m.insert(s, e);
            }
            step += 1;
            agrees(&t, &m, step.is_multiple_of(211));
            height = height.max(t.height);
            if cursor > keys * 4 || cursor == 0 {
                cursor = (r >> 20) as usize % (keys * 4);
            }
        }
        // Shrink: remove ascending, descending or at random, with a few inserts.
        let order = [Order::Ascending, Order::Descending, Order::Random(round as u64 + 1)][round % 3];
        let starts: Vec<usize> = m.keys().copied().collect();
        for (k, i) in ordered(starts.len(), order).into_iter().enumerate() {
            let s = starts[i];
            let want = m.remove(&s).map(|e| (s, e));
            assert_eq!(t.remove(s).map(|e| (e.start, e.end)), want);
            if k % 7 == 0 {
                let r = rand();
                let key = (r >> 8) as usize % (keys * 4) * GRAIN;
                if !t.overlaps(key, key + GRAIN) {
                    t.insert(key, key + GRAIN, step);
                    m.insert(key, key + GRAIN);
                }
            }
            step += 1;
            agrees(&t, &m, step.is_multiple_of(211));
        }
        // The few inserted on the way down go too.
        let rest: Vec<usize> = m.keys().copied().collect();
        for s in rest {
            assert!(t.remove(s).is_some());
            m.remove(&s);
            agrees(&t, &m, false);
        }
        assert_eq!((t.root, t.leaves.live, t.inner.live), (NIL, 0, 0));
    }
    if !cfg!(miri) {
        assert!(height >= 2, "the tree grew only {height} internal levels");
        let s = t.stats();
        assert!(s.merges[1] > 0 && s.splits[1] > 0, "{s:?}");
    }
}

/// Two internal nodes even out: an ascending run leaves the first internal node with
/// 29 leaves (a split at the end keeps all but [`MIN`] rows), intervals put into the
/// gaps of its first leaves split them (31 leaves), and removing the run from its end
/// leaves the last internal node with too few leaves to merge with the first.
#[test]
fn internal_nodes_even_out() {
    // Under Miri as few leaves as it takes (34), and the whole tree checked now and then.
    let leaves = if cfg!(miri) { 34 } else { 40 };
    let n = leaves * (B + 1 - MIN);
    let at = |i: usize| 0x10_0000 + 2 * i * GRAIN;
    let mut t = GapTree::new();
    let mut m = BTreeMap::new();
    let sparse = |k: usize| !cfg!(miri) || k.is_multiple_of(97);
    for i in 0..n {
        t.insert(at(i), at(i) + GRAIN, i);
        m.insert(at(i), at(i) + GRAIN);
        if sparse(i) {
            agrees(&t, &m, false);
        }
    }
    assert_eq!(t.height, 2);
    // Between the intervals of the first two leaves.
    for i in 0..2 * (B + 1 - MIN) {
        t.insert(at(i) + GRAIN, at(i) + 2 * GRAIN, n + i);
        m.insert(at(i) + GRAIN, at(i) + 2 * GRAIN);
        if sparse(i) {
            agrees(&t, &m, false);
        }
    }
    for i in (0..n).rev() {
        assert!(t.remove(at(i)).is_some());
        m.remove(&at(i));
        if sparse(i) {
            agrees(&t, &m, i.is_multiple_of(50));
        }
    }
    let s = t.stats();
    assert!(s.evens[1] > 0, "{s:?}");
}

/// Lengths in whole grains below [`LONG`] are kept in [`Leaf::lens`]; others are read
/// from `hi`; lookups find every end either way.
#[test]
fn lengths_kept_in_grains_or_read_from_the_ends() {
    let g = GRAIN;
    let rows = [(0, g), (2 * g, 3 * g + 1), (10 * g, 10 * g + 65_534 * g), (70_000 * g, 70_000 * g + 65_535 * g)];
    let mut t = GapTree::new();
    for (k, &(s, e)) in rows.iter().enumerate() {
        t.insert(s, e, k);
    }
    t.check_invariants();
    let leaf = t.leaf(t.root);
    assert_eq!(leaf.lens[..4], [1, LONG, 65_534, LONG]);
    for (k, &(s, e)) in rows.iter().enumerate() {
        assert_eq!(t.containing(e - 1).map(|x| (x.start, x.end, x.value)), Some((s, e, k)));
        assert_eq!(t.containing(e), None);
        assert_eq!(t.first_overlapping(s, s + 1).map(|x| x.end), Some(e));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]
    /// `splice` (one descent, or row by row when the rows span leaves or the leaf would
    /// over- or underflow) against removals and insertions in a `BTreeMap`.
    #[test]
    fn splice_matches_a_map(fill in 1usize..400,
                            ops in proptest::collection::vec((0usize..400, 1usize..4, 0usize..4, any::<u8>()), 1..if cfg!(miri) { 20 } else { 120 })) {
        let mut t = GapTree::new();
        let mut m = BTreeMap::new();
        // Every third unit taken: [3k, 3k + 2).
        for k in 0..fill {
            t.insert(3 * k * 8, (3 * k + 2) * 8, k);
            m.insert(3 * k * 8, ((3 * k + 2) * 8, k));
        }
        t.check_invariants();
        for (at, old, new, cut) in ops {
            let keys: Vec<usize> = m.range(at * 8..).take(old).map(|(k, _)| *k).collect();
            if keys.len() < old {
                prop_assert!(keys.is_empty() || !t.splice(keys[0], old, &[]) || keys.len() == old);
                continue;
            }
            let (lo, hi) = (keys[0], m[&keys[old - 1]].0);
            // `new` rows cutting [lo, hi) at multiples of 8, skipping `cut`'s bits.
            let units = (hi - lo) / 8;
            let mut rows = Vec::new();
            let mut u = 0;
            while rows.len() < new && u < units {
                let len = 1 + usize::from(cut >> (rows.len() * 2)) % 2;
                let end = (u + len).min(units);
                rows.push(Entry { start: lo + u * 8, end: lo + end * 8, value: u });
                u = end + usize::from(cut & 1);
            }
            prop_assert!(t.splice(lo, old, &rows));
            for k in &keys {
                m.remove(k);
            }
            for r in &rows {
                m.insert(r.start, (r.end, r.value));
            }
            t.check_invariants();
            let got: Vec<(usize, usize, usize)> = t.entries().iter().map(|e| (e.start, e.end, e.value)).collect();
            let want: Vec<(usize, usize, usize)> = m.iter().map(|(s, (e, v))| (*s, *e, *v)).collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// `insert_free` finds the interval after a new one first in the next leaf when the new
/// one goes to the end of its leaf: refused at every boundary of a tree of several leaves
/// where it would overlap the next interval, taken where it ends just before it.
#[test]
fn insert_free_sees_the_next_leaf() {
    let mut t = GapTree::new();
    let n = if cfg!(miri) { 70 } else { 1000 };
    for k in 0..n {
        t.insert(10 * k, 10 * k + 5, k);
    }
    assert!(t.height > 0, "several leaves");
    for k in 0..n - 1 {
        assert!(!t.insert_free(10 * k + 6, 10 * (k + 1) + 1, 0), "overlaps the interval at {}", 10 * (k + 1));
        assert!(!t.insert_free(10 * k + 4, 10 * k + 6, 0), "overlaps the interval at {}", 10 * k);
    }
    assert_eq!(t.len(), n);
    t.check_invariants();
    for k in 0..n - 1 {
        assert!(t.insert_free(10 * k + 6, 10 * (k + 1), n + k));
    }
    t.check_invariants();
    assert_eq!(t.len(), 2 * n - 1);
    assert!(!t.insert_free(0, 1, 0));
}
