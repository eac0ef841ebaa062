//! Region maps (L4Re `Rm`) with O(log n) placement and page-fault resolution.
//!
//! A [`RegionMap`] describes one address space: **areas** (reserved ranges) and **regions**
//! (ranges backed by a dataspace at an offset, with rights and a cache mode). It decides
//! *what* is mapped; an [`Mmu`] does the mapping, and a [`Backing`] (the dataspace manager)
//! provides the frames.
//!
//! ```text
//!   page fault (addr, access)
//!        │
//!        ▼
//!   RegionMap::resolve ──find region (O(log n))──▶ Backing::map(ds, offset, access)
//!        │                                             │ (frame, rights allowed now)
//!        └──────────── Mmu::map(page, frame, region rights ∩ allowed, cache) ◀──┘
//! ```
//!
//! Design principles:
//! - **O(log n) everywhere.** Regions and areas live in B+-trees of 32-row nodes in index arenas (no
//!   pointers), augmented with each subtree's largest gap as in Zircon's VMAR, so free-space
//!   search with alignment, inside an area and below an upper limit is logarithmic, unlike
//!   L4Re's linear first fit ([`AttachRequest::below`] and [`RegionMap::reserve_area_below`]
//!   set the upper limit). Placement may be randomised ([`RegionMap::set_randomized`]).
//! - **Seed semantics, Rust types.** Every function, flag and result of the seed has a typed
//!   counterpart; each error enum maps back to the seed's code with `code()`.
//! - **A failed operation changes nothing**, and the fault path allocates no heap memory.
//! - **No platform knowledge.** `#![no_std]`, no `unsafe`; hardware sits behind [`Mmu`],
//!   dataspaces behind [`Backing`]. [`SoftMmu`] is a page table in Rust memory with simulated
//!   loads and stores, for tests of every layer.
//!
//! # The seed (`L4Re::Rm`) in this crate
//!
//! | seed | here |
//! |---|---|
//! | `reserve_area(start, size, flags, align)` | [`RegionMap::reserve_area`] (`Flags::SEARCH_ADDR`, `Flags::RESERVED`) |
//! | `free_area(addr)` | [`RegionMap::free_area`] (regions in the area stay attached) |
//! | `attach(start, size, flags, mem, offs, align)` | [`RegionMap::attach`] with an [`AttachRequest`] (`SEARCH_ADDR`, `IN_AREA`, `EAGER_MAP`, `DETACH_FREE`, rights, cache mode) |
//! | `detach(addr, mem, task)` (both forms) | [`RegionMap::detach_at`] (`Detach_overlap` over one byte) |
//! | `detach(start, size, mem, task)` | [`RegionMap::detach`] with [`DetachFlags`] `EXACT`, `OVERLAP`, `KEEP`; [`Detached::code`] gives `Detached_ds`, `Kept_ds`, `Split_ds`, + `Detach_again` |
//! | (beyond the seed) | [`RegionMap::detach_all`] and [`RegionMap::detach_range`]: a whole range in one call, every step reported |
//! | (beyond the seed) | [`RegionMap::protect`] (`mprotect`), [`RegionMap::remap`] (`mremap`, `brk`), [`AttachRequest::replacing`] (`MAP_FIXED`), [`RegionMap::merge`], [`RegionMap::regions_in`] |
//! | `find(addr, size, offset, flags, m)` | [`RegionMap::find`] → [`Found`] (`IN_AREA` in [`Found::flags`] for an area) |
//! | `get_regions(start)`, `get_areas(start)` | [`RegionMap::get_regions`], [`RegionMap::get_areas`]: bounded batches, a [`Listing`] with the map's generation |
//! | `Pager::page_fault(pfa, pc, ...)` | [`RegionMap::resolve`] |
//! | `Region_flag_shifts::Caching_shift` | [`CACHING_SHIFT`], [`cache_bits`] ([`memkit_types::CacheMode`] is a typed field) |
//! | `Detach_result_mask`, `Detach_again` | [`DETACH_RESULT_MASK`], [`DETACH_AGAIN`] |
//! | `-L4_ENOENT`, `-L4_EPERM`, `-L4_EINVAL`, `-L4_EADDRNOTAVAIL` | `code()` of each error enum, negated [`memkit_types::l4`] codes |
//!
//! `Io_pager::io_page_fault` concerns I/O ports, not memory, and is left out. The `task`
//! argument of `detach` is the [`Mmu`] passed to each call.
//!
//! # Several address spaces
//! This crate knows one address space at a time and no dataspace manager. `memkit-spaces`
//! wires the dataspace manager to several [`AddressSpace`]s: it implements [`Backing`] over
//! the manager, keeps a reverse index from each dataspace to its [`Attachment`]s (the
//! [`Backing`] is told of every attach, trim and detach), and revokes through it.
//!
//! # Testing support
//! [`SoftMmu`] (a page table in Rust memory with simulated loads and stores) and
//! [`mock::MockBacking`]. The random actions and the reference model that the property test,
//! the 10^6-action test and the fuzz target share are in `memkit-testkit` (`region`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod backing;
mod error;
mod flags;
mod map;
pub mod mmu;
pub mod mock;
mod soft;
mod space;
mod tree;

pub use backing::{Attachment, Backing, BackingError};
pub use error::{
    AttachError, DetachError, FaultError, FindError, FreeAreaError, ProtectError, RemapError, ReserveError,
    WindowError, map_error_code,
};
pub use flags::{CACHING_SHIFT, DETACH_AGAIN, DETACH_RESULT_MASK, DetachFlags, DetachResult, Flags, cache_bits};
pub use map::{AreaInfo, AttachRequest, Detached, Found, Listing, MAX_ALIGN, RegionInfo, RegionMap, Regions, Remap};
pub use mmu::{EntrySize, LARGE_PAGES, MapError, Mmu, TlbFlush, Translation};
pub use soft::{AccessFault, SoftMmu};
pub use space::AddressSpace;
#[cfg(any(test, feature = "check"))]
pub use tree::TreeStats;
