//! The RAM behind the malloc family: a reservation of address space that becomes memory
//! chunk by chunk, managed by memkit's frame allocator and handed to the heap as pages.
//!
//! ```text
//!   reservation (PROT_NONE, RESERVE bytes, aligned to 2^MAX_ALIGN_LOG2)
//!   | chunk 0: header, heap pages | chunk 1 | chunk 2 | ...  not yet committed        |
//!     ▲ read-write, frames joined ──────────────────▶  ▲ committed: grows by CHUNK
//!   physical address p = offset p in the reservation (a direct map at `base`)
//! ```
//!
//! Two frame allocators (`memkit-phys`) share the reservation: the lower one over its first
//! [`LOWER`] bytes, set up at once with everything past the first chunk reserved, and the
//! upper one over the rest, set up when the lower area is full (its header at the start of
//! the upper area). A frame allocator's header grows with its area and is written whole at
//! set-up, so one allocator over the whole reservation cost every process a megabyte of
//! memory; the lower one's is 8 KiB (over 1 GiB it was 64 KiB, sixteen page faults in
//! every process: a git session of some 300 processes took 3 700 fewer with 128 MiB). A
//! process that outgrows the lower area pays the upper header's megabyte once. When an
//! allocation finds no run, the next chunk (or as many as the request needs, up to the end
//! of the lower area first) is made read-write with `mprotect` and joins its allocator with
//! [`LockedAllocator::add_region`]. The heap sees the reservation as its page source's
//! range, so its page map covers every page that may ever join; since fresh pages read as
//! zero ([`PageSource::is_zeroed`]) the map costs memory only where it is used.
//!
//! Runs that the heap gives back at least as large as the return threshold are returned to
//! the OS (`madvise(MADV_DONTNEED)`) before their frames are freed; smaller ones stay
//! resident for reuse. The threshold starts at [`RETURN_MIN`] and, as glibc's trim
//! threshold does, rises to twice each run returned (up to [`RETURN_MAX`]): a program that
//! frees and takes again blocks of one large size keeps their pages, instead of faulting
//! every page of each new one in again (the threaded test program took 25 times glibc's
//! page faults).
//!
//! # Unsafe
//! The reservation is made once and never unmapped; every pointer the source hands out is
//! derived from its base and lies in its committed part; the allocator's header is the only
//! Rust reference into it, in pages the allocator never hands out.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use super::errno;
use memkit_heap::{MAX_ALIGN_LOG2, PageSource};
use memkit_phys::{Allocator, LockedAllocator, MemoryArea, get_header, header_words};
use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SIZE, PageCount, PhysAddr, VirtAddr};

/// Address space reserved for the heap: the most memory the malloc family hands out
/// (1 GiB in the unit tests, whose invariant checks walk the heap's page map).
pub(crate) const RESERVE: usize = if cfg!(test) { 1 << 30 } else { 16 << 30 };
/// The lower area: the part of the reservation the first frame allocator manages (two
/// chunks; a quarter of the reservation in the unit tests, so that they reach the upper
/// one).
pub(crate) const LOWER: usize = if cfg!(test) { 256 << 20 } else { 128 << 20 };
/// Memory joins in chunks of this size (or larger, for a request that needs more).
pub(crate) const CHUNK: usize = 64 << 20;
/// Runs given back of at least this size go back to the OS, at first.
pub(crate) const RETURN_MIN: usize = 256 << 10;
/// The highest the return threshold rises to.
pub(crate) const RETURN_MAX: usize = 32 << 20;

/// Why the RAM could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RamError {
    /// The reservation or the first chunk could not be mapped (the errno).
    Os(i32),
    /// The frame allocator refused the layout (cannot happen with the constants above).
    Layout,
}

/// The reservation, its frame allocator and how far it is committed.
pub(crate) struct Ram {
    /// The reservation's first byte, with its provenance.
    base: *mut u8,
    /// The lower area's frame allocator.
    frames: LockedAllocator<'static>,
    /// The upper area's, once the lower area is full.
    upper: spin::Once<LockedAllocator<'static>>,
    /// Bytes from `base` that are read-write and have joined the frame allocator.
    committed: AtomicUsize,
    /// Taken to commit a chunk (never while the frame allocator's lock is held).
    grow: spin::Mutex<()>,
    /// Whether a run was ever given back: until then every run handed out is fresh.
    freed_any: AtomicBool,
    /// Runs given back of at least this many bytes go back to the OS.
    return_min: AtomicUsize,
}

// SAFETY: `base` is only a base to derive page pointers from; the pages are handed out
// through the frame allocator behind its lock, and the counters are atomics.
unsafe impl Send for Ram {}
// SAFETY: as above: shared use goes through the lock and the atomics.
unsafe impl Sync for Ram {}

impl core::fmt::Debug for Ram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ram")
            .field("base", &self.base)
            .field("committed", &self.committed.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Ram {
    /// Reserves the address space, commits the first chunk and sets the frame allocator up
    /// in it. Uses no allocation: only `mmap`, `munmap` and `mprotect`.
    pub(crate) fn new() -> Result<Ram, RamError> {
        let align = 1usize << MAX_ALIGN_LOG2;
        let len = RESERVE + align;
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks; it
        // touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(RamError::Os(errno()));
        }
        let raw = raw.cast::<u8>();
        // Aligned to the heap's largest alignment, so that physically aligned runs are
        // virtually aligned too.
        let head = raw.addr().next_multiple_of(align) - raw.addr();
        let base = raw.wrapping_add(head);
        if head > 0 {
            // SAFETY: the part of our own fresh reservation before the aligned base.
            unsafe { libc::munmap(raw.cast(), head) };
        }
        let tail = len - head - RESERVE;
        if tail > 0 {
            // SAFETY: the part of our own fresh reservation after the aligned range.
            unsafe { libc::munmap(base.wrapping_add(RESERVE).cast(), tail) };
        }
        commit(base, 0, CHUNK)?;
        let allocator = frame_allocator(base, 0, LOWER, CHUNK)?;
        Ok(Ram {
            base,
            frames: LockedAllocator::new(allocator),
            upper: spin::Once::new(),
            committed: AtomicUsize::new(CHUNK),
            grow: spin::Mutex::new(()),
            freed_any: AtomicBool::new(false),
            return_min: AtomicUsize::new(RETURN_MIN),
        })
    }

    /// Whether `addr` lies in the reservation.
    #[inline]
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base.addr()) < RESERVE
    }

    /// Bytes committed so far.
    pub(crate) fn committed(&self) -> usize {
        self.committed.load(Relaxed)
    }

    /// The frame allocators set up so far, the lower one first.
    fn allocators(&self) -> impl Iterator<Item = &LockedAllocator<'static>> {
        core::iter::once(&self.frames).chain(self.upper.get())
    }

    /// Takes the RAM's locks (the growth lock, then each frame allocator's, the order its
    /// growth nests them) and keeps them until [`unlock_all`](Ram::unlock_all): for `fork`.
    pub(crate) fn lock_all(&self) {
        core::mem::forget(self.grow.lock());
        // No upper allocator can be set up now: that takes the growth lock.
        for frames in self.allocators() {
            core::mem::forget(frames.lock());
        }
    }

    /// Lets go of the locks [`lock_all`](Ram::lock_all) took.
    ///
    /// # Safety
    /// They are held by a call of `lock_all` (by this thread, or, in a child process, by the
    /// thread that forked it) that no other `unlock_all` undid.
    pub(crate) unsafe fn unlock_all(&self) {
        for frames in self.allocators() {
            // SAFETY: the caller's contract; the allocators are the ones `lock_all` locked
            // (none could be set up since: that needs the growth lock it holds).
            unsafe { frames.mutex().force_unlock() };
        }
        // SAFETY: the caller's contract.
        unsafe { self.grow.force_unlock() };
    }

    /// Commits enough chunks for a run of `count` pages aligned to 2^`align` pages (in the
    /// lower area up to its end, then in the upper one), unless another thread committed
    /// some since `seen` (then the caller just tries again). `false` when the reservation is
    /// full or the OS refuses.
    #[cold]
    fn grow(&self, count: usize, align: u8, seen: usize) -> bool {
        let _g = self.grow.lock();
        let top = self.committed.load(Acquire);
        if top != seen {
            return true;
        }
        let need = count
            .checked_add(1usize << align)
            .and_then(|p| p.checked_mul(PAGE_SIZE))
            .and_then(|b| b.checked_next_multiple_of(CHUNK))
            .unwrap_or(usize::MAX)
            .max(CHUNK);
        // The lower area first, as far as it goes; a run larger than what is left of it
        // comes from the upper area on the next try.
        let (frames, end) = match self.upper.get() {
            _ if top < LOWER => (&self.frames, LOWER),
            Some(upper) => (upper, RESERVE),
            None => return self.start_upper(need),
        };
        let len = need.min(end - top);
        let region = MemoryArea::new(PhysAddr::new(top as u64), len as u64);
        if len == 0 || commit(self.base, top, len).is_err() || frames.add_region(region).is_err() {
            return false;
        }
        self.committed.store(top + len, Release);
        true
    }

    /// Sets the upper area's frame allocator up (the lower area is full and committed;
    /// the caller holds the `grow` lock), its header and `need` bytes more committed.
    #[cold]
    fn start_upper(&self, need: usize) -> bool {
        let Ok(words) = header_words(MemoryArea::new(PhysAddr::new(LOWER as u64), (RESERVE - LOWER) as u64)) else {
            return false;
        };
        let len = need
            .checked_add(words * 8)
            .and_then(|b| b.checked_next_multiple_of(CHUNK))
            .unwrap_or(usize::MAX)
            .min(RESERVE - LOWER);
        if commit(self.base, LOWER, len).is_err() {
            return false;
        }
        let Ok(allocator) = frame_allocator(self.base, LOWER, RESERVE - LOWER, len) else { return false };
        self.upper.call_once(|| LockedAllocator::new(allocator));
        self.committed.store(LOWER + len, Release);
        true
    }
}

/// A frame allocator over `len` bytes at offset `at` of the reservation (at `base`), of
/// which the first `committed` are read-write: its header goes there, and the rest of the
/// area stays reserved until it joins ([`LockedAllocator::add_region`]).
fn frame_allocator(base: *mut u8, at: usize, len: usize, committed: usize) -> Result<Allocator<'static>, RamError> {
    let area = MemoryArea::new(PhysAddr::new(at as u64), len as u64);
    let absent =
        (committed < len).then(|| MemoryArea::new(PhysAddr::new((at + committed) as u64), (len - committed) as u64));
    let header_region = get_header(area, absent).map_err(|_| RamError::Layout)?;
    let words = header_words(area).map_err(|_| RamError::Layout)?;
    let header_start = header_region.start.as_u64() as usize;
    if header_start < at || header_start + words * 8 > at + committed {
        return Err(RamError::Layout);
    }
    let header_ptr = base.wrapping_add(header_start).cast::<u64>();
    // SAFETY: the header lies in the committed part of the area (checked just above),
    // read-write and page-aligned; the frame allocator reserves its frames, so nothing else
    // ever reaches these words; the reservation is never unmapped.
    let header: &'static mut [u64] = unsafe { core::slice::from_raw_parts_mut(header_ptr, words) };
    Allocator::init(area, header_region, header, absent).map_err(|_| RamError::Layout)
}

/// Makes `len` bytes at offset `at` of the reservation read-write.
fn commit(base: *mut u8, at: usize, len: usize) -> Result<(), RamError> {
    // SAFETY: the range lies in our own reservation (callers keep `at + len` within it);
    // making it read-write changes no memory anyone uses.
    let r = unsafe { libc::mprotect(base.wrapping_add(at).cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
    if r != 0 {
        return Err(RamError::Os(errno()));
    }
    Ok(())
}

// SAFETY: every run comes from the frame allocator, which hands each frame out once until
// it is freed, and lies in the committed part of the reservation (frames join only once
// committed); pointers are derived from `base`. A run is reported zeroed only while no run
// was ever given back: its frames were then never handed out before, and fresh anonymous
// memory reads as zero.
unsafe impl PageSource for Ram {
    fn range(&self) -> (VirtAddr, PageCount) {
        (VirtAddr::new(self.base.addr()), PageCount::new(RESERVE / PAGE_SIZE))
    }

    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.base
    }

    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        if u32::from(align.get()) > MAX_ALIGN_LOG2 {
            return None;
        }
        loop {
            let seen = self.committed.load(Acquire);
            for frames in self.allocators() {
                match FrameSource::allocate(frames, FrameCount::new(count.get() as u64), align, None) {
                    Ok(f) => {
                        let off = f.start_address().as_u64() as usize;
                        return NonNull::new(self.base.wrapping_add(off));
                    }
                    Err(FrameSourceError::Exhausted(_)) => {}
                    Err(_) => return None,
                }
            }
            if !self.grow(count.get(), align.get(), seen) {
                return None;
            }
        }
    }

    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        let off = start.as_ptr().addr().wrapping_sub(self.base.addr());
        let Some(len) = count.get().checked_mul(PAGE_SIZE) else { return };
        if off >= RESERVE || len > RESERVE - off {
            return;
        }
        self.freed_any.store(true, Relaxed);
        if len >= self.return_min.load(Relaxed) {
            // SAFETY: the run is ours and nobody uses it any more (the caller's contract);
            // dropping its pages leaves them reading as zero.
            unsafe { libc::madvise(start.as_ptr().cast(), len, libc::MADV_DONTNEED) };
            self.return_min.fetch_max(len.saturating_mul(2).min(RETURN_MAX), Relaxed);
        }
        let frame = Frame::containing_address(PhysAddr::new(off as u64));
        // A refusal means the run was not allocated: nothing to give back.
        let owner = if off < LOWER { Some(&self.frames) } else { self.upper.get() };
        if let Some(frames) = owner {
            let _ = FrameSource::free(frames, frame, FrameCount::new(count.get() as u64));
        }
    }

    fn free_page_count(&self) -> PageCount {
        // What can still join counts as free: the heap places by size class while it has
        // headroom, and the reservation is its headroom.
        let uncommitted = (RESERVE - self.committed.load(Relaxed)) / PAGE_SIZE;
        let free: u64 = self.allocators().map(|f| FrameSource::free_frames(f).get()).sum();
        PageCount::new(free as usize + uncommitted)
    }

    fn is_zeroed(&self, _start: NonNull<u8>, _count: PageCount) -> bool {
        !self.freed_any.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_threshold_rises_to_twice_each_run_returned() {
        let ram = Ram::new().unwrap();
        let pages = 2 * RETURN_MIN / PAGE_SIZE;
        let runs = [0; 2].map(|_| ram.allocate_pages(PageCount::new(pages), Order::new(0)).unwrap());
        for run in runs {
            // SAFETY: a committed run of ours.
            unsafe { run.as_ptr().write_bytes(0xab, pages * PAGE_SIZE) };
        }
        // (The freed runs are read below: the RAM is this test's, and nothing allocates
        // from it meanwhile.)
        // SAFETY: the run came from `ram` and is unused.
        unsafe { ram.free_pages(runs[0], PageCount::new(pages)) };
        // SAFETY: committed memory of the reservation.
        assert_eq!(unsafe { runs[0].as_ptr().read() }, 0, "returned to the OS");
        assert_eq!(ram.return_min.load(Relaxed), 2 * pages * PAGE_SIZE);
        // SAFETY: as above.
        unsafe { ram.free_pages(runs[1], PageCount::new(pages)) };
        // SAFETY: as above.
        assert_eq!(unsafe { runs[1].as_ptr().read() }, 0xab, "below the threshold now: kept");
        // A run above the threshold goes back; the threshold stops at its ceiling.
        let big = ram.allocate_pages(PageCount::new(RETURN_MAX / PAGE_SIZE), Order::new(0)).unwrap();
        // SAFETY: a committed run of ours.
        unsafe { big.as_ptr().write(0xcd) };
        // SAFETY: the run came from `ram` and is unused.
        unsafe { ram.free_pages(big, PageCount::new(RETURN_MAX / PAGE_SIZE)) };
        // SAFETY: as above.
        assert_eq!(unsafe { big.as_ptr().read() }, 0);
        assert_eq!(ram.return_min.load(Relaxed), RETURN_MAX);
    }

    #[test]
    fn ram_grows_by_chunks_and_serves_runs_larger_than_a_chunk() {
        let ram = Ram::new().unwrap();
        assert_eq!(ram.committed(), CHUNK);
        ram.frames.lock().check_invariants();
        // A run of three chunks: the RAM commits what it needs at once.
        let pages = 3 * CHUNK / PAGE_SIZE;
        let big = ram.allocate_pages(PageCount::new(pages), Order::new(0)).unwrap();
        assert!(ram.committed() >= 4 * CHUNK);
        assert!(ram.contains(big.as_ptr().addr()));
        // SAFETY: the run is ours, committed read-write.
        unsafe { big.as_ptr().write_bytes(0xab, pages * PAGE_SIZE) };
        // An aligned run.
        let aligned = ram.allocate_pages(PageCount::new(1), Order::new(16)).unwrap();
        assert!(aligned.as_ptr().addr().is_multiple_of(PAGE_SIZE << 16));
        assert!(ram.is_zeroed(aligned, PageCount::new(1)));
        // SAFETY: both runs came from `ram` and are unused.
        unsafe { ram.free_pages(big, PageCount::new(pages)) };
        assert!(!ram.is_zeroed(aligned, PageCount::new(1)));
        // SAFETY: as above.
        unsafe { ram.free_pages(aligned, PageCount::new(1)) };
        // Given back to the OS: the pages read as zero again.
        let again = ram.allocate_pages(PageCount::new(pages), Order::new(0)).unwrap();
        // SAFETY: a committed run of ours.
        assert_eq!(unsafe { again.as_ptr().wrapping_add(pages * PAGE_SIZE / 2).read() }, 0);
        ram.frames.lock().check_invariants();
        // The lower area is committed to its end now: a run it has no room for comes from
        // the upper area, set up for it.
        assert!(ram.upper.get().is_none());
        let upper_pages = 2 * CHUNK / PAGE_SIZE;
        let up = ram.allocate_pages(PageCount::new(upper_pages), Order::new(0)).unwrap();
        assert!(up.as_ptr().addr() - ram.base.addr() >= LOWER);
        ram.upper.get().unwrap().lock().check_invariants();
        // SAFETY: the run came from `ram` and is unused.
        unsafe { ram.free_pages(up, PageCount::new(upper_pages)) };
        // Freed to the upper area's allocator: it serves the same run again.
        assert_eq!(ram.allocate_pages(PageCount::new(upper_pages), Order::new(0)), Some(up));
        ram.upper.get().unwrap().lock().check_invariants();
        // More than the reservation: refused, nothing committed past it.
        assert!(ram.allocate_pages(PageCount::new(RESERVE / PAGE_SIZE + 1), Order::new(0)).is_none());
        assert!(ram.committed() <= RESERVE);
        // Frees outside the reservation or past it are ignored.
        // SAFETY: not a run of ours: refused without touching memory.
        unsafe { ram.free_pages(NonNull::dangling(), PageCount::new(1)) };
        ram.frames.lock().check_invariants();
    }
}
