//! Unit tests of the heap. The `unsafe` here: a region page source over memory leaked for the
//! test, and frees of blocks the test allocated and no longer uses.

use spin::RelaxStrategy;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::source::RegionPageSource;

fn heap(bytes: usize) -> Heap<RegionPageSource> {
    heap_placed(bytes, FitPolicy::SizeClasses)
}

fn heap_placed(bytes: usize, fit_policy: FitPolicy) -> Heap<RegionPageSource> {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    // SAFETY: leaked memory, used only by this source, valid for 'static.
    let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    let heap = Heap::with_fit_policy(src, SingleCpu, false, fit_policy);
    heap.init().unwrap();
    heap
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// [`Heap::free`] for the tests, which use blocks only as addresses (never through
    /// the `Allocator` implementation) and free each of their blocks once.
    fn free_owned(&self, ptr: NonNull<u8>) -> Result<(), XmfreeError> {
        // SAFETY: a test's live block is its own and unused after the free; any other
        // pointer is refused.
        unsafe { self.free(ptr) }
    }
}

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr().addr()
}

/// Checks the invariants after step `i` of a long loop: after every step, except under Miri,
/// where a full check per step of a thousand-block loop takes most of an hour; there every
/// 64th step (and the tests check again after their loops).
fn check_step<P: PageSource, C: CpuId, R: RelaxStrategy>(h: &Heap<P, C, R>, i: usize) {
    if !cfg!(miri) || i.is_multiple_of(64) {
        h.check_invariants();
    }
}

#[test]
fn an_aligned_request_takes_an_aligned_block_of_its_own_class() {
    let h = heap(1 << 20);
    let first: Vec<_> = (0..3).map(|_| h.allocate(40, 0).unwrap()).collect();
    let size = h.block(first[0]).unwrap().usable;
    assert_eq!(size, 48);
    // Blocks 1 and 2 are 48 bytes apart; the next 64-aligned free one is block 4.
    let p = h.allocate(40, 6).unwrap();
    assert_eq!(addr(p), addr(first[0]) + 4 * size);
    let info = h.block(p).unwrap();
    assert_eq!(info.usable, size);
    assert!(info.align_log2 >= 6);
    h.check_invariants();
    // The next 40-byte block without alignment fills the gap before it.
    assert_eq!(addr(h.allocate(40, 0).unwrap()), addr(first[0]) + 3 * size);
    h.check_invariants();
}

/// The search for a merged block does not hold the shards' locks while it takes it;
/// meanwhile another thread may free the span's last block, so that the span becomes
/// a cached empty span (or goes back to the source). Taking the merged block from it
/// then left a live block in a span `trim` gave back: frees of live blocks were
/// refused and the merge table named pages of other runs.
#[test]
fn a_merged_block_is_not_taken_from_a_span_emptied_since_the_search() {
    let h = heap(256 << 10);
    let mut live = Vec::new();
    while let Ok(p) = h.allocate(1000, 0) {
        live.push(p);
    }
    let span_of = |p: NonNull<u8>| h.locate(addr(p)).map(|found| found.1).unwrap();
    let id = span_of(live[0]);
    let (mine, rest): (Vec<_>, Vec<_>) = live.into_iter().partition(|&p| span_of(p) == id);
    assert!(mine.len() >= 3);
    for &p in &mine[1..] {
        h.free_owned(p).unwrap();
    }
    let size = h.block(mine[0]).unwrap().usable;
    let site = h.find_merge(2 * size, 1).expect("two free neighbours");
    assert_eq!(site.id, id);
    // The span's last block is freed between the search and the taking.
    h.free_owned(mine[0]).unwrap();
    assert_eq!(h.take_merge(site), None);
    h.check_invariants();
    h.trim();
    h.check_invariants();
    for p in rest {
        h.free_owned(p).unwrap();
    }
    h.check_invariants();
    h.trim();
    assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
}

#[test]
fn a_dry_heap_merges_neighbouring_free_blocks_of_a_span() {
    let h = heap(256 << 10);
    let mut live = Vec::new();
    while let Ok(p) = h.allocate(1000, 0) {
        live.push(p);
    }
    assert_eq!(h.source().free_page_count().get(), 0);
    let size = h.block(live[0]).unwrap().usable;
    // Two neighbours in one span, freed: a request for both is served from them.
    let i = (0..live.len()).find(|&i| live.contains(&NonNull::new(live[i].as_ptr().wrapping_add(size)).unwrap()));
    let first = live.swap_remove(i.unwrap());
    let second = NonNull::new(first.as_ptr().wrapping_add(size)).unwrap();
    live.retain(|&p| p != second);
    h.free_owned(first).unwrap();
    h.free_owned(second).unwrap();
    h.check_invariants();
    let p = h.allocate(size + 100, 0).unwrap();
    assert_eq!(p, first);
    h.check_invariants();
    let info = h.block(p).unwrap();
    assert_eq!(info.usable, 2 * size);
    // The second block is inside the merged one now.
    assert_eq!(h.free_owned(second), Err(XmfreeError::NotBlockStart(VirtAddr::new(addr(second)))));
    assert!(h.pin(second).is_err());
    assert_eq!(h.block(second), Err(XmfreeError::NotBlockStart(VirtAddr::new(addr(second)))));
    // SAFETY: the block is live and nobody else uses it.
    unsafe { p.as_ptr().write_bytes(0xa5, info.usable) };
    h.free_owned(p).unwrap();
    assert_eq!(h.free_owned(p), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(p)))));
    assert_eq!(h.free_owned(second), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(second)))));
    h.check_invariants();
    // Both halves serve single blocks again.
    let again = [h.allocate(1000, 0).unwrap(), h.allocate(1000, 0).unwrap()];
    assert!(again.contains(&first) && again.contains(&second));
    h.check_invariants();
    for p in live.into_iter().chain(again) {
        h.free_owned(p).unwrap();
    }
    h.check_invariants();
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn a_dry_heap_serves_an_aligned_request_from_a_page_aligned_hole() {
    let h = heap(256 << 10);
    let mut live = Vec::new();
    while let Ok(p) = h.allocate(100, 0) {
        live.push(p);
    }
    assert_eq!(h.source().free_page_count().get(), 0);
    assert!(h.allocate(50, 12).is_err());
    h.check_invariants();
    // A span's first block starts a page: once free, it serves a page-aligned request.
    let i = live.iter().position(|p| addr(*p).is_multiple_of(PAGE_SIZE)).unwrap();
    let hole = live.swap_remove(i);
    h.free_owned(hole).unwrap();
    let p = h.allocate(50, 12).unwrap();
    assert_eq!(p, hole);
    assert_eq!(h.block(p).unwrap().align_log2, PAGE_SHIFT);
    h.check_invariants();
    for p in live {
        h.free_owned(p).unwrap();
    }
    h.free_owned(p).unwrap();
    h.check_invariants();
}

#[test]
fn a_freed_arena_block_merges_with_both_neighbours() {
    let h = heap_placed(1 << 20, FitPolicy::ExactFit);
    // Larger than quick blocks: freed blocks merge at once.
    let big = (QUICK_MAX_GRANULES + 16) * GRANULE;
    let blocks: Vec<_> = (0..4).map(|_| h.allocate(big - 20, 0).unwrap()).collect();
    let usable = h.block(blocks[0]).unwrap().usable;
    assert_eq!(usable, big);
    for w in blocks.windows(2) {
        assert_eq!(addr(w[1]), addr(w[0]) + usable);
    }
    assert_eq!(h.stats().arenas, 1);
    h.free_owned(blocks[0]).unwrap();
    h.free_owned(blocks[2]).unwrap();
    h.check_invariants();
    h.free_owned(blocks[1]).unwrap();
    h.check_invariants();
    // The three make one free block: a request for all of them takes the first's place.
    let p = h.allocate(3 * usable, 0).unwrap();
    assert_eq!(p, blocks[0]);
    assert_eq!(h.block(p).unwrap().usable, 3 * usable);
    h.check_invariants();
    h.free_owned(p).unwrap();
    h.free_owned(blocks[3]).unwrap();
    h.check_invariants();
    // The empty arena is kept until a trim gives it back.
    assert_eq!(h.stats().arenas, 1);
    h.trim();
    assert_eq!((h.stats().arenas, h.stats().pages), (0, 0));
    h.check_invariants();
}

#[test]
fn a_freed_small_arena_block_is_held_quick_for_a_request_of_its_size() {
    let h = heap_placed(1 << 20, FitPolicy::ExactFit);
    // 3000 bytes: 47 granules, a quick block's size.
    let blocks: Vec<_> = (0..4).map(|_| h.allocate(3000, 0).unwrap()).collect();
    h.free_owned(blocks[1]).unwrap();
    h.check_invariants();
    assert_eq!(h.stats().small_blocks, 3);
    // Held unmerged, it is free to every check: a second free, a pin, a look.
    let at = VirtAddr::new(addr(blocks[1]));
    assert_eq!(h.free_owned(blocks[1]), Err(XmfreeError::NotAllocated(at)));
    assert_eq!(h.block(blocks[1]), Err(XmfreeError::NotAllocated(at)));
    assert!(h.pin(blocks[1]).is_err());
    h.check_invariants();
    // A request of another size leaves it; one of its size (in granules) takes it.
    let other = h.allocate(2000, 0).unwrap();
    assert_ne!(other, blocks[1]);
    let again = h.allocate(2990, 0).unwrap();
    assert_eq!((again, h.stats().quick_reuses), (blocks[1], 1));
    assert_eq!(h.block(again).unwrap().usable, 3008);
    h.check_invariants();
    // Nine frees: the slots hold eight, the oldest is freed for good (merged with its
    // free neighbours), and a trim frees the rest, so the arena empties and goes back.
    let more: Vec<_> = (0..5).map(|_| h.allocate(3000, 0).unwrap()).collect();
    for p in blocks.iter().chain(&more).copied().chain([other]) {
        h.free_owned(p).unwrap();
        h.check_invariants();
    }
    assert_eq!(h.stats().small_blocks, 0);
    assert!(h.stats().pages > 0);
    h.trim();
    h.check_invariants();
    assert_eq!((h.stats().arenas, h.stats().pages), (0, 0));
}

#[test]
fn a_shard_keeps_a_few_empty_arenas_until_a_trim() {
    let h = heap_placed(8 << 20, FitPolicy::ExactFit);
    let big = 30 << 10;
    let mut blocks = Vec::new();
    while h.stats().arenas < EMPTY_ARENAS_KEEP + 2 {
        blocks.push(h.allocate(big, 0).unwrap());
    }
    for p in &blocks {
        h.free_owned(*p).unwrap();
        h.check_invariants();
    }
    assert_eq!(h.stats().arenas, EMPTY_ARENAS_KEEP);
    // A kept arena serves the next request and is no longer counted as empty.
    let p = h.allocate(big, 0).unwrap();
    h.check_invariants();
    assert_eq!(h.stats().arenas, EMPTY_ARENAS_KEEP);
    h.trim();
    assert_eq!(h.stats().arenas, 1);
    assert_eq!(h.block(p).unwrap().usable, big);
    h.free_owned(p).unwrap();
    h.check_invariants();
    h.trim();
    assert_eq!((h.stats().arenas, h.stats().pages), (0, 0));
    h.check_invariants();
}

#[test]
fn a_bad_pointer_into_an_arena_changes_nothing() {
    let h = heap_placed(1 << 20, FitPolicy::ExactFit);
    let p = h.allocate(5000, 0).unwrap();
    let q = h.allocate(2000, 6).unwrap();
    let before = h.stats();
    let arena_start = addr(p) & !(PAGE_SIZE - 1);
    let bad = |a: usize| NonNull::new(p.as_ptr().with_addr(a)).unwrap();
    for (a, want) in [
        (addr(p) + 64, XmfreeError::NotBlockStart(VirtAddr::new(addr(p) + 64))),
        (addr(p) + 8, XmfreeError::NotBlockStart(VirtAddr::new(addr(p) + 8))),
        (arena_start, XmfreeError::NotBlockStart(VirtAddr::new(arena_start))),
        (addr(q) + 2048, XmfreeError::NotAllocated(VirtAddr::new(addr(q) + 2048))),
    ] {
        assert_eq!(h.free_owned(bad(a)), Err(want));
        assert!(h.pin(bad(a)).is_err());
        assert_eq!(h.block(bad(a)), Err(want));
    }
    assert_eq!(h.stats(), before);
    h.check_invariants();
    assert_eq!(h.pin(q), Ok(1));
    assert_eq!(h.free_owned(q), Err(XmfreeError::StillPinned(VirtAddr::new(addr(q)), 1)));
    assert_eq!(h.unpin(q), Ok(0));
    h.free_owned(q).unwrap();
    assert_eq!(h.free_owned(q), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(q)))));
    h.free_owned(p).unwrap();
    assert_eq!(h.free_owned(p), Err(XmfreeError::NotAllocated(VirtAddr::new(addr(p)))));
    h.check_invariants();
}

#[test]
fn a_dry_heap_serves_from_a_free_range_of_an_arena() {
    let h = heap_placed(512 << 10, FitPolicy::ExactFit);
    let mut live = Vec::new();
    while let Ok(p) = h.allocate(3000, 0) {
        live.push(p);
    }
    assert!(h.source().free_page_count().get() < 2);
    h.check_invariants();
    let usable = h.block(live[0]).unwrap().usable;
    let i = (1..live.len()).find(|&i| addr(live[i]) == addr(live[i - 1]) + usable).unwrap();
    let (first, second) = (live[i - 1], live[i]);
    live.retain(|&p| p != first && p != second);
    h.free_owned(second).unwrap();
    h.free_owned(first).unwrap();
    h.check_invariants();
    let p = h.allocate(2 * usable, 0).unwrap();
    assert_eq!(p, first);
    // A small request when no span can be had takes an arena's free range too.
    h.free_owned(p).unwrap();
    let mut small = Vec::new();
    while let Ok(q) = h.allocate(16, 0) {
        small.push(q);
    }
    h.check_invariants();
    assert!(small.iter().any(|&q| addr(q) >= addr(first) && addr(q) < addr(first) + 2 * usable));
    for q in small.into_iter().chain(live) {
        h.free_owned(q).unwrap();
    }
    h.check_invariants();
}

#[test]
fn an_adaptive_heap_packs_when_its_source_runs_short_and_unpacks_when_it_recovers() {
    // Roomy, an adaptive heap places requests of classes up to 1 KiB in spans: 270 bytes
    // take a class block of a span (288 bytes or a little more), packed 320 bytes (5
    // granules) of an arena.
    let h = heap_placed(512 << 10, FitPolicy::Adaptive);
    let (size, fit_block) = (270, 320);
    let class_block = CLASSES[class_for(size, 1).unwrap()].size as usize;
    assert!(class_block != fit_block && class_block <= ROOMY_SPAN_MAX);
    let short =
        |h: &Heap<RegionPageSource>| h.source().free_page_count().get() * PAGE_SIZE < PACK_HEADROOM * h.bytes_in_use();
    let mut blocks = Vec::new();
    loop {
        let p = h.allocate(size, 0).unwrap();
        check_step(&h, blocks.len());
        blocks.push(p);
        let usable = h.block(p).unwrap().usable;
        if usable == fit_block {
            break;
        }
        assert_eq!(usable, class_block);
        assert!(blocks.len() < 1000, "the heap never packed");
    }
    assert!(short(&h), "packed with room to spare");
    assert_eq!(h.stats().packings, 1);
    assert!(blocks.len() > 100, "packed too early: {} blocks", blocks.len());
    // Packed, the holes of the class's last span are still used before any arena.
    for _ in 0..20 {
        blocks.push(h.allocate(size, 0).unwrap());
        check_step(&h, blocks.len());
    }
    h.check_invariants();
    assert_eq!(h.block(*blocks.last().unwrap()).unwrap().usable, fit_block);
    for (i, p) in blocks.drain(..).enumerate() {
        h.free_owned(p).unwrap();
        check_step(&h, i);
    }
    h.check_invariants();
    h.trim();
    assert!(!short(&h));
    let p = h.allocate(size, 0).unwrap();
    assert_eq!(h.block(p).unwrap().usable, class_block, "still packing after the heap emptied");
    h.free_owned(p).unwrap();
    h.check_invariants();
}

#[test]
fn a_roomy_adaptive_heap_places_classes_above_1_kib_in_arenas() {
    let h = heap_placed(4 << 20, FitPolicy::Adaptive);
    // 1000 bytes: the 1024-byte class block of a span; 1100 bytes: 1152 bytes (18
    // granules) of an arena, not a 1152-or-more-byte class block.
    let a = h.allocate(1000, 0).unwrap();
    check_step(&h, 0);
    assert_eq!((h.block(a).unwrap().usable, h.stats().spans, h.stats().arenas), (1024, 1, 0));
    let b = h.allocate(1100, 0).unwrap();
    check_step(&h, 1);
    assert_eq!((h.block(b).unwrap().usable, h.stats().spans, h.stats().arenas), (1152, 1, 1));
    // The largest class and an aligned request above 1 KiB go to the arena too.
    let c = h.allocate(MAX_SMALL, 0).unwrap();
    let d = h.allocate(3000, 9).unwrap();
    check_step(&h, 2);
    assert_eq!((h.block(c).unwrap().usable, h.stats().arenas), (MAX_SMALL, 1));
    assert!(addr(d).is_multiple_of(512) && h.block(d).unwrap().usable >= 3000);
    assert_eq!(h.stats().packings, 0);
    for p in [a, b, c, d] {
        h.free_owned(p).unwrap();
        h.check_invariants();
    }
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn a_packing_heap_fills_arena_fragments_with_small_requests() {
    let h = heap_placed(1 << 20, FitPolicy::ExactFit);
    // No fragment yet: a small request takes a class block of a span.
    let s = h.allocate(100, 0).unwrap();
    assert_eq!(h.stats().spans, 1);
    // Larger than quick blocks, so that a free merges and lists at once.
    let big = (QUICK_MAX_GRANULES + 16) * GRANULE;
    let a = h.allocate(big, 0).unwrap();
    let b = h.allocate(big, 0).unwrap();
    assert_eq!(addr(b), addr(a) + big);
    h.free_owned(a).unwrap();
    // 14 granules fewer than a's: a fragment of 14 granules stays.
    let c = h.allocate(big - 14 * GRANULE, 0).unwrap();
    assert_eq!(c, a);
    h.check_invariants();
    // A small request that fits in the fragment goes there, not to a span.
    let d = h.allocate(200, 6).unwrap();
    h.check_invariants();
    assert_eq!(addr(d), addr(c) + big - 14 * GRANULE);
    assert_eq!(h.block(d).unwrap().usable, 256);
    assert_eq!((h.stats().spans, h.stats().small_blocks), (1, 4));
    for p in [s, b, c, d] {
        h.free_owned(p).unwrap();
        h.check_invariants();
    }
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn an_emptied_first_span_stays_listed_and_a_cached_one_is_used_again() {
    let h = heap(4 << 20);
    let c = CLASSES[class_for(100, 1).unwrap()];
    let n = c.blocks as usize;
    // Span A, full, then span B, first in the list with one block.
    let a: Vec<_> = (0..n).map(|_| h.allocate(100, 0).unwrap()).collect();
    let b = h.allocate(100, 0).unwrap();
    assert_eq!(h.stats().spans, 2);
    // B empties first in the list: it stays there, and the next request takes it again.
    h.free_owned(b).unwrap();
    h.check_invariants();
    assert_eq!(h.allocate(100, 0).unwrap(), b);
    h.free_owned(b).unwrap();
    // A block of A freed: A is listed after B, which stays first.
    h.free_owned(a[0]).unwrap();
    h.check_invariants();
    // A empties too: B joins the empty cache as the class's one kept span, A a further one.
    for &p in &a[1..] {
        h.free_owned(p).unwrap();
    }
    h.check_invariants();
    assert_eq!((h.stats().spans, h.stats().span_reuses), (2, 0));
    // Nothing listed: the next request uses a cached span again.
    h.allocate(100, 0).unwrap();
    h.check_invariants();
    assert_eq!((h.stats().spans, h.stats().span_reuses), (2, 1));
    h.trim();
    h.check_invariants();
}

#[test]
fn a_shard_keeps_one_empty_span_per_class_and_a_few_pages_more() {
    // The 15 spans of these classes take 570 pages (2.3 MiB): 4 MiB holds them, and a larger
    // source only makes every invariant check (and Miri) slower.
    let h = heap(4 << 20);
    let sizes = [30_000, 25_000, 20_000];
    let mut blocks = Vec::new();
    let mut one_each = 0;
    for size in sizes {
        let c = CLASSES[class_for(size, 1).unwrap()];
        one_each += c.pages as usize;
        for _ in 0..5 * c.blocks {
            blocks.push(h.allocate(size, 0).unwrap());
        }
    }
    assert_eq!(h.stats().spans, 15);
    for (i, p) in blocks.into_iter().enumerate() {
        h.free_owned(p).unwrap();
        check_step(&h, i);
    }
    h.check_invariants();
    let st = h.stats();
    assert!(st.spans >= sizes.len(), "{st:?}");
    assert!(st.pages > one_each && st.pages <= one_each + EMPTY_PAGES_KEEP, "{st:?}");
    assert_eq!((st.empty_span_pages, st.span_pages, st.span_live_bytes), (st.pages, st.pages, 0));
    h.trim();
    assert_eq!(h.stats().pages, 0);
}

#[test]
fn realloc_of_a_class_block_moves_under_one_lock_and_refuses_what_free_refuses() {
    let h = heap(1 << 20);
    let realloc = |p: NonNull<u8>, size: usize| {
        // SAFETY: the test's own block, or a pointer the heap refuses.
        unsafe { h.realloc_aligned(p, size, 4) }
    };
    // Two 16-byte blocks, so that moving one leaves its span with a block allocated, and
    // a partial span of the 48-byte class to move to (the short path takes no new span).
    let (p, keep) = (h.allocate(16, 0).unwrap(), h.allocate(16, 0).unwrap());
    let other = h.allocate(48, 0).unwrap();
    // SAFETY: the block is the test's, 16 bytes long.
    unsafe { p.as_ptr().write_bytes(0xa5, 16) };
    // Still fits and at least half used: it stays.
    assert_eq!(realloc(p, 9).unwrap(), p);
    // Grows: a block of the class of 24 and half again (48 bytes), contents copied.
    let q = realloc(p, 24).unwrap();
    assert_ne!(q, p);
    assert_eq!(h.block(q).unwrap().usable, 48);
    // SAFETY: the moved block is live and at least 16 bytes long.
    assert!(unsafe { core::slice::from_raw_parts(q.as_ptr(), 16) }.iter().all(|&b| b == 0xa5));
    assert_eq!(h.stats().realloc_short_moves, 1);
    h.check_invariants();
    // The old block is free: a second free and a realloc of it are refused.
    let at = VirtAddr::new(addr(p));
    assert_eq!(h.free_owned(p), Err(XmfreeError::NotAllocated(at)));
    assert!(matches!(realloc(p, 40), Err(crate::ReallocError::Free(XmfreeError::NotAllocated(_)))));
    // A pointer inside a block is refused; nothing changes.
    let inside = NonNull::new(q.as_ptr().wrapping_add(8)).unwrap();
    assert!(matches!(realloc(inside, 100), Err(crate::ReallocError::Free(XmfreeError::NotBlockStart(_)))));
    // Shrinks below half: moves to a smaller class.
    let r = realloc(q, 16).unwrap();
    assert_eq!(h.block(r).unwrap().usable, 16);
    assert_eq!(h.stats().realloc_short_moves, 2);
    // A pinned block is the general path's, which refuses it.
    h.pin(r).unwrap();
    assert!(matches!(realloc(r, 200), Err(crate::ReallocError::Free(XmfreeError::StillPinned(_, 1)))));
    h.unpin(r).unwrap();
    h.check_invariants();
    // The last block of a span (its move would empty it), or a move to a class with no
    // partial span, takes the general path, which moves it as well.
    h.free_owned(keep).unwrap();
    let s = h.allocate(700, 0).unwrap();
    let t = realloc(s, 900).unwrap();
    assert_ne!(s, t);
    let roomy = h.allocate(1350, 0).unwrap();
    assert_eq!(h.block(t).unwrap().usable, h.block(roomy).unwrap().usable);
    assert_eq!(h.stats().realloc_short_moves, 2);
    for b in [r, t, other, roomy] {
        h.free_owned(b).unwrap();
    }
    h.check_invariants();
    h.trim();
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn the_stats_say_where_the_held_pages_go() {
    let h = heap_placed(1 << 20, FitPolicy::Adaptive);
    // Two blocks of the 48-byte class, one arena block (2 000 bytes: 32 granules), one
    // large block (40 000 bytes: 10 pages), and an arena block freed (quick: not live).
    let small = [h.allocate(40, 0).unwrap(), h.allocate(48, 0).unwrap()];
    let fit = h.allocate(2000, 0).unwrap();
    let quick = h.allocate(3000, 0).unwrap();
    h.free_owned(quick).unwrap();
    let large = h.allocate(40_000, 0).unwrap();
    let st = h.stats();
    assert_eq!(st.span_live_bytes, 2 * 48);
    assert_eq!(st.arena_live_bytes, 2048);
    assert_eq!(st.large_pages, 10);
    assert_eq!(st.empty_span_pages, 0);
    assert_eq!(st.span_pages + st.arena_pages + st.large_pages, st.pages, "{st:?}");
    assert!(st.span_pages > 0 && st.arena_pages > 0, "{st:?}");
    for p in small.into_iter().chain([fit, large]) {
        h.free_owned(p).unwrap();
    }
    // The emptied span stays first in its class's list: held, empty, nothing live.
    let st = h.stats();
    assert_eq!((st.span_live_bytes, st.arena_live_bytes, st.large_pages), (0, 0, 0));
    assert_eq!(st.empty_span_pages, st.span_pages);
    h.trim();
    assert_eq!(h.stats().pages, 0);
}

#[test]
fn a_thread_cache_serves_its_class_again_and_refuses_a_second_free() {
    let h = heap_placed(4 << 20, FitPolicy::Adaptive);
    let mut cache = ThreadCache::new();
    let a = h.allocate_cached(&mut cache, 100).unwrap();
    // SAFETY: the test's own live block, unused after this.
    unsafe { h.free_cached(&mut cache, a) }.unwrap();
    assert_eq!(cache.len(), 1);
    h.check_cache(&cache);
    // A second free of a cached block is refused and leaves the cache as it was.
    // SAFETY: a refused free changes nothing.
    let again = unsafe { h.free_cached(&mut cache, a) };
    assert!(matches!(again, Err(XmfreeError::NotAllocated(_))), "{again:?}");
    // So is a plain free of it after a flush gave it back.
    assert_eq!(cache.len(), 1);
    // The same class takes it again, without the heap.
    assert_eq!(h.allocate_cached(&mut cache, 97).unwrap(), a);
    assert!(cache.is_empty());
    // A block above `CACHE_MAX` and a pointer inside a block are not cached.
    let big = h.allocate_cached(&mut cache, CACHE_MAX + 1).unwrap();
    let inside = NonNull::new(a.as_ptr().wrapping_add(16)).unwrap();
    // SAFETY: a pointer inside a live block is refused.
    assert!(matches!(unsafe { h.free_cached(&mut cache, inside) }, Err(XmfreeError::NotBlockStart(_))));
    // SAFETY: the test's own live blocks, each freed once.
    unsafe { h.free_cached(&mut cache, big) }.unwrap();
    // SAFETY: as above.
    unsafe { h.free_cached(&mut cache, a) }.unwrap();
    assert_eq!(cache.len(), 1);
    h.flush(&mut cache);
    assert!(cache.is_empty());
    // SAFETY: `a` was given back by the flush: a plain free now is a double free.
    assert!(matches!(unsafe { h.free(a) }, Err(XmfreeError::NotAllocated(_))));
    h.check_invariants();
    h.trim();
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn a_full_class_gives_its_older_half_back() {
    let h = heap_placed(4 << 20, FitPolicy::Adaptive);
    let mut cache = ThreadCache::new();
    let blocks: Vec<_> = (0..CACHE_DEPTH * 3).map(|_| h.allocate(48, 4).unwrap()).collect();
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: the test's own live blocks, each freed once.
        unsafe { h.free_cached(&mut cache, b) }.unwrap();
        h.check_cache(&cache);
        check_step(&h, i);
    }
    assert!(cache.overflows() >= 2, "{cache:?}");
    assert!(cache.len() <= CACHE_DEPTH && cache.len() > CACHE_DEPTH / 2, "{cache:?}");
    // The newest block is taken first.
    assert_eq!(h.allocate_cached(&mut cache, 48).unwrap(), blocks[blocks.len() - 1]);
    let left = cache.len();
    assert_eq!(h.stats().small_blocks, left + 1);
    h.flush(&mut cache);
    h.free_owned(blocks[blocks.len() - 1]).unwrap();
    h.check_invariants();
    assert_eq!(h.stats().small_blocks, 0);
}

#[test]
fn a_dry_heap_flushes_the_cache_and_tries_again() {
    // (A quarter of the heap under Miri, which interprets every allocation.)
    let h = heap_placed(if cfg!(miri) { 256 << 10 } else { 1 << 20 }, FitPolicy::SizeClasses);
    let mut cache = ThreadCache::new();
    // Every page in blocks of one small class, all freed into the cache (which keeps the
    // newest few and gives the others back) ...
    let mut small = Vec::new();
    while let Ok(p) = h.allocate(16, 4) {
        small.push(p);
    }
    for &p in &small {
        // SAFETY: the test's own live blocks, each freed once.
        unsafe { h.free_cached(&mut cache, p) }.unwrap();
    }
    assert!(!cache.is_empty());
    // ... then blocks of another class until the heap is dry: the cache lets its blocks go
    // before the heap says no.
    let mut large = Vec::new();
    while let Ok(p) = h.allocate_cached(&mut cache, 1000) {
        large.push(p);
    }
    assert!(cache.retries() >= 1, "{cache:?}");
    assert!(cache.is_empty());
    h.check_cache(&cache);
    h.check_invariants();
    for p in large {
        h.free_owned(p).unwrap();
    }
    h.check_invariants();
}
