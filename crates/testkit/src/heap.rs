//! The kernel heaps (`memkit-heap`) against a shadow model, shared by their property test,
//! their random-action driver and the fuzz target: a sequence of [`Action`]s is applied to [`KernelHeaps`] over a region and,
//! in parallel, to a model that knows every live block's range, alignment, fill byte, heap
//! and pins. Any disagreement is returned as an error naming the action.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use memkit_heap::{
    FitPolicy, HeapId, HeapStats, KernelHeaps, MAX_ALIGN_LOG2, MAX_PINNED_BLOCKS, PageSource, ReallocError,
    RegionPageSource, SingleCpu, ThreadCache, UnpinError, XmallocError, XmfreeError,
};

/// One step of a run. Indices pick a live block modulo the number of live blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// `xmalloc(size, align_log2 % 32, heap % 6)`.
    Alloc {
        /// Bytes.
        size: u16,
        /// log2 of the alignment (taken modulo 32; beyond 28 is refused).
        align_log2: u8,
        /// Which heap (modulo 6).
        heap: u8,
    },
    /// `xmalloc` of `pages` whole pages and a bit more.
    AllocLarge {
        /// Pages (modulo 64).
        pages: u8,
        /// log2 of the alignment (modulo 24).
        align_log2: u8,
        /// Which heap (modulo 6).
        heap: u8,
    },
    /// `xmfree` of a live block.
    Free {
        /// Which block.
        index: u16,
    },
    /// `realloc` of a live block.
    Realloc {
        /// Which block.
        index: u16,
        /// New size.
        size: u16,
    },
    /// `realloc` of a live block to `pages` whole pages and a bit more (as
    /// [`AllocLarge`](Action::AllocLarge)): large blocks grown and shrunk in place or moved.
    ReallocLarge {
        /// Which block.
        index: u16,
        /// Pages (modulo 64).
        pages: u8,
    },
    /// `pin` of a live block.
    Pin {
        /// Which block.
        index: u16,
    },
    /// `unpin` of a live block.
    Unpin {
        /// Which block.
        index: u16,
    },
    /// `xmfree` of a pointer inside a live block: refused.
    FreeInterior {
        /// Which block.
        index: u16,
        /// Offset inside it (modulo its size, at least 1).
        offset: u16,
    },
    /// `xmfree` of a pointer freed before (and not handed out again): refused.
    DoubleFree {
        /// Which of the recently freed pointers.
        index: u16,
    },
    /// `xmfree` of a live block naming the other heap: refused.
    FreeWrongHeap {
        /// Which block.
        index: u16,
    },
    /// `allocate_cached` of the kernel heap (its regular heap) with the run's thread cache.
    AllocCached {
        /// Bytes.
        size: u16,
    },
    /// `free_cached` of a live block with the run's thread cache (a block of another heap,
    /// or a pinned one, is freed or refused as `free` does).
    FreeCached {
        /// Which block.
        index: u16,
    },
    /// `flush` of the run's thread cache.
    Flush,
}

const HEAPS: [HeapId; 6] =
    [HeapId::Kernel, HeapId::Pinned, HeapId::Kernel4K64K, HeapId::Kernel16M, HeapId::Pinned4K64K, HeapId::Pinned16M];

/// How a run checks.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// Bytes of the region behind the heaps.
    pub region_bytes: usize,
    /// Enable the 16M heaps.
    pub large_pages: bool,
    /// Check the heaps' invariants every this many actions (1: after every action).
    pub check_every: usize,
    /// Verify every live block's contents after every action (else only the block acted on).
    pub verify_all: bool,
    /// How the heaps place requests.
    pub fit_policy: FitPolicy,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            region_bytes: 48 << 20,
            large_pages: true,
            check_every: 1,
            verify_all: true,
            fit_policy: FitPolicy::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Successful allocations.
    pub allocations: usize,
    /// Allocations refused for lack of memory.
    pub out_of_memory: usize,
    /// Bad frees correctly refused.
    pub refused_frees: usize,
    /// Blocks live at the end.
    pub live_at_end: usize,
    /// Times the thread cache gave a full class's older half back.
    pub cache_overflows: usize,
    /// Times an allocation out of memory flushed the thread cache and tried again.
    pub cache_retries: usize,
    /// The structural paths the heaps took: the cumulative counters of [`HeapStats`]
    /// summed over the four backing heaps (the other fields as at the end, zero).
    pub paths: HeapStats,
}

/// The cumulative path counters of `s` added to `into`.
fn add_paths(into: &mut HeapStats, s: &HeapStats) {
    into.runs_created += s.runs_created;
    into.packings += s.packings;
    into.unpackings += s.unpackings;
    into.dry_requests += s.dry_requests;
    into.larger_class_blocks += s.larger_class_blocks;
    into.merged_blocks += s.merged_blocks;
    into.arenas_made += s.arenas_made;
    into.arenas_released += s.arenas_released;
    into.span_reuses += s.span_reuses;
    into.quick_reuses += s.quick_reuses;
    into.head_reuses += s.head_reuses;
    into.realloc_short_moves += s.realloc_short_moves;
    into.trimmed_runs += s.trimmed_runs;
}

#[derive(Debug, Clone, Copy)]
struct Live {
    addr: usize,
    size: usize,
    align_log2: u32,
    fill: u8,
    heap: HeapId,
    pins: u32,
}

/// `b`'s pointer, derived from `base` (the memory every block lies in).
fn block_ptr(base: *mut u8, b: &Live) -> *mut u8 {
    base.with_addr(b.addr)
}

fn fill(base: *mut u8, b: &Live) {
    // SAFETY: the block is live, at least `size` bytes, and only the runner touches it.
    unsafe { std::ptr::write_bytes(block_ptr(base, b), b.fill, b.size) };
}

fn intact(base: *mut u8, b: &Live, len: usize) -> bool {
    // SAFETY: the block is live and at least `len <= size` bytes long; nobody writes it.
    let bytes = unsafe { std::slice::from_raw_parts(block_ptr(base, b).cast_const(), len) };
    // Compared a chunk at a time (one `memcmp` each): byte by byte, the checks were most of
    // a run under Miri.
    let pattern = [b.fill; 256];
    bytes.chunks(pattern.len()).all(|c| c == &pattern[..c.len()])
}

/// A pointer to `addr` with the provenance of `base` (dangling for address 0).
fn nn(base: *mut u8, addr: usize) -> NonNull<u8> {
    NonNull::new(base.with_addr(addr)).unwrap_or(NonNull::dangling())
}

/// `xmfree` as the runner uses it.
fn xmfree(
    heaps: &KernelHeaps<'_, RegionPageSource, SingleCpu>,
    ptr: NonNull<u8>,
    heap: HeapId,
) -> Result<(), XmfreeError> {
    // SAFETY: the runner's blocks are its own, used only through raw pointers (never
    // through the `Allocator` or `GlobalAlloc` implementations); it frees a live block only
    // when it drops the block from its model, and its bad frees (a pointer inside a block,
    // one freed and not handed out again, the wrong heap) name no live block of that heap,
    // so they are refused.
    unsafe { heaps.xmfree(ptr, heap) }
}

/// Keeps `f` among the recently freed pointers (the last 64), which `DoubleFree` frees again.
fn remember_freed(freed: &mut Vec<(usize, HeapId, bool)>, f: (usize, HeapId, bool)) {
    freed.push(f);
    if freed.len() > 64 {
        freed.remove(0);
    }
}

/// Applies `actions` to fresh heaps and to the model.
///
/// # Errors
/// A description of the first disagreement between the heaps and the model.
pub fn run(actions: &[Action], config: RunConfig) -> Result<RunStats, String> {
    let mut memory: Vec<u8> = vec![0; config.region_bytes];
    let Some(start) = NonNull::new(memory.as_mut_ptr()) else { return Err("no memory".into()) };
    // SAFETY: `memory` is used only through the source and outlives it (dropped last).
    let Some(source) = (unsafe { RegionPageSource::new(start, memory.len()) }) else {
        return Err("region too small".into());
    };
    let base = source.base_ptr();
    let heaps = KernelHeaps::with_fit_policy(&source, &source, SingleCpu, config.fit_policy);
    heaps.init(config.large_pages).map_err(|e| format!("init: {e}"))?;
    let mut live: Vec<Live> = Vec::new();
    let mut by_addr: BTreeMap<usize, usize> = BTreeMap::new();
    // Freed pointers (and whether the cache took them: a second free of those goes through
    // the cache, which knows them; `xmfree` sees a cached block as allocated).
    let mut freed: Vec<(usize, HeapId, bool)> = Vec::new();
    let mut cache = ThreadCache::new();
    let cached_heap = heaps.regular_heap(HeapId::Kernel);
    let mut stats = RunStats::default();
    let mut next_fill = 1u8;
    let pinned_blocks = |live: &Vec<Live>| live.iter().filter(|b| b.pins > 0).count();

    for (step, &action) in actions.iter().enumerate() {
        let fail = |what: String| Err(format!("step {step} {action:?}: {what}"));
        let pick = |i: u16, live: &Vec<Live>| (!live.is_empty()).then(|| i as usize % live.len());
        let mut alloc = |size: usize,
                         align_log2: u32,
                         heap: HeapId,
                         cache: Option<&mut ThreadCache>,
                         live: &mut Vec<Live>,
                         by_addr: &mut BTreeMap<usize, usize>| {
            let r = match cache {
                Some(c) => cached_heap.allocate_cached(c, size),
                None => heaps.try_xmalloc(size, align_log2, heap),
            };
            match r {
                Ok(p) => {
                    let addr = p.as_ptr() as usize;
                    if !addr.is_multiple_of(1 << align_log2) {
                        return Err(format!("{addr:#x} not aligned to 2^{align_log2}"));
                    }
                    let end = addr + size.max(1);
                    if let Some((&a, &i)) = by_addr.range(..end).next_back()
                        && a + live[i].size.max(1) > addr
                    {
                        return Err(format!("{addr:#x}+{size} overlaps {a:#x}+{}", live[i].size));
                    }
                    freed.retain(|f| f.0 != addr);
                    let b = Live { addr, size, align_log2, fill: next_fill, heap, pins: 0 };
                    next_fill = next_fill.wrapping_add(1).max(1);
                    fill(base, &b);
                    by_addr.insert(addr, live.len());
                    live.push(b);
                    stats.allocations += 1;
                    Ok(())
                }
                Err(XmallocError::BadAlignment(a)) if align_log2 > MAX_ALIGN_LOG2 && a == align_log2 => Ok(()),
                Err(XmallocError::NoMemory(_)) if align_log2 <= MAX_ALIGN_LOG2 => {
                    stats.out_of_memory += 1;
                    Ok(())
                }
                Err(e) => Err(format!("xmalloc refused: {e}")),
            }
        };
        let remove = |i: usize, live: &mut Vec<Live>, by_addr: &mut BTreeMap<usize, usize>| {
            let b = live.swap_remove(i);
            by_addr.remove(&b.addr);
            if i < live.len() {
                by_addr.insert(live[i].addr, i);
            }
            b
        };
        // A large reallocation runs as a reallocation of its size.
        let (action, large_size) = match action {
            Action::ReallocLarge { index, pages } => {
                (Action::Realloc { index, size: 0 }, Some((pages as usize % 64) * 4096 + 40000))
            }
            a => (a, None),
        };
        let r = match action {
            Action::Alloc { size, align_log2, heap } => alloc(
                size as usize,
                u32::from(align_log2 % 32),
                HEAPS[heap as usize % 6],
                None,
                &mut live,
                &mut by_addr,
            ),
            Action::AllocLarge { pages, align_log2, heap } => {
                let size = (pages as usize % 64) * 4096 + 40000;
                alloc(size, u32::from(align_log2 % 24), HEAPS[heap as usize % 6], None, &mut live, &mut by_addr)
            }
            Action::Free { index } => match pick(index, &live) {
                None => Ok(()),
                Some(i) => {
                    let b = live[i];
                    if !intact(base, &b, b.size) {
                        fail(format!("contents of {:#x} changed", b.addr))?;
                    }
                    match (xmfree(&heaps, nn(base, b.addr), b.heap), b.pins > 0 && !b.heap.is_pinned()) {
                        (Ok(()), false) => {
                            remove(i, &mut live, &mut by_addr);
                            remember_freed(&mut freed, (b.addr, b.heap, false));
                            Ok(())
                        }
                        (Err(XmfreeError::StillPinned(_, n)), true) if n == b.pins => Ok(()),
                        (r, _) => Err(format!("xmfree gave {r:?} with {} pins", b.pins)),
                    }
                }
            },
            Action::Realloc { index, size } => match pick(index, &live) {
                None => Ok(()),
                Some(i) if live[i].pins > 0 && !live[i].heap.is_pinned() => Ok(()),
                Some(i) => {
                    let size = large_size.unwrap_or(usize::from(size));
                    let b = live[i];
                    // Half the calls say the alignment the block needs (the short path of
                    // a class block), half let the heap keep the one it has.
                    let r = if size % 2 == 0 {
                        // SAFETY: the block is live and only the runner touches it.
                        unsafe { heaps.realloc_aligned(nn(base, b.addr), size, b.align_log2, b.heap) }
                    } else {
                        // SAFETY: as above.
                        unsafe { heaps.realloc(nn(base, b.addr), size, b.heap) }
                    };
                    match r {
                        Ok(p) => {
                            let addr = p.as_ptr() as usize;
                            let kept = Live { addr, size: b.size, ..b };
                            if !addr.is_multiple_of(1 << b.align_log2) {
                                fail(format!("realloc lost alignment 2^{}", b.align_log2))?;
                            }
                            if !intact(base, &kept, b.size.min(size)) {
                                fail("realloc lost contents".into())?;
                            }
                            remove(i, &mut live, &mut by_addr);
                            if addr != b.addr {
                                freed.push((b.addr, b.heap, false));
                            }
                            let nb = Live { addr, size, ..b };
                            if let Some((&a, &j)) = by_addr.range(..addr + nb.size.max(1)).next_back()
                                && a + live[j].size.max(1) > addr
                            {
                                fail(format!("realloc result overlaps {a:#x}"))?;
                            }
                            fill(base, &nb);
                            freed.retain(|f| f.0 != addr);
                            by_addr.insert(addr, live.len());
                            live.push(nb);
                            Ok(())
                        }
                        Err(ReallocError::Allocate(XmallocError::NoMemory(_))) => Ok(()),
                        Err(e) => Err(format!("realloc: {e}")),
                    }
                }
            },
            // Turned into a `Realloc` above.
            Action::ReallocLarge { .. } => Ok(()),
            Action::Pin { index } => match pick(index, &live) {
                None => Ok(()),
                Some(i) if live[i].pins == 0 && pinned_blocks(&live) >= MAX_PINNED_BLOCKS / 2 => Ok(()),
                Some(i) => {
                    let b = &mut live[i];
                    let want = if b.heap.is_pinned() { 1 } else { b.pins + 1 };
                    match heaps.pin(nn(base, b.addr), b.heap) {
                        Ok(n) if n == want => {
                            if !b.heap.is_pinned() {
                                b.pins = n;
                            }
                            Ok(())
                        }
                        r => Err(format!("pin gave {r:?}, want {want}")),
                    }
                }
            },
            Action::Unpin { index } => match pick(index, &live) {
                None => Ok(()),
                Some(i) => {
                    let b = &mut live[i];
                    let va = memkit_types::VirtAddr::new(b.addr);
                    match (heaps.unpin(nn(base, b.addr), b.heap), b.heap.is_pinned(), b.pins) {
                        (Err(UnpinError::PinnedHeap(a)), true, _) if a == va => Ok(()),
                        (Err(UnpinError::NotPinned(a)), false, 0) if a == va => Ok(()),
                        (Ok(n), false, p) if p > 0 && n == p - 1 => {
                            b.pins = n;
                            Ok(())
                        }
                        (r, _, p) => Err(format!("unpin gave {r:?} with {p} pins")),
                    }
                }
            },
            Action::FreeInterior { index, offset } => match pick(index, &live) {
                Some(i) if live[i].size > 1 => {
                    let b = live[i];
                    let off = 1 + offset as usize % (b.size - 1);
                    match xmfree(&heaps, nn(base, b.addr + off), b.heap) {
                        Err(XmfreeError::NotBlockStart(_)) => {
                            stats.refused_frees += 1;
                            Ok(())
                        }
                        r => Err(format!("interior free gave {r:?}")),
                    }
                }
                _ => Ok(()),
            },
            Action::DoubleFree { index } => {
                if freed.is_empty() {
                    Ok(())
                } else {
                    let (addr, heap, cached) = freed[index as usize % freed.len()];
                    let r = if cached {
                        // SAFETY: as `xmfree`'s: a pointer freed before names no live block.
                        unsafe { cached_heap.free_cached(&mut cache, nn(base, addr)) }
                    } else {
                        xmfree(&heaps, nn(base, addr), heap)
                    };
                    match r {
                        Err(XmfreeError::StillPinned(..)) | Ok(()) => {
                            Err(format!("double free of {addr} ({heap:?}, cached {cached}) accepted"))
                        }
                        Err(_) => {
                            stats.refused_frees += 1;
                            Ok(())
                        }
                    }
                }
            }
            Action::FreeWrongHeap { index } => match pick(index, &live) {
                None => Ok(()),
                Some(i) => {
                    let b = live[i];
                    let other = if b.heap.is_pinned() { HeapId::Kernel } else { HeapId::Pinned };
                    match xmfree(&heaps, nn(base, b.addr), other) {
                        Err(XmfreeError::OtherHeap(_)) => {
                            stats.refused_frees += 1;
                            Ok(())
                        }
                        r => Err(format!("free from the other heap gave {r:?}")),
                    }
                }
            },
            Action::AllocCached { size } => {
                alloc(size as usize, 4, HeapId::Kernel, Some(&mut cache), &mut live, &mut by_addr)
            }
            Action::FreeCached { index } => match pick(index, &live) {
                None => Ok(()),
                Some(i) => {
                    let b = live[i];
                    if !intact(base, &b, b.size) {
                        fail(format!("contents of {:#x} changed", b.addr))?;
                    }
                    let owned = cached_heap.block(nn(base, b.addr)).is_ok();
                    // SAFETY: as `xmfree`'s; the cache holds only blocks of `cached_heap`.
                    let r = unsafe { cached_heap.free_cached(&mut cache, nn(base, b.addr)) };
                    let pinned = b.pins > 0 && !b.heap.is_pinned();
                    match (r, owned, pinned) {
                        (Ok(()), true, false) => {
                            remove(i, &mut live, &mut by_addr);
                            remember_freed(&mut freed, (b.addr, b.heap, true));
                            Ok(())
                        }
                        (Err(XmfreeError::StillPinned(_, n)), true, true) if n == b.pins => Ok(()),
                        // A block of another heap: not this one's.
                        (Err(XmfreeError::NotOwned(_)), false, _) => Ok(()),
                        (r, owned, _) => Err(format!(
                            "free_cached gave {r:?} for a block of {:?} (in the cached heap: {owned}) with {} pins",
                            b.heap, b.pins
                        )),
                    }
                }
            },
            Action::Flush => {
                cached_heap.flush(&mut cache);
                Ok(())
            }
        };
        if let Err(e) = r {
            return fail(e);
        }
        if config.check_every > 0 && step % config.check_every == 0 {
            heaps.check_invariants();
            cached_heap.check_cache(&cache);
        }
        if config.verify_all
            && let Some(b) = live.iter().find(|b| !intact(base, b, b.size))
        {
            return fail(format!("contents of {:#x} changed", b.addr));
        }
    }
    heaps.check_invariants();
    cached_heap.check_cache(&cache);
    stats.cache_overflows = cache.overflows();
    stats.cache_retries = cache.retries();
    cached_heap.flush(&mut cache);
    if !cache.is_empty() {
        return Err("a flushed cache holds blocks".into());
    }
    stats.live_at_end = live.len();
    for b in &live {
        if !intact(base, b, b.size) {
            return Err(format!("contents of {:#x} changed at the end", b.addr));
        }
        for _ in 0..b.pins {
            heaps.unpin(nn(base, b.addr), b.heap).map_err(|e| format!("final unpin: {e}"))?;
        }
        xmfree(&heaps, nn(base, b.addr), b.heap).map_err(|e| format!("final free: {e}"))?;
    }
    heaps.check_invariants();
    for id in [HeapId::Kernel, HeapId::Pinned] {
        heaps.regular_heap(id).trim();
        heaps.large_heap(id).trim();
        let (r, l) = (heaps.regular_heap(id).stats(), heaps.large_heap(id).stats());
        if r.pages + l.pages != 0 {
            return Err(format!("pages still held after freeing everything: {r:?} {l:?}"));
        }
        add_paths(&mut stats.paths, &r);
        add_paths(&mut stats.paths, &l);
    }
    Ok(stats)
}
