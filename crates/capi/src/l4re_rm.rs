//! L4Re's region map through its C bindings (seed 001): `l4re_rm_*` (`L4Re::Rm`) over the
//! process's one address space.
//!
//! `l4re_rm_attach` returns an address where C code loads and stores; the first touch of a
//! page is a real page fault that memkit serves. Areas (`l4re_rm_reserve_area`) keep
//! attachments out, or with `L4RE_RM_F_IN_AREA` take them in. Every entry returns `0` (or a
//! non-negative result) on success and a negated L4 error code otherwise.

use core::ffi::{c_int, c_uchar, c_ulong, c_void};

use memkit_dataspace::DataspaceId;
use memkit_region::{AreaInfo, AttachRequest, DetachFlags, Flags, Found, RegionInfo, RegionMap};
use memkit_types::{CacheMode, PAGE_SHIFT, Rights, VirtAddr};

use crate::errors::{L4_EINVAL, L4_ENOENT, neg};
use crate::ffi;
use crate::l4re::{bits_of, ds_of, rights_of, vaddr};
use crate::state::{State, run};
use crate::types::{L4_INVALID_CAP, l4_addr_t, l4re_ds_t, l4re_rm_flags_t, l4re_rm_offset_t, l4re_rm_range_t};

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
        let area = s.system.lock(|st| st.free_area(space, at)).map_err(|e| e.code())?.map_err(|e| e.code())?;
        // The area's DROPS id (`l4rm_area_*`), if it has one, names nothing now.
        s.areas.retain(|_, start| *start != area.start.as_usize());
        Ok(0)
    })
}

/// Lists up to `num` entries from `start` on into `out` with `list`: the count, or the code.
///
/// # Safety
/// A non-null `out` is valid for `num` writes.
unsafe fn list(
    s: &mut State,
    start: l4_addr_t,
    out: *mut l4re_rm_range_t,
    num: c_ulong,
    list: impl FnOnce(&RegionMap<DataspaceId>, VirtAddr, usize) -> Vec<(VirtAddr, usize)>,
) -> Result<c_int, c_int> {
    if out.is_null() {
        return Err(neg(L4_EINVAL));
    }
    let num = usize::try_from(num).unwrap_or(usize::MAX).min(L4RE_RM_LIST_MAX);
    // An address past the top of the address space lists nothing.
    let Ok(from) = VirtAddr::try_new(start as usize) else { return Ok(0) };
    let space = s.space;
    let found = s.system.lock(|st| st.region_map(space).map(|m| list(m, from, num))).map_err(|e| e.code())?;
    for (i, (at, size)) in found.iter().enumerate() {
        let r = l4re_rm_range_t { start: at.as_usize() as l4_addr_t, end: (at.as_usize() + size - 1) as l4_addr_t };
        // SAFETY: i < num, inside the caller's array of num entries.
        let _ = unsafe { ffi::put(out.wrapping_add(i), r) };
    }
    Ok(found.len() as c_int)
}

/// The most entries one `l4re_rm_get_regions` or `l4re_rm_get_areas` call lists.
pub const L4RE_RM_LIST_MAX: usize = 4096;

/// `l4re_rm_get_regions` (`L4Re::Rm::get_regions`): the regions starting at or above
/// `start`, in address order, at most `num` (and at most 4096) of them into `regions`
/// (first and last byte each). Returns how many were written (call again from one past the
/// last's end for more), or `-L4_EINVAL` (a null `regions`).
///
/// # Safety
/// A non-null `regions` is valid for `num` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_get_regions(start: l4_addr_t, regions: *mut l4re_rm_range_t, num: c_ulong) -> c_int {
    run(|s| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            list(s, start, regions, num, |m, from, n| {
                let blank = RegionInfo {
                    start: VirtAddr::zero(),
                    size: 0,
                    offset: 0,
                    rights: Rights::empty(),
                    cache: CacheMode::default(),
                    flags: Flags::empty(),
                    dataspace: DataspaceId::from_u64(0),
                };
                let mut buf = vec![blank; n];
                let got = m.get_regions(from, &mut buf).count;
                buf[..got].iter().map(|r| (r.start, r.size)).collect()
            })
        }
    })
}

/// `l4re_rm_get_areas` (`L4Re::Rm::get_areas`): the areas starting at or above `start`, as
/// `l4re_rm_get_regions` lists regions.
///
/// # Safety
/// A non-null `areas` is valid for `num` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4re_rm_get_areas(start: l4_addr_t, areas: *mut l4re_rm_range_t, num: c_ulong) -> c_int {
    run(|s| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            list(s, start, areas, num, |m, from, n| {
                let mut buf = vec![AreaInfo { start: VirtAddr::zero(), size: 0, flags: Flags::empty() }; n];
                let got = m.get_areas(from, &mut buf).count;
                buf[..got].iter().map(|a| (a.start, a.size)).collect()
            })
        }
    })
}

/// `l4re_rm_show_lists`: writes the region map to standard output: its window, then each
/// region (range, size, rights, dataspace slot and offset) and each area (range, size,
/// whether it is reserved), in address order.
#[unsafe(no_mangle)]
pub extern "C" fn l4re_rm_show_lists() {
    use std::io::Write;
    let text = crate::state::with(|s| {
        let space = s.space;
        s.system.lock(|st| {
            let Ok(m) = st.region_map(space) else { return String::new() };
            let mut t =
                format!("region map: {:#x}, {:#x} bytes\nregions:\n", m.window_start().as_usize(), m.window_size());
            for r in m.regions() {
                let cap = s.caps.find(r.dataspace).unwrap_or(L4_INVALID_CAP);
                let rights = bits_of(r.rights);
                let flag = |bit: u32, c: char| if rights & bit != 0 { c } else { '-' };
                t += &format!(
                    "  [{:#x}, {:#x}] {:#x} bytes {}{}{} ds {:#x} offset {:#x}\n",
                    r.start.as_usize(),
                    r.start.as_usize() + r.size - 1,
                    r.size,
                    flag(L4RE_RM_F_R, 'r'),
                    flag(L4RE_RM_F_W, 'w'),
                    flag(L4RE_RM_F_X, 'x'),
                    cap,
                    r.offset
                );
            }
            t += "areas:\n";
            for a in m.areas() {
                let kind = if a.flags.contains(Flags::RESERVED) { " reserved" } else { "" };
                t += &format!(
                    "  [{:#x}, {:#x}] {:#x} bytes{kind}\n",
                    a.start.as_usize(),
                    a.start.as_usize() + a.size - 1,
                    a.size
                );
            }
            t
        })
    })
    .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
