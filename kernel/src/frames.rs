//! The kernel's physical frames: memkit's pmallocator over the main RAM range, its header
//! inside that RAM, reached through whatever physical window is in use.
//!
//! ```text
//!   RAM ┌──────────┬─────────────── free frames ───────────────┬────────┐
//!       │ kernel   │                                            │ header │ (get_header: as high
//!       │ image    │                                            │ words  │  as possible, off the
//!       └──────────┴────────────────────────────────────────────┴────────┘  reserved ranges)
//!   view: Allocator::init(identity mapping) ──switch page tables──▶ Allocator::attach(direct map)
//! ```
//!
//! The header holds frame numbers, word offsets and bits, never a pointer, so the view
//! attached through the higher-half direct map after the switch sees exactly the state the
//! identity-mapped view left.

use core::slice;

use memkit_phys::{
    AllocateAtError, AllocateError, Allocator, AttachError, FreeError, GetHeaderError, InitError, MemoryArea, Stats,
    get_header, header_words,
};
use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, Order, PhysAddr, VirtAddr};

use crate::phys_window;

/// Why the frame allocator could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramesError {
    /// No place for the header.
    Header(GetHeaderError),
    /// The header could not be written.
    Init(InitError),
    /// The header could not be found again through the new mapping.
    Attach(AttachError),
}

/// The kernel's frame allocator: a pmallocator view behind a spin lock.
#[derive(Debug)]
pub(crate) struct KernelFrames {
    view: spin::Mutex<Option<Allocator<'static>>>,
    header: MemoryArea,
    words: usize,
}

/// The header's `words` words at `header` through the current physical window.
///
/// # Safety
/// The words are RAM that only the returned slice (and the allocator view made from it)
/// uses until the view is dropped, and the window maps them until then.
unsafe fn header_mapping(header: MemoryArea, words: usize) -> &'static mut [u64] {
    let ptr = phys_window::current().ptr(header.start, words * 8).cast::<u64>();
    // SAFETY: the window maps the words (page aligned, so aligned for u64); the caller
    // guarantees exclusive use while the slice lives.
    unsafe { slice::from_raw_parts_mut(ptr, words) }
}

impl KernelFrames {
    /// Writes a fresh header for `area`, avoiding `reserved`, through the current window.
    ///
    /// # Errors
    /// [`FramesError`] when no header fits or it cannot be written.
    pub(crate) fn new(area: MemoryArea, reserved: &[MemoryArea]) -> Result<Self, FramesError> {
        let header = get_header(area, reserved.iter().copied()).map_err(FramesError::Header)?;
        let words = header_words(area).map_err(|e| FramesError::Header(GetHeaderError::BadArea(e)))?;
        // SAFETY: `get_header` chose frames of the managed RAM off every reserved range: no
        // Rust object lives there, and from now on only this allocator's view touches them.
        let mapping = unsafe { header_mapping(header, words) };
        let view = Allocator::init(area, header, mapping, reserved.iter().copied()).map_err(FramesError::Init)?;
        Ok(KernelFrames { view: spin::Mutex::new(Some(view)), header, words })
    }

    /// Drops the current view of the header and attaches a new one through the current
    /// window (after the kernel switched page tables).
    ///
    /// # Errors
    /// [`FramesError::Attach`] when the words seen through the new window are not the header.
    pub(crate) fn reattach(&self) -> Result<(), FramesError> {
        let mut view = self.view.lock();
        *view = None;
        // SAFETY: the previous view, the only user of the words, was just dropped; the header
        // frames are reserved in the allocator, so nothing else uses them.
        let mapping = unsafe { header_mapping(self.header, self.words) };
        *view = Some(Allocator::attach(mapping).map_err(FramesError::Attach)?);
        Ok(())
    }

    fn with<R>(&self, f: impl FnOnce(&mut Allocator<'static>) -> R) -> R {
        let mut view = self.view.lock();
        f(view.as_mut().expect("the view is only absent inside `reattach`"))
    }

    /// The header's physical range.
    pub(crate) fn header(&self) -> MemoryArea {
        self.header
    }

    /// Where the view reads the header now.
    pub(crate) fn header_mapping_address(&self) -> VirtAddr {
        VirtAddr::new(phys_window::current().ptr(self.header.start, 8) as usize)
    }

    /// Free frames by order and totals.
    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats())
    }

    /// Runs the allocator's invariant checker.
    pub(crate) fn check_invariants(&self) {
        self.with(|a| a.check_invariants());
    }

    /// Whether `frame` is free.
    pub(crate) fn is_free(&self, frame: Frame) -> bool {
        self.with(|a| a.is_free(frame))
    }

    /// The seed's `allocate(order)`.
    ///
    /// # Errors
    /// As [`Allocator::allocate`].
    pub(crate) fn allocate_block(&self, order: Order) -> Result<Frame, AllocateError> {
        self.with(|a| a.allocate(order))
    }

    /// The seed's `free(area)`.
    ///
    /// # Errors
    /// As [`Allocator::free`].
    pub(crate) fn free_block(&self, area: MemoryArea) -> Result<(), FreeError> {
        self.with(|a| a.free(area))
    }
}

fn allocate_error(e: AllocateError, count: FrameCount) -> FrameSourceError {
    match e {
        AllocateError::PhysicalMemoryFull(_) => FrameSourceError::Exhausted(count),
        AllocateError::NotValid(_) | AllocateError::ZeroCount => FrameSourceError::Invalid,
    }
}

impl FrameSource for KernelFrames {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        self.with(|a| a.allocate_run(count, align, limit)).map_err(|e| allocate_error(e, count))
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.with(|a| a.allocate_at(start, count)).map_err(|e| match e {
            AllocateAtError::OutsideArea(_) => FrameSourceError::Invalid,
            AllocateAtError::InUse(f) | AllocateAtError::Reserved(f) => FrameSourceError::InUse(f),
        })
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.with(|a| a.free_run(start, count)).map_err(|e| match e {
            FreeError::Unaligned(_) | FreeError::OutsideArea(_) => FrameSourceError::Invalid,
            FreeError::AlreadyFree(f) | FreeError::Reserved(f) => FrameSourceError::NotAllocated(f),
        })
    }

    fn free_frames(&self) -> FrameCount {
        self.with(|a| a.free_frames())
    }

    fn total_frames(&self) -> FrameCount {
        self.with(|a| a.total_frames())
    }
}
