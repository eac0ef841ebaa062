//! The raw memory syscalls the runtime needs, each behind a small safe-looking wrapper
//! whose caller states what it owns.
//!
//! Every function here works on address ranges that the runtime itself reserved (a
//! [`Window`](crate::Window) or the RAM's direct map) and that no Rust reference covers:
//! window memory is only ever reached through raw loads and stores, and the direct map
//! through raw copies. That is what makes replacing, protecting or unmapping them sound.
//!
//! # Unsafe
//! The wrappers are `unsafe fn`: they rely on the caller owning the range (a reservation the
//! runtime made) and on no Rust reference pointing into it, as stated above.

use core::ffi::c_void;
use std::os::fd::BorrowedFd;

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

/// Reserves `len` bytes of address space, inaccessible (`PROT_NONE`), anywhere.
pub(crate) fn reserve(len: usize) -> rustix::io::Result<*mut c_void> {
    // SAFETY: a null hint lets the kernel choose fresh addresses; nothing is replaced.
    unsafe { rustix::mm::mmap_anonymous(core::ptr::null_mut(), len, ProtFlags::empty(), reserve_flags()) }
}

fn reserve_flags() -> MapFlags {
    MapFlags::PRIVATE | MapFlags::NORESERVE
}

/// Maps `len` bytes of `fd` from `offset` on, shared and read-write, anywhere.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize, offset: u64) -> rustix::io::Result<*mut c_void> {
    // SAFETY: a null hint lets the kernel choose fresh addresses; nothing is replaced.
    unsafe {
        rustix::mm::mmap(core::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, fd, offset)
    }
}

/// Replaces the pages at `addr .. addr + len` with `len` bytes of `fd` from `offset` on;
/// with `populate`, also fills in the page-table entries now (`MAP_POPULATE`) so that the
/// first access does not fault again.
///
/// # Safety
/// `addr .. addr + len` lies inside a range reserved by the runtime, page aligned, and no
/// Rust reference points into it.
pub(crate) unsafe fn map_fixed(
    addr: *mut c_void,
    len: usize,
    prot: ProtFlags,
    fd: BorrowedFd<'_>,
    offset: u64,
    populate: bool,
) -> rustix::io::Result<()> {
    let flags = MapFlags::SHARED | MapFlags::FIXED | if populate { MapFlags::POPULATE } else { MapFlags::empty() };
    // SAFETY: the caller guarantees the range is the runtime's own and unreferenced, so
    // replacing what is there cannot invalidate anything Rust relies on.
    unsafe { rustix::mm::mmap(addr, len, prot, flags, fd, offset) }.map(|_| ())
}

/// Puts the pages at `addr .. addr + len` back to the reserved, inaccessible state.
///
/// # Safety
/// As for [`map_fixed`].
pub(crate) unsafe fn unmap_to_reserved(addr: *mut c_void, len: usize) -> rustix::io::Result<()> {
    // SAFETY: the caller guarantees the range is the runtime's own and unreferenced.
    unsafe { rustix::mm::mmap_anonymous(addr, len, ProtFlags::empty(), reserve_flags() | MapFlags::FIXED) }.map(|_| ())
}

/// Changes the protection of the pages at `addr .. addr + len`.
///
/// # Safety
/// As for [`map_fixed`].
pub(crate) unsafe fn protect(addr: *mut c_void, len: usize, prot: MprotectFlags) -> rustix::io::Result<()> {
    // SAFETY: the caller guarantees the range is the runtime's own and unreferenced.
    unsafe { rustix::mm::mprotect(addr, len, prot) }
}

/// Releases the address range `addr .. addr + len`.
///
/// # Safety
/// The range was returned by [`reserve`] or [`map_shared`] with this length, and nothing
/// uses it any more.
pub(crate) unsafe fn release(addr: *mut c_void, len: usize) {
    // SAFETY: the caller guarantees the range is ours and unused. A failure cannot happen
    // for a range mmap returned; if it did, the range would merely stay reserved.
    let _ = unsafe { rustix::mm::munmap(addr, len) };
}

/// Faults in every page of `addr .. addr + len` for writing (`MADV_POPULATE_WRITE`).
pub(crate) fn populate_write(addr: *mut c_void, len: usize) -> rustix::io::Result<()> {
    // SAFETY: populating only allocates and maps pages of an existing mapping; it never
    // changes their contents or replaces the mapping.
    unsafe { rustix::mm::madvise(addr, len, rustix::mm::Advice::LinuxPopulateWrite) }
}
