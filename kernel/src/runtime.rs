//! What the C runtime and `std` would otherwise provide: `memcpy`, `memmove`, `memset`,
//! `memcmp`, `bcmp` (the target's `core` calls them; `compiler_builtins` leaves them to libc on
//! this target) and the unwinding personality symbol the precompiled `core` refers to.
//!
//! The copies are `rep movsb`/`rep stosb` in inline assembly so that the compiler cannot
//! recognise them as a call to themselves.
//!
//! # Unsafe
//! The symbols are unmangled `unsafe extern "C"` functions with the C library's contracts
//! (valid, and for `memcpy` disjoint, ranges of `n` bytes), which their callers in `core`
//! keep.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst`.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes, and the two do not overlap.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller provides `n` readable bytes at `src` and `n` writable at `dst`;
    // the direction flag is clear (the ABI keeps it so).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the two may overlap.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy reads each byte before it can be overwritten when `dst` is
        // below `src` or the ranges do not overlap; the caller provides the ranges.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: `dst` is above `src` and overlaps it: copy backwards from the last byte,
        // with the direction flag set for the copy and cleared again after it.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
                inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                options(nostack)
            );
        }
        dst
    }
}

/// Fills `n` bytes at `dst` with the low byte of `value`.
///
/// # Safety
/// `dst` is valid for writes of `n` bytes.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller provides `n` writable bytes at `dst`; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") value as u8, options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes: negative, zero or positive as `a` is below, equal to or above `b`.
///
/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // `wrapping_add` stays inside the caller's ranges (`i < n`), so it is the exact offset.
        // SAFETY: the caller provides `n` readable bytes at `a`, and `i < n`.
        let x = unsafe { a.wrapping_add(i).read() };
        // SAFETY: as above, for `b`.
        let y = unsafe { b.wrapping_add(i).read() };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Compares `n` bytes for equality: zero when equal.
///
/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded under the caller's guarantee.
    unsafe { memcmp(a, b, n) }
}

/// The unwinding personality the precompiled `core` refers to; never called, as every panic
/// aborts (`panic = "abort"`).
#[unsafe(no_mangle)]
pub(crate) extern "C" fn rust_eh_personality() {}
