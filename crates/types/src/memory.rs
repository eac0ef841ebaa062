//! The traits where the layers meet: frame contents and frame sources.

use core::fmt;

use crate::addr::PhysAddr;
use crate::frame::{Frame, FrameCount, Order};

/// Access to the contents of physical frames.
///
/// The frame allocator hands out frame numbers; this trait is how the layers above touch
/// what is in them, whether RAM is a memfd's direct map (hosted), the kernel's direct map
/// (bare metal) or a model in plain Rust memory (tests). Implementations are shared between
/// threads, so every method takes `&self`.
///
/// Callers pass only frames they own (allocated to them and not yet freed); an
/// implementation may panic on a frame outside the RAM it models.
pub trait PhysMemory {
    /// Fills `count` frames from `frame` on with zeros.
    fn zero(&self, frame: Frame, count: FrameCount);
    /// Copies `count` frames from `src` to `dst`. Callers pass disjoint runs; as the method
    /// is safe, an implementation must stay sound when they overlap (even `src == dst`): the
    /// contents of `dst` are then unspecified, never undefined behaviour (a `memmove` is the
    /// simple way).
    fn copy(&self, src: Frame, dst: Frame, count: FrameCount);
    /// Reads `buf.len()` bytes starting at `addr`.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]);
    /// Writes `buf` starting at `addr`.
    fn write(&self, addr: PhysAddr, buf: &[u8]);
}

impl<M: PhysMemory + ?Sized> PhysMemory for &M {
    fn zero(&self, frame: Frame, count: FrameCount) {
        (**self).zero(frame, count);
    }
    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        (**self).copy(src, dst, count);
    }
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        (**self).read(addr, buf);
    }
    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        (**self).write(addr, buf);
    }
}

/// Why a [`FrameSource`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameSourceError {
    /// No run of the requested size and alignment is free (below the limit, if any).
    Exhausted(FrameCount),
    /// The request can never be served: zero frames, an order the source does not support,
    /// or a range outside the memory the source manages.
    Invalid,
    /// A frame of the requested fixed range is in use or reserved.
    InUse(Frame),
    /// A frame of the range being freed is not allocated.
    NotAllocated(Frame),
}

impl fmt::Display for FrameSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameSourceError::Exhausted(n) => write!(f, "no free run of {} frames", n.get()),
            FrameSourceError::Invalid => f.write_str("request outside what the source can serve"),
            FrameSourceError::InUse(fr) => write!(f, "frame {:#x} is in use", fr.start_address().as_u64()),
            FrameSourceError::NotAllocated(fr) => {
                write!(f, "frame {:#x} is not allocated", fr.start_address().as_u64())
            }
        }
    }
}

impl core::error::Error for FrameSourceError {}

/// A thread-safe supplier of physical frame runs: a pool of the frame allocator, or any
/// other source of frames (a test model, a pinned dataspace for a heap).
///
/// Every run handed out is owned by the caller until it gives it back with
/// [`free`](FrameSource::free) with the same start and count (or in pieces that cover it).
pub trait FrameSource {
    /// Allocates `count` physically contiguous frames whose first frame is aligned to
    /// `align` and whose last frame ends at or below `limit` (`None`: anywhere).
    ///
    /// # Errors
    /// [`FrameSourceError::Exhausted`] when no such run is free,
    /// [`FrameSourceError::Invalid`] for a zero count or an unsupported alignment.
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError>;

    /// Allocates exactly the frames `start .. start + count`.
    ///
    /// # Errors
    /// [`FrameSourceError::InUse`] naming the first frame that is taken or reserved,
    /// [`FrameSourceError::Invalid`] when the range is outside the source.
    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError>;

    /// Gives back the frames `start .. start + count`.
    ///
    /// # Errors
    /// [`FrameSourceError::NotAllocated`] naming a frame of the range that is free; nothing
    /// is freed then.
    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError>;

    /// The number of free frames.
    fn free_frames(&self) -> FrameCount;

    /// The number of frames the source manages (free or not, reserved excluded).
    fn total_frames(&self) -> FrameCount;
}

impl<S: FrameSource + ?Sized> FrameSource for &S {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        (**self).allocate(count, align, limit)
    }
    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        (**self).allocate_at(start, count)
    }
    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        (**self).free(start, count)
    }
    fn free_frames(&self) -> FrameCount {
        (**self).free_frames()
    }
    fn total_frames(&self) -> FrameCount {
        (**self).total_frames()
    }
}
