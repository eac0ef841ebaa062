//! The seeds' C types: L4's integer types, capability indices, DROPS's thread and dataspace
//! ids, the allocator's memory areas.

use core::ffi::{c_char, c_long, c_ulong};

/// A virtual or physical address (`l4_addr_t`).
pub type l4_addr_t = c_ulong;
/// A size in bytes (`l4_size_t`).
pub type l4_size_t = c_ulong;
/// An offset in bytes (`l4_offs_t`).
pub type l4_offs_t = c_ulong;
/// A 32-bit word (`l4_uint32_t`).
pub type l4_uint32_t = u32;
/// A capability index (`l4_cap_idx_t`): here a handle to a cap slot of the process.
pub type l4_cap_idx_t = c_ulong;
/// A dataspace capability (`l4re_ds_t`).
pub type l4re_ds_t = l4_cap_idx_t;
/// A dataspace size (`l4re_ds_size_t`).
pub type l4re_ds_size_t = u64;
/// A dataspace offset (`l4re_ds_offset_t`).
pub type l4re_ds_offset_t = u64;
/// Dataspace flags: its rights (`l4re_ds_flags_t`).
pub type l4re_ds_flags_t = c_ulong;
/// Region-map flags (`l4re_rm_flags_t`).
pub type l4re_rm_flags_t = u32;
/// An offset into a dataspace as the region map keeps it (`l4re_rm_offset_t`).
pub type l4re_rm_offset_t = u64;

/// Where the capability index of a slot starts (`L4_CAP_SHIFT`).
pub const L4_CAP_SHIFT: u32 = 12;
/// The invalid capability (`L4_INVALID_CAP`): names no slot.
pub const L4_INVALID_CAP: l4_cap_idx_t = 1 << 11;
/// The page size, log2 (`L4_PAGESHIFT`).
pub const L4_PAGESHIFT: u32 = 12;
/// The page size (`L4_PAGESIZE`).
pub const L4_PAGESIZE: u64 = 1 << L4_PAGESHIFT;
/// The superpage size, log2 (`L4_SUPERPAGESHIFT`).
pub const L4_SUPERPAGESHIFT: u32 = 21;

/// A thread id (`l4_threadid_t`): task and thread number. The process calling memkit is
/// thread 0 of task 1 ([`MEMKIT_CLIENT`]); the dataspace manager is [`MEMKIT_DSM`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct l4_threadid_t {
    /// The task (address space).
    pub task: u32,
    /// The thread within the task.
    pub thread: u32,
}

/// `L4_INVALID_ID`: names no thread; as `dsm_id`, the default dataspace manager.
pub const L4_INVALID_ID: l4_threadid_t = l4_threadid_t { task: 0xffff_ffff, thread: 0xffff_ffff };
/// `L4DM_DEFAULT_DSM`: the default dataspace manager.
pub const L4DM_DEFAULT_DSM: l4_threadid_t = L4_INVALID_ID;
/// The thread id the process calls memkit as (the owner of the dataspaces it opens).
pub const MEMKIT_CLIENT: l4_threadid_t = l4_threadid_t { task: 1, thread: 0 };
/// The dataspace manager's id (`l4dm_memphys_find_dmphys` returns it).
pub const MEMKIT_DSM: l4_threadid_t = l4_threadid_t { task: 0, thread: 1 };

/// A DROPS dataspace id (`l4dm_dataspace_t`): the manager's dataspace id and the manager.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct l4dm_dataspace_t {
    /// The dataspace id (any value is safe to pass: unknown ids are refused).
    pub id: u64,
    /// The dataspace manager.
    pub manager: l4_threadid_t,
}

/// `L4DM_INVALID_DATASPACE`: names no dataspace.
pub const L4DM_INVALID_DATASPACE: l4dm_dataspace_t = l4dm_dataspace_t { id: u64::MAX, manager: L4_INVALID_ID };

/// One physically contiguous piece of a dataspace (`l4dm_mem_addr_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct l4dm_mem_addr_t {
    /// Its physical address.
    pub addr: l4_addr_t,
    /// Its size in bytes.
    pub size: l4_size_t,
}

/// What `l4re_ds_info` reports (`l4re_ds_stats_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct l4re_ds_stats_t {
    /// The size in bytes.
    pub size: l4re_ds_size_t,
    /// The rights of the handle (`L4RE_DS_F_*`).
    pub flags: l4re_ds_flags_t,
}

/// A physical memory area (seed 004's `memory_area_t`): `size` bytes from `start` on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct memory_area_t {
    /// The first byte.
    pub start: u64,
    /// The length in bytes.
    pub size: u64,
}

/// A physical memory region (seed 004's `memory_region_t`): the same shape as an area.
pub type memory_region_t = memory_area_t;

/// The seed 004 result (`error_t`): `ERR_NONE` or an `ERR_*` code.
pub type error_t = i32;

/// An address, AIX style (`caddr_t`). The heap handles (`kernel_heap`, `pinned_heap`, ...)
/// are values of this type that name a heap; they point at nothing.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct caddr_t(pub *mut c_char);

#[allow(unsafe_code)]
// SAFETY: the value is an address only; memkit reads and writes through it only where its
// entry says (the block xmalloc handed out, which is the caller's).
unsafe impl Sync for caddr_t {}
#[allow(unsafe_code)]
// SAFETY: as for `Sync`: an address only.
unsafe impl Send for caddr_t {}

/// An AIX heap handle (`heapaddr_t`), as `init_heap` returns it.
pub type heapaddr_t = caddr_t;

/// The result of an L4 object call (`l4_msgtag_t`): the call's result code is its label,
/// read with `l4_error` (or `l4_msgtag_label`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct l4_msgtag_t {
    /// The tag's word: the label (the result code) from bit 16 on.
    pub raw: c_long,
}

/// The capabilities of the process's environment that memkit serves (`l4re_env_t`, as
/// `l4re_env()` returns it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct l4re_env_t {
    /// The root memory allocator: a factory whose quota is all of memory.
    pub mem_alloc: l4_cap_idx_t,
}

/// A range of virtual addresses (`L4Re::Rm::Range`, as `l4re_rm_get_regions` and
/// `l4re_rm_get_areas` list them): from `start` to `end`, both included.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct l4re_rm_range_t {
    /// The first byte.
    pub start: l4_addr_t,
    /// The last byte.
    pub end: l4_addr_t,
}
