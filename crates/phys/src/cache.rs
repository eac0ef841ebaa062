//! Per-CPU caches of order-0 frames in front of a [`LockedAllocator`].
//!
//! ```text
//!   CPU 0: [f f f f . . . .]   CPU 1: [f f . . . . . .]    each slot: its own lock, no sharing
//!            │ empty: refill BATCH frames        │ full: drain BATCH frames
//!            ▼ under one allocator lock          ▼ under one allocator lock
//!   ┌──────────────────── LockedAllocator (bitmap buddy) ────────────────────┐
//! ```
//!
//! Single-frame allocations and frees touch only the current CPU's slot; the allocator's
//! lock is taken once per [`BATCH`] frames. Every other request goes straight through.
//! When the allocator runs short, every slot is drained and the request tried once more:
//! frames parked in one CPU's cache never make another CPU's request fail.
//!
//! A frame sitting in a cache is allocated as far as the allocator knows, so a double free
//! of it is caught when the cache checks its own slot (same CPU) or when the slot drains
//! (the allocator rejects the second copy, which is then dropped); between the two, a frame
//! freed twice on two CPUs may be handed out twice. Code that frees frames twice has a bug
//! the cache cannot fully contain; the allocator underneath never corrupts.

use core::fmt;

use lock_api::{Mutex, RawMutex};
use memkit_types::{CpuId, Frame, FrameCount, FrameSource, FrameSourceError, Order, PhysAddr};

use crate::locked::{DefaultRawMutex, LockedAllocator};
use crate::reach::{Path, hit};

/// Frames a slot holds at most.
pub const CACHE_CAPACITY: usize = 64;
/// Frames moved between a slot and the allocator at once.
pub const BATCH: usize = 32;

struct Slot {
    frames: [u64; CACHE_CAPACITY],
    len: usize,
}

/// `CPUS` per-CPU slots of order-0 frames in front of `allocator`. Implements
/// [`FrameSource`].
pub struct FrameCache<'s, 'h, C: CpuId, const CPUS: usize, R: RawMutex = DefaultRawMutex> {
    allocator: &'s LockedAllocator<'h, R>,
    cpu: C,
    slots: [Mutex<R, Slot>; CPUS],
}

impl<C: CpuId, const CPUS: usize, R: RawMutex> fmt::Debug for FrameCache<'_, '_, C, CPUS, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCache").field("cpus", &CPUS).field("cached", &self.cached_frames()).finish_non_exhaustive()
    }
}

impl<'s, 'h, C: CpuId, const CPUS: usize, R: RawMutex> FrameCache<'s, 'h, C, CPUS, R> {
    /// Empty caches in front of `allocator`, the CPU id from `cpu`.
    ///
    /// # Panics
    /// If `CPUS` is 0.
    pub fn new(allocator: &'s LockedAllocator<'h, R>, cpu: C) -> Self {
        assert!(CPUS > 0, "a frame cache needs at least one CPU");
        FrameCache {
            allocator,
            cpu,
            slots: core::array::from_fn(|_| Mutex::new(Slot { frames: [0; CACHE_CAPACITY], len: 0 })),
        }
    }

    /// The allocator behind the caches.
    #[must_use]
    pub fn allocator(&self) -> &'s LockedAllocator<'h, R> {
        self.allocator
    }

    /// One frame, from the current CPU's slot (refilled with a batch when empty). When the
    /// allocator has nothing left, the other CPUs' slots are drained and the refill tried
    /// once more, so no request fails while a cache still holds a frame.
    ///
    /// # Errors
    /// [`FrameSourceError::Exhausted`] when the allocator and every slot are empty.
    pub fn allocate_frame(&self) -> Result<Frame, FrameSourceError> {
        if let Some(frame) = self.take_from_slot() {
            return Ok(frame);
        }
        hit(Path::CacheShortDrain);
        self.drain();
        self.take_from_slot().ok_or_else(|| {
            hit(Path::CacheEmpty);
            FrameSourceError::Exhausted(FrameCount::new(1))
        })
    }

    /// A frame from the current CPU's slot, refilled with up to a batch when empty; `None`
    /// when the slot and the allocator are both empty.
    fn take_from_slot(&self) -> Option<Frame> {
        let mut slot = self.slots[self.cpu.current_cpu() % CPUS].lock();
        if slot.len == 0 {
            let mut a = self.allocator.lock();
            while slot.len < BATCH {
                match a.allocate(Order::ZERO) {
                    Ok(f) => {
                        let i = slot.len;
                        slot.frames[i] = f.number();
                        slot.len += 1;
                    }
                    Err(_) => break,
                }
            }
            hit(Path::CacheRefill);
            if slot.len == 0 {
                return None;
            }
            if slot.len < BATCH {
                hit(Path::CacheRefillShort);
            }
        }
        slot.len -= 1;
        Some(Frame::from_number(slot.frames[slot.len]))
    }

    /// Gives one frame back to the current CPU's slot (draining a batch when full).
    ///
    /// # Errors
    /// [`FrameSourceError::Invalid`] for a frame outside the allocator's area,
    /// [`FrameSourceError::NotAllocated`] for a frame already in this CPU's slot.
    pub fn free_frame(&self, frame: Frame) -> Result<(), FrameSourceError> {
        let area = self.allocator.area();
        let (s, e) = area.frames_outward();
        let n = frame.number();
        if n < s || n >= e {
            return Err(FrameSourceError::Invalid);
        }
        let mut slot = self.slots[self.cpu.current_cpu() % CPUS].lock();
        if slot.frames[..slot.len].contains(&n) {
            return Err(FrameSourceError::NotAllocated(frame));
        }
        if slot.len == CACHE_CAPACITY {
            hit(Path::CacheDrainBatch);
            let mut a = self.allocator.lock();
            for &f in &slot.frames[..BATCH] {
                // A frame the allocator rejects was freed twice: dropping it is right.
                let _ = a.free_run(Frame::from_number(f), FrameCount::new(1));
            }
            slot.frames.copy_within(BATCH.., 0);
            slot.len -= BATCH;
        }
        let i = slot.len;
        slot.frames[i] = n;
        slot.len += 1;
        Ok(())
    }

    /// Gives every cached frame back to the allocator.
    pub fn drain(&self) {
        hit(Path::CacheDrainAll);
        for s in &self.slots {
            let mut slot = s.lock();
            let mut a = self.allocator.lock();
            for &f in &slot.frames[..slot.len] {
                let _ = a.free_run(Frame::from_number(f), FrameCount::new(1));
            }
            slot.len = 0;
        }
    }

    /// Frames held in the caches now.
    #[must_use]
    pub fn cached_frames(&self) -> FrameCount {
        FrameCount::new(self.slots.iter().map(|s| s.lock().len as u64).sum())
    }
}

impl<C: CpuId, const CPUS: usize, R: RawMutex> FrameSource for FrameCache<'_, '_, C, CPUS, R> {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        if count.get() == 1 && align == Order::ZERO && limit.is_none() {
            return self.allocate_frame();
        }
        FrameSource::allocate(self.allocator, count, align, limit).or_else(|e| {
            // Frames parked in the caches may be what the request lacks: give them back
            // and try once more.
            if self.cached_frames().get() == 0 {
                return Err(e);
            }
            hit(Path::CacheShortDrain);
            self.drain();
            FrameSource::allocate(self.allocator, count, align, limit)
        })
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.allocator.allocate_at(start, count)
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        if count.get() == 1 {
            return self.free_frame(start);
        }
        FrameSource::free(self.allocator, start, count)
    }

    /// Free frames, counting those waiting in the caches.
    fn free_frames(&self) -> FrameCount {
        FrameCount::new(self.allocator.free_frames().get() + self.cached_frames().get())
    }

    fn total_frames(&self) -> FrameCount {
        self.allocator.total_frames()
    }
}
