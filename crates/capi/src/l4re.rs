//! L4Re's C bindings (seed 000): `l4re_ma_*` (`L4Re::Mem_alloc`), `l4re_ds_*`
//! (`L4Re::Dataspace`) and the capability slots (`l4re_util_cap_alloc`); the region map's
//! `l4re_rm_*` are in [`crate::l4re_rm`], the factories in [`crate::factory`].
//!
//! Names, parameters and results are those of L4Re's `l4/re/c/*.h`. A capability is an
//! integer handle to a slot of the process ([`l4re_util_cap_alloc`]); `l4re_ma_alloc` puts
//! the new dataspace into the slot the caller passes, as L4Re does. The `_srv` forms take
//! the allocator's slot: the root allocator (`l4re_env()->mem_alloc`) or a factory with a
//! quota.
//!
//! Every entry returns `0` (or a non-negative result) on success and a negated L4 error
//! code otherwise; a slot that was never allocated, was freed, or is empty where a
//! dataspace is needed gives `-L4_EINVAL`.

use core::ffi::{c_int, c_long, c_ulong};

use memkit_dataspace::{DataspaceId, FactoryId, MemAllocFlags};
use memkit_host::PoolSource;
use memkit_types::{PhysAddr, Rights, VirtAddr};

use crate::errors::{L4_EBUSY, L4_EINVAL, neg};
use crate::ffi;
use crate::handles::Object;
use crate::state::{ME, ROOT_FACTORY_CAP, State, run, with};
use crate::types::{
    L4_INVALID_CAP, l4_addr_t, l4_cap_idx_t, l4re_ds_flags_t, l4re_ds_offset_t, l4re_ds_size_t, l4re_ds_stats_t,
    l4re_ds_t,
};

/// `L4RE_MA_CONTINUOUS`: physically contiguous memory.
pub const L4RE_MA_CONTINUOUS: c_ulong = 0x01;
/// `L4RE_MA_PINNED`: memory allocated at once and never given back while the dataspace
/// lives.
pub const L4RE_MA_PINNED: c_ulong = 0x02;
/// `L4RE_MA_SUPER_PAGES`: backed by superpages.
pub const L4RE_MA_SUPER_PAGES: c_ulong = 0x04;

/// `L4_FPAGE_X`: execute right.
pub const L4_FPAGE_X: u32 = 0x1;
/// `L4_FPAGE_W`: write right.
pub const L4_FPAGE_W: u32 = 0x2;
/// `L4_FPAGE_RO`: read right.
pub const L4_FPAGE_RO: u32 = 0x4;
/// `L4_FPAGE_RW`: read and write.
pub const L4_FPAGE_RW: u32 = 0x6;
/// `L4_FPAGE_RX`: read and execute.
pub const L4_FPAGE_RX: u32 = 0x5;
/// `L4_FPAGE_RWX`: every right.
pub const L4_FPAGE_RWX: u32 = 0x7;

/// `L4RE_DS_F_R`: the handle may read.
pub const L4RE_DS_F_R: l4re_ds_flags_t = 0x4;
/// `L4RE_DS_F_W`: the handle may write.
pub const L4RE_DS_F_W: l4re_ds_flags_t = 0x2;
/// `L4RE_DS_F_X`: the handle may execute.
pub const L4RE_DS_F_X: l4re_ds_flags_t = 0x1;
/// `L4RE_DS_F_RW`.
pub const L4RE_DS_F_RW: l4re_ds_flags_t = 0x6;
/// `L4RE_DS_F_RX`.
pub const L4RE_DS_F_RX: l4re_ds_flags_t = 0x5;
/// `L4RE_DS_F_RWX`.
pub const L4RE_DS_F_RWX: l4re_ds_flags_t = 0x7;
/// `L4RE_DS_F_RIGHTS_MASK`.
pub const L4RE_DS_F_RIGHTS_MASK: l4re_ds_flags_t = 0x0f;

/// The dataspace in slot `cap`; `-L4_EINVAL` for a bad or empty slot.
pub(crate) fn ds_of(s: &State, cap: l4re_ds_t) -> Result<DataspaceId, c_int> {
    match s.caps.get(cap) {
        Ok(Some(Object::Ds(ds))) => Ok(ds),
        _ => Err(neg(L4_EINVAL)),
    }
}

pub(crate) fn rights_of(bits: u32) -> Rights {
    let mut r = Rights::empty();
    if bits & L4_FPAGE_RO != 0 {
        r |= Rights::READ;
    }
    if bits & L4_FPAGE_W != 0 {
        r |= Rights::WRITE;
    }
    if bits & L4_FPAGE_X != 0 {
        r |= Rights::EXECUTE;
    }
    r
}

pub(crate) fn bits_of(r: Rights) -> u32 {
    let mut b = 0;
    if r.contains(Rights::READ) {
        b |= L4_FPAGE_RO;
    }
    if r.contains(Rights::WRITE) {
        b |= L4_FPAGE_W;
    }
    if r.contains(Rights::EXECUTE) {
        b |= L4_FPAGE_X;
    }
    b
}

pub(crate) fn vaddr(a: usize) -> Result<VirtAddr, c_int> {
    VirtAddr::try_new(a).map_err(|_| neg(L4_EINVAL))
}

// ---------------------------------------------------------------- capability slots

/// `l4re_util_cap_alloc`: an empty capability slot, or `L4_INVALID_CAP` when every slot is
/// taken.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_alloc() -> l4_cap_idx_t {
    with(|s| s.caps.alloc().unwrap_or(L4_INVALID_CAP)).unwrap_or(L4_INVALID_CAP)
}

/// `l4re_util_cap_free`: frees the slot `cap`. A dataspace it holds loses this handle (its
/// memory goes once no region shows it); a factory it holds is destroyed, its limit given
/// back to its parent, once no dataspace or factory is charged to it. A bad slot, and the
/// root allocator's (`l4re_env()->mem_alloc`), are ignored.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_free(cap: l4_cap_idx_t) {
    let _ = with(|s| {
        if cap == ROOT_FACTORY_CAP {
            return;
        }
        match s.caps.free(cap) {
            Ok(Some(Object::Ds(ds))) => {
                let _ = s.system.lock(|st| st.manager.close(ME, ds));
            }
            Ok(Some(Object::Factory(f))) => s.orphans.push(f),
            Ok(None) | Err(_) => {}
        }
    });
}

// ---------------------------------------------------------------- memory allocator

/// The factory in slot `cap`; `-L4_EINVAL` for a bad slot or one holding no factory.
pub(crate) fn factory_of(s: &State, cap: l4_cap_idx_t) -> Result<FactoryId, c_int> {
    match s.caps.get(cap) {
        Ok(Some(Object::Factory(f))) => Ok(f),
        _ => Err(neg(L4_EINVAL)),
    }
}

/// Checks that slot `cap` is allocated and empty: `-L4_EINVAL` for a bad slot, `-L4_EBUSY`
/// for one that holds an object.
pub(crate) fn empty_slot(s: &State, cap: l4_cap_idx_t) -> Result<(), c_int> {
    match s.caps.get(cap) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(neg(L4_EBUSY)),
        Err(_) => Err(neg(L4_EINVAL)),
    }
}

/// `l4re_ma_alloc`: `l4re_ma_alloc_align` with alignment 0 (a page).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc(size: c_long, mem: l4re_ds_t, flags: c_ulong) -> c_long {
    l4re_ma_alloc_align_srv(ROOT_FACTORY_CAP, size, mem, flags, 0)
}

/// `l4re_ma_alloc_align`: `l4re_ma_alloc_align_srv` from the root allocator
/// (`l4re_env()->mem_alloc`).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc_align(size: c_long, mem: l4re_ds_t, flags: c_ulong, align: c_ulong) -> c_long {
    l4re_ma_alloc_align_srv(ROOT_FACTORY_CAP, size, mem, flags, align)
}

/// `l4re_ma_alloc_srv`: `l4re_ma_alloc_align_srv` with alignment 0 (a page).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc_srv(srv: l4_cap_idx_t, size: c_long, mem: l4re_ds_t, flags: c_ulong) -> c_long {
    l4re_ma_alloc_align_srv(srv, size, mem, flags, 0)
}

/// `l4re_ma_alloc_align_srv`: a new anonymous dataspace of `size` bytes (lazily backed,
/// page granular) from the allocator in slot `srv` (`l4re_env()->mem_alloc`, or a factory
/// made by `l4_factory_create_factory`, whose quota it is charged to), into the empty slot
/// `mem`. `flags`: `L4RE_MA_CONTINUOUS`, `L4RE_MA_PINNED`, `L4RE_MA_SUPER_PAGES`; `align` is
/// log2 (at least a page, a superpage with `L4RE_MA_SUPER_PAGES`). A negative `size` with
/// `L4RE_MA_CONTINUOUS` takes as much as possible, leaving `-size` bytes of the quota.
///
/// Returns `0`, `-L4_ERANGE` (size or alignment not supported), `-L4_ENOMEM` (no memory, or
/// past the quota), `-L4_EINVAL` (a bad slot, `srv` holding no allocator, unknown flags),
/// `-L4_EBUSY` (`mem` holds an object).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc_align_srv(
    srv: l4_cap_idx_t,
    size: c_long,
    mem: l4re_ds_t,
    flags: c_ulong,
    align: c_ulong,
) -> c_long {
    let known = L4RE_MA_CONTINUOUS | L4RE_MA_PINNED | L4RE_MA_SUPER_PAGES;
    let code = run(|s| {
        let factory = factory_of(s, srv)?;
        empty_slot(s, mem)?;
        if flags & !known != 0 {
            return Err(neg(L4_EINVAL));
        }
        let f = MemAllocFlags::from_bits_truncate(flags as u32);
        let align = u32::try_from(align).unwrap_or(u32::MAX);
        let ds = s
            .system
            .lock(|st| st.manager.alloc(factory, ME, i64::from(size), f, align, PhysAddr::zero()))
            .map_err(|e| e.code())?;
        let _ = s.caps.set(mem, Some(Object::Ds(ds)));
        Ok(0)
    });
    c_long::from(code)
}

/// `l4re_ma_free`: `l4re_ma_free_srv` of the root allocator.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_free(mem: l4re_ds_t) -> c_long {
    l4re_ma_free_srv(ROOT_FACTORY_CAP, mem)
}

/// `l4re_ma_free_srv`: closes the dataspace in slot `mem`, which the allocator in slot `srv`
/// made, and empties the slot (the memory goes once no region shows it, and with it the
/// charge to the allocator's quota). Returns `0` or `-L4_EINVAL` (a bad or empty slot, `srv`
/// holding no allocator or not the one that made the dataspace).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_free_srv(srv: l4_cap_idx_t, mem: l4re_ds_t) -> c_long {
    let code = run(|s| {
        let factory = factory_of(s, srv)?;
        let ds = ds_of(s, mem)?;
        s.system.lock(|st| match st.manager.info(ds) {
            Ok(i) if i.factory != factory => Err(neg(L4_EINVAL)),
            _ => st.manager.close(ME, ds).map_err(|e| e.code()),
        })?;
        let _ = s.caps.set(mem, None);
        Ok(0)
    });
    c_long::from(code)
}

// ---------------------------------------------------------------- dataspaces

/// `l4re_ds_size`: the dataspace's size in bytes; for a bad slot, `-L4_EINVAL` converted
/// to the unsigned type (as L4Re returns an error there).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_size(ds: l4re_ds_t) -> l4re_ds_size_t {
    let r = with(|s| {
        let id = ds_of(s, ds)?;
        s.system.lock(|st| st.manager.info(id).map(|i| i.size)).map_err(|e| e.code())
    });
    match r {
        Ok(Ok(size)) => size,
        Ok(Err(e)) | Err(e) => i64::from(e) as u64,
    }
}

/// `l4re_ds_flags`: the rights of the handle (`L4RE_DS_F_*`); for a bad slot, `-L4_EINVAL`
/// converted to the unsigned type.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_flags(ds: l4re_ds_t) -> l4re_ds_flags_t {
    let r = with(|s| {
        let id = ds_of(s, ds)?;
        s.system.lock(|st| st.manager.rights(id)).map_err(|e| e.code())
    });
    match r {
        Ok(Ok(rights)) => l4re_ds_flags_t::from(bits_of(rights)),
        Ok(Err(e)) | Err(e) => c_long::from(e) as c_ulong,
    }
}

/// `l4re_ds_info`: the size and the handle's rights into `*stats`. Returns `0` or
/// `-L4_EINVAL` (a bad slot, a null `stats`).
///
/// # Safety
/// A non-null `stats` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_ds_info(ds: l4re_ds_t, stats: *mut l4re_ds_stats_t) -> c_int {
    run(|s| {
        if stats.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let id = ds_of(s, ds)?;
        let (size, rights) =
            s.system.lock(|st| st.manager.info(id).map(|i| (i.size, id.rights()))).map_err(|e| e.code())?;
        let v = l4re_ds_stats_t { size, flags: l4re_ds_flags_t::from(bits_of(rights)) };
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(stats, v) };
        Ok(0)
    })
}

/// `l4re_ds_copy_in`: copies `size` bytes from `src_offs` of `src` to `dst_offs` of `ds`
/// (the two may be the same dataspace, the ranges may overlap). Returns `0`, `-L4_EINVAL`
/// (a bad slot), `-L4_ERANGE` (a range past a dataspace's end), `-L4_EPERM` (a handle
/// without the right), `-L4_ENOMEM`.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_copy_in(
    ds: l4re_ds_t,
    dst_offs: l4re_ds_offset_t,
    src: l4re_ds_t,
    src_offs: l4re_ds_offset_t,
    size: l4re_ds_size_t,
) -> c_int {
    run(|s| {
        let dst = ds_of(s, ds)?;
        let from = ds_of(s, src)?;
        s.system.lock(|st| copy_in(st, dst, dst_offs, from, src_offs, size))?;
        Ok(0)
    })
}

/// The bytes one step of a copy moves.
const COPY_CHUNK: u64 = 64 << 10;

fn copy_in(
    st: &mut memkit_host::Stack<memkit_host::PoolSource>,
    dst: DataspaceId,
    dst_offs: u64,
    src: DataspaceId,
    src_offs: u64,
    size: u64,
) -> Result<(), c_int> {
    use memkit_dataspace::RangeError;
    let src_size = st.manager.info(src).map_err(|e| e.code())?.size;
    let dst_size = st.manager.info(dst).map_err(|e| e.code())?.size;
    let fits = |off: u64, total: u64| off.checked_add(size).is_some_and(|e| e <= total);
    if !fits(src_offs, src_size) {
        return Err(RangeError::OutOfRange(src_offs, size).code());
    }
    if !fits(dst_offs, dst_size) {
        return Err(RangeError::OutOfRange(dst_offs, size).code());
    }
    // Overlapping ranges of one dataspace copy from the end when the destination is above.
    let backwards = src == dst && dst_offs > src_offs;
    let mut buf = vec![0u8; size.min(COPY_CHUNK) as usize];
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(COPY_CHUNK);
        let at = if backwards { size - done - n } else { done };
        let piece = &mut buf[..n as usize];
        let (m, mut revoker) = st.manager_and_revoker();
        m.read(src, src_offs + at, piece).map_err(|e| e.code())?;
        m.write(dst, dst_offs + at, piece, &mut revoker).map_err(|e| e.code())?;
        done += n;
    }
    Ok(())
}

/// The manager of the hosted system.
type HostManager = memkit_dataspace::Manager<PoolSource, memkit_host::RamRef>;

/// Runs `op` on the dataspace in slot `ds` with the manager and its revoker: `0` or the
/// code.
fn change(
    ds: l4re_ds_t,
    op: impl FnOnce(&mut HostManager, DataspaceId, &mut memkit_host::SpacesRevoker<'_>) -> Result<(), c_int>,
) -> c_long {
    c_long::from(run(|s| {
        let id = ds_of(s, ds)?;
        s.system.lock(|st| {
            let (m, mut r) = st.manager_and_revoker();
            op(m, id, &mut r)
        })?;
        Ok(0)
    }))
}

/// `l4re_ds_clear`: zeroes `size` bytes from `offset` (whole pages lose their memory).
/// Returns `0` or a negated error code.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_clear(ds: l4re_ds_t, offset: l4re_ds_offset_t, size: l4re_ds_size_t) -> c_long {
    change(ds, |m, id, r| m.clear(ME, id, offset, size, r).map_err(|e| e.code()))
}

/// `l4re_ds_allocate`: gives every page of `size` bytes from `offset` its memory now.
/// Returns `0` or a negated error code.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_allocate(ds: l4re_ds_t, offset: l4re_ds_offset_t, size: l4re_ds_size_t) -> c_long {
    change(ds, |m, id, r| m.allocate(ME, id, offset, size, r).map_err(|e| e.code()))
}

/// `l4re_ds_phys`: the physical address of `offset` in the dataspace into `*phys_addr`, and
/// how many bytes from there are physically contiguous into `*phys_size`. The page must have
/// its memory (`L4RE_MA_PINNED`, or `l4re_ds_allocate`). Returns `0` or a negated error code
/// (`-L4_EINVAL` for a null pointer or a bad slot).
///
/// # Safety
/// Non-null pointers are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_ds_phys(
    ds: l4re_ds_t,
    offset: l4_addr_t,
    phys_addr: *mut l4_addr_t,
    phys_size: *mut crate::types::l4_size_t,
) -> c_int {
    run(|s| {
        if phys_addr.is_null() || phys_size.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let id = ds_of(s, ds)?;
        let (addr, len) = s.system.lock(|st| st.manager.phys_addr(id, offset as u64)).map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(phys_addr, addr.as_u64() as l4_addr_t) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(phys_size, len as crate::types::l4_size_t) };
        Ok(0)
    })
}

/// The number of capability slots in use (for tests and diagnostics).
#[unsafe(no_mangle)]
pub extern "C" fn memkit_cap_slots_used() -> c_ulong {
    with(|s| s.caps.allocated() as c_ulong).unwrap_or(0)
}
