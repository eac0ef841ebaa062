//! Every access through a pointer a C caller passed: each checks for null first.
//!
//! # Unsafe
//! Each function is `unsafe fn`: a non-null pointer must be valid for the access, as the C
//! entry's contract says. Null is always safe and answered with `false` / `None`.

use core::ffi::c_char;

/// Writes `value` through `ptr`; `false` (nothing written) when `ptr` is null.
///
/// # Safety
/// A non-null `ptr` is valid for a write of `T` and suitably aligned.
#[must_use]
pub unsafe fn put<T>(ptr: *mut T, value: T) -> bool {
    if ptr.is_null() {
        return false;
    }
    // SAFETY: non-null, and valid for a write of T by the caller's contract.
    unsafe { ptr.write(value) };
    true
}

/// Reads `*ptr`; `None` when `ptr` is null.
///
/// # Safety
/// A non-null `ptr` is valid for a read of `T` and suitably aligned.
#[must_use]
pub unsafe fn get<T: Copy>(ptr: *const T) -> Option<T> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, and valid for a read of T by the caller's contract.
    Some(unsafe { ptr.read() })
}

/// The longest name memkit reads from a C string (`L4DM_NAME_MAX_LEN` bytes without the
/// terminating NUL); a longer string is cut there.
pub(crate) const NAME_MAX: usize = crate::l4dm::L4DM_NAME_MAX_LEN - 1;

/// A NUL-terminated C string of at most `L4DM_NAME_MAX_LEN - 1` bytes (cut there, never read beyond),
/// lossily as UTF-8; the empty string for null.
///
/// # Safety
/// A non-null `ptr` points at a NUL-terminated string, or at least `L4DM_NAME_MAX_LEN - 1` readable
/// bytes.
#[must_use]
pub unsafe fn name(ptr: *const c_char) -> String {
    let mut bytes = Vec::new();
    if ptr.is_null() {
        return String::new();
    }
    for i in 0..NAME_MAX {
        // SAFETY: bytes before the NUL (or the first NAME_MAX bytes) are readable by the
        // caller's contract; the loop stops at the NUL.
        let b = unsafe { ptr.wrapping_add(i).read() } as u8;
        if b == 0 {
            break;
        }
        bytes.push(b);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Copies `name` into the buffer at `buf` of `L4DM_NAME_MAX_LEN` bytes, NUL-terminated;
/// `false` when `buf` is null.
///
/// # Safety
/// A non-null `buf` is valid for writes of `L4DM_NAME_MAX_LEN` bytes.
#[must_use]
pub unsafe fn put_name(buf: *mut c_char, name: &str) -> bool {
    if buf.is_null() {
        return false;
    }
    let bytes = &name.as_bytes()[..name.len().min(NAME_MAX)];
    for (i, &b) in bytes.iter().chain(core::iter::once(&0)).enumerate() {
        // SAFETY: i <= NAME_MAX, inside the caller's buffer of NAME_MAX + 1 bytes.
        unsafe { buf.wrapping_add(i).write(b as c_char) };
    }
    true
}
