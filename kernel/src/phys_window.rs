//! How the kernel reaches physical memory: through a window where physical address `p`
//! appears at virtual address `offset + p`.
//!
//! ```text
//!   boot:   offset 0                       (the boot identity map, first 4 GiB)
//!   after switch_to_direct_map:
//!           offset 0xffff_8000_0000_0000   (the higher-half direct map of all RAM)
//! ```
//!
//! The kernel switches the window exactly once, when it moves to its own page tables;
//! everything that touches physical memory (the frame allocator's header, page tables, frame
//! contents) asks [`current`] for the window each time instead of keeping a pointer.
//!
//! # Unsafe
//! Frame contents are reached at `offset + p` through the window in use, which maps all RAM
//! the kernel manages; `PhysMemory`'s contract gives the frames to the caller, so no Rust
//! object lives in them.

use core::sync::atomic::{AtomicU64, Ordering};

use memkit_types::{Frame, FrameCount, PAGE_SIZE, PhysAddr, PhysMemory};

/// Where the higher-half direct map starts: PML4 slot 256, the first of the upper half.
pub(crate) const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// The window in use: its offset and the end of the physical range it covers.
static OFFSET: AtomicU64 = AtomicU64::new(0);
static LIMIT: AtomicU64 = AtomicU64::new(crate::boot_memory::IDENTITY_LIMIT);

/// A view of physical memory through the current window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhysWindow {
    offset: u64,
    limit: u64,
}

/// The window in use now.
pub(crate) fn current() -> PhysWindow {
    PhysWindow { offset: OFFSET.load(Ordering::SeqCst), limit: LIMIT.load(Ordering::SeqCst) }
}

/// Makes the direct map (covering physical addresses below `limit`) the window.
///
/// # Safety
/// The active page tables map every RAM frame below `limit` at `DIRECT_MAP_BASE + address`,
/// and keep doing so from now on.
pub(crate) unsafe fn switch_to_direct_map(limit: PhysAddr) {
    LIMIT.store(limit.as_u64(), Ordering::SeqCst);
    OFFSET.store(DIRECT_MAP_BASE, Ordering::SeqCst);
}

impl PhysWindow {
    /// The window's offset: the virtual address of physical address 0.
    pub(crate) fn offset(self) -> u64 {
        self.offset
    }

    /// The virtual address of the `bytes` at `addr`.
    ///
    /// # Panics
    /// When the range is outside the window: a bug in the caller, as only RAM the memory
    /// map reported is ever asked for.
    pub(crate) fn ptr(self, addr: PhysAddr, bytes: usize) -> *mut u8 {
        let end = addr.as_u64().checked_add(bytes as u64);
        assert!(end.is_some_and(|end| end <= self.limit), "{addr:?} + {bytes:#x} is outside the physical window");
        (self.offset + addr.as_u64()) as usize as *mut u8
    }
}

/// The frames' contents through the current window: what the dataspace layer zeroes and
/// copies with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KernelPhysMemory;

fn frame_bytes(count: FrameCount) -> usize {
    count.get() as usize * PAGE_SIZE
}

impl PhysMemory for KernelPhysMemory {
    fn zero(&self, frame: Frame, count: FrameCount) {
        let bytes = frame_bytes(count);
        let dst = current().ptr(frame.start_address(), bytes);
        // SAFETY: the window maps the frames, and `PhysMemory`'s contract gives them to the
        // caller, so no Rust object lives in them.
        unsafe { dst.write_bytes(0, bytes) };
    }

    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        let bytes = frame_bytes(count);
        let window = current();
        let (from, to) = (window.ptr(src.start_address(), bytes), window.ptr(dst.start_address(), bytes));
        // SAFETY: both runs are mapped by the window and owned by the caller. They may
        // overlap (the method is safe, so the trait's "disjoint" is no promise): `copy` is a
        // memmove.
        unsafe { core::ptr::copy(from, to, bytes) };
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        let from = current().ptr(addr, buf.len());
        // SAFETY: the window maps the range; `buf` is a distinct Rust buffer.
        unsafe { core::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        let to = current().ptr(addr, buf.len());
        // SAFETY: the window maps the range, which the caller owns; `buf` is a distinct buffer.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), to, buf.len()) };
    }
}
