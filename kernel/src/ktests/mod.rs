//! The in-kernel test suite, layer by layer. Each group runs at the point of the boot where
//! its layer exists.
//!
//! One file per layer: `boot` (the memory map, interrupts, SSE state and the fault path),
//! `frames` (the frame allocator through the identity map, then through the direct map),
//! `heap` (the xmalloc heaps as the global allocator), `smp` (every CPU at once), `spaces` (address spaces on real
//! page tables, with the fixture that builds one) and `large` (2 MiB mappings of superpage dataspaces).
//!
//! # Unsafe
//! The tests raise a breakpoint, touch memory they own (heap blocks they allocated, pages of
//! spaces they attached) and free blocks they allocated and no longer use.

mod boot;
mod concurrent;
mod frames;
mod heap;
mod large;
mod smp;
mod spaces;

pub(crate) use boot::boot;
pub(crate) use concurrent::{
    Across, FAULT_PAGES, REGIONS, across_regions_shootdown, concurrent, detach_shootdown, fault_rate,
};
pub(crate) use frames::{frames_direct, frames_identity};
pub(crate) use heap::{heap, heap_block_bytes};
pub(crate) use large::{fault_cost, large};
pub(crate) use smp::smp;
pub(crate) use spaces::spaces;

/// A failure at the caller's line.
#[track_caller]
fn fail(what: &'static str) -> crate::testing::Failure {
    crate::testing::Failure { what, line: core::panic::Location::caller().line() }
}
