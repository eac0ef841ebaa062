//! Page sources: where heaps take their 4 KiB pages from and give whole empty pages back.
//!
//! A heap never owns memory of its own; it asks a [`PageSource`] for runs of pages and
//! returns them when they become empty. Three sources are provided:
//!
//! ```text
//!   FrameSource (frame allocator) ──DirectMapPageSource──▶ pages at direct-map base + phys
//!   one big region (static, mmap) ──RegionPageSource────▶ pages carved by a page bitmap
//!   any PageSource ─────────────────LargePages──────────▶ pages inside 16 MiB large pages
//! ```
//!
//! # Unsafe
//!
//! [`PageSource`] is an `unsafe trait`: a source hands out each page once until it is given
//! back, and its pages are valid for reads and writes while handed out. The sources here
//! derive every page pointer from one base pointer (a region, a direct map) with `with_addr`,
//! and keep their own metadata in pages they never hand out.

use core::fmt;
use core::ptr::NonNull;

use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SHIFT, PAGE_SIZE, PageCount, PhysAddr, VirtAddr};
use spin::Mutex;

/// The order of a large page: 2^12 frames of 4 KiB = 16 MiB.
pub const LARGE_PAGE_ORDER: Order = Order::new(12);
/// Pages in one large page.
pub const LARGE_PAGE_PAGES: usize = 1 << 12;

/// A supplier of runs of 4 KiB pages, as pointers.
///
/// # Safety
/// Implementors guarantee that every run returned by
/// [`allocate_pages`](PageSource::allocate_pages) is page-aligned, aligned to the requested
/// order (in pages), lies inside [`range`](PageSource::range), is valid for reads and writes
/// of `count * PAGE_SIZE` bytes, and is used by nobody else until it is given back with
/// [`free_pages`](PageSource::free_pages), and that a run for which
/// [`is_zeroed`](PageSource::is_zeroed) says so reads as zero. Heaps rely on this for
/// soundness.
pub unsafe trait PageSource {
    /// The virtual range every run lies in: its first page's address and its length in pages.
    fn range(&self) -> (VirtAddr, PageCount);

    /// A pointer to the first byte of [`range`](PageSource::range) that carries the
    /// provenance of every run the source hands out: heaps keep addresses as integers and
    /// turn them back into pointers with `with_addr` on it, so that they never cast an
    /// integer to a pointer. It is the same pointer every time, its address the range's
    /// start.
    ///
    /// The default takes the provenance exposed for the range (right for memory no Rust
    /// allocation owns, such as a kernel's direct map); a source over memory it holds a
    /// pointer to returns that pointer.
    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(self.range().0.as_usize())
    }

    /// Allocates `count` contiguous pages whose first page is aligned to 2^`align` pages.
    /// `None` when no such run is free.
    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>>;

    /// Gives back a run.
    ///
    /// # Safety
    /// `start` and `count` describe a run this source returned (or a part of one, split at
    /// page boundaries) that has not been given back yet, and nobody uses it any more.
    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount);

    /// Pages currently free in the source (an estimate for statistics).
    fn free_page_count(&self) -> PageCount;

    /// Extends the run of `count` pages at `start` by the `extra` pages right after it, if
    /// they are free: they are handed out as part of the run (given back with it, or
    /// alone). `false`, changing nothing, when they are not free or the source cannot
    /// tell (the default). Heaps grow large blocks in place with it.
    fn grow_pages(&self, start: NonNull<u8>, count: PageCount, extra: PageCount) -> bool {
        let _ = (start, count, extra);
        false
    }

    /// Whether the run `start .. start + count` pages, just returned by
    /// [`allocate_pages`](PageSource::allocate_pages), is known to read as zero: memory
    /// nobody has written since the source got it, such as pages fresh from the OS. A heap
    /// need not clear such a run; leaving it untouched keeps a large page map from costing
    /// memory before it is used. The default: not known.
    #[inline]
    fn is_zeroed(&self, start: NonNull<u8>, count: PageCount) -> bool {
        let _ = (start, count);
        false
    }
}

// SAFETY: forwards every call to a source that upholds the contract.
unsafe impl<S: PageSource + ?Sized> PageSource for &S {
    fn range(&self) -> (VirtAddr, PageCount) {
        (**self).range()
    }
    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        (**self).base_ptr()
    }
    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        (**self).allocate_pages(count, align)
    }
    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { (**self).free_pages(start, count) }
    }
    fn free_page_count(&self) -> PageCount {
        (**self).free_page_count()
    }
    fn grow_pages(&self, start: NonNull<u8>, count: PageCount, extra: PageCount) -> bool {
        (**self).grow_pages(start, count, extra)
    }

    #[inline]
    fn is_zeroed(&self, start: NonNull<u8>, count: PageCount) -> bool {
        (**self).is_zeroed(start, count)
    }
}

/// A page source set once at run time: empty until [`spin::Once::call_once`] gives it its source,
/// then that source. The heaps take their source by value or by reference, and
/// [`Heap::new`](crate::Heap::new) and [`KernelHeaps::new`](crate::KernelHeaps::new) are
/// `const fn`s, so heaps over a `static Once` are `static`s themselves, laid out at compile
/// time and never built on the stack: a kernel sets the source once its frames and direct map
/// exist, then calls `init`.
///
/// ```
/// use memkit_heap::{KernelHeaps, RegionPageSource, SingleCpu};
/// use spin::Once;
///
/// static PAGES: Once<RegionPageSource> = Once::new();
/// static HEAPS: KernelHeaps<'static, Once<RegionPageSource>, SingleCpu> =
///     KernelHeaps::new(&PAGES, &PAGES, SingleCpu);
/// ```
///
/// Until it is set the source has no pages: a heap initialised before then fails with
/// `NoMemory` and stays unusable, soundly.
// SAFETY: every run comes from the source set in the `Once`, which upholds the contract;
// before it is set there is no run. The range and base pointer a heap reads at `init` (which
// succeeds only once the source is set) are the set source's, fixed from then on.
unsafe impl<S: PageSource> PageSource for spin::Once<S> {
    fn range(&self) -> (VirtAddr, PageCount) {
        self.get().map_or((VirtAddr::new(0), PageCount::new(0)), PageSource::range)
    }
    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.get().map_or(core::ptr::null_mut(), PageSource::base_ptr)
    }
    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        self.get()?.allocate_pages(count, align)
    }
    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        if let Some(source) = self.get() {
            // SAFETY: the run came from this source (caller's contract), hence from `source`.
            unsafe { source.free_pages(start, count) }
        }
    }
    fn free_page_count(&self) -> PageCount {
        self.get().map_or(PageCount::new(0), PageSource::free_page_count)
    }
    fn grow_pages(&self, start: NonNull<u8>, count: PageCount, extra: PageCount) -> bool {
        self.get().is_some_and(|source| source.grow_pages(start, count, extra))
    }

    #[inline]
    fn is_zeroed(&self, start: NonNull<u8>, count: PageCount) -> bool {
        self.get().is_some_and(|s| s.is_zeroed(start, count))
    }
}

/// First-fit search for `count` clear bits whose absolute index (`first + i`) is a multiple
/// of `align`, in a bitmap where a set bit is a page in use. Returns the relative index.
/// Works a word at a time: skips full words, jumps to the bit after an obstacle.
fn find_clear_run(bits: &[u64], len: usize, first: usize, count: usize, align: usize, hint: usize) -> Option<usize> {
    let align_up = |i: usize| (first + i).next_multiple_of(align) - first;
    let mut i = align_up(hint.min(len));
    loop {
        // The first clear bit at or after `i`.
        let mut w = i / 64;
        let mut v = *bits.get(w)? | ((1u64 << (i % 64)) - 1);
        while v == u64::MAX {
            w += 1;
            v = *bits.get(w)?;
        }
        i = align_up(w * 64 + (!v).trailing_zeros() as usize);
        if i + count > len {
            return None;
        }
        match first_set(bits, i, i + count) {
            None => return Some(i),
            Some(j) => i = align_up(j + 1),
        }
    }
}

/// The first set bit in `start .. end`.
fn first_set(bits: &[u64], start: usize, end: usize) -> Option<usize> {
    let mut i = start;
    while i < end {
        let w = i / 64;
        let v = bits[w] >> (i % 64);
        if v != 0 {
            let j = i + v.trailing_zeros() as usize;
            return (j < end).then_some(j);
        }
        i = (w + 1) * 64;
    }
    None
}

fn set_bits(bits: &mut [u64], start: usize, count: usize, value: bool) {
    for i in start..start + count {
        if value {
            bits[i / 64] |= 1 << (i % 64);
        } else {
            bits[i / 64] &= !(1 << (i % 64));
        }
    }
}

fn all_bits(bits: &[u64], start: usize, count: usize, value: bool) -> bool {
    (start..start + count).all(|i| (bits[i / 64] >> (i % 64) & 1 == 1) == value)
}

struct RegionState {
    /// One bit per page, set when the page is in use (the bitmap's own pages included).
    bits: &'static mut [u64],
    /// No free page below this index.
    lowest_free: usize,
    free: usize,
}

/// A page source over one contiguous region of memory, with a page bitmap kept in the
/// region's first pages. For hosted tests and benchmarks (a region from `mmap` or a `Vec`)
/// and for early boot (a static array).
///
/// A free of a run that is not in use is ignored (the bitmap says so); the heaps above
/// never do it.
pub struct RegionPageSource {
    /// The first whole page, with the region's provenance.
    region: *mut u8,
    base: usize,
    pages: usize,
    state: Mutex<RegionState>,
}

impl fmt::Debug for RegionPageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionPageSource")
            .field("base", &VirtAddr::new(self.base))
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl RegionPageSource {
    /// A source over the whole pages inside `start .. start + len`; its bitmap takes the
    /// first `ceil(pages / 32768)` of them. `None` when the region holds fewer than two
    /// whole pages.
    ///
    /// # Safety
    /// The region is valid for reads and writes, is used by nobody else, and stays valid
    /// while the source and the runs it hands out are used.
    #[must_use]
    pub unsafe fn new(start: NonNull<u8>, len: usize) -> Option<Self> {
        let addr = start.as_ptr() as usize;
        let base = addr.next_multiple_of(PAGE_SIZE);
        let end = addr.checked_add(len)? & !(PAGE_SIZE - 1);
        let pages = end.checked_sub(base)? / PAGE_SIZE;
        let words = pages.div_ceil(64);
        let meta_pages = (words * 8).div_ceil(PAGE_SIZE);
        if pages <= meta_pages {
            return None;
        }
        let bits_ptr = start.as_ptr().wrapping_add(base - addr).cast::<u64>();
        // SAFETY: the first `meta_pages` whole pages of the region are ours (caller's
        // contract), page-aligned (so aligned for u64), and hold `words` u64s.
        unsafe { core::ptr::write_bytes(bits_ptr, 0, words) };
        // SAFETY: just initialised; the source keeps these pages in use forever, so the
        // slice aliases no run it hands out; the region outlives every use of the source
        // (caller's contract) and the slice never leaves it.
        let bits: &'static mut [u64] = unsafe { core::slice::from_raw_parts_mut(bits_ptr, words) };
        set_bits(bits, 0, meta_pages, true);
        set_bits(bits, pages, words * 64 - pages, true);
        Some(RegionPageSource {
            region: start.as_ptr().wrapping_add(base - addr),
            base,
            pages,
            state: Mutex::new(RegionState { bits, lowest_free: meta_pages, free: pages - meta_pages }),
        })
    }

    /// Pages the source manages, its bitmap included.
    #[must_use]
    pub fn total_pages(&self) -> PageCount {
        PageCount::new(self.pages)
    }
}

// SAFETY: the region pointer is only a base to derive run pointers from; the source's state
// is behind its lock, and the region is the source's alone (constructor's contract).
unsafe impl Send for RegionPageSource {}
// SAFETY: as above; shared use goes through the lock.
unsafe impl Sync for RegionPageSource {}

// SAFETY: runs come from the bitmap, which hands each page out once until it is freed; all
// pages lie inside the caller-provided region, which is valid for reads and writes.
unsafe impl PageSource for RegionPageSource {
    fn range(&self) -> (VirtAddr, PageCount) {
        (VirtAddr::new(self.base), PageCount::new(self.pages))
    }

    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.region
    }

    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        let count = count.get();
        if count == 0 || align.get() >= 40 {
            return None;
        }
        let mut st = self.state.lock();
        if count > st.free {
            return None;
        }
        let first = self.base >> PAGE_SHIFT;
        let i = find_clear_run(st.bits, self.pages, first, count, 1 << align.get(), st.lowest_free)?;
        set_bits(st.bits, i, count, true);
        st.free -= count;
        if i == st.lowest_free {
            st.lowest_free = i + count;
        }
        NonNull::new(self.region.wrapping_add(i * PAGE_SIZE))
    }

    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        let addr = start.as_ptr().addr();
        if addr < self.base || !addr.is_multiple_of(PAGE_SIZE) {
            return;
        }
        let i = (addr - self.base) / PAGE_SIZE;
        let count = count.get();
        if i + count > self.pages {
            return;
        }
        let mut st = self.state.lock();
        if all_bits(st.bits, i, count, true) {
            set_bits(st.bits, i, count, false);
            st.free += count;
            st.lowest_free = st.lowest_free.min(i);
        }
    }

    fn free_page_count(&self) -> PageCount {
        PageCount::new(self.state.lock().free)
    }

    fn grow_pages(&self, start: NonNull<u8>, count: PageCount, extra: PageCount) -> bool {
        let addr = start.as_ptr().addr();
        let (count, extra) = (count.get(), extra.get());
        if addr < self.base || !addr.is_multiple_of(PAGE_SIZE) || extra == 0 {
            return false;
        }
        let Some(end) = ((addr - self.base) / PAGE_SIZE).checked_add(count) else { return false };
        if end.checked_add(extra).is_none_or(|e| e > self.pages) {
            return false;
        }
        let mut st = self.state.lock();
        if !all_bits(st.bits, end, extra, false) {
            return false;
        }
        set_bits(st.bits, end, extra, true);
        st.free -= extra;
        if st.lowest_free >= end && st.lowest_free < end + extra {
            st.lowest_free = end + extra;
        }
        true
    }
}

/// Pages from a frame allocator, reached through a direct map: physical address `p` is
/// mapped at virtual address `direct_map + p`. A run aligned to more than the direct map's
/// own alignment is refused.
pub struct DirectMapPageSource<F> {
    frames: F,
    /// The direct map's base, with the provenance of the memory behind it.
    base: *mut u8,
    direct_map: VirtAddr,
    phys_end: PhysAddr,
}

impl<F> fmt::Debug for DirectMapPageSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectMapPageSource")
            .field("direct_map", &self.direct_map)
            .field("phys_end", &self.phys_end)
            .finish_non_exhaustive()
    }
}

impl<F: FrameSource> DirectMapPageSource<F> {
    /// A page source handing out `frames`' frames through the direct map at `direct_map`;
    /// every frame lies below `phys_end`.
    ///
    /// # Safety
    /// 1. `direct_map + p` is mapped, readable and writable for every physical address
    ///    `p < phys_end`, and the frames `frames` hands out lie below `phys_end`.
    /// 2. Nobody else touches a frame while it is allocated to this source: no other
    ///    mapping, no physical-memory access to it.
    /// 3. Nobody else frees a frame this source holds. [`FrameSource::free`] is a safe
    ///    function (frames are numbers to the frame layer, and a free of a free frame is
    ///    refused), so this is the caller's promise for every user of the frame source
    ///    `frames` shares its frames with: each frees only runs it allocated itself, once.
    ///    The source gives no access to `frames` for this reason.
    #[must_use]
    pub unsafe fn new(frames: F, direct_map: VirtAddr, phys_end: PhysAddr) -> Self {
        let base = core::ptr::with_exposed_provenance_mut(direct_map.as_usize());
        DirectMapPageSource { frames, base, direct_map, phys_end }
    }

    /// As [`new`](DirectMapPageSource::new), with the direct map given as a pointer whose
    /// provenance covers its first `phys_end` bytes (memory a Rust allocation owns, as in
    /// tests that model the direct map with a buffer): every page pointer is derived from it.
    ///
    /// # Safety
    /// As for [`new`](DirectMapPageSource::new), with `direct_map`'s address as the base.
    #[must_use]
    pub unsafe fn from_ptr(frames: F, direct_map: *mut u8, phys_end: PhysAddr) -> Self {
        DirectMapPageSource { frames, base: direct_map, direct_map: VirtAddr::new(direct_map.addr()), phys_end }
    }
}

// SAFETY: the base pointer is only a base to derive page pointers from; the pages behind it
// are handed out through `frames`, which must be `Send` itself.
unsafe impl<F: Send> Send for DirectMapPageSource<F> {}
// SAFETY: as above; shared use goes through `frames`, which must be `Sync` itself.
unsafe impl<F: Sync> Sync for DirectMapPageSource<F> {}

// SAFETY: frames are owned exclusively once allocated and mapped at the direct map
// (constructor's contract); the range covers every physical address below `phys_end`.
unsafe impl<F: FrameSource> PageSource for DirectMapPageSource<F> {
    fn range(&self) -> (VirtAddr, PageCount) {
        (self.direct_map, PageCount::new((self.phys_end.as_u64() >> PAGE_SHIFT) as usize))
    }

    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.base
    }

    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        // A physically aligned run is virtually aligned only if the direct map is.
        if align.get() >= 40 || !self.direct_map.is_aligned(PAGE_SIZE << align.get()) {
            return None;
        }
        let frame = self.frames.allocate(FrameCount::new(count.get() as u64), align, Some(self.phys_end)).ok()?;
        let addr = self.direct_map.as_usize().checked_add(frame.start_address().as_u64() as usize)?;
        NonNull::new(self.base.with_addr(addr))
    }

    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        let phys = start.as_ptr().addr().wrapping_sub(self.direct_map.as_usize());
        let frame = Frame::containing_address(PhysAddr::new(phys as u64));
        // A refusal means the run was not allocated: nothing to give back.
        let _ = self.frames.free(frame, FrameCount::new(count.get() as u64));
    }

    fn free_page_count(&self) -> PageCount {
        PageCount::new(self.frames.free_frames().get() as usize)
    }
}

/// The most large pages one [`LargePages`] holds at once.
pub const MAX_LARGE_PAGES: usize = 64;

struct LargeSlot {
    start: usize,
    used: usize,
    bits: [u64; LARGE_PAGE_PAGES / 64],
}

/// Pages carved out of 16 MiB large pages (order-12 runs) of an inner source: the backing
/// of the `*_16M` heaps. A large page goes back to the inner source when its last page is
/// freed. `allocate_pages` fails when the inner source has no order-12 run left.
pub struct LargePages<S> {
    inner: S,
    slots: Mutex<[Option<LargeSlot>; MAX_LARGE_PAGES]>,
}

impl<S> fmt::Debug for LargePages<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.slots.lock().iter().filter(|s| s.is_some()).count();
        f.debug_struct("LargePages").field("large_pages_held", &held).finish_non_exhaustive()
    }
}

impl<S: PageSource> LargePages<S> {
    /// Large pages taken from `inner` on demand.
    pub const fn new(inner: S) -> Self {
        LargePages { inner, slots: Mutex::new([const { None }; MAX_LARGE_PAGES]) }
    }

    /// Large pages currently held.
    pub fn large_pages_held(&self) -> usize {
        self.slots.lock().iter().filter(|s| s.is_some()).count()
    }
}

// SAFETY: pages come from large pages owned exclusively (inner's contract) and are handed
// out once each, tracked by the slot bitmaps.
unsafe impl<S: PageSource> PageSource for LargePages<S> {
    fn range(&self) -> (VirtAddr, PageCount) {
        self.inner.range()
    }

    #[inline]
    fn base_ptr(&self) -> *mut u8 {
        self.inner.base_ptr()
    }

    fn allocate_pages(&self, count: PageCount, align: Order) -> Option<NonNull<u8>> {
        let count = count.get();
        if count == 0 || count > LARGE_PAGE_PAGES || align.get() > LARGE_PAGE_ORDER.get() {
            return None;
        }
        let align_pages = 1usize << align.get();
        let mut slots = self.slots.lock();
        for slot in slots.iter_mut().flatten() {
            if let Some(i) = find_clear_run(&slot.bits, LARGE_PAGE_PAGES, 0, count, align_pages, 0) {
                set_bits(&mut slot.bits, i, count, true);
                slot.used += count;
                return NonNull::new(self.inner.base_ptr().with_addr(slot.start + i * PAGE_SIZE));
            }
        }
        let empty = slots.iter_mut().find(|s| s.is_none())?;
        let start = self.inner.allocate_pages(PageCount::new(LARGE_PAGE_PAGES), LARGE_PAGE_ORDER)?;
        let mut slot = LargeSlot { start: start.as_ptr().addr(), used: count, bits: [0; LARGE_PAGE_PAGES / 64] };
        set_bits(&mut slot.bits, 0, count, true);
        *empty = Some(slot);
        Some(start)
    }

    unsafe fn free_pages(&self, start: NonNull<u8>, count: PageCount) {
        let addr = start.as_ptr().addr();
        let count = count.get();
        let mut slots = self.slots.lock();
        for entry in slots.iter_mut() {
            let Some(slot) = entry else { continue };
            if addr < slot.start || addr >= slot.start + LARGE_PAGE_PAGES * PAGE_SIZE {
                continue;
            }
            let i = (addr - slot.start) / PAGE_SIZE;
            if i + count > LARGE_PAGE_PAGES || !all_bits(&slot.bits, i, count, true) {
                return;
            }
            set_bits(&mut slot.bits, i, count, false);
            slot.used -= count;
            if slot.used == 0 {
                let whole = NonNull::new(self.inner.base_ptr().with_addr(slot.start));
                *entry = None;
                if let Some(whole) = whole {
                    // SAFETY: the large page came from `inner` as one run and no page of it
                    // is in use any more.
                    unsafe { self.inner.free_pages(whole, PageCount::new(LARGE_PAGE_PAGES)) };
                }
            }
            return;
        }
    }

    fn free_page_count(&self) -> PageCount {
        let slots = self.slots.lock();
        let inside: usize = slots.iter().flatten().map(|s| LARGE_PAGE_PAGES - s.used).sum();
        PageCount::new(inside + self.inner.free_page_count().get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;

    fn region(pages: usize) -> RegionPageSource {
        let mem = vec![0u8; (pages + 1) * PAGE_SIZE].leak();
        // SAFETY: leaked, so valid and unused by anyone else for 'static.
        unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap()
    }

    #[test]
    fn region_hands_out_aligned_disjoint_runs_and_takes_them_back() {
        let src = region(256);
        let free0 = src.free_page_count().get();
        let a = src.allocate_pages(PageCount::new(3), Order::new(0)).unwrap();
        let b = src.allocate_pages(PageCount::new(4), Order::new(2)).unwrap();
        assert_eq!((b.as_ptr() as usize >> PAGE_SHIFT) % 4, 0);
        let (a, b) = (a.as_ptr() as usize, b.as_ptr() as usize);
        assert!(a + 3 * PAGE_SIZE <= b || b + 4 * PAGE_SIZE <= a);
        assert_eq!(src.free_page_count().get(), free0 - 7);
        // SAFETY: both runs came from `src` and are unused.
        unsafe { src.free_pages(NonNull::new(src.base_ptr().with_addr(a)).unwrap(), PageCount::new(3)) };
        // SAFETY: as above.
        unsafe { src.free_pages(NonNull::new(src.base_ptr().with_addr(b)).unwrap(), PageCount::new(4)) };
        assert_eq!(src.free_page_count().get(), free0);
        assert!(src.allocate_pages(PageCount::new(free0 + 1), Order::new(0)).is_none());
        assert!(src.allocate_pages(PageCount::new(free0), Order::new(0)).is_some());
        assert!(src.allocate_pages(PageCount::new(1), Order::new(0)).is_none());
    }

    #[test]
    fn run_search_matches_a_bit_by_bit_search() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..300 {
            let len = 1 + (state % 300) as usize;
            let mut bits = std::vec![0u64; len.div_ceil(64)];
            for i in 0..len {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if state >> 61 == 0 {
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
            set_bits(&mut bits, len, len.div_ceil(64) * 64 - len, true);
            let count = 1 + (state >> 20) as usize % 20;
            let align = 1 << ((state >> 40) % 4);
            let first = (state >> 50) as usize % 8;
            let want = (0..len)
                .find(|&i| (first + i).is_multiple_of(align) && i + count <= len && all_bits(&bits, i, count, false));
            assert_eq!(
                find_clear_run(&bits, len, first, count, align, 0),
                want,
                "len {len} count {count} align {align}"
            );
        }
    }

    #[test]
    fn large_pages_come_back_whole() {
        let src = region(3 * LARGE_PAGE_PAGES);
        let large = LargePages::new(&src);
        let free0 = src.free_page_count().get();
        let a = large.allocate_pages(PageCount::new(1), Order::new(0)).unwrap();
        let b = large.allocate_pages(PageCount::new(16), Order::new(4)).unwrap();
        assert_eq!(large.large_pages_held(), 1);
        assert_eq!(src.free_page_count().get(), free0 - LARGE_PAGE_PAGES);
        assert_eq!((b.as_ptr() as usize >> PAGE_SHIFT) % 16, 0);
        // SAFETY: runs from `large`, unused.
        unsafe { large.free_pages(a, PageCount::new(1)) };
        assert_eq!(large.large_pages_held(), 1);
        // SAFETY: as above.
        unsafe { large.free_pages(b, PageCount::new(16)) };
        assert_eq!(large.large_pages_held(), 0);
        assert_eq!(src.free_page_count().get(), free0);
    }
}
