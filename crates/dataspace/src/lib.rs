//! The dataspace manager of memkit: L4Re's `Mem_alloc` (seed 000) and DROPS's `l4dm` /
//! DMphys (seed 003) as one Rust-native API over memkit's frame allocator.
//!
//! A *dataspace* is a range of memory a client can map: anonymous (a frame is allocated and
//! zeroed on the first touch of each page), physically contiguous, pinned, backed by 2 MiB
//! superpages, or at a fixed physical address, in one of eight pools. The layer above (the
//! region maps) asks [`Manager::map`] for the frame of a faulting page.
//!
//! Design principles:
//! - **Generic over the layers below.** A [`Manager`] takes frames from up to eight pools,
//!   each any [`memkit_types::FrameSource`] (the frame allocator's pools, or a test model),
//!   and touches frame contents only through a [`memkit_types::PhysMemory`].
//! - **Flat page tables, not trees.** Each dataspace has one page entry per backing page,
//!   sized when it is created or resized: the fault path indexes a `Vec`, allocates no heap
//!   memory and takes no lock of its own.
//! - **Copy-on-write per page entry** (as L4Re's moe does): a COW copy marks the entries of
//!   both sides and counts the sharers of each frame; a write to a shared page copies it.
//!   There is no tree of clones to walk, and the last sharer keeps its frame without a copy.
//! - **Exact accounting.** Every dataspace is charged its backing size (pages, or superpages)
//!   to a factory whose limit is carved out of its parent's; usage is released exactly when
//!   the memory goes.
//! - **Failure changes nothing.** Every operation checks its input first, allocates all it
//!   needs (giving everything back if one allocation fails), and only then commits.
//! - **The manager does not know mappings.** Operations that invalidate mappings call a
//!   [`Revoker`] first (`memkit-spaces` implements it over its address spaces); [`Mapping::replaced`] tells the
//!   fault path which frame a copy-on-write break replaced.
//!
//! ```
//! use memkit_dataspace::{ClientId, Config, DmFlags, FactoryId, Manager, MemAllocFlags, NoRevoker, PoolId};
//! // Frames from a model pool, RAM in plain Rust memory (memkit-testkit); in a system, the
//! // frame allocator's pools and the machine's RAM.
//! use memkit_testkit::{ModelFrameSource, SparseRam};
//! use memkit_types::{Access, Frame, FrameCount, PhysAddr, Rights};
//!
//! let mut dsm = Manager::new(Config::new(1 << 30), SparseRam::new());
//! dsm.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(256), FrameCount::new(1024)));
//! let me = ClientId::new(1, 0);
//!
//! // Mem_alloc::alloc: 10000 bytes of lazy anonymous memory.
//! let ds = dsm.alloc(FactoryId::ROOT, me, 10_000, MemAllocFlags::empty(), 0, PhysAddr::zero())?;
//! assert_eq!(dsm.info(ds)?.size, 10_000);
//! dsm.write(ds, 0, b"hello", &mut NoRevoker)?; // the first touch allocates a zeroed frame
//!
//! // l4dm_copy with L4DM_COW: shares the frame; the copy's first write gets its own.
//! let copy = dsm.copy(me, ds, DmFlags::COW, "copy", &mut NoRevoker)?;
//! let shared = dsm.map(copy, 0, Access::Read)?;
//! assert_eq!(shared.rights, Rights::READ | Rights::EXECUTE);
//! let own = dsm.map(copy, 0, Access::Write)?;
//! assert_eq!(own.replaced, Some(shared.frame));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! Seed → API:
//!
//! | seed | memkit |
//! |---|---|
//! | `Mem_alloc::alloc(size, flags, align, paddr)` | [`Manager::alloc`] |
//! | `Continuous`, `Pinned`, `Super_pages`, `Fixed_paddr` | [`MemAllocFlags`] |
//! | `Factory::create_factory(limit)` | [`Manager::create_factory`] |
//! | `Factory::create_task` | [`Manager::create_task`] (the quota charge; the region layer builds the task) |
//! | `Kobject::dec_refcnt(diff)` | [`Manager::dec_refcnt`], [`Manager::destroy_factory`] |
//! | `l4dm_mem_open` | [`Manager::mem_open`] |
//! | `l4dm_memphys_open(pool, addr, ...)` | [`Manager::memphys_open`] with a [`MemphysOpenRequest`], [`PhysPlacement`](memkit_types::PhysPlacement) |
//! | `l4dm_mem_resize` | [`Manager::resize`] |
//! | `l4dm_mem_info` | [`Manager::info`], [`Manager::first_id`] |
//! | `l4dm_close`, `l4dm_close_all` | [`Manager::close`], [`Manager::close_all`] |
//! | `l4dm_share(ds, client, L4DM_RO)`, capability rights `L4_CAP_FPAGE_RO` / `_RW` | [`Manager::share`], [`DataspaceId::rights`], [`DataspaceId::narrowed`] |
//! | `l4dm_copy`, `l4dm_copy_long`, `l4dm_memphys_copy` | [`Manager::copy`], [`Manager::copy_long`] with a [`CopyRequest`], [`Manager::memphys_copy`] with a [`MemphysCopyRequest`] |
//! | `L4DM_*` flags, `L4DM_WHOLE_DS`, `L4DM_MEMPHYS_ANY_ADDR` | [`DmFlags`], [`CopyLength`], [`PhysPlacement`](memkit_types::PhysPlacement) |
//! | `l4dm_memphys_find_dmphys` | the [`Manager`] value itself (an in-process manager needs no lookup) |
//! | `-L4_ENOMEM`, `-L4_ERANGE`, `-L4_EINVAL`, `-L4_EPERM`, `-L4_ENOHANDLE` | `code()` of each error enum |
//!
//! `Create_gate` (an IPC gate) belongs to a kernel's IPC, not to a memory manager, and is left
//! out on purpose.
//!
//! # Concurrency
//! Every operation takes `&mut self`; the owner wraps a shared manager in one lock. The frame
//! sources and the memory are `&self` and thread-safe on their own.
//!
//! # Rights
//! A [`DataspaceId`] is a handle and carries rights, as an L4 capability does: a new
//! dataspace's id grants everything, [`Manager::share`] narrows it (to read-only, say) to pass
//! it on. Faults, reads and copies need `READ`, writes and every change of contents or size
//! need `WRITE`; beyond its rights an id gets `-L4_EPERM`, and [`Manager::map`] never returns
//! more rights than the id grants. Ids compare equal when they name the same dataspace.
//!
//! # No stale bytes
//! No byte past a dataspace's size, and no byte of memory freed by a shrink, a close or a
//! free, is readable through a read, a copy or a frame [`Manager::map`] hands out (which a
//! region map may map as a whole page or superpage): every frame is zeroed before a
//! dataspace gets it, a copy-on-write copy never shares a partial page, and a shrink zeroes
//! the backing it keeps past the new size.
//!
//! # Lifetime
//! Memory lives while the owner's handle is open or a reference ([`Manager::inc_ref`])
//! remains: closing never unmaps a region elsewhere. See [`Manager`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod entry;
pub mod error;
mod flags;
mod ids;
mod manager;
mod refcount;
mod request;

pub use error::{
    CloseAllError, CloseError, CopyError, CreateError, DestroyFactoryError, FactoryError, InfoError, MapError,
    PhysAddrError, RangeError, RefError, ResizeError, ShareError, TaskError,
};
pub use flags::{ANY_ADDR, CopyLength, DmFlags, MEMPHYS_DEFAULT, MEMPHYS_ISA_DMA, MemAllocFlags, WHOLE_DS};
pub use ids::{ClientId, DataspaceId, FactoryId, PoolId, TaskCharge};
pub use manager::{
    Config, Info, Kind, MAX_ALIGN_SHIFT, MAX_SIZE, Manager, Mapping, NoRevoker, PageRange, Quota, RevokeKind, Revoker,
};
pub use request::{CopyRequest, MemphysCopyRequest, MemphysOpenRequest};
