//! Reading physical memory through the boot identity map (the first 4 GiB, 2 MiB pages),
//! before the kernel has page tables of its own.
//!
//! # Unsafe
//! Reads are unaligned reads of plain-data structures the loader wrote, inside the first
//! 4 GiB, which the boot page tables map one to one until the kernel switches to its own.

use memkit_types::PhysAddr;

/// The boot page tables map physical addresses below this one to themselves.
pub(crate) const IDENTITY_LIMIT: u64 = 4 << 30;

/// Reads a `T` at physical address `at`.
///
/// # Panics
/// When `at .. at + size_of::<T>()` is not below [`IDENTITY_LIMIT`].
pub(crate) fn read_identity<T: Copy>(at: PhysAddr) -> T {
    let end = at.as_u64().checked_add(size_of::<T>() as u64);
    assert!(end.is_some_and(|end| end <= IDENTITY_LIMIT), "{at:?} is not identity-mapped");
    let ptr = at.as_u64() as usize as *const T;
    // SAFETY: the range is identity-mapped by the boot page tables; callers read
    // plain-data structures the loader wrote (`T: Copy`, any bit pattern of the integer
    // fields is valid), and `read_unaligned` makes no alignment assumption.
    unsafe { ptr.read_unaligned() }
}
