//! The AIX kernel heaps: `kernel_heap` and `pinned_heap`, each over a 4K/64K and a 16M
//! backing heap, with `xmalloc`, `xmfree`, `malloc`, `palloc`, `pin` and `unpin`.
//!
//! ```text
//!   HeapId::Kernel ──▶ kernel_heap_16M (large pages enabled) ──no 16 MiB page──▶ kernel_heap_4K_64K
//!                  └─▶ kernel_heap_4K_64K (large pages disabled: the default heap)
//!   HeapId::Pinned ──▶ pinned_heap_16M / pinned_heap_4K_64K, the same way
//! ```
//!
//! The 16M heaps take their pages from 16 MiB large pages (order-12 runs of the page
//! source, see [`LargePages`]). Kernel-heap memory is pageable: it may be pinned and
//! unpinned, and must be unpinned before it is freed. Pinned-heap memory is pinned when
//! `xmalloc` returns (its page source gives memory that is never paged out) and must never
//! be unpinned.
//!
//! # Unsafe
//!
//! `xmfree` and `realloc` forward their callers' contract to the backing heap that owns the
//! block. [`AddressHeaps`] never lends its heaps out, so no `Box` can own one of its blocks,
//! which makes its `xmfree` safe.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use memkit_types::VirtAddr;

use crate::error::{PinError, ReallocError, UnpinError, XmallocError, XmfreeError};
use crate::heap::{CpuId, FitPolicy, Heap, HeapStats};
use crate::source::{LargePages, PageSource};

/// A heap as the seed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapId {
    /// `kernel_heap`: pageable memory, backed by the preferred page size.
    Kernel,
    /// `pinned_heap`: memory pinned when `xmalloc` returns, the preferred page size.
    Pinned,
    /// `kernel_heap_4K_64K`: pageable memory in regular pages.
    Kernel4K64K,
    /// `kernel_heap_16M`: pageable memory in 16 MiB large pages (the default heap when
    /// large pages are not enabled or none can be had).
    Kernel16M,
    /// `pinned_heap_4K_64K`: pinned memory in regular pages.
    Pinned4K64K,
    /// `pinned_heap_16M`: pinned memory in 16 MiB large pages (the default heap when large
    /// pages are not enabled or none can be had).
    Pinned16M,
}

impl HeapId {
    /// Whether memory of this heap is always pinned.
    #[must_use]
    pub const fn is_pinned(self) -> bool {
        matches!(self, HeapId::Pinned | HeapId::Pinned4K64K | HeapId::Pinned16M)
    }

    /// Whether this heap prefers 16 MiB pages (`Kernel`/`Pinned` do once large pages are
    /// enabled).
    const fn wants_large(self, large_enabled: bool) -> bool {
        match self {
            HeapId::Kernel16M | HeapId::Pinned16M => true,
            HeapId::Kernel | HeapId::Pinned => large_enabled,
            HeapId::Kernel4K64K | HeapId::Pinned4K64K => false,
        }
    }
}

/// The kernel's heaps over a pageable and a pinned page source.
pub struct KernelHeaps<'a, P, C> {
    kernel_4k: Heap<&'a P, C>,
    kernel_16m: Heap<LargePages<&'a P>, C>,
    pinned_4k: Heap<&'a P, C>,
    pinned_16m: Heap<LargePages<&'a P>, C>,
    large_pages: AtomicBool,
}

impl<P, C> core::fmt::Debug for KernelHeaps<'_, P, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelHeaps")
            .field("kernel_4k", &self.kernel_4k)
            .field("pinned_4k", &self.pinned_4k)
            .field("large_pages", &self.large_pages.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<'a, P: PageSource, C: CpuId + Copy> KernelHeaps<'a, P, C> {
    /// Uninitialised heaps with the default [`FitPolicy`]: every `xmalloc` returns `None`
    /// until [`init`](Self::init). `pageable` backs `kernel_heap`, `pinned` backs
    /// `pinned_heap` (memory never paged out); they may be the same source.
    pub const fn new(pageable: &'a P, pinned: &'a P, cpu: C) -> Self {
        Self::with_fit_policy(pageable, pinned, cpu, FitPolicy::Adaptive)
    }

    /// As [`new`](Self::new), every backing heap placing requests by
    /// `fit_policy`.
    pub const fn with_fit_policy(pageable: &'a P, pinned: &'a P, cpu: C, fit_policy: FitPolicy) -> Self {
        KernelHeaps {
            kernel_4k: Heap::with_fit_policy(pageable, cpu, false, fit_policy),
            kernel_16m: Heap::with_fit_policy(LargePages::new(pageable), cpu, false, fit_policy),
            pinned_4k: Heap::with_fit_policy(pinned, cpu, true, fit_policy),
            pinned_16m: Heap::with_fit_policy(LargePages::new(pinned), cpu, true, fit_policy),
            large_pages: AtomicBool::new(false),
        }
    }

    /// Initialises the 4K/64K heaps and, with `large_pages`, the 16M heaps. When the 16M
    /// heaps cannot be set up (no 16 MiB page), large pages stay disabled and every heap
    /// points at the default heap. Returns whether large pages are enabled.
    ///
    /// # Errors
    /// [`XmallocError::NoMemory`] when a 4K/64K heap cannot get its page map.
    pub fn init(&self, large_pages: bool) -> Result<bool, XmallocError> {
        self.kernel_4k.init()?;
        self.pinned_4k.init()?;
        let enabled = large_pages && self.kernel_16m.init().is_ok() && self.pinned_16m.init().is_ok();
        self.large_pages.store(enabled, Ordering::Release);
        Ok(enabled)
    }

    /// Whether large-page (16M) heaps are enabled.
    pub fn large_pages_enabled(&self) -> bool {
        self.large_pages.load(Ordering::Acquire)
    }

    /// The backing heaps of `heap`'s family: (4K/64K, 16M).
    fn family(&self, heap: HeapId) -> (&Heap<&'a P, C>, &Heap<LargePages<&'a P>, C>) {
        if heap.is_pinned() { (&self.pinned_4k, &self.pinned_16m) } else { (&self.kernel_4k, &self.kernel_16m) }
    }

    /// The 4K/64K backing heap of `heap`'s family.
    pub fn regular_heap(&self, heap: HeapId) -> &Heap<&'a P, C> {
        self.family(heap).0
    }

    /// The 16M backing heap of `heap`'s family.
    pub fn large_heap(&self, heap: HeapId) -> &Heap<LargePages<&'a P>, C> {
        self.family(heap).1
    }

    /// `xmalloc(size, align, heap)`: `size` bytes aligned to 2^`align_log2` bytes from
    /// `heap`, or an error saying why the seed would return a null pointer.
    ///
    /// # Errors
    /// [`XmallocError::NotInitialised`] before [`init`](Self::init),
    /// [`XmallocError::NoMemory`] when the memory cannot be allocated,
    /// [`XmallocError::BadAlignment`] / [`XmallocError::TooLarge`] for impossible requests.
    #[inline]
    pub fn try_xmalloc(&self, size: usize, align_log2: u32, heap: HeapId) -> Result<NonNull<u8>, XmallocError> {
        let (regular, large) = self.family(heap);
        if heap.wants_large(true) && self.large_pages_enabled() {
            match large.allocate(size, align_log2) {
                Err(XmallocError::NoMemory(_)) => {}
                other => return other,
            }
        }
        regular.allocate(size, align_log2)
    }

    /// `xmalloc(size, align, heap)`: the seed's form, `None` (a null pointer) when the
    /// memory cannot be allocated or the heap is not initialised.
    #[inline]
    #[must_use]
    pub fn xmalloc(&self, size: usize, align_log2: u32, heap: HeapId) -> Option<NonNull<u8>> {
        self.try_xmalloc(size, align_log2, heap).ok()
    }

    /// `malloc(size)` = `xmalloc(size, 0, kernel_heap)`.
    #[must_use]
    pub fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.xmalloc(size, 0, HeapId::Kernel)
    }

    /// `palloc(size, align)` = `xmalloc(size, align, kernel_heap)`.
    #[must_use]
    pub fn palloc(&self, size: usize, align_log2: u32) -> Option<NonNull<u8>> {
        self.xmalloc(size, align_log2, HeapId::Kernel)
    }

    /// Runs `f` on the backing heap of `heap`'s family that owns `ptr`.
    fn owner<T>(
        &self,
        ptr: NonNull<u8>,
        heap: HeapId,
        f_regular: impl FnOnce(&Heap<&'a P, C>) -> T,
        f_large: impl FnOnce(&Heap<LargePages<&'a P>, C>) -> T,
    ) -> Result<T, XmfreeError> {
        let (regular, large) = self.family(heap);
        if regular.owns(ptr) {
            return Ok(f_regular(regular));
        }
        if large.owns(ptr) {
            return Ok(f_large(large));
        }
        let (other_regular, other_large) = self.family(if heap.is_pinned() { HeapId::Kernel } else { HeapId::Pinned });
        let addr = ptr.as_ptr() as usize;
        let va = VirtAddr::try_new(addr).map_err(|_| XmfreeError::NonCanonical(addr))?;
        if other_regular.owns(ptr) || other_large.owns(ptr) {
            return Err(XmfreeError::OtherHeap(va));
        }
        Err(XmfreeError::NotOwned(va))
    }

    /// `xmfree(ptr, heap)`: frees a block of `heap`; the size comes from the pointer.
    ///
    /// # Errors
    /// [`XmfreeError::OtherHeap`] for a block of the other heap, [`XmfreeError::NotOwned`]
    /// for a pointer no heap handed out, [`XmfreeError::NotBlockStart`],
    /// [`XmfreeError::NotAllocated`] (double free), [`XmfreeError::StillPinned`] for
    /// kernel-heap memory not unpinned. Nothing is freed then.
    ///
    /// # Safety
    /// As for [`Heap::free`]: if `ptr` is a live block, the caller owns it (it is no
    /// `Box`'s or collection's through the `GlobalAlloc` or `Allocator` implementations)
    /// and nothing uses it after a successful free. Any other pointer is refused with an
    /// error, soundly.
    #[inline]
    pub unsafe fn xmfree(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<(), XmfreeError> {
        // The common case first: one page-map lookup in the regular heap.
        let (regular, _) = self.family(heap);
        // SAFETY: the caller's contract is forwarded (to whichever heap owns the block).
        match unsafe { regular.free(ptr) } {
            Err(XmfreeError::NotOwned(_)) => {
                // SAFETY: as above.
                let regular = |h: &Heap<&'a P, C>| unsafe { h.free(ptr) };
                // SAFETY: as above.
                let large = |h: &Heap<LargePages<&'a P>, C>| unsafe { h.free(ptr) };
                self.owner(ptr, heap, regular, large)?
            }
            other => other,
        }
    }

    /// Pins the kernel-heap block at `ptr` once more and returns its pin count; pinned-heap
    /// memory is always pinned (count 1).
    ///
    /// # Errors
    /// [`PinError::Invalid`] for a pointer that is not a live block of `heap`,
    /// [`PinError::NoMemory`] when the pin table is full.
    pub fn pin(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<u32, PinError> {
        self.owner(ptr, heap, |h| h.pin(ptr), |h| h.pin(ptr)).map_err(PinError::Invalid)?
    }

    /// Unpins the kernel-heap block at `ptr` once and returns the pins left.
    ///
    /// # Errors
    /// [`UnpinError::PinnedHeap`] for pinned-heap memory, [`UnpinError::NotPinned`],
    /// [`UnpinError::Invalid`] for a pointer that is not a live block of `heap`.
    pub fn unpin(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<u32, UnpinError> {
        self.owner(ptr, heap, |h| h.unpin(ptr), |h| h.unpin(ptr)).map_err(UnpinError::Invalid)?
    }

    /// Resizes the block at `ptr` of `heap`, keeping its alignment.
    ///
    /// # Errors
    /// As [`Heap::realloc`]; the old block is kept on failure.
    ///
    /// # Safety
    /// As [`Heap::realloc`].
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize, heap: HeapId) -> Result<NonNull<u8>, ReallocError> {
        // SAFETY: the caller's contract is forwarded.
        let r = self.owner(ptr, heap, |h| unsafe { h.realloc(ptr, new_size) }, |h| unsafe { h.realloc(ptr, new_size) });
        r.map_err(ReallocError::Free)?
    }

    /// Resizes the block at `ptr` of `heap` to a block aligned to 2^`align_log2` (the
    /// alignment its caller needs, as [`Heap::realloc_aligned`]).
    ///
    /// # Errors
    /// As [`Heap::realloc_aligned`]; the old block is kept on failure.
    ///
    /// # Safety
    /// As [`Heap::realloc`].
    pub unsafe fn realloc_aligned(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
        align_log2: u32,
        heap: HeapId,
    ) -> Result<NonNull<u8>, ReallocError> {
        let r = self.owner(
            ptr,
            heap,
            // SAFETY: the caller's contract is forwarded.
            |h| unsafe { h.realloc_aligned(ptr, new_size, align_log2) },
            // SAFETY: as above.
            |h| unsafe { h.realloc_aligned(ptr, new_size, align_log2) },
        );
        r.map_err(ReallocError::Free)?
    }

    /// Checks the invariants of every backing heap.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.kernel_4k.check_invariants();
        self.kernel_16m.check_invariants();
        self.pinned_4k.check_invariants();
        self.pinned_16m.check_invariants();
    }
}

/// Kernel heaps whose blocks leave them only as addresses, so that `xmfree` is safe: the
/// C-style interface for callers that hold blocks by address (a scenario interpreter, a
/// system-call layer), not as Rust objects.
///
/// [`KernelHeaps::xmfree`] is `unsafe` because a block may be owned by a `Box` or a
/// collection through the heaps' `GlobalAlloc` and `Allocator` implementations. These
/// heaps give out no reference to the heaps inside, so no such owner can exist: a block
/// is only ever a pointer, which safe code cannot read or write, and freeing any pointer
/// (a live block, a bad pointer, twice) cannot break anything safe code holds. Bad frees
/// are refused as by [`KernelHeaps::xmfree`].
///
/// ```
/// # use core::ptr::NonNull;
/// # use memkit_heap::{AddressHeaps, HeapId, KernelHeaps, RegionPageSource, SingleCpu, XmfreeError};
/// # let mem: &'static mut [u8] = vec![0u8; 4 << 20].leak();
/// # // SAFETY: leaked memory, used only by this source.
/// # let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
/// let heaps = AddressHeaps::new(KernelHeaps::new(&src, &src, SingleCpu));
/// heaps.init(false).unwrap();
/// let p = heaps.try_xmalloc(100, 4, HeapId::Kernel).unwrap();
/// heaps.xmfree(p, HeapId::Kernel).unwrap();
/// assert!(matches!(heaps.xmfree(p, HeapId::Kernel), Err(XmfreeError::NotAllocated(_))));
/// ```
pub struct AddressHeaps<'a, P, C> {
    heaps: KernelHeaps<'a, P, C>,
}

impl<P, C> core::fmt::Debug for AddressHeaps<'_, P, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AddressHeaps").field("heaps", &self.heaps).finish()
    }
}

impl<'a, P: PageSource, C: CpuId + Copy> AddressHeaps<'a, P, C> {
    /// Takes `heaps` for good (no `Box` can outlive the borrow that made it).
    pub const fn new(heaps: KernelHeaps<'a, P, C>) -> Self {
        AddressHeaps { heaps }
    }

    /// As [`KernelHeaps::init`].
    ///
    /// # Errors
    /// As [`KernelHeaps::init`].
    pub fn init(&self, large_pages: bool) -> Result<bool, XmallocError> {
        self.heaps.init(large_pages)
    }

    /// Whether large-page (16M) heaps are enabled.
    pub fn large_pages_enabled(&self) -> bool {
        self.heaps.large_pages_enabled()
    }

    /// As [`KernelHeaps::try_xmalloc`]: the block's address.
    ///
    /// # Errors
    /// As [`KernelHeaps::try_xmalloc`].
    pub fn try_xmalloc(&self, size: usize, align_log2: u32, heap: HeapId) -> Result<NonNull<u8>, XmallocError> {
        self.heaps.try_xmalloc(size, align_log2, heap)
    }

    /// As [`KernelHeaps::xmfree`], safely: no block of these heaps has an owner a free
    /// could betray.
    ///
    /// # Errors
    /// As [`KernelHeaps::xmfree`]; nothing is freed then.
    pub fn xmfree(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<(), XmfreeError> {
        // SAFETY: the inner heaps are reachable only through `self`, which hands out no
        // reference to them, so no `Box` or collection owns a block of theirs: a live
        // block is only an address, which nothing reads or writes without its own unsafe
        // code (whose contract is to not race a free). Other pointers are refused.
        unsafe { self.heaps.xmfree(ptr, heap) }
    }

    /// As [`KernelHeaps::pin`].
    ///
    /// # Errors
    /// As [`KernelHeaps::pin`].
    pub fn pin(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<u32, PinError> {
        self.heaps.pin(ptr, heap)
    }

    /// As [`KernelHeaps::unpin`].
    ///
    /// # Errors
    /// As [`KernelHeaps::unpin`].
    pub fn unpin(&self, ptr: NonNull<u8>, heap: HeapId) -> Result<u32, UnpinError> {
        self.heaps.unpin(ptr, heap)
    }

    /// Counters of the 4K/64K backing heap of `heap`'s family.
    pub fn regular_stats(&self, heap: HeapId) -> HeapStats {
        self.heaps.regular_heap(heap).stats()
    }

    /// Counters of the 16M backing heap of `heap`'s family.
    pub fn large_stats(&self, heap: HeapId) -> HeapStats {
        self.heaps.large_heap(heap).stats()
    }

    /// Gives every cached empty span and arena of every backing heap back.
    pub fn trim(&self) {
        for heap in [HeapId::Kernel, HeapId::Pinned] {
            self.heaps.regular_heap(heap).trim();
            self.heaps.large_heap(heap).trim();
        }
    }

    /// Checks the invariants of every backing heap.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.heaps.check_invariants();
    }
}
