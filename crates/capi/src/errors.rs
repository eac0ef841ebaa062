//! L4Re's error numbers, the one place the C entries take them from.
//!
//! Every `l4re_*` and `l4dm_*` entry returns `0` or a negated number (`-L4_ENOMEM`); the
//! numbers are memkit's one home of them ([`memkit_types::l4`]), checked here at
//! compile time, written out as literals so that cbindgen puts them in the header.

use core::ffi::c_int;

use memkit_types::l4 as codes;

/// Success.
pub const L4_EOK: c_int = 0;
/// Operation not permitted.
pub const L4_EPERM: c_int = 1;
/// No such entity (no region or area at the address).
pub const L4_ENOENT: c_int = 2;
/// Out of memory (or quota).
pub const L4_ENOMEM: c_int = 12;
/// Resource busy.
pub const L4_EBUSY: c_int = 16;
/// Already there.
pub const L4_EEXIST: c_int = 17;
/// No handle (dataspace descriptor or capability slot) available (DROPS).
pub const L4_ENOHANDLE: c_int = 20;
/// Invalid argument: a bad handle, a null pointer that is written, a bad value.
pub const L4_EINVAL: c_int = 22;
/// Value out of range.
pub const L4_ERANGE: c_int = 34;
/// The address is not available.
pub const L4_EADDRNOTAVAIL: c_int = 99;
/// IPC error calling the manager (seed 003); never returned in-process.
pub const L4_EIPC: c_int = 2001;
/// No dataspace manager found (seed 003): a `dsm_id` that names no manager.
pub const L4_ENODM: c_int = 2013;

// The numbers are `memkit_types::l4`'s: a change there fails the build here.
const _: () = {
    assert!(L4_EPERM == codes::L4_EPERM);
    assert!(L4_ENOENT == codes::L4_ENOENT);
    assert!(L4_ENOMEM == codes::L4_ENOMEM);
    assert!(L4_EBUSY == codes::L4_EBUSY);
    assert!(L4_ENOHANDLE == codes::L4_ENOHANDLE);
    assert!(L4_EINVAL == codes::L4_EINVAL);
    assert!(L4_ERANGE == codes::L4_ERANGE);
    assert!(L4_EIPC == codes::L4_EIPC);
    assert!(L4_ENODM == codes::L4_ENODM);
    assert!(L4_EADDRNOTAVAIL == codes::L4_EADDRNOTAVAIL);
    assert!(L4_EEXIST == codes::L4_EEXIST);
};

/// `-code`: what an entry returns for the error `code`.
#[must_use]
pub(crate) const fn neg(code: c_int) -> c_int {
    -code
}
