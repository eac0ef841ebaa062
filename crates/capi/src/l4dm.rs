//! DROPS's dataspace manager client API (seed 003): `l4dm_mem_*`, `l4dm_close*`,
//! `l4dm_copy*`, `l4dm_memphys_*`, `l4dm_share`; the region mapper's `l4rm_*` are in
//! [`crate::l4rm`].
//!
//! A dataspace is an [`l4dm_dataspace_t`]: the manager's dataspace id and the manager's
//! thread id ([`MEMKIT_DSM`]). Every id is checked by the manager: a closed dataspace's id
//! never names a later one, and an id of another manager or of nothing gives `-L4_EINVAL`.
//! The caller is the process ([`MEMKIT_CLIENT`](crate::types::MEMKIT_CLIENT)); it owns the
//! dataspaces it opens. `dsm_id` must be `L4DM_DEFAULT_DSM` or [`MEMKIT_DSM`], else
//! `-L4_ENODM`. Alignments are in bytes (a power of two, or 0), as DROPS has them.

use core::ffi::{c_char, c_int};

use memkit_dataspace::{
    CopyLength, CopyRequest, DataspaceId, DmFlags, FactoryId, MemphysCopyRequest, MemphysOpenRequest,
};
use memkit_types::{PhysAddr, PhysPlacement, Rights};

use crate::errors::{L4_EINVAL, L4_ENODM, neg};
use crate::ffi;
use crate::state::{ME, run};
use crate::types::{
    L4_INVALID_ID, MEMKIT_DSM, l4_addr_t, l4_offs_t, l4_size_t, l4_threadid_t, l4_uint32_t, l4dm_dataspace_t,
    l4dm_mem_addr_t,
};

/// `L4DM_READ`: attach with read rights.
pub const L4DM_READ: l4_uint32_t = 0x0000_0001;
/// `L4DM_WRITE`: attach with write rights.
pub const L4DM_WRITE: l4_uint32_t = 0x0000_0002;
/// `L4DM_RO`: attach read-only.
pub const L4DM_RO: l4_uint32_t = L4DM_READ;
/// `L4DM_RW`: attach read/write.
pub const L4DM_RW: l4_uint32_t = L4DM_READ | L4DM_WRITE;
/// `L4DM_RESIZE`: allow resize (every dataspace may be resized by its owner).
pub const L4DM_RESIZE: l4_uint32_t = 0x0000_0080;
/// `L4DM_CONTIGUOUS`: physically contiguous memory.
pub const L4DM_CONTIGUOUS: l4_uint32_t = 0x0000_0100;
/// `L4DM_PINNED`: pinned memory, no page faults once mapped.
pub const L4DM_PINNED: l4_uint32_t = 0x0000_0200;
/// `L4DM_COW`: a copy shares the source's memory until either side writes.
pub const L4DM_COW: l4_uint32_t = 0x0000_0400;
/// `L4DM_SAME_TASK` (`l4dm_close_all`): every thread of the client's task.
pub const L4DM_SAME_TASK: l4_uint32_t = 0x0000_2000;
/// `L4DM_WHOLE_DS`: copy to the end of the source / the whole dataspace.
pub const L4DM_WHOLE_DS: c_int = -1;
/// `L4DM_MEMPHYS_DEFAULT`: the default pool.
pub const L4DM_MEMPHYS_DEFAULT: c_int = 0;
/// `L4DM_MEMPHYS_ISA_DMA`: the pool of ISA DMA memory (below 16 MiB).
pub const L4DM_MEMPHYS_ISA_DMA: c_int = 7;
/// `L4DM_MEMPHYS_ANY_ADDR`: let the pool find a place.
pub const L4DM_MEMPHYS_ANY_ADDR: c_int = -1;
/// `L4DM_MEMPHYS_SUPERPAGES`: superpages.
pub const L4DM_MEMPHYS_SUPERPAGES: l4_uint32_t = 0x0001_0000;
/// `L4DM_MEMPHYS_SAME_POOL` (copy): the copy goes to the source's pool.
pub const L4DM_MEMPHYS_SAME_POOL: l4_uint32_t = 0x0002_0000;
/// The size of the name buffer `l4dm_mem_info` writes (`L4DM_NAME_MAX_LEN`), with its NUL;
/// names are kept up to one byte less.
pub const L4DM_NAME_MAX_LEN: usize = 64;

fn dsm_ok(dsm: l4_threadid_t) -> Result<(), c_int> {
    if dsm == L4_INVALID_ID || dsm == MEMKIT_DSM { Ok(()) } else { Err(neg(L4_ENODM)) }
}

/// The dataspace `*ds` names; `-L4_EINVAL` for null or another manager's id.
///
/// # Safety
/// A non-null `ds` is valid for a read.
pub(crate) unsafe fn id_of(ds: *const l4dm_dataspace_t) -> Result<DataspaceId, c_int> {
    // SAFETY: a non-null ds is valid for a read by the caller's contract.
    let d = unsafe { ffi::get(ds) }.ok_or(neg(L4_EINVAL))?;
    if d.manager != MEMKIT_DSM {
        return Err(neg(L4_EINVAL));
    }
    Ok(DataspaceId::from_u64(d.id))
}

fn ds_value(id: DataspaceId) -> l4dm_dataspace_t {
    l4dm_dataspace_t { id: id.as_u64(), manager: MEMKIT_DSM }
}

/// Log2 of a byte alignment: 0 and 1 are none, otherwise a power of two.
fn log2_align(align: l4_addr_t) -> Result<u32, c_int> {
    match align {
        0 | 1 => Ok(0),
        a if a.is_power_of_two() => Ok(a.trailing_zeros()),
        _ => Err(neg(L4_EINVAL)),
    }
}

fn flags_of(flags: l4_uint32_t, allowed: l4_uint32_t) -> Result<DmFlags, c_int> {
    if flags & !allowed != 0 {
        return Err(neg(L4_EINVAL));
    }
    Ok(DmFlags::from_bits_truncate(flags))
}

fn length(num: l4_size_t) -> CopyLength {
    if num == l4_size_t::MAX { CopyLength::WholeDataspace } else { CopyLength::Bytes(num as u64) }
}

/// Writes the new dataspace to `*out` (checked for null before the call).
///
/// # Safety
/// `out` is non-null and valid for a write.
unsafe fn put_ds(out: *mut l4dm_dataspace_t, id: DataspaceId) -> c_int {
    // SAFETY: by the function's contract.
    let _ = unsafe { ffi::put(out, ds_value(id)) };
    0
}

/// `l4dm_mem_open`: a new dataspace of `size` bytes from the default pool, aligned to
/// `align` bytes, owned by the caller; written to `*ds`. `flags`: `L4DM_CONTIGUOUS`,
/// `L4DM_PINNED`, `L4DM_RESIZE`. Returns `0`, `-L4_ENOMEM`, `-L4_ERANGE` (size or alignment
/// not supported), `-L4_ENODM` (another manager), `-L4_EINVAL` (null `ds`, unknown flags,
/// an alignment that is no power of two).
///
/// # Safety
/// `name` is null or a NUL-terminated string; a non-null `ds` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_open(
    dsm_id: l4_threadid_t,
    size: l4_size_t,
    align: l4_addr_t,
    flags: l4_uint32_t,
    name: *const c_char,
    ds: *mut l4dm_dataspace_t,
) -> c_int {
    run(|s| {
        dsm_ok(dsm_id)?;
        if ds.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let f = flags_of(flags, L4DM_CONTIGUOUS | L4DM_PINNED | L4DM_RESIZE)?;
        let align = log2_align(align)?;
        // SAFETY: null or a NUL-terminated string by the caller's contract.
        let name = unsafe { ffi::name(name) };
        let id = s
            .system
            .lock(|st| st.manager.mem_open(FactoryId::ROOT, ME, size as u64, align, f, &name))
            .map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        Ok(unsafe { put_ds(ds, id) })
    })
}

/// `l4dm_mem_resize`: shrinks (the tail's memory is freed and unmapped everywhere) or grows
/// the dataspace; 0 closes it. Returns `0`, `-L4_EINVAL` (a bad id), `-L4_EPERM` (not the
/// owner), `-L4_ENOMEM`, `-L4_ERANGE`.
///
/// # Safety
/// A non-null `ds` is valid for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_resize(ds: *const l4dm_dataspace_t, new_size: l4_size_t) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        s.system
            .lock(|st| {
                let (m, mut r) = st.manager_and_revoker();
                m.resize(ME, id, new_size as u64, &mut r)
            })
            .map_err(|e| e.code())?;
        Ok(0)
    })
}

/// `l4dm_mem_size`: the dataspace's size into `*size`. Returns `0` or `-L4_EINVAL` (a bad
/// id, a null pointer).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `size` for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_size(ds: *const l4dm_dataspace_t, size: *mut l4_size_t) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        if size.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let n = s.system.lock(|st| st.manager.info(id).map(|i| i.size)).map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(size, n as l4_size_t) };
        Ok(0)
    })
}

/// `l4dm_mem_info`: the size, the owner, the name (into a buffer of `L4DM_NAME_MAX_LEN`
/// bytes) and the slot number of the next open dataspace (`0xffffffff` after the last), each
/// written where its pointer is not null. Returns `0` or `-L4_EINVAL` (a bad id).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, the others for a write (`name` of
/// `L4DM_NAME_MAX_LEN` bytes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_info(
    ds: *const l4dm_dataspace_t,
    size: *mut l4_size_t,
    owner: *mut l4_threadid_t,
    name: *mut c_char,
    next_id: *mut l4_uint32_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        let (n, o, text, next) = s
            .system
            .lock(|st| {
                st.manager.info(id).map(|i| (i.size, i.owner, i.name.to_string(), i.next_id.map(DataspaceId::as_u64)))
            })
            .map_err(|e| e.code())?;
        // SAFETY: each pointer is null (refused by put) or valid by the caller's contract.
        let _ = unsafe { ffi::put(size, n as l4_size_t) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(owner, l4_threadid_t { task: o.task, thread: o.thread }) };
        // SAFETY: as above, a buffer of L4DM_NAME_MAX_LEN bytes.
        let _ = unsafe { ffi::put_name(name, &text) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(next_id, next.map_or(u32::MAX, |v| v as u32)) };
        Ok(0)
    })
}

/// `l4dm_close`: closes the dataspace (its memory goes once no region shows it). Returns
/// `0`, `-L4_EINVAL` (a bad or closed id) or `-L4_EPERM` (not the owner).
///
/// # Safety
/// A non-null `ds` is valid for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_close(ds: *const l4dm_dataspace_t) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        s.system.lock(|st| st.manager.close(ME, id)).map_err(|e| e.code())?;
        Ok(0)
    })
}

/// `l4dm_close_all`: closes every dataspace of `client` (with `L4DM_SAME_TASK`, of every
/// thread of its task). Returns `0`, `-L4_EINVAL` (`L4_INVALID_ID`), `-L4_EPERM` (a client
/// of another task), `-L4_ENODM`.
#[unsafe(no_mangle)]
pub extern "C" fn l4dm_close_all(dsm_id: l4_threadid_t, client: l4_threadid_t, flags: l4_uint32_t) -> c_int {
    run(|s| {
        dsm_ok(dsm_id)?;
        let f = flags_of(flags, L4DM_SAME_TASK)?;
        let c = memkit_dataspace::ClientId::new(client.task, client.thread);
        s.system.lock(|st| st.manager.close_all(ME, c, f)).map_err(|e| e.code())?;
        Ok(0)
    })
}

/// `l4dm_share`: an id of the dataspace for `client` granting `rights` (`L4DM_RO` or
/// `L4DM_RW`), written to `*shared`. memkit's ids carry their rights, as capabilities do:
/// where DROPS records the client's rights at the manager, memkit hands out the narrowed id
/// to pass on, so this entry has one parameter more than DROPS's. The new id names the same
/// dataspace: attachments through it see the same memory, within its rights; it cannot close
/// or resize the dataspace unless it grants `L4DM_WRITE` and the caller owns it. An id can
/// only be narrowed.
///
/// Returns `0`, `-L4_EINVAL` (a bad id, `client` `L4_INVALID_ID`, rights other than
/// `L4DM_RO` / `L4DM_RW`, a null pointer) or `-L4_EPERM` (rights `ds` does not grant).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `shared` for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_share(
    ds: *const l4dm_dataspace_t,
    client: l4_threadid_t,
    rights: l4_uint32_t,
    shared: *mut l4dm_dataspace_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        if shared.is_null() || client == L4_INVALID_ID || (rights != L4DM_RO && rights != L4DM_RW) {
            return Err(neg(L4_EINVAL));
        }
        let mut r = Rights::READ;
        if rights & L4DM_WRITE != 0 {
            r |= Rights::WRITE;
        }
        let narrowed = s.system.lock(|st| st.manager.share(id, r)).map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        Ok(unsafe { put_ds(shared, narrowed) })
    })
}

/// The checked arguments every copy shares: the source, the flags (each allowed, and
/// `L4DM_RESIZE`, accepted) and the name; the destination pointer is not null.
struct CheckedCopy {
    id: DataspaceId,
    flags: DmFlags,
    name: String,
}

impl CheckedCopy {
    /// Checks the arguments: `-L4_EINVAL` for a bad source, a null `copy`, a flag outside
    /// `allowed`.
    ///
    /// # Safety
    /// A non-null `ds` is valid for a read; `name` is null or a NUL-terminated string.
    unsafe fn new(
        ds: *const l4dm_dataspace_t,
        copy: *mut l4dm_dataspace_t,
        flags: l4_uint32_t,
        allowed: l4_uint32_t,
        name: *const c_char,
    ) -> Result<Self, c_int> {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        if copy.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let flags = flags_of(flags, allowed | L4DM_RESIZE)?;
        // SAFETY: null or a NUL-terminated string by the caller's contract.
        let name = unsafe { ffi::name(name) };
        Ok(CheckedCopy { id, flags, name })
    }

    /// The request of `num` bytes (`L4DM_WHOLE_DS`: to the end) from `src_offs` to
    /// `dst_offs`.
    fn request(&self, src_offs: l4_offs_t, dst_offs: l4_offs_t, num: l4_size_t) -> CopyRequest<'_> {
        CopyRequest::new(src_offs as u64, dst_offs as u64, length(num)).flags(self.flags).name(&self.name)
    }
}

/// `l4dm_copy`: a copy of the whole dataspace (`L4DM_COW`: sharing its memory until either
/// side writes), owned by the caller, written to `*copy`. Returns `0`, `-L4_EINVAL`,
/// `-L4_EPERM`, `-L4_ENOMEM`, `-L4_ENOHANDLE`.
///
/// # Safety
/// Non-null pointers are valid (`ds` for a read, `copy` for a write); `name` is null or a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_copy(
    ds: *const l4dm_dataspace_t,
    flags: l4_uint32_t,
    name: *const c_char,
    copy: *mut l4dm_dataspace_t,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { l4dm_copy_long(ds, 0, 0, l4_size_t::MAX, flags, name, copy) }
}

/// `l4dm_copy_long`: copies `num` bytes (`L4DM_WHOLE_DS`: to the end) from `src_offs` of the
/// dataspace to `dst_offs` of a new one of `dst_offs + num` bytes; offsets need no
/// alignment. Returns as `l4dm_copy`, and `-L4_ERANGE` for a range past the source's end.
///
/// # Safety
/// As `l4dm_copy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_copy_long(
    ds: *const l4dm_dataspace_t,
    src_offs: l4_offs_t,
    dst_offs: l4_offs_t,
    num: l4_size_t,
    flags: l4_uint32_t,
    name: *const c_char,
    copy: *mut l4dm_dataspace_t,
) -> c_int {
    run(|s| {
        // SAFETY: the caller's contract, passed on.
        let c = unsafe { CheckedCopy::new(ds, copy, flags, L4DM_COW | L4DM_CONTIGUOUS | L4DM_PINNED, name) }?;
        let new = s
            .system
            .lock(|st| {
                let (m, mut r) = st.manager_and_revoker();
                m.copy_long(ME, c.id, c.request(src_offs, dst_offs, num), &mut r)
            })
            .map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        Ok(unsafe { put_ds(copy, new) })
    })
}

fn placement(addr: l4_addr_t) -> Result<PhysPlacement, c_int> {
    if addr == l4_addr_t::MAX {
        return Ok(PhysPlacement::AnyAddr);
    }
    PhysAddr::try_new(addr as u64).map(PhysPlacement::Fixed).map_err(|_| neg(L4_EINVAL))
}

/// `l4dm_memphys_open`: a new dataspace in pool `pool` (0-7; 7 is ISA DMA memory below
/// 16 MiB) at the physical address `addr` (one contiguous run) or anywhere
/// (`L4DM_MEMPHYS_ANY_ADDR`), aligned to `align` bytes. `flags`: `L4DM_CONTIGUOUS`,
/// `L4DM_PINNED`, `L4DM_MEMPHYS_SUPERPAGES`, `L4DM_RESIZE`. Returns `0`, `-L4_ENOMEM`,
/// `-L4_ERANGE`, `-L4_ENOENT` (a pool without memory), `-L4_EINVAL`.
///
/// # Safety
/// As `l4dm_mem_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_memphys_open(
    pool: c_int,
    addr: l4_addr_t,
    size: l4_size_t,
    align: l4_addr_t,
    flags: l4_uint32_t,
    name: *const c_char,
    ds: *mut l4dm_dataspace_t,
) -> c_int {
    run(|s| {
        if ds.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let pool = u32::try_from(pool).map_err(|_| neg(L4_EINVAL))?;
        let f = flags_of(flags, L4DM_CONTIGUOUS | L4DM_PINNED | L4DM_MEMPHYS_SUPERPAGES | L4DM_RESIZE)?;
        let align = log2_align(align)?;
        let at = placement(addr)?;
        // SAFETY: null or a NUL-terminated string by the caller's contract.
        let name = unsafe { ffi::name(name) };
        let id = s
            .system
            .lock(|st| {
                let req = MemphysOpenRequest::new(pool, size as u64).placed(at).align(align).flags(f).name(&name);
                st.manager.memphys_open(FactoryId::ROOT, ME, req)
            })
            .map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        Ok(unsafe { put_ds(ds, id) })
    })
}

/// `l4dm_memphys_copy`: as `l4dm_copy_long`, into pool `dst_pool` (the source's with
/// `L4DM_MEMPHYS_SAME_POOL`) at `dst_addr` or anywhere (`L4DM_MEMPHYS_ANY_ADDR`), of
/// `max(dst_size, dst_offs + num)` bytes aligned to `dst_align` bytes.
///
/// # Safety
/// As `l4dm_copy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_memphys_copy(
    ds: *const l4dm_dataspace_t,
    src_offs: l4_offs_t,
    dst_offs: l4_offs_t,
    num: l4_size_t,
    dst_pool: c_int,
    dst_addr: l4_addr_t,
    dst_size: l4_size_t,
    dst_align: l4_addr_t,
    flags: l4_uint32_t,
    name: *const c_char,
    copy: *mut l4dm_dataspace_t,
) -> c_int {
    run(|s| {
        let allowed = L4DM_COW | L4DM_CONTIGUOUS | L4DM_PINNED | L4DM_MEMPHYS_SUPERPAGES | L4DM_MEMPHYS_SAME_POOL;
        // SAFETY: the caller's contract, passed on.
        let c = unsafe { CheckedCopy::new(ds, copy, flags, allowed, name) }?;
        let pool = u32::try_from(dst_pool).map_err(|_| neg(L4_EINVAL))?;
        let align = log2_align(dst_align)?;
        let at = placement(dst_addr)?;
        let new = s
            .system
            .lock(|st| {
                let (m, mut r) = st.manager_and_revoker();
                let req = MemphysCopyRequest {
                    copy: c.request(src_offs, dst_offs, num),
                    ..MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, pool)
                }
                .placed(at)
                .size(dst_size as u64)
                .align(align);
                m.memphys_copy(ME, c.id, req, &mut r)
            })
            .map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        Ok(unsafe { put_ds(copy, new) })
    })
}

/// `l4dm_memphys_find_dmphys`: the dataspace manager's id.
#[unsafe(no_mangle)]
pub extern "C" fn l4dm_memphys_find_dmphys() -> l4_threadid_t {
    MEMKIT_DSM
}

/// `l4dm_mem_ds_phys_addr`: the physical address of `offset` into `*paddr` and the bytes
/// from there that are contiguous, at most `size` (`L4DM_WHOLE_DS`: to the end), into
/// `*psize`. The page must have its memory (`L4DM_PINNED`). Returns `0` or a negated error
/// code (`-L4_EINVAL` for a null pointer).
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, the others for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_ds_phys_addr(
    ds: *const l4dm_dataspace_t,
    offset: l4_offs_t,
    size: l4_size_t,
    paddr: *mut l4_addr_t,
    psize: *mut l4_size_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        if paddr.is_null() || psize.is_null() {
            return Err(neg(L4_EINVAL));
        }
        let (a, n) = s.system.lock(|st| st.manager.phys_addr(id, offset as u64)).map_err(|e| e.code())?;
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(paddr, a.as_u64() as l4_addr_t) };
        // SAFETY: as above.
        let _ = unsafe { ffi::put(psize, n.min(size as u64) as l4_size_t) };
        Ok(0)
    })
}

/// `l4dm_mem_phys_addr`: the physically contiguous pieces of `size` bytes (`L4DM_WHOLE_DS`:
/// to the end) from `offset`, at most `num` of them into `addrs`; `*psize` gets the bytes
/// they cover. Returns the number of pieces written, or a negated error code.
///
/// # Safety
/// Non-null pointers are valid: `ds` for a read, `addrs` for `num` writes, `psize` for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn l4dm_mem_phys_addr(
    ds: *const l4dm_dataspace_t,
    offset: l4_offs_t,
    size: l4_size_t,
    addrs: *mut l4dm_mem_addr_t,
    num: c_int,
    psize: *mut l4_size_t,
) -> c_int {
    run(|s| {
        // SAFETY: by the caller's contract.
        let id = unsafe { id_of(ds) }?;
        let num = usize::try_from(num).map_err(|_| neg(L4_EINVAL))?;
        if addrs.is_null() || psize.is_null() || num == 0 {
            return Err(neg(L4_EINVAL));
        }
        let pieces = s.system.lock(|st| {
            let total = st.manager.info(id).map_err(|e| e.code())?.size;
            let start = offset as u64;
            let end = if size == l4_size_t::MAX { total } else { start.saturating_add(size as u64).min(total) };
            let mut out = Vec::new();
            let mut at = start;
            while at < end && out.len() < num {
                let (a, n) = st.manager.phys_addr(id, at).map_err(|e| e.code())?;
                let n = n.min(end - at);
                out.push(l4dm_mem_addr_t { addr: a.as_u64() as l4_addr_t, size: n as l4_size_t });
                at += n;
            }
            if out.is_empty() {
                // An offset at or past the end: the manager's own error.
                st.manager.phys_addr(id, start).map_err(|e| e.code())?;
            }
            Ok::<_, c_int>(out)
        })?;
        let mut covered: u64 = 0;
        for (i, p) in pieces.iter().enumerate() {
            covered += p.size as u64;
            // SAFETY: i < num, inside the caller's array of num entries.
            let _ = unsafe { ffi::put(addrs.wrapping_add(i), *p) };
        }
        // SAFETY: non-null (checked), valid by the caller's contract.
        let _ = unsafe { ffi::put(psize, covered as l4_size_t) };
        Ok(pieces.len() as c_int)
    })
}
