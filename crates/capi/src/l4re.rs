//! L4Re's C bindings (seeds 000 and 001): `l4re_ma_*` (`L4Re::Mem_alloc`), `l4re_ds_*`
//! (`L4Re::Dataspace`), `l4re_rm_*` (`L4Re::Rm`) and the capability slots
//! (`l4re_util_cap_alloc`).
//!
//! Names, parameters and results are those of L4Re's `l4/re/c/*.h`. A capability is an
//! integer handle to a slot of the process ([`l4re_util_cap_alloc`]); `l4re_ma_alloc` puts
//! the new dataspace into the slot the caller passes, as L4Re does. The region map is the
//! process's one address space: `l4re_rm_attach` returns an address where C code loads and
//! stores.
//!
//! Every entry returns `0` (or a non-negative result) on success and a negated L4 error
//! code otherwise; a slot that was never allocated, was freed, or is empty where a
//! dataspace is needed gives `-L4_EINVAL`.

use core::ffi::{c_int, c_long, c_uchar, c_ulong, c_void};

use memkit_dataspace::{DataspaceId, FactoryId, MemAllocFlags};
use memkit_region::{AttachRequest, DetachFlags, Flags, Found};
use memkit_types::{PAGE_SHIFT, PhysAddr, Rights, VirtAddr};

use crate::errors::{L4_EBUSY, L4_EINVAL, L4_ENOENT, neg};
use crate::ffi;
use crate::state::{ME, State, with};
use crate::types::{
    L4_INVALID_CAP, l4_addr_t, l4_cap_idx_t, l4re_ds_flags_t, l4re_ds_offset_t, l4re_ds_size_t, l4re_ds_stats_t,
    l4re_ds_t, l4re_rm_flags_t, l4re_rm_offset_t,
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

/// `L4RE_RM_F_R`: a read-only region.
pub const L4RE_RM_F_R: l4re_rm_flags_t = 0x4;
/// `L4RE_RM_F_W`.
pub const L4RE_RM_F_W: l4re_rm_flags_t = 0x2;
/// `L4RE_RM_F_X`.
pub const L4RE_RM_F_X: l4re_rm_flags_t = 0x1;
/// `L4RE_RM_F_RX`.
pub const L4RE_RM_F_RX: l4re_rm_flags_t = 0x5;
/// `L4RE_RM_F_RW`.
pub const L4RE_RM_F_RW: l4re_rm_flags_t = 0x6;
/// `L4RE_RM_F_RWX`.
pub const L4RE_RM_F_RWX: l4re_rm_flags_t = 0x7;
/// `L4RE_RM_F_CACHING`: the cache bits (accepted; the hosted runtime maps write-back).
pub const L4RE_RM_F_CACHING: l4re_rm_flags_t = 0x30;
/// `L4RE_RM_F_RESERVED`: an area that accepts no attachment (`l4re_rm_reserve_area`).
pub const L4RE_RM_F_RESERVED: l4re_rm_flags_t = 0x800;
/// `L4RE_RM_F_SEARCH_ADDR`: search a free range at or above the start address.
pub const L4RE_RM_F_SEARCH_ADDR: l4re_rm_flags_t = 0x20000;
/// `L4RE_RM_F_IN_AREA`: attach inside the area that contains the start address.
pub const L4RE_RM_F_IN_AREA: l4re_rm_flags_t = 0x40000;
/// `L4RE_RM_F_EAGER_MAP`: map every page at attach time.
pub const L4RE_RM_F_EAGER_MAP: l4re_rm_flags_t = 0x80000;
/// `L4RE_RM_F_ATTACH_FLAGS`: the mask of the attach flags.
pub const L4RE_RM_F_ATTACH_FLAGS: l4re_rm_flags_t = 0xf0000;

/// `Rm::Detached_ds`: a whole region was detached.
pub const L4RE_RM_DETACHED_DS: c_int = 0;
/// `Rm::Kept_ds`: part of a region was detached, the rest stays.
pub const L4RE_RM_KEPT_DS: c_int = 1;
/// `Rm::Split_ds`: the middle of a region was detached; it is two regions now.
pub const L4RE_RM_SPLIT_DS: c_int = 2;
/// `Rm::Detach_result_mask`.
pub const L4RE_RM_DETACH_RESULT_MASK: c_int = 3;
/// `Rm::Detach_again`: more regions overlap the range.
pub const L4RE_RM_DETACH_AGAIN: c_int = 4;

/// Runs `f` on the system; the boot error or `f`'s code.
fn run(f: impl FnOnce(&mut State) -> Result<c_int, c_int>) -> c_int {
    match with(f) {
        Ok(Ok(v) | Err(v)) | Err(v) => v,
    }
}

/// The dataspace in slot `cap`; `-L4_EINVAL` for a bad or empty slot.
fn ds_of(s: &State, cap: l4re_ds_t) -> Result<DataspaceId, c_int> {
    match s.caps.get(cap) {
        Ok(Some(ds)) => Ok(ds),
        _ => Err(neg(L4_EINVAL)),
    }
}

fn rights_of(bits: u32) -> Rights {
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

fn bits_of(r: Rights) -> u32 {
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

fn vaddr(a: usize) -> Result<VirtAddr, c_int> {
    VirtAddr::try_new(a).map_err(|_| neg(L4_EINVAL))
}

// ---------------------------------------------------------------- capability slots

/// `l4re_util_cap_alloc`: an empty capability slot, or `L4_INVALID_CAP` when every slot is
/// taken.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_alloc() -> l4_cap_idx_t {
    with(|s| s.caps.alloc().unwrap_or(L4_INVALID_CAP)).unwrap_or(L4_INVALID_CAP)
}

/// `l4re_util_cap_free`: frees the slot `cap`; the dataspace it holds loses this handle (its
/// memory goes once no region shows it). A bad slot is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_util_cap_free(cap: l4_cap_idx_t) {
    let _ = with(|s| {
        if let Ok(Some(ds)) = s.caps.free(cap) {
            let _ = s.system.lock(|st| st.manager.close(ME, ds));
        }
    });
}

// ---------------------------------------------------------------- memory allocator

/// `l4re_ma_alloc`: `l4re_ma_alloc_align` with alignment 0 (a page).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc(size: c_long, mem: l4re_ds_t, flags: c_ulong) -> c_long {
    l4re_ma_alloc_align(size, mem, flags, 0)
}

/// `l4re_ma_alloc_align`: a new anonymous dataspace of `size` bytes (lazily backed, page
/// granular) into the empty slot `mem`. `flags`: `L4RE_MA_CONTINUOUS`, `L4RE_MA_PINNED`,
/// `L4RE_MA_SUPER_PAGES`; `align` is log2 (at least a page, a superpage with
/// `L4RE_MA_SUPER_PAGES`). A negative `size` with `L4RE_MA_CONTINUOUS` takes as much as
/// possible, leaving `-size` bytes of the quota.
///
/// Returns `0`, `-L4_ERANGE` (size or alignment not supported), `-L4_ENOMEM` (no memory),
/// `-L4_EINVAL` (a bad slot, unknown flags), `-L4_EBUSY` (the slot holds a dataspace).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_alloc_align(size: c_long, mem: l4re_ds_t, flags: c_ulong, align: c_ulong) -> c_long {
    let known = L4RE_MA_CONTINUOUS | L4RE_MA_PINNED | L4RE_MA_SUPER_PAGES;
    let code = run(|s| {
        match s.caps.get(mem) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(neg(L4_EBUSY)),
            Err(_) => return Err(neg(L4_EINVAL)),
        }
        if flags & !known != 0 {
            return Err(neg(L4_EINVAL));
        }
        let f = MemAllocFlags::from_bits_truncate(flags as u32);
        let align = u32::try_from(align).unwrap_or(u32::MAX);
        let ds = s
            .system
            .lock(|st| st.manager.alloc(FactoryId::ROOT, ME, i64::from(size), f, align, PhysAddr::zero()))
            .map_err(|e| e.code())?;
        let _ = s.caps.set(mem, Some(ds));
        Ok(0)
    });
    c_long::from(code)
}

/// `l4re_ma_free`: closes the dataspace in slot `mem` and empties the slot (the memory goes
/// once no region shows it). Returns `0` or `-L4_EINVAL` (a bad or empty slot).
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ma_free(mem: l4re_ds_t) -> c_long {
    let code = run(|s| {
        let ds = ds_of(s, mem)?;
        s.system.lock(|st| st.manager.close(ME, ds)).map_err(|e| e.code())?;
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

/// `l4re_ds_clear`: zeroes `size` bytes from `offset` (whole pages lose their memory).
/// Returns `0` or a negated error code.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_clear(ds: l4re_ds_t, offset: l4re_ds_offset_t, size: l4re_ds_size_t) -> c_long {
    c_long::from(run(|s| {
        let id = ds_of(s, ds)?;
        s.system.lock(|st| {
            let (m, mut r) = st.manager_and_revoker();
            m.clear(ME, id, offset, size, &mut r).map_err(|e| e.code())
        })?;
        Ok(0)
    }))
}

/// `l4re_ds_allocate`: gives every page of `size` bytes from `offset` its memory now.
/// Returns `0` or a negated error code.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_ds_allocate(ds: l4re_ds_t, offset: l4re_ds_offset_t, size: l4re_ds_size_t) -> c_long {
    c_long::from(run(|s| {
        let id = ds_of(s, ds)?;
        s.system.lock(|st| {
            let (m, mut r) = st.manager_and_revoker();
            m.allocate(ME, id, offset, size, &mut r).map_err(|e| e.code())
        })?;
        Ok(0)
    }))
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

// ---------------------------------------------------------------- region map

/// `l4re_rm_attach`: attaches `size` bytes of the dataspace in slot `mem` from `offs` on.
/// `*start` is the fixed address, the search start with `L4RE_RM_F_SEARCH_ADDR` (0: the
/// bottom of the address space) or an address in the area with `L4RE_RM_F_IN_AREA`; the
/// region's address is written back to `*start`. `flags`: the region's rights
/// (`L4RE_RM_F_R`, `_W`, `_X`; at most the handle's), `L4RE_RM_F_SEARCH_ADDR`,
/// `L4RE_RM_F_IN_AREA`, `L4RE_RM_F_EAGER_MAP`, cache bits (accepted). `align` is log2 (at
/// least a page).
///
/// Returns `0`, `-L4_ENOENT` (no area), `-L4_EPERM` (rights beyond the handle's),
/// `-L4_EINVAL` (a null `start`, a bad slot, bad flags), `-L4_EADDRNOTAVAIL` (the address is
/// taken), `-L4_ENOMEM`.
///
/// # Safety
/// A non-null `start` is valid for a read and a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_attach(
    start: *mut *mut c_void,
    size: c_ulong,
    flags: l4re_rm_flags_t,
    mem: l4re_ds_t,
    offs: l4re_rm_offset_t,
    align: c_uchar,
) -> c_int {
    let known = L4RE_RM_F_RWX | L4RE_RM_F_CACHING | L4RE_RM_F_ATTACH_FLAGS;
    run(|s| {
        // SAFETY: a non-null start is valid for a read by the caller's contract.
        let hint = unsafe { ffi::get(start) }.ok_or(neg(L4_EINVAL))? as usize;
        if flags & !known != 0
            || flags & L4RE_RM_F_ATTACH_FLAGS & !(L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_IN_AREA | L4RE_RM_F_EAGER_MAP) != 0
        {
            return Err(neg(L4_EINVAL));
        }
        let ds = ds_of(s, mem)?;
        let size = usize::try_from(size).map_err(|_| neg(L4_EINVAL))?;
        let space = s.space;
        let window = s.system.lock(|st| st.region_map(space).map(|m| m.window_start())).map_err(|e| e.code())?;
        let mut req = AttachRequest::new(ds, size, rights_of(flags)).offset(offs).align(align.max(PAGE_SHIFT as u8));
        if flags & L4RE_RM_F_SEARCH_ADDR != 0 {
            req = req.search(if hint == 0 { window } else { vaddr(hint)? });
        } else {
            req = req.at(vaddr(hint)?);
        }
        if flags & L4RE_RM_F_IN_AREA != 0 {
            req = req.flags(Flags::IN_AREA);
        }
        if flags & L4RE_RM_F_EAGER_MAP != 0 {
            req = req.flags(Flags::EAGER_MAP);
        }
        let addr = s.system.lock(|st| st.attach(space, &req)).map_err(|e| e.code())?.map_err(|e| e.code())?;
        // SAFETY: non-null (read above), valid for a write by the caller's contract.
        let _ = unsafe { ffi::put(start, addr.as_usize() as *mut c_void) };
        Ok(0)
    })
}

fn detach(s: &mut State, addr: usize) -> Result<(c_int, DataspaceId), c_int> {
    let at = vaddr(addr)?;
    let space = s.space;
    let d = s
        .system
        .lock(|st| st.detach(space, at, 1, DetachFlags::OVERLAP))
        .map_err(|e| e.code())?
        .map_err(|e| e.code())?;
    Ok((d.result as c_int | if d.again { L4RE_RM_DETACH_AGAIN } else { 0 }, d.dataspace))
}

/// `l4re_rm_detach`: detaches the region that contains `addr`. Returns the detach result
/// (`L4RE_RM_DETACHED_DS`, ...) or `-L4_ENOENT` when no region contains it.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_rm_detach(addr: *mut c_void) -> c_int {
    run(|s| detach(s, addr as usize).map(|(r, _)| r))
}

/// `l4re_rm_detach_ds`: as `l4re_rm_detach`, and writes the slot holding the detached
/// dataspace to `*ds` (`L4_INVALID_CAP` when no slot holds it) when `ds` is not null.
///
/// # Safety
/// A non-null `ds` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_detach_ds(addr: *mut c_void, ds: *mut l4re_ds_t) -> c_int {
    run(|s| {
        let (r, id) = detach(s, addr as usize)?;
        let cap = s.caps.find(id).unwrap_or(L4_INVALID_CAP);
        // SAFETY: null is refused by put; otherwise valid by the caller's contract.
        let _ = unsafe { ffi::put(ds, cap) };
        Ok(r)
    })
}

/// `l4re_rm_find`: the region overlapping `*addr .. *addr + *size`: its start, size, offset
/// in the dataspace, flags (rights) and the slot holding the dataspace (`L4_INVALID_CAP`
/// when none does) are written back. Returns `0`, `-L4_ENOENT` (no region there) or
/// `-L4_EINVAL` (a null pointer, a zero size).
///
/// # Safety
/// Non-null pointers are valid for reads and writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_find(
    addr: *mut l4_addr_t,
    size: *mut c_ulong,
    offset: *mut l4re_rm_offset_t,
    flags: *mut l4re_rm_flags_t,
    m: *mut l4re_ds_t,
) -> c_int {
    run(|s| {
        if offset.is_null() || flags.is_null() || m.is_null() {
            return Err(neg(L4_EINVAL));
        }
        // SAFETY: a non-null addr is valid for a read by the caller's contract.
        let a = unsafe { ffi::get(addr) }.ok_or(neg(L4_EINVAL))?;
        // SAFETY: as above.
        let n = unsafe { ffi::get(size) }.ok_or(neg(L4_EINVAL))?;
        let at = vaddr(a as usize)?;
        let space = s.space;
        let found = s
            .system
            .lock(|st| st.region_map(space).map(|map| map.find(at, n as usize)))
            .map_err(|e| e.code())?
            .map_err(|e| e.code())?;
        let Found::Region(r) = found else { return Err(neg(L4_ENOENT)) };
        let cap = s.caps.find(r.dataspace).unwrap_or(L4_INVALID_CAP);
        // SAFETY: each pointer is non-null (checked) and valid by the caller's contract.
        let _ = unsafe { ffi::put(addr, r.start.as_usize() as l4_addr_t) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(size, r.size as c_ulong) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(offset, r.offset) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(flags, bits_of(r.rights)) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(m, cap) };
        Ok(0)
    })
}

/// `l4re_rm_reserve_area`: reserves `size` bytes of the address space at `*start`, or with
/// `L4RE_RM_F_SEARCH_ADDR` searched from `*start` (0: the bottom) aligned to `2^align`; the
/// area's start is written back. `L4RE_RM_F_RESERVED` makes an area no region may be
/// attached in. Returns `0`, `-L4_EADDRNOTAVAIL`, `-L4_ENOMEM` (no room) or `-L4_EINVAL`.
///
/// # Safety
/// A non-null `start` is valid for a read and a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_reserve_area(
    start: *mut l4_addr_t,
    size: c_ulong,
    flags: l4re_rm_flags_t,
    align: c_uchar,
) -> c_int {
    run(|s| {
        // SAFETY: a non-null start is valid for a read by the caller's contract.
        let hint = unsafe { ffi::get(start) }.ok_or(neg(L4_EINVAL))? as usize;
        if flags & !(L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RESERVED) != 0 {
            return Err(neg(L4_EINVAL));
        }
        let size = usize::try_from(size).map_err(|_| neg(L4_EINVAL))?;
        let space = s.space;
        let at = s
            .system
            .lock(|st| {
                let window_start = st.region_map(space)?.window_start();
                let mut f = Flags::empty();
                if flags & L4RE_RM_F_RESERVED != 0 {
                    f |= Flags::RESERVED;
                }
                let from = if flags & L4RE_RM_F_SEARCH_ADDR != 0 {
                    f |= Flags::SEARCH_ADDR;
                    if hint == 0 { window_start } else { VirtAddr::try_new(hint).unwrap_or(window_start) }
                } else {
                    match VirtAddr::try_new(hint) {
                        Ok(v) => v,
                        Err(_) => return Ok(Err(neg(L4_EINVAL))),
                    }
                };
                let reserved = st.reserve_area(space, from, size, f, align.max(PAGE_SHIFT as u8), None)?;
                Ok(reserved.map_err(|e| e.code()))
            })
            .map_err(|e: memkit_host::SystemError| e.code())??;
        // SAFETY: non-null (read above), valid for a write by the caller's contract.
        let _ = unsafe { ffi::put(start, at.as_usize() as l4_addr_t) };
        Ok(0)
    })
}

/// `l4re_rm_free_area`: frees the area starting at `addr` (its regions stay). Returns `0`
/// or `-L4_ENOENT`.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_rm_free_area(addr: l4_addr_t) -> c_int {
    run(|s| {
        let at = vaddr(addr as usize).map_err(|_| neg(L4_ENOENT))?;
        let space = s.space;
        s.system
            .lock(|st| st.free_area(space, at).map(|r| r.map(drop)))
            .map_err(|e| e.code())?
            .map_err(|e| e.code())?;
        Ok(0)
    })
}

/// The number of capability slots in use (for tests and diagnostics).
#[unsafe(no_mangle)]
pub extern "C" fn memkit_cap_slots_used() -> c_ulong {
    with(|s| s.caps.allocated() as c_ulong).unwrap_or(0)
}
