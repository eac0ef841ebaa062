//! Spans of one size class: the shard's partial and empty lists, blocks taken from a span's
//! bitmap (aligned ones at a stride), and the dry paths that take holes of larger classes or
//! merge neighbouring free blocks of a span.

use core::ptr::NonNull;
use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::{PAGE_SHIFT, PAGE_SIZE, VirtAddr};

use super::descriptors::{Descriptor, PageMap};
use super::stats::PathCounters;
use super::{
    BITMAP_WORDS, CpuId, EXACT_FIT_ABOVE, FRAGMENT_MIN, Heap, KIND_SMALL, MAX_MERGED_BLOCKS, NONE, SHARDS, ShardState,
};
use crate::class::{CLASSES, class_for};
use crate::error::XmfreeError;
use crate::source::PageSource;

#[derive(Clone, Copy)]
pub(super) struct ClassLists {
    /// Spans with at least one allocated and one free block (doubly linked); its head
    /// may be empty instead (see [`keeps_emptied_head`](ClassLists::keeps_emptied_head)).
    pub(super) partial: u32,
    /// Empty spans kept (up to [`EMPTY_KEEP`], singly linked by `next`) so that a class
    /// does not bounce spans with the page source.
    pub(super) empty: u32,
    pub(super) empties: u32,
    /// Times an emptied head was taken again (counted here, under the lock).
    pub(super) head_reuses: usize,
}

impl ClassLists {
    /// Whether span `id`, emptied by a free, stays where it is: it is the partial list's
    /// head (the span the class allocates from next) and the class keeps no empty span
    /// yet, so it is the class's one always-kept empty span. A class that allocates and
    /// frees one block in turn then neither moves the span between lists nor leaves the
    /// short paths.
    #[inline(always)]
    pub(super) fn keeps_emptied_head(&self, id: u32) -> bool {
        self.partial == id && self.empties == 0
    }
}

/// A live block of a span with no merged and no pinned block, found by
/// [`Heap::small_block`] with its shard's lock held.
pub(super) struct SmallBlock<'a> {
    pub(super) st: spin::MutexGuard<'a, ShardState>,
    pub(super) id: u32,
    pub(super) d: &'a Descriptor,
    pub(super) shard: usize,
    pub(super) class: usize,
    /// Its bitmap word and bit.
    w: usize,
    bit: u64,
    /// Blocks of the span allocated, this one included.
    used: u32,
}

impl SmallBlock<'_> {
    /// Whether the short path may free it: the span keeps a block allocated, or it is its
    /// class's emptied head that stays listed (anything else moves the span between lists:
    /// the general path).
    #[inline(always)]
    pub(super) fn may_free(&self) -> bool {
        self.used > 1 || self.st.classes[self.class].keeps_emptied_head(self.id)
    }
}

/// Merged blocks: (first block's address, blocks merged), `(0, 0)` when unused.
pub(super) struct MergeTable {
    pub(super) entries: [(usize, u32); MAX_MERGED_BLOCKS],
}

/// Where a merged block may be taken: blocks `first .. first + blocks` of span `id`, of
/// `class`, in `shard`.
#[derive(Debug, Clone, Copy)]
pub(super) struct MergeSite {
    pub(super) shard: usize,
    pub(super) class: usize,
    pub(super) id: u32,
    pub(super) first: usize,
    pub(super) blocks: usize,
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    pub(super) fn unlink(&self, lists: &mut ClassLists, id: u32) {
        let d = self.live(id);
        let (prev, next) = (d.prev.load(Relaxed), d.next.load(Relaxed));
        if prev == NONE {
            lists.partial = next;
        } else {
            self.live(prev).next.store(next, Relaxed);
        }
        if next != NONE {
            self.live(next).prev.store(prev, Relaxed);
        }
        d.prev.store(NONE, Relaxed);
        d.next.store(NONE, Relaxed);
    }

    /// Lists span `id` as partial: first, or second after an emptied head (which stays
    /// first, so that it is the only empty span of the list).
    #[inline]
    pub(super) fn push(&self, lists: &mut ClassLists, id: u32) {
        let d = self.live(id);
        if let Some(head) = self.desc(lists.partial)
            && head.used.load(Relaxed) == 0
        {
            let next = head.next.load(Relaxed);
            d.prev.store(lists.partial, Relaxed);
            d.next.store(next, Relaxed);
            if next != NONE {
                self.live(next).prev.store(id, Relaxed);
            }
            head.next.store(id, Relaxed);
            return;
        }
        d.prev.store(NONE, Relaxed);
        d.next.store(lists.partial, Relaxed);
        if lists.partial != NONE {
            self.live(lists.partial).prev.store(id, Relaxed);
        }
        lists.partial = id;
    }

    /// The common allocation, in one short function: a block of `class` from the first
    /// partial span of `shard`. `None` (and nothing changed) when the class has no partial
    /// span: the caller takes the general path. Needs no page map check: a span exists only
    /// in an initialised heap.
    #[inline(always)]
    pub(super) fn allocate_small_fast(&self, shard: usize, class: usize) -> Option<NonNull<u8>> {
        self.take_first(&mut self.shards[shard].state.lock(), shard, class)
    }

    /// A block of `class` from the first partial span of `shard`, whose state `st` is
    /// locked; `None` (nothing changed) when the class has none.
    #[inline(always)]
    fn take_first(&self, st: &mut ShardState, shard: usize, class: usize) -> Option<NonNull<u8>> {
        let lists = &mut st.classes[class];
        let id = lists.partial;
        let d = self.desc(id)?;
        self.take_block(lists, shard, class, id, d)
    }

    /// The first clear block of span `id` (`d`) of `class`, a listed partial span of
    /// `shard` (whose lists `lists` are locked): taken, the span unlisted if it fills.
    #[inline(always)]
    fn take_block(
        &self,
        lists: &mut ClassLists,
        shard: usize,
        class: usize,
        id: u32,
        d: &Descriptor,
    ) -> Option<NonNull<u8>> {
        let c = &CLASSES[class];
        let mut w = d.hint.load(Relaxed) as usize;
        while w < BITMAP_WORDS {
            let v = d.bitmap[w].load(Relaxed);
            if v != u64::MAX {
                let bit = (!v).trailing_zeros() as usize;
                d.bitmap[w].store(v | 1 << bit, Relaxed);
                d.hint.store(w as u8, Relaxed);
                let used = d.used.load(Relaxed) + 1;
                d.used.store(used, Relaxed);
                if used == c.blocks {
                    self.unlink(lists, id);
                } else if used == 1 {
                    lists.head_reuses += 1;
                }
                self.shards[shard].count(c.size as usize, true);
                let addr = d.start.load(Relaxed) + (w * 64 + bit) * c.size as usize;
                return NonNull::new(self.ptr(addr));
            }
            w += 1;
        }
        // The hint never passes a clear bit, and a listed span has one.
        panic!("span {id} is listed as partial but has no free block");
    }

    /// The common free, in one short function: a block of a span with no merged and no
    /// pinned block, which the free leaves with a block allocated. `None` (and nothing
    /// changed) otherwise, or when any check fails: the caller takes the general path,
    /// which checks again and names the error.
    #[inline(always)]
    pub(super) fn free_small_fast(&self, addr: usize) -> Option<()> {
        let mut b = self.small_block(addr)?;
        if !b.may_free() {
            return None;
        }
        self.release_block(&mut b);
        Some(())
    }

    /// The block at `addr` when it is a live block of a span with no merged and no pinned
    /// block, its shard locked; `None` when it is anything else or any check fails (the
    /// general paths check again and name the error). Every check the general path makes
    /// is made: owned, a live descriptor of this shard, a block start, allocated.
    #[inline(always)]
    pub(super) fn small_block(&self, addr: usize) -> Option<SmallBlock<'_>> {
        let map = self.map.get()?;
        let entry = map.entries.get(addr.wrapping_sub(map.base) >> PAGE_SHIFT)?;
        let id = entry.load(Acquire);
        let d = self.desc(id)?;
        // Other kinds go to the general path without taking the lock twice (a hint: the
        // kind is checked again under the lock).
        if d.kind.load(Relaxed) != KIND_SMALL {
            return None;
        }
        let shard = d.shard.load(Relaxed) as usize % SHARDS;
        let st = self.shards[shard].state.lock();
        if entry.load(Acquire) != id
            || d.kind.load(Acquire) != KIND_SMALL
            || d.shard.load(Relaxed) as usize != shard
            || d.merged.load(Relaxed) != 0
            || d.pinned.load(Relaxed) != 0
        {
            return None;
        }
        let class = d.class.load(Relaxed) as usize;
        let c = CLASSES.get(class)?;
        let off = addr.wrapping_sub(d.start.load(Relaxed));
        let index = c.index_of(off);
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        let used = d.used.load(Relaxed);
        if off != index * c.size as usize || index >= c.blocks as usize || used == 0 {
            return None;
        }
        if d.bitmap[w].load(Relaxed) & bit == 0 {
            return None;
        }
        Some(SmallBlock { st, id, d, shard, class, w, bit, used })
    }

    /// Frees block `b` (checked by [`small_block`](Heap::small_block), and
    /// [`may_free`](SmallBlock::may_free) on the short path) under its shard's lock.
    #[inline(always)]
    pub(super) fn release_block(&self, b: &mut SmallBlock<'_>) {
        let (d, w) = (b.d, b.w);
        let c = &CLASSES[b.class];
        d.bitmap[w].store(d.bitmap[w].load(Relaxed) & !b.bit, Relaxed);
        if (w as u8) < d.hint.load(Relaxed) {
            d.hint.store(w as u8, Relaxed);
        }
        d.used.store(b.used - 1, Relaxed);
        self.shards[b.shard].count(c.size as usize, false);
        if b.used == c.blocks {
            self.push(&mut b.st.classes[b.class], b.id);
        }
    }

    /// A block of `class` from the first partial span of the shard of `b` (whose lock it
    /// holds), `None` (nothing changed) when the class has none.
    #[inline(always)]
    pub(super) fn take_beside(&self, b: &mut SmallBlock<'_>, class: usize) -> Option<NonNull<u8>> {
        self.take_first(&mut b.st, b.shard, class)
    }

    /// Whether a class of `size` bytes is served on the short paths: from spans whatever
    /// the headroom, and not from arena fragments first (a heap packing hard tries those
    /// for classes of at least [`FRAGMENT_MIN`]).
    #[inline(always)]
    pub(super) fn short_path_class(&self, size: usize) -> bool {
        let span_max = self.span_max.load(Relaxed);
        size <= span_max && (span_max > EXACT_FIT_ABOVE || size < FRAGMENT_MIN)
    }

    /// A block of `class` from a partial span of `shard`, else (if `fresh`) from an empty
    /// one.
    #[inline]
    pub(super) fn allocate_small(&self, map: &PageMap, shard: usize, class: usize, fresh: bool) -> Option<NonNull<u8>> {
        let mut st = self.shards[shard].state.lock();
        let id = if st.classes[class].partial != NONE {
            st.classes[class].partial
        } else if fresh {
            self.fresh_span(map, &mut st, shard, class)?
        } else {
            return None;
        };
        let d = self.live(id);
        self.take_block(&mut st.classes[class], shard, class, id, d)
    }

    /// An empty span of `class` for `shard` (a cached one, else new pages), put on the
    /// partial list.
    fn fresh_span(&self, map: &PageMap, st: &mut ShardState, shard: usize, class: usize) -> Option<u32> {
        let c = CLASSES[class];
        let lists = &mut st.classes[class];
        let id = if lists.empty != NONE {
            let id = lists.empty;
            lists.empty = self.live(id).next.load(Relaxed);
            if lists.empties > 1 {
                st.empty_pages -= c.pages as usize;
            }
            lists.empties -= 1;
            PathCounters::bump(&self.counters.span_reuses);
            id
        } else {
            let (id, _) = self.new_run(map, c.pages as usize, PAGE_SHIFT)?;
            let d = self.live(id);
            for (w, word) in d.bitmap.iter().enumerate() {
                let first = w * 64;
                let valid = (c.blocks as usize).saturating_sub(first).min(64);
                word.store(if valid == 64 { 0 } else { !0u64 << valid }, Relaxed);
            }
            d.size.store(c.size as usize, Relaxed);
            d.class.store(class as u8, Relaxed);
            d.shard.store(shard as u8, Relaxed);
            d.kind.store(KIND_SMALL, Release);
            id
        };
        self.push(lists, id);
        Some(id)
    }

    /// A block of `class` (whose size is not a multiple of `align`) at an offset aligned to
    /// `align`: a free block at such an index in one of the first partial spans, else the
    /// first block of a fresh span (spans start on a page). This keeps an aligned request
    /// from rounding up to a class that is a multiple of its alignment.
    fn allocate_aligned(&self, map: &PageMap, shard: usize, class: usize, align: usize) -> Option<NonNull<u8>> {
        const SEARCH: usize = 8;
        let c = CLASSES[class];
        let stride = align >> (c.size.trailing_zeros().min(align.trailing_zeros()));
        let mut st = self.shards[shard].state.lock();
        let lists = &mut st.classes[class];
        let mut id = lists.partial;
        let mut searched = 0;
        while id != NONE && searched < SEARCH {
            if let Some(p) = self.take_at_stride(lists, id, stride) {
                return Some(p);
            }
            id = self.live(id).next.load(Relaxed);
            searched += 1;
        }
        let _ = map;
        None
    }

    /// A block for a request whose natural class is `natural` and whose alignment would
    /// round it up to class `class`: an aligned free block of the natural class, else of a
    /// power-of-two class between (more of their blocks are aligned), in listed spans.
    pub(super) fn allocate_aligned_below(
        &self,
        map: &PageMap,
        shard: usize,
        natural: usize,
        class: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        if let Some(p) = self.allocate_aligned(map, shard, natural, align) {
            return Some(p);
        }
        let mut pow = (CLASSES[natural].size as usize).next_power_of_two();
        let span_max = self.span_max.load(Relaxed);
        while pow < CLASSES[class].size as usize && pow < align && pow <= span_max {
            if let Some(c) = class_for(pow, 1)
                && c != natural
                && let Some(p) = self.allocate_aligned(map, shard, c, align)
            {
                return Some(p);
            }
            pow *= 2;
        }
        None
    }

    /// A free block of span `id` (of `lists`' class) whose index is a multiple of `stride`.
    fn take_at_stride(&self, lists: &mut ClassLists, id: u32, stride: usize) -> Option<NonNull<u8>> {
        let d = self.live(id);
        let c = CLASSES[d.class.load(Relaxed) as usize];
        let index =
            (0..c.blocks as usize).step_by(stride).find(|&i| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 0)?;
        let w = index / 64;
        d.bitmap[w].store(d.bitmap[w].load(Relaxed) | 1 << (index % 64), Relaxed);
        let used = d.used.load(Relaxed) + 1;
        d.used.store(used, Relaxed);
        if used == c.blocks {
            self.unlink(lists, id);
        }
        // The caller holds the lock of the span's shard.
        self.shards[d.shard.load(Relaxed) as usize % SHARDS].count(c.size as usize, true);
        NonNull::new(self.ptr(d.start.load(Relaxed) + index * c.size as usize))
    }

    /// When the page source is dry: a free block of a larger class (of any shard), so that
    /// holes left in other classes' spans are used. A class whose size keeps the alignment
    /// serves any of its free blocks; any other class a free block at an aligned offset
    /// (every span's first block is page-aligned).
    #[cold]
    pub(super) fn allocate_from_larger_class(
        &self,
        map: &PageMap,
        size: usize,
        class: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let first = class_for(size, 1).unwrap_or(class);
        // Every class may have spans (an adaptive heap made some before it packed).
        for (larger, c) in CLASSES.iter().enumerate().skip(first) {
            if larger == class {
                continue;
            }
            let block = c.size as usize;
            if block.is_multiple_of(align) {
                for shard in 0..SHARDS {
                    let has_free = {
                        let st = self.shards[shard].state.lock();
                        st.classes[larger].partial != NONE || st.classes[larger].empty != NONE
                    };
                    if has_free && let Some(p) = self.allocate_small(map, shard, larger, true) {
                        PathCounters::bump(&self.counters.larger_class_blocks);
                        return Some(p);
                    }
                }
            } else {
                // Blocks at multiples of `stride` start at multiples of `align`.
                let stride = align >> block.trailing_zeros().min(align.trailing_zeros());
                for shard in 0..SHARDS {
                    if let Some(p) = self.allocate_at_stride(shard, larger, stride) {
                        PathCounters::bump(&self.counters.larger_class_blocks);
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// A free block of a partial span of `class` in `shard` whose index is a multiple of
    /// `stride`.
    #[cold]
    fn allocate_at_stride(&self, shard: usize, class: usize, stride: usize) -> Option<NonNull<u8>> {
        let mut st = self.shards[shard].state.lock();
        let lists = &mut st.classes[class];
        let mut id = lists.partial;
        while id != NONE {
            if let Some(p) = self.take_at_stride(lists, id, stride) {
                return Some(p);
            }
            id = self.live(id).next.load(Relaxed);
        }
        None
    }

    /// When the page source is dry: consecutive free blocks of one span, taken as one
    /// block and recorded in the merge table (the span's bitmap marks each of them), in the
    /// span and class that waste the least.
    #[cold]
    #[inline]
    pub(super) fn allocate_merged(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let found = self.find_merge(size, align)?;
        self.take_merge(found)
    }

    /// The best place for a merged block of `size` bytes aligned to `align`, found shard
    /// by shard; the shards' locks are not held across the search, so the caller re-checks
    /// it under the lock ([`take_merge`](Heap::take_merge)).
    pub(super) fn find_merge(&self, size: usize, align: usize) -> Option<MergeSite> {
        // (waste, site)
        let mut best: Option<(usize, MergeSite)> = None;
        for shard in 0..SHARDS {
            let st = self.shards[shard].state.lock();
            for (class, lists) in st.classes.iter().enumerate() {
                let c = CLASSES[class];
                let bsize = c.size as usize;
                let k = size.div_ceil(bsize).max(2);
                if k > c.blocks as usize || best.is_some_and(|b| b.0 <= k * bsize - size) {
                    continue;
                }
                let mut id = lists.partial;
                while id != NONE {
                    let d = self.live(id);
                    let free = |i: usize| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 0;
                    let mut run = 0;
                    for i in 0..c.blocks as usize {
                        run = if free(i) { run + 1 } else { 0 };
                        if run >= k && ((i + 1 - k) * bsize).is_multiple_of(align) {
                            let site = MergeSite { shard, class, id, first: i + 1 - k, blocks: k };
                            best = Some((k * bsize - size, site));
                            break;
                        }
                    }
                    if best.is_some_and(|b| b.1.id == id) {
                        break;
                    }
                    id = d.next.load(Relaxed);
                }
            }
        }
        best.map(|b| b.1)
    }

    /// Takes the merged block `site` names, if it is still free in a partial span of its
    /// class and shard.
    pub(super) fn take_merge(&self, site: MergeSite) -> Option<NonNull<u8>> {
        let MergeSite { shard, class, id, first, blocks: k } = site;
        // Locks in the order a free takes them: the shard, then the merge table.
        let mut st = self.shards[shard].state.lock();
        let mut merges = self.merges.lock();
        let slot = merges.entries.iter().position(|e| e.1 == 0)?;
        let d = self.live(id);
        let c = CLASSES[class];
        // Re-check under the lock: since the search, other threads may have taken blocks of
        // the span, or freed its last one (it is then a cached empty span, linked into the
        // class's empty list, or given back and its descriptor made anew). Only a span on
        // its class's partial list (some blocks allocated) may take a merged block: a cached
        // empty span would be given back by `trim` with the block live.
        let used = d.used.load(Relaxed);
        if d.kind.load(Relaxed) != KIND_SMALL
            || d.class.load(Relaxed) as usize != class
            || d.shard.load(Relaxed) as usize != shard
            || used == 0
            || (first..first + k).any(|i| d.bitmap[i / 64].load(Relaxed) >> (i % 64) & 1 == 1)
        {
            return None;
        }
        for i in first..first + k {
            d.bitmap[i / 64].store(d.bitmap[i / 64].load(Relaxed) | 1 << (i % 64), Relaxed);
        }
        let used = used + k as u32;
        d.used.store(used, Relaxed);
        if used == c.blocks {
            self.unlink(&mut st.classes[class], id);
        }
        let addr = d.start.load(Relaxed) + first * c.size as usize;
        merges.entries[slot] = (addr, k as u32);
        self.shards[shard].count(k * c.size as usize, true);
        d.merged.store(d.merged.load(Relaxed) + 1, Relaxed);
        PathCounters::bump(&self.counters.merged_blocks);
        NonNull::new(self.ptr(addr))
    }

    /// Checks that `addr` is a live block start of span or large block `d` (whose shard
    /// lock the caller holds); returns its index and the span blocks it takes (more than
    /// one for a merged block).
    #[inline(always)]
    pub(super) fn block_at(&self, d: &Descriptor, addr: usize) -> Result<(usize, usize), XmfreeError> {
        let index = self.block_index(d, addr)?;
        if d.merged.load(Relaxed) == 0 {
            return Ok((index, 1));
        }
        self.merged_block_at(d, addr, index)
    }

    /// [`block_at`](Heap::block_at) in a span with merged blocks: block `index` of it,
    /// merged or not.
    #[cold]
    fn merged_block_at(&self, d: &Descriptor, addr: usize, index: usize) -> Result<(usize, usize), XmfreeError> {
        let (size, span) = (d.size.load(Relaxed), d.start.load(Relaxed));
        let span_end = span + d.pages.load(Relaxed) as usize * PAGE_SIZE;
        let merges = self.merges.lock();
        for &(start, k) in merges.entries.iter().filter(|e| e.1 > 0 && (span..span_end).contains(&e.0)) {
            if start == addr {
                return Ok((index, k as usize));
            }
            if addr > start && addr < start + k as usize * size {
                return Err(XmfreeError::NotBlockStart(VirtAddr::new(addr)));
            }
        }
        Ok((index, 1))
    }
}
