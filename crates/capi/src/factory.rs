//! Factories (seed 000: `L4::Factory::create_factory`, which `L4Re::Mem_alloc` inherits) in
//! the shape of L4's C bindings: `l4_factory_create_factory` puts a new memory allocator
//! with a quota into a capability slot, and `l4re_ma_alloc_srv` allocates from it.
//!
//! ```text
//!   l4re_env()->mem_alloc ── l4_factory_create_factory(limit) ──▶ a factory in a slot
//!        (the root: all memory)                                   │ its limit is charged to
//!                                                                 │ its parent while it lives
//!   l4re_ma_alloc_srv(factory, size, ds, flags) ──▶ a dataspace charged to the factory
//!   l4re_util_cap_free(factory) ──▶ destroyed once nothing is charged to it
//! ```
//!
//! The calls return an [`l4_msgtag_t`] as L4's do; `l4_error(tag)` gives `0` or the negated
//! L4 code.

use core::ffi::{c_long, c_ulong};

use crate::errors::neg;
use crate::handles::Object;
use crate::l4re::{empty_slot, factory_of};
use crate::state::{ROOT_FACTORY_CAP, run, with};
use crate::types::{l4_cap_idx_t, l4_msgtag_t, l4re_env_t};

/// Where the label (the result code) starts in a tag's word.
const LABEL_SHIFT: u32 = 16;

/// A tag whose label is `code`.
fn tag(code: c_long) -> l4_msgtag_t {
    l4_msgtag_t { raw: code.wrapping_shl(LABEL_SHIFT) }
}

/// `l4_msgtag_label`: the tag's label (a call's result code).
#[unsafe(no_mangle)]
pub extern "C" fn l4_msgtag_label(t: l4_msgtag_t) -> c_long {
    t.raw >> LABEL_SHIFT
}

/// `l4_error`: a call's result: `0` (`L4_EOK`) or a negated L4 error code.
#[unsafe(no_mangle)]
pub extern "C" fn l4_error(t: l4_msgtag_t) -> c_long {
    l4_msgtag_label(t)
}

/// The process's environment: its root memory allocator.
static ENV: l4re_env_t = l4re_env_t { mem_alloc: ROOT_FACTORY_CAP };

/// `l4re_env`: the process's environment (`mem_alloc`: the root memory allocator's slot).
/// Boots the system first, so that the slot holds the allocator.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_env() -> *const l4re_env_t {
    let _ = with(|_| ());
    &raw const ENV
}

/// `l4_factory_create_factory`: a new memory allocator with a quota of `limit` bytes, nested
/// in the allocator in slot `factory` (whose quota the limit is charged to while the new
/// one lives), put into the empty slot `target_cap`.
///
/// `l4_error` of the tag: `0`, `-L4_ENOMEM` (`factory` has less than `limit` left),
/// `-L4_EINVAL` (a bad slot, `factory` holding no allocator), `-L4_EBUSY` (`target_cap`
/// holds an object), `-L4_ENOHANDLE` (no factory id left).
#[unsafe(no_mangle)]
pub extern "C" fn l4_factory_create_factory(
    factory: l4_cap_idx_t,
    target_cap: l4_cap_idx_t,
    limit: c_ulong,
) -> l4_msgtag_t {
    let code = run(|s| {
        let parent = factory_of(s, factory)?;
        empty_slot(s, target_cap)?;
        let child = s.system.lock(|st| st.manager.create_factory(parent, limit as u64)).map_err(|e| e.code())?;
        let _ = s.caps.set(target_cap, Some(Object::Factory(child)));
        Ok(0)
    });
    tag(c_long::from(code))
}

/// The quota of the allocator in slot `factory`: its limit and the bytes charged to it
/// (dataspaces' backing and nested factories' limits) into `*limit` and `*used`. Returns `0`
/// or `-L4_EINVAL` (a bad slot, one holding no allocator, a null pointer).
///
/// # Safety
/// Non-null pointers are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memkit_factory_quota(
    factory: l4_cap_idx_t,
    limit: *mut c_ulong,
    used: *mut c_ulong,
) -> core::ffi::c_int {
    run(|s| {
        if limit.is_null() || used.is_null() {
            return Err(neg(crate::errors::L4_EINVAL));
        }
        let f = factory_of(s, factory)?;
        let q = s.system.lock(|st| st.manager.quota(f)).ok_or(neg(crate::errors::L4_EINVAL))?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { crate::ffi::put(limit, q.limit as c_ulong) };
        // SAFETY: as above.
        let _ = unsafe { crate::ffi::put(used, q.used as c_ulong) };
        Ok(0)
    })
}
