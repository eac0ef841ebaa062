//! DROPS's region mapper (seed 003's `l4rm`): `l4rm_attach`, `l4rm_attach_to_region`,
//! `l4rm_detach` and the areas (`l4rm_area_*`) of the process's one address space, for the
//! dataspaces of the `l4dm_*` calls.
//!
//! An area is a range of the address space kept for the attachments that name it: plain
//! `l4rm_attach` never places a region inside one. DROPS names an area by an `l4_uint32_t`
//! id; memkit gives each reserved area a new id (never one given before) and refuses an id
//! whose area was released (`-L4_EINVAL`). The areas are those of L4Re's region map
//! (`l4re_rm_reserve_area`): an area freed there loses its id here too.

use core::ffi::{c_int, c_void};

use memkit_dataspace::DataspaceId;
use memkit_region::{AttachRequest, DetachFlags, Flags};
use memkit_types::{PAGE_SHIFT, Rights, VirtAddr};

use crate::errors::{L4_EINVAL, L4_ENOMEM, neg};
use crate::ffi;
use crate::l4dm::{L4DM_READ, L4DM_RW, L4DM_WRITE, id_of};
use crate::state::{State, run};
use crate::types::{l4_addr_t, l4_offs_t, l4_size_t, l4_uint32_t, l4dm_dataspace_t};

/// `L4RM_MAP`: map the attached region at once.
pub const L4RM_MAP: l4_uint32_t = 0x0100_0000;
/// `L4RM_LOG2_ALIGNED`: align the region (or area) to its size rounded up to a power of two.
pub const L4RM_LOG2_ALIGNED: l4_uint32_t = 0x0200_0000;
/// `L4RM_LOG2_ALLOC`: take the whole size rounded up to a power of two (and aligned to it).
pub const L4RM_LOG2_ALLOC: l4_uint32_t = 0x0400_0000;
/// `L4RM_RESERVE_USED`: an area no dataspace may be attached in.
pub const L4RM_RESERVE_USED: l4_uint32_t = 0x0800_0000;

/// Where an attachment goes.
#[derive(Clone, Copy)]
enum Place {
    /// Anywhere from the bottom of the address space, outside every area.
    Anywhere,
    /// Anywhere inside the area that starts here.
    InArea(usize),
    /// At this address, outside every area.
    At(usize),
    /// At this address, inside the area that contains it.
    AtInArea(usize),
}

/// The size rounded up to a power of two, and its log2: `-L4_EINVAL` past the largest.
fn log2_size(size: usize) -> Result<(usize, u8), c_int> {
    let p = size.checked_next_power_of_two().ok_or(neg(L4_EINVAL))?;
    Ok((p, p.trailing_zeros() as u8))
}

/// Attaches `size` bytes of `id` from `offs` with the rights and flags of `flags` (`L4DM_RO`
/// / `L4DM_RW`, `L4RM_MAP`, `L4RM_LOG2_ALIGNED` with `Anywhere` and `InArea`): the region's
/// start, or the code.
fn attach(
    s: &mut State,
    id: DataspaceId,
    size: l4_size_t,
    offs: l4_offs_t,
    flags: l4_uint32_t,
    place: Place,
) -> Result<usize, c_int> {
    let search = matches!(place, Place::Anywhere | Place::InArea(_));
    let allowed = L4DM_RW | L4RM_MAP | if search { L4RM_LOG2_ALIGNED } else { 0 };
    if flags & !allowed != 0 {
        return Err(neg(L4_EINVAL));
    }
    let mut rights = Rights::empty();
    if flags & L4DM_READ != 0 {
        rights |= Rights::READ;
    }
    if flags & L4DM_WRITE != 0 {
        rights |= Rights::WRITE;
    }
    let size = size as usize;
    let mut align = PAGE_SHIFT as u8;
    if flags & L4RM_LOG2_ALIGNED != 0 {
        align = align.max(log2_size(size)?.1);
    }
    let space = s.space;
    let a = s
        .system
        .lock(|st| {
            let window = st.region_map(space)?.window_start();
            let mut req = AttachRequest::new(id, size, rights).offset(offs as u64).align(align);
            req = match place {
                Place::Anywhere => req.search(window),
                Place::InArea(start) => req.search(VirtAddr::new(start)).flags(Flags::IN_AREA),
                Place::At(at) => match VirtAddr::try_new(at) {
                    Ok(v) => req.at(v),
                    Err(_) => return Ok(Err(neg(L4_EINVAL))),
                },
                Place::AtInArea(at) => match VirtAddr::try_new(at) {
                    Ok(v) => req.at(v).flags(Flags::IN_AREA),
                    Err(_) => return Ok(Err(neg(L4_EINVAL))),
                },
            };
            if flags & L4RM_MAP != 0 {
                req = req.flags(Flags::EAGER_MAP);
            }
            Ok(st.attach(space, &req)?.map_err(|e| e.code()))
        })
        .map_err(|e: memkit_host::SystemError| e.code())??;
    Ok(a.as_usize())
}

/// The searching attachments: checks `ds` and `addr`, attaches where `place` says and
/// writes the region's start to `*addr`.
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `addr` for a write.
unsafe fn attach_out(
    ds: *const l4dm_dataspace_t,
    size: l4_size_t,
    ds_offs: l4_offs_t,
    flags: l4_uint32_t,
    addr: *mut *mut c_void,
    place: impl FnOnce(&mut State) -> Result<Place, c_int>,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        if addr.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let at = place(s)?;
        let a = attach(s, id, size, ds_offs, flags, at)?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(addr, a as *mut c_void) };
        Ok(0)
    })
}

/// `l4rm_attach`: attaches `size` bytes of the dataspace from `ds_offs` at a free place of
/// the process's address space outside every area, written to `*addr`. `flags`: `L4DM_RO` /
/// `L4DM_RW`, `L4RM_MAP` (map at once), `L4RM_LOG2_ALIGNED`. Returns `0`, `-L4_EINVAL` (a
/// bad id, a null `addr`, unknown flags), `-L4_EPERM`, `-L4_ENOMEM` (no room).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `addr` for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_attach(
    ds: *const l4dm_dataspace_t,
    size: l4_size_t,
    ds_offs: l4_offs_t,
    flags: l4_uint32_t,
    addr: *mut *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { attach_out(ds, size, ds_offs, flags, addr, |_| Ok(Place::Anywhere)) }
}

/// `l4rm_attach_to_region`: attaches `size` bytes of the dataspace from `ds_offs` at `addr`
/// (page aligned, outside every area). `flags`: `L4DM_RO` / `L4DM_RW`, `L4RM_MAP`. Returns
/// `0`, `-L4_EINVAL` (a bad id, unknown flags, a bad address), `-L4_EADDRNOTAVAIL` (the
/// range is taken), `-L4_EPERM`.
///
/// # Safety
/// A non-null `ds` is valid for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_attach_to_region(
    ds: *const l4dm_dataspace_t,
    addr: *const c_void,
    size: l4_size_t,
    ds_offs: l4_offs_t,
    flags: l4_uint32_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        attach(s, id, size, ds_offs, flags, Place::At(addr as usize))?;
        Ok(0)
    })
}

/// `l4rm_detach`: detaches the region that contains `addr`. Returns `0` or `-L4_EINVAL`
/// (no region there).
#[unsafe(no_mangle)]
pub extern "C" fn l4rm_detach(addr: *const c_void) -> c_int {
    run(|s| {
        let at = VirtAddr::try_new(addr as usize).map_err(|_| neg(L4_EINVAL))?;
        let space = s.space;
        s.system
            .lock(|st| st.detach(space, at, 1, DetachFlags::OVERLAP))
            .map_err(|_| neg(L4_EINVAL))?
            .map_err(|_| neg(L4_EINVAL))?;
        Ok(0)
    })
}

// ---------------------------------------------------------------- areas

/// The start of area `area`; `-L4_EINVAL` for an id that names no area (any more).
fn area_start(s: &mut State, area: l4_uint32_t) -> Result<usize, c_int> {
    let start = *s.areas.get(&area).ok_or(neg(L4_EINVAL))?;
    let space = s.space;
    let there = s.system.lock(|st| st.region_map(space).map(|m| m.areas().iter().any(|a| a.start.as_usize() == start)));
    if there != Ok(true) {
        s.areas.remove(&area);
        return Err(neg(L4_EINVAL));
    }
    Ok(start)
}

/// Reserves an area (`from`: searched from there, else at `fixed`) and gives it an id.
fn reserve(
    s: &mut State,
    size: l4_size_t,
    flags: l4_uint32_t,
    fixed: Option<usize>,
) -> Result<(usize, l4_uint32_t), c_int> {
    let allowed = L4RM_RESERVE_USED | if fixed.is_none() { L4RM_LOG2_ALIGNED | L4RM_LOG2_ALLOC } else { 0 };
    if flags & !allowed != 0 || size == 0 {
        return Err(neg(L4_EINVAL));
    }
    let id = s.next_area;
    let next = id.checked_add(1).ok_or(neg(L4_ENOMEM))?;
    let mut size = size as usize;
    let mut align = PAGE_SHIFT as u8;
    if flags & (L4RM_LOG2_ALIGNED | L4RM_LOG2_ALLOC) != 0 {
        let (p, log2) = log2_size(size)?;
        align = align.max(log2);
        if flags & L4RM_LOG2_ALLOC != 0 {
            size = p;
        }
    }
    let mut f = Flags::empty();
    if flags & L4RM_RESERVE_USED != 0 {
        f |= Flags::RESERVED;
    }
    let space = s.space;
    let start = s
        .system
        .lock(|st| {
            let from = match fixed {
                None => {
                    f |= Flags::SEARCH_ADDR;
                    st.region_map(space)?.window_start()
                }
                Some(a) => match VirtAddr::try_new(a) {
                    Ok(v) => v,
                    Err(_) => return Ok(Err(neg(L4_EINVAL))),
                },
            };
            Ok(st.reserve_area(space, from, size, f, align, None)?.map_err(|e| e.code()))
        })
        .map_err(|e: memkit_host::SystemError| e.code())??
        .as_usize();
    s.areas.insert(id, start);
    s.next_area = next;
    Ok((start, id))
}

/// `l4rm_area_reserve`: reserves an area of `size` bytes at a free place, its start written
/// to `*addr` and its id to `*area`. `flags`: `L4RM_LOG2_ALIGNED` (aligned to the size
/// rounded up to a power of two), `L4RM_LOG2_ALLOC` (that whole rounded size),
/// `L4RM_RESERVE_USED` (no dataspace may be attached in it). Returns `0`, `-L4_EINVAL` (a
/// zero size, unknown flags, a null pointer), `-L4_ENOMEM` (no room, or no id left).
///
/// # Safety
/// Non-null pointers are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_area_reserve(
    size: l4_size_t,
    flags: l4_uint32_t,
    addr: *mut l4_addr_t,
    area: *mut l4_uint32_t,
) -> c_int {
    run(|s| {
        if addr.is_null() || area.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let (start, id) = reserve(s, size, flags, None)?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(addr, start as l4_addr_t) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(area, id) };
        Ok(0)
    })
}

/// `l4rm_area_reserve_region`: reserves the area of `size` bytes at `addr` (page aligned),
/// its id written to `*area`. `flags`: `L4RM_RESERVE_USED`. Returns `0`, `-L4_EINVAL`,
/// `-L4_EADDRNOTAVAIL` (the range is taken or outside the address space), `-L4_ENOMEM`.
///
/// # Safety
/// A non-null `area` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_area_reserve_region(
    addr: l4_addr_t,
    size: l4_size_t,
    flags: l4_uint32_t,
    area: *mut l4_uint32_t,
) -> c_int {
    run(|s| {
        if area.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let (_, id) = reserve(s, size, flags, Some(addr as usize))?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(area, id) };
        Ok(0)
    })
}

/// Frees the area starting at `start` and forgets its id.
fn release(s: &mut State, start: usize) -> Result<c_int, c_int> {
    let space = s.space;
    s.system.lock(|st| st.free_area(space, VirtAddr::new(start))).map_err(|e| e.code())?.map_err(|e| e.code())?;
    s.areas.retain(|_, a| *a != start);
    Ok(0)
}

/// `l4rm_area_release`: releases the area `area` (the regions attached in it stay). Returns
/// `0` or `-L4_EINVAL` (an id that names no area).
#[unsafe(no_mangle)]
pub extern "C" fn l4rm_area_release(area: l4_uint32_t) -> c_int {
    run(|s| {
        let start = area_start(s, area)?;
        release(s, start)
    })
}

/// `l4rm_area_release_addr`: releases the area that contains `ptr`. Returns `0` or
/// `-L4_EINVAL` (no area there).
#[unsafe(no_mangle)]
pub extern "C" fn l4rm_area_release_addr(ptr: *const c_void) -> c_int {
    run(|s| {
        let a = ptr as usize;
        let space = s.space;
        let start = s
            .system
            .lock(|st| {
                st.region_map(space).ok().and_then(|m| {
                    m.areas()
                        .iter()
                        .find(|r| r.start.as_usize() <= a && a - r.start.as_usize() < r.size)
                        .map(|r| r.start.as_usize())
                })
            })
            .ok_or(neg(L4_EINVAL))?;
        release(s, start)
    })
}

/// `l4rm_area_attach`: attaches `size` bytes of the dataspace from `ds_offs` at a free place
/// inside the area `area`, written to `*addr`. `flags`: as `l4rm_attach`. Returns `0`,
/// `-L4_EINVAL` (a bad id or area, a null pointer, unknown flags), `-L4_EPERM`,
/// `-L4_ENOMEM` or `-L4_EADDRNOTAVAIL` (no room in the area).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `addr` for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_area_attach(
    ds: *const l4dm_dataspace_t,
    area: l4_uint32_t,
    size: l4_size_t,
    ds_offs: l4_offs_t,
    flags: l4_uint32_t,
    addr: *mut *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { attach_out(ds, size, ds_offs, flags, addr, |s| area_start(s, area).map(Place::InArea)) }
}

/// `l4rm_area_attach_to_region`: attaches `size` bytes of the dataspace from `ds_offs` at
/// `addr`, which lies in the area `area`. `flags`: `L4DM_RO` / `L4DM_RW`, `L4RM_MAP`.
/// Returns `0`, `-L4_EINVAL` (a bad id or area, an address outside the area, unknown flags),
/// `-L4_EADDRNOTAVAIL` (the range is taken or leaves the area), `-L4_EPERM`.
///
/// # Safety
/// A non-null `ds` is valid for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4rm_area_attach_to_region(
    ds: *const l4dm_dataspace_t,
    area: l4_uint32_t,
    addr: *const c_void,
    size: l4_size_t,
    ds_offs: l4_offs_t,
    flags: l4_uint32_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        let start = area_start(s, area)?;
        let a = addr as usize;
        if a < start {
            return Err(neg(L4_EINVAL));
        }
        let space = s.space;
        let inside = s.system.lock(|st| {
            st.region_map(space)
                .is_ok_and(|m| m.areas().iter().any(|r| r.start.as_usize() == start && a - start < r.size))
        });
        if !inside {
            return Err(neg(L4_EINVAL));
        }
        attach(s, id, size, ds_offs, flags, Place::AtInArea(a))?;
        Ok(0)
    })
}
