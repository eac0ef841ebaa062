//! A thread-safe allocator: an [`Allocator`] behind a pluggable lock.

use core::fmt;

use lock_api::{Mutex, MutexGuard, RawMutex};
use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, Order, PhysAddr};

use crate::allocator::{Allocator, Stats};
use crate::area::MemoryArea;
use crate::error::{AddRegionError, AllocateAtError, AllocateError, FreeError};

/// The lock the crate uses when the caller does not choose one: a spin lock, fine in a
/// kernel and in tests.
pub type DefaultRawMutex = spin::Mutex<()>;

/// An [`Allocator`] behind a lock of type `R` (any `lock_api::RawMutex`: a spin lock in a
/// kernel, `parking_lot` hosted). Implements [`FrameSource`].
pub struct LockedAllocator<'h, R: RawMutex = DefaultRawMutex> {
    inner: Mutex<R, Allocator<'h>>,
    area: MemoryArea,
}

impl<R: RawMutex> fmt::Debug for LockedAllocator<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedAllocator").field("area", &self.area).finish_non_exhaustive()
    }
}

impl<'h, R: RawMutex> LockedAllocator<'h, R> {
    /// Puts `allocator` behind a lock.
    #[must_use]
    pub fn new(allocator: Allocator<'h>) -> Self {
        let area = allocator.area();
        LockedAllocator { inner: Mutex::new(allocator), area }
    }

    /// Locks the allocator for several operations in a row.
    pub fn lock(&self) -> MutexGuard<'_, R, Allocator<'h>> {
        self.inner.lock()
    }

    /// The lock itself, for a caller that must hold it beyond a guard's scope: a `fork`
    /// handler keeps it locked across the fork (a forgotten guard) and lets go of it in
    /// the parent and the child with the lock's `force_unlock`.
    pub fn mutex(&self) -> &Mutex<R, Allocator<'h>> {
        &self.inner
    }

    /// Gives the allocator back (to re-attach its header elsewhere, for instance).
    #[must_use]
    pub fn into_inner(self) -> Allocator<'h> {
        self.inner.into_inner()
    }

    /// The managed area (no lock taken).
    #[must_use]
    pub fn area(&self) -> MemoryArea {
        self.area
    }

    /// [`Allocator::allocate`] under the lock.
    ///
    /// # Errors
    /// As [`Allocator::allocate`].
    pub fn allocate(&self, order: Order) -> Result<Frame, AllocateError> {
        self.inner.lock().allocate(order)
    }

    /// [`Allocator::free`] under the lock.
    ///
    /// # Errors
    /// As [`Allocator::free`].
    pub fn free_block(&self, area: MemoryArea) -> Result<(), FreeError> {
        self.inner.lock().free(area)
    }

    /// [`Allocator::add_region`] under the lock: reserved frames of the area join.
    ///
    /// # Errors
    /// As [`Allocator::add_region`].
    pub fn add_region(&self, region: MemoryArea) -> Result<(), AddRegionError> {
        self.inner.lock().add_region(region)
    }

    /// [`Allocator::stats`] under the lock.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.lock().stats()
    }
}

/// Maps an allocation error to the frame-source vocabulary.
pub(crate) fn allocate_error(e: AllocateError, count: FrameCount) -> FrameSourceError {
    match e {
        AllocateError::PhysicalMemoryFull(_) => FrameSourceError::Exhausted(count),
        AllocateError::NotValid(_) | AllocateError::ZeroCount => FrameSourceError::Invalid,
    }
}

pub(crate) fn allocate_at_error(e: AllocateAtError) -> FrameSourceError {
    match e {
        AllocateAtError::OutsideArea(_) => FrameSourceError::Invalid,
        AllocateAtError::InUse(f) | AllocateAtError::Reserved(f) => FrameSourceError::InUse(f),
    }
}

pub(crate) fn free_error(e: FreeError) -> FrameSourceError {
    match e {
        FreeError::Unaligned(_) | FreeError::OutsideArea(_) => FrameSourceError::Invalid,
        FreeError::AlreadyFree(f) | FreeError::Reserved(f) => FrameSourceError::NotAllocated(f),
    }
}

impl<R: RawMutex> FrameSource for LockedAllocator<'_, R> {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        self.inner.lock().allocate_run(count, align, limit).map_err(|e| allocate_error(e, count))
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.inner.lock().allocate_at(start, count).map_err(allocate_at_error)
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.inner.lock().free_run(start, count).map_err(free_error)
    }

    fn free_frames(&self) -> FrameCount {
        self.inner.lock().free_frames()
    }

    fn total_frames(&self) -> FrameCount {
        self.inner.lock().total_frames()
    }
}
