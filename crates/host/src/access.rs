//! Real loads and stores into window memory.
//!
//! These are the accesses that fault: each one is a volatile access the compiler keeps and
//! does not merge, so a test or a scenario touches exactly the bytes it names, and a page
//! that is not mapped yet goes through the fault handler.

use memkit_types::VirtAddr;

/// Loads the byte at `addr`.
///
/// # Safety
/// `addr` lies in a window registered with a resolver, or the caller accepts that the process
/// ends with `SIGSEGV` (an access the resolver refuses).
#[must_use]
pub unsafe fn load_u8(addr: VirtAddr) -> u8 {
    crate::altstack::prepare_thread();
    // SAFETY: the caller guarantees addr is window memory, which no Rust reference covers; a
    // fault is resolved by the handler or ends the process, never undefined behaviour.
    unsafe { (addr.as_usize() as *const u8).read_volatile() }
}

/// Stores `value` at `addr`.
///
/// # Safety
/// As for [`load_u8`].
pub unsafe fn store_u8(addr: VirtAddr, value: u8) {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8.
    unsafe { (addr.as_usize() as *mut u8).write_volatile(value) }
}

/// Loads the 8-byte little-endian word at `addr` (any alignment).
///
/// # Safety
/// As for [`load_u8`].
#[must_use]
pub unsafe fn load_u64(addr: VirtAddr) -> u64 {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8; read_unaligned tolerates any alignment.
    unsafe { (addr.as_usize() as *const u64).read_unaligned() }
}

/// Stores the 8-byte word `value` at `addr` (any alignment).
///
/// # Safety
/// As for [`load_u8`].
pub unsafe fn store_u64(addr: VirtAddr, value: u64) {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8; write_unaligned tolerates any alignment.
    unsafe { (addr.as_usize() as *mut u64).write_unaligned(value) }
}

/// Atomically adds `value` to the 8-byte word at `addr` (8-byte aligned) and returns the old
/// value.
///
/// # Safety
/// As for [`load_u8`], and `addr` is 8-byte aligned.
pub unsafe fn fetch_add_u64(addr: VirtAddr, value: u64) -> u64 {
    crate::altstack::prepare_thread();
    // SAFETY: the caller guarantees an aligned address in window memory, which only atomic or
    // volatile raw accesses reach, so treating it as an AtomicU64 for one access is sound.
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(addr.as_usize() as *mut u64) };
    word.fetch_add(value, core::sync::atomic::Ordering::SeqCst)
}
