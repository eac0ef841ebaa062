//! Address spaces over memkit's dataspace manager, kept coherent through a reverse index.
//!
//! `memkit-region` knows one address space and no dataspace manager; `memkit-dataspace`
//! knows dataspaces and no mappings. This crate wires them together, once, for every
//! machine: the kernel (x86_64 page tables), the hosted runtime (`mmap` over a memfd) and
//! the tests ([`SoftMmu`](memkit_region::SoftMmu)) all use it over their own
//! [`Mmu`](memkit_region::Mmu).
//!
//! ```text
//!   fault (space, addr, access)                manager operation (copy, resize, clear)
//!        │                                              │ Revoker::revoke(ds, pages, kind)
//!        ▼                                              ▼
//!   Spaces::resolve ─▶ [fault-around] ─▶ RegionMap::resolve        SpacesRevoker
//!        │                                  │ Backing::map              │ ReverseIndex:
//!        │                                  ▼                           │ ds ─▶ (space,
//!        │                  ManagerBacking ─▶ Manager::map              │  region, offsets)
//!        │ copy-on-write break (old frame)                              ▼
//!        └──▶ ReverseIndex ─▶ Attachment::unmap_stale    Attachment::revoke (protect/unmap)
//! ```
//!
//! - [`SpaceSet`] owns a dataspace manager and several address spaces;
//!   [`Spaces`] is the same without the manager, for a runtime that keeps the manager
//!   beside it (the hosted `System` keeps both behind one lock).
//! - The region maps' [`Backing`](memkit_region::Backing) is the manager
//!   (`ManagerBacking`, private): frames on faults, one manager reference per dataspace
//!   while a region shows it, `DETACH_FREE` clearing the detached part.
//! - The manager's [`Revoker`](memkit_dataspace::Revoker) is [`SpacesRevoker`]: a
//!   copy-on-write copy write-protects the source everywhere, a shrink or a clear unmaps
//!   the lost pages everywhere.
//! - [`ReverseIndex`] (Linux's rmap): from each dataspace to its attachments (space, region
//!   start, offset range, rights), kept on every attach, trim, split and detach the region
//!   map reports; revocation and copy-on-write breaks visit the regions it names for the
//!   pages, never every region of every space.
//! - Fault-around ([`around`]), off by default: a fault whose aligned neighbours are empty
//!   maps them all from one frame run.
//!
//! The seed's calls (L4Re `Rm`) and their results are the region map's; a space adds only
//! [`SpaceError::NoSpace`] (`-L4_EINVAL`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod around;
mod rmap;
mod set;

pub use around::{DEFAULT_FAULT_AROUND, FaultAroundError, MAX_FAULT_AROUND};
pub use rmap::ReverseIndex;
pub use set::{SpaceError, SpaceId, SpaceSet, Spaces, SpacesRevoker};
