//! memkit's vocabulary: the types every layer of the stack speaks.
//!
//! Design principles:
//! - **Typed addresses and quantities.** A physical address is a [`PhysAddr`], a virtual one a
//!   [`VirtAddr`]; a 4 KiB physical frame is a [`Frame`], a virtual page a [`Page`]; a
//!   power-of-two block size is an [`Order`]; counts are [`FrameCount`] and [`PageCount`].
//!   Bytes, frames, pages and orders cannot be mixed by accident.
//! - **Traits where the layers meet.** [`PhysMemory`] gives access to frame contents (zero,
//!   copy, read, write) without knowing how RAM is reached; [`FrameSource`] hands out runs of
//!   frames without knowing which allocator is behind it.
//! - **One name per concept, one home.** The current CPU ([`CpuId`]) that per-CPU
//!   structures choose by, where frames go in a pool ([`PhysPlacement`]), and L4Re's error
//!   codes ([`l4`]) are defined here once, for every layer that speaks of them.
//! - **No platform knowledge.** This crate is `#![no_std]` and knows nothing of Linux or x86.
//!
//! ```text
//!   PhysAddr ──containing──▶ Frame ──start_address──▶ PhysAddr
//!   VirtAddr ──containing──▶ Page  ──start_address──▶ VirtAddr
//!   Order(k) ──frame_count──▶ FrameCount(2^k)
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

mod addr;
mod cpu;
mod frame;
pub mod l4;
mod memory;
mod placement;
mod rights;

pub use addr::{AddrError, PhysAddr, VirtAddr};
pub use cpu::{CpuId, SingleCpu};
pub use frame::{
    Frame, FrameCount, Order, OrderError, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, SUPERPAGE_ORDER, SUPERPAGE_SHIFT,
    SUPERPAGE_SIZE,
};
pub use memory::{FrameSource, FrameSourceError, PhysMemory};
pub use placement::PhysPlacement;
pub use rights::{Access, CacheMode, Rights};
