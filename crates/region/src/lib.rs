//! region maps (L4Re Rm) with O(log n) placement and page-fault resolution
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod mmu;

pub use mmu::{MapError, Mmu, TlbFlush, Translation};
