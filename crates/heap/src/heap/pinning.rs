//! Pinning: the pin table of a pageable heap and `pin` / `unpin` of a block.

use core::ptr::NonNull;
use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::VirtAddr;

use super::descriptors::Descriptor;
use super::{CpuId, Heap, MAX_PINNED_BLOCKS};
use crate::error::{PinError, UnpinError};
use crate::source::PageSource;

pub(super) struct PinTable {
    pub(super) entries: [(usize, u32); MAX_PINNED_BLOCKS],
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    #[inline]
    pub(super) fn pin_count(&self, d: &Descriptor, addr: usize) -> u32 {
        if d.pinned.load(Relaxed) == 0 {
            return 0;
        }
        self.pins.lock().entries.iter().find(|e| e.0 == addr && e.1 > 0).map_or(0, |e| e.1)
    }

    /// Pins the block at `ptr` once more (pageable heaps); on a pinned heap its memory is
    /// always pinned and this does nothing.
    ///
    /// # Errors
    /// [`PinError::Invalid`] when `ptr` is not a live block start of this heap,
    /// [`PinError::NoMemory`] when [`MAX_PINNED_BLOCKS`] blocks are pinned already.
    pub fn pin(&self, ptr: NonNull<u8>) -> Result<u32, PinError> {
        let addr = ptr.as_ptr() as usize;
        let (_, _, d, _, _st) = self.locate(addr).map_err(PinError::Invalid)?;
        self.block_at(d, addr).map_err(PinError::Invalid)?;
        if self.pinned {
            return Ok(1);
        }
        let mut pins = self.pins.lock();
        if let Some(e) = pins.entries.iter_mut().find(|e| e.0 == addr && e.1 > 0) {
            e.1 = e.1.checked_add(1).ok_or(PinError::NoMemory(VirtAddr::new(addr)))?;
            return Ok(e.1);
        }
        let e = pins.entries.iter_mut().find(|e| e.1 == 0).ok_or(PinError::NoMemory(VirtAddr::new(addr)))?;
        *e = (addr, 1);
        d.pinned.store(d.pinned.load(Relaxed) + 1, Relaxed);
        Ok(1)
    }

    /// Unpins the block at `ptr` once; returns the pins left.
    ///
    /// # Errors
    /// [`UnpinError::Invalid`] when `ptr` is not a live block start of this heap,
    /// [`UnpinError::NotPinned`] when it is not pinned,
    /// [`UnpinError::PinnedHeap`] on a pinned heap (its memory must stay pinned).
    pub fn unpin(&self, ptr: NonNull<u8>) -> Result<u32, UnpinError> {
        let addr = ptr.as_ptr() as usize;
        let va = VirtAddr::new(addr);
        let (_, _, d, _, _st) = self.locate(addr).map_err(UnpinError::Invalid)?;
        self.block_at(d, addr).map_err(UnpinError::Invalid)?;
        if self.pinned {
            return Err(UnpinError::PinnedHeap(va));
        }
        let mut pins = self.pins.lock();
        let e = pins.entries.iter_mut().find(|e| e.0 == addr && e.1 > 0).ok_or(UnpinError::NotPinned(va))?;
        e.1 -= 1;
        if e.1 == 0 {
            *e = (0, 0);
            d.pinned.store(d.pinned.load(Relaxed) - 1, Relaxed);
            return Ok(0);
        }
        Ok(e.1)
    }
}
