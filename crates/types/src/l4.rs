//! L4Re's error codes, the one home of the numbers every memkit error's `code()` returns.
//!
//! The values are those of L4Re's `l4sys/err.h` (POSIX-like), positive as the header
//! defines them. **Sign convention:** an operation reports failure as the *negated* value,
//! as L4Re's functions do: `code()` of every error enum of the dataspace manager, the region
//! map and the sets of address spaces returns `-L4_ENOMEM`, `-L4_EINVAL`, ..., so a C caller
//! sees the negative number (`-12`, `-22`, ...) and success is [`L4_EOK`] (0).
//!
//! [`L4_ENOHANDLE`], [`L4_EIPC`] and [`L4_ENODM`] are not in `l4sys/err.h`: DROPS defines
//! them (`l4env/errno.h`), and seed 003 (`l4dm`) names them. `-L4_EIPC` and `-L4_ENODM`
//! describe a failed IPC to a manager or a missing manager; an in-process call cannot fail
//! that way, so no memkit error maps to them.
//!
//! ```
//! use memkit_types::l4::{L4_EINVAL, L4_ENOMEM};
//! // What a C caller receives for "out of memory" and "invalid argument".
//! assert_eq!((-L4_ENOMEM, -L4_EINVAL), (-12, -22));
//! ```

/// Success.
pub const L4_EOK: i32 = 0;
/// Operation not permitted.
pub const L4_EPERM: i32 = 1;
/// No such entity.
pub const L4_ENOENT: i32 = 2;
/// Out of memory (or quota).
pub const L4_ENOMEM: i32 = 12;
/// Permission denied.
pub const L4_EACCESS: i32 = 13;
/// Resource busy.
pub const L4_EBUSY: i32 = 16;
/// Entity already exists.
pub const L4_EEXIST: i32 = 17;
/// No handle (dataspace descriptor) available: DROPS `l4env/errno.h`, seed 003.
pub const L4_ENOHANDLE: i32 = 20;
/// Invalid argument.
pub const L4_EINVAL: i32 = 22;
/// Value out of range.
pub const L4_ERANGE: i32 = 34;
/// Address not available.
pub const L4_EADDRNOTAVAIL: i32 = 99;
/// IPC error calling the manager: DROPS `l4env/errno.h`, seed 003; never produced
/// in-process.
pub const L4_EIPC: i32 = 2001;
/// No dataspace manager found: DROPS `l4env/errno.h`, seed 003; never produced in-process.
pub const L4_ENODM: i32 = 2013;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_l4res_and_distinct() {
        let all = [
            L4_EOK,
            L4_EPERM,
            L4_ENOENT,
            L4_ENOMEM,
            L4_EACCESS,
            L4_EBUSY,
            L4_EEXIST,
            L4_ENOHANDLE,
            L4_EINVAL,
            L4_ERANGE,
            L4_EADDRNOTAVAIL,
            L4_EIPC,
            L4_ENODM,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(*a >= 0, "err.h's values are positive");
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!((L4_EPERM, L4_ENOMEM, L4_EINVAL, L4_ERANGE, L4_EADDRNOTAVAIL), (1, 12, 22, 34, 99));
    }
}
