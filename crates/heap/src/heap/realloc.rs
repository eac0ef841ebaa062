//! Reallocation: a block resized where it is when its neighbourhood allows (a class block
//! that still fits, an arena block grown into the free block after it or shrunk, a large
//! block shrunk), else moved.

use core::ptr::NonNull;
use spin::RelaxStrategy;

use super::*;

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// Reallocates the block at `ptr` to `new_size` bytes with the alignment the block has
    /// (at least the one it was asked with). The block stays in place when it can:
    /// a class block while its usable size fits and it would not waste more than half; an
    /// arena block grown into the free block after it, or shrunk (its tail freed); a
    /// large block shrunk (its last pages given back) or of the same pages. Otherwise it
    /// moves: a new block, the contents copied, the old block freed.
    ///
    /// # Errors
    /// [`ReallocError::Free`](crate::ReallocError::Free) when `ptr` is not a live, unpinned
    /// block of this heap, [`ReallocError::Allocate`](crate::ReallocError::Allocate) when
    /// no new block can be had (the old block is kept then).
    ///
    /// # Safety
    /// As for [`free`](Heap::free): if `ptr` is a live block, the caller owns it. Nobody
    /// reads or writes the block while it is copied, and nobody uses `ptr` after a
    /// successful call that moved it.
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Result<NonNull<u8>, crate::ReallocError> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.realloc_inner(ptr, new_size, None) }
    }

    /// [`realloc`](Heap::realloc) for a caller that knows the alignment the block needs
    /// (2^`align_log2`, as a `Layout` tells `GlobalAlloc::realloc`): a block that moves is
    /// aligned to that, not to all the block's address happens to have (a block at the
    /// start of a page would otherwise move to a page-aligned one). A block whose address
    /// is not so aligned moves.
    ///
    /// # Errors
    /// As [`realloc`](Heap::realloc); [`XmallocError::BadAlignment`] (in
    /// [`ReallocError::Allocate`](crate::ReallocError::Allocate)) beyond
    /// [`MAX_ALIGN_LOG2`].
    ///
    /// # Safety
    /// As for [`realloc`](Heap::realloc).
    pub unsafe fn realloc_aligned(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
        align_log2: u32,
    ) -> Result<NonNull<u8>, crate::ReallocError> {
        if align_log2 > MAX_ALIGN_LOG2 {
            return Err(crate::ReallocError::Allocate(XmallocError::BadAlignment(align_log2)));
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.realloc_inner(ptr, new_size, Some(align_log2)) }
    }

    /// [`realloc`](Heap::realloc) with the alignment the caller needs, if it knows it.
    ///
    /// # Safety
    /// As for [`realloc`](Heap::realloc).
    unsafe fn realloc_inner(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
        align: Option<u32>,
    ) -> Result<NonNull<u8>, crate::ReallocError> {
        if align.is_some_and(|a| a <= 4)
            // SAFETY: the caller's contract, forwarded.
            && let Some(p) = unsafe { self.realloc_small_fast(ptr, new_size) }
        {
            return Ok(p);
        }
        let aligned = align.is_none_or(|a| (ptr.as_ptr() as usize).trailing_zeros() >= a);
        let (usable, align_log2) =
            match self.resize_in_place(ptr, new_size, aligned).map_err(crate::ReallocError::Free)? {
                Resize::InPlace => return Ok(ptr),
                Resize::Move { usable, align_log2 } => (usable, align.unwrap_or(align_log2)),
            };
        // A block that grows by reallocation is likely to grow again (a string, a vector):
        // a class block moves with room for half as much again, so that the next growths
        // stay in place (`resize_in_place` keeps it while it is at least half used).
        let roomy = new_size.saturating_add(new_size / 2);
        let new = if new_size > usable && usable <= MAX_SMALL && roomy <= MAX_SMALL {
            self.allocate(roomy, align_log2).or_else(|_| self.allocate(new_size, align_log2))
        } else {
            self.allocate(new_size, align_log2)
        }
        .map_err(crate::ReallocError::Allocate)?;
        // SAFETY: both blocks are live and distinct, each at least `min(..)` bytes long;
        // nobody touches the old one meanwhile (caller's contract).
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), new_size.min(usable)) };
        // SAFETY: the caller owns the block and gives it up on success (the contract of
        // `realloc`); its contents are copied.
        unsafe { self.free(ptr) }.map_err(crate::ReallocError::Free)?;
        Ok(new)
    }

    /// The common reallocation to at most 16-byte alignment, under one lock: a class
    /// block that [`free`](Heap::free)'s short path would take stays where it is (as
    /// [`resize_in_place`](Heap::resize_in_place) decides), or moves to a block of its new
    /// class (with room to grow, as [`realloc_inner`](Heap::realloc_inner) chooses) from a
    /// partial span of its own shard, is copied and freed. `None`, nothing changed, for
    /// anything else: the general path, which checks again and names any error.
    ///
    /// # Safety
    /// As for [`realloc`](Heap::realloc).
    #[inline(always)]
    unsafe fn realloc_small_fast(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let roomy = new_size.saturating_add(new_size / 2);
        // A size whose class (with room to grow) is not on the short paths goes to the
        // general path before any lock is taken (a class block growing into an arena).
        if !self.short_path_class(roomy) {
            return None;
        }
        let mut b = self.small_block(ptr.as_ptr() as usize)?;
        // Every class size is a multiple of 16 and spans start on a page: the block and
        // any new one are aligned to 16.
        let usable = CLASSES[b.class].size as usize;
        if new_size <= usable && new_size.max(16) * 2 > usable {
            return Some(ptr);
        }
        let want = if new_size > usable && roomy <= MAX_SMALL { roomy } else { new_size };
        let class = class_for(want, 16)?;
        // (A class of the same size cannot be asked for here; the check keeps the span's
        // count right if it were.)
        if class == b.class || !b.may_free() || !self.short_path_class(CLASSES[class].size as usize) {
            return None;
        }
        let new = self.take_beside(&mut b, class)?;
        // SAFETY: both blocks are live and distinct (of different classes), each at least
        // `min(..)` bytes long; nobody touches the old one meanwhile (caller's contract).
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), new_size.min(usable)) };
        self.release_block(&mut b);
        b.st.realloc_short_moves += 1;
        Some(new)
    }

    /// Resizes the block at `ptr` to `new_size` bytes where it is, if it can (see
    /// [`realloc`](Heap::realloc)); else tells its usable size and alignment, changing
    /// nothing.
    fn resize_in_place(&self, ptr: NonNull<u8>, new_size: usize, aligned: bool) -> Result<Resize, XmfreeError> {
        let addr = ptr.as_ptr() as usize;
        let (map, id, d, shard, mut st) = self.locate(addr)?;
        let (index, k) = self.block_at(d, addr)?;
        let pins = self.pin_count(d, addr);
        if pins > 0 && !self.pinned {
            return Err(XmfreeError::StillPinned(VirtAddr::new(addr), pins));
        }
        if !aligned {
            drop(st);
            let info = self.block(ptr)?;
            return Ok(Resize::Move { usable: info.usable, align_log2: info.align_log2 });
        }
        match d.kind.load(Relaxed) {
            KIND_LARGE => {
                let pages = d.pages.load(Relaxed) as usize;
                let usable = pages * PAGE_SIZE;
                let need = new_size.max(1).div_ceil(PAGE_SIZE);
                // Grown in place when the source has the pages right after it.
                if need > pages
                    && let Some(mem) = NonNull::new(self.ptr(d.start.load(Relaxed)))
                    && self.source.grow_pages(mem, PageCount::new(pages), PageCount::new(need - pages))
                {
                    self.map_pages(map, d.start.load(Relaxed) + usable, need - pages, id);
                    d.pages.store(need as u32, Relaxed);
                    d.size.store(new_size, Relaxed);
                    self.shards[shard].count((need - pages) * PAGE_SIZE, true);
                    PathCounters::bump(&self.counters.large_grown);
                    drop(st);
                    self.adapt();
                    return Ok(Resize::InPlace);
                }
                // Shrunk in place while it stays larger than the largest class (a smaller
                // request moves to a class block, which wastes less than its page).
                if need == pages || (need < pages && new_size > MAX_SMALL) {
                    if need < pages {
                        let tail = d.start.load(Relaxed) + need * PAGE_SIZE;
                        self.map_pages(map, tail, pages - need, NONE);
                        d.pages.store(need as u32, Relaxed);
                        if let Some(mem) = NonNull::new(self.ptr(tail)) {
                            // SAFETY: the tail pages are part of this block's run from the
                            // source; the block no longer covers them and the page map no
                            // longer names them, so nothing reaches them.
                            unsafe { self.source.free_pages(mem, PageCount::new(pages - need)) };
                        }
                        self.shards[shard].count((pages - need) * PAGE_SIZE, false);
                    }
                    d.size.store(new_size, Relaxed);
                    drop(st);
                    if need < pages {
                        self.adapt();
                    }
                    return Ok(Resize::InPlace);
                }
                // The alignment it was asked with (its pages are aligned to more).
                Ok(Resize::Move { usable, align_log2: u32::from(d.align_log2.load(Relaxed)) })
            }
            KIND_ARENA => {
                // SAFETY: `d` is live (`locate` checked it) and its shard's lock is held.
                let arena = unsafe { arena_view(self.source.base_ptr(), d) };
                let granules = new_size.max(1).div_ceil(GRANULE);
                // Within the arena's reach only (an arena block never exceeds its arena).
                if granules < arena.granules() {
                    self.fit_entries(&mut st);
                    if let Some(old) = st.fit.resize(&arena, index, granules) {
                        let shard = &self.shards[shard];
                        if granules >= old {
                            shard.count((granules - old) * GRANULE, true);
                        } else {
                            shard.count((old - granules) * GRANULE, false);
                        }
                        return Ok(Resize::InPlace);
                    }
                }
                let usable = arena.block_granules(index) * GRANULE;
                Ok(Resize::Move { usable, align_log2: addr.trailing_zeros().min(PAGE_SHIFT) })
            }
            _ => {
                let size = d.size.load(Relaxed);
                let usable = size * k;
                if new_size <= usable && new_size.max(16) * 2 > usable {
                    return Ok(Resize::InPlace);
                }
                Ok(Resize::Move {
                    usable,
                    align_log2: size.trailing_zeros().max(addr.trailing_zeros()).min(PAGE_SHIFT),
                })
            }
        }
    }
}

/// What [`Heap::resize_in_place`] did.
enum Resize {
    /// The block was resized where it is.
    InPlace,
    /// It must move: its usable size and alignment (log2).
    Move { usable: usize, align_log2: u32 },
}
