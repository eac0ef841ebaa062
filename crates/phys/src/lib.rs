//! pmallocator: a physical frame allocator whose metadata lives in the RAM it manages,
//! with no pointers; machines (memory maps) and pools of physical memory.
//!
//! Design principles:
//! - **The header is position-independent.** All metadata sits in one header region inside
//!   the managed area ([`get_header`] finds it, avoiding reserved regions) and holds only
//!   frame numbers, word offsets and bits. Every call goes through an [`Allocator`] view
//!   attached to the header's current mapping, so it survives a change of address space.
//! - **A few bits per frame.** A bitmap buddy: one "free" bit and one "reserved" bit per
//!   frame, plus "fully free" bitmaps per 64-ary level and 64-ary summaries to find blocks
//!   fast: about 2.05 bits per frame, 68 KiB per GiB (0.0065 % of RAM; Linux's `struct page`
//!   costs 1.56 %).
//! - **The common request touches one word.** An order-0 allocation takes the lowest set bit
//!   of a hint word and a single-frame free sets one bit, both inlined into the caller; a
//!   block of order >= 6 fills or empties whole words and changes one word above. Only a word
//!   that fills up or empties climbs the levels.
//! - **Bad input is an error, never corruption.** Freeing a free, reserved, foreign or
//!   unaligned area is rejected and changes nothing: the free bits say what is allocated.
//! - **Layers on top, not inside.** [`LockedAllocator`] adds a pluggable lock
//!   (`lock_api::RawMutex`) and implements [`FrameSource`](memkit_types::FrameSource);
//!   [`FrameCache`] puts per-CPU batches of order-0 frames in front of it.
//! - **`no_std`, no `alloc`.** Memory maps and pools use fixed-capacity arrays; a map's
//!   capacity is a const parameter ([`MachineOf`]), 1024 entries by default ([`Machine`]).
//! - **Paths are counted where it is checked.** In tests and with the `check` feature,
//!   [`reach`] counts each structural path (fast paths, word runs, climbs, summary updates,
//!   searches, exhaustion, cache refills and drains), so tests can show that random
//!   workloads reach them; otherwise the counting compiles to nothing.
//!
//! ```text
//!   Machine (memory map + kernel image) ──▶ Pools: 8 × LockedAllocator ──▶ FrameSource
//!                                                   │
//!          header words in RAM ◀── HeaderMapping ───┘   FrameCache (per CPU, order 0)
//! ```
//!
//! # Using the pools
//!
//! ```
//! use memkit_phys::{DEFAULT_POOL, DirectMap, Machine, Pools};
//! use memkit_types::{FrameCount, Order, PhysAddr, PhysPlacement};
//!
//! let machine = Machine::default_machine(); // or Machine::parse(&text)?
//! // Physical memory as the caller reaches it: here a plain buffer standing for 0..512 MiB;
//! // hosted, the memfd's direct map; in a kernel, its direct map of RAM.
//! let mut ram = vec![0u64; (512 << 20) / 8];
//! let pools: Pools<'_> = Pools::new(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero()))?;
//! for s in pools.stats() {
//!     println!(
//!         "pool {}: {} frames {} free {} largest free block {} KiB",
//!         s.id, s.span, s.total_frames.get(), s.free_frames.get(), s.largest_free_bytes() / 1024
//!     );
//! }
//! let f = pools.allocate(DEFAULT_POOL, PhysPlacement::AnyAddr, FrameCount::new(4), Order::ZERO)?;
//! pools.free(DEFAULT_POOL, f, FrameCount::new(4))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The seed's functions map as: `pmallocator_get_header` → [`get_header`],
//! `pmallocator_get_header_size` → [`header_size`], `pmallocator_init_region` →
//! [`Allocator::init`], `pmallocator_allocate` → [`Allocator::allocate`],
//! `pmallocator_free` → [`Allocator::free`]; results map to [`ErrorCode`] via `code()`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod allocator;
mod area;
mod cache;
mod error;
mod locked;
mod machine;
mod pool;
pub mod reach;

pub use allocator::{Allocator, HEADER_MAGIC, Stats, get_header, header_size, header_words};
pub use area::MemoryArea;
pub use cache::{BATCH, CACHE_CAPACITY, FrameCache};
pub use error::{
    AddRegionError, AllocateAtError, AllocateError, AreaError, AttachError, ErrorCode, FreeError, GetHeaderError,
    InitError,
};
pub use locked::{DefaultRawMutex, LockedAllocator};
pub use machine::{
    DEFAULT_KERNEL_IMAGE, DEFAULT_MEMORY_MAP, DEFAULT_POOL, Gaps, ISA_DMA_LIMIT, ISA_DMA_POOL, MAX_MAP_ENTRIES,
    Machine, MachineOf, MapEntry, MemoryMap, MemoryMapOf, POOL_COUNT, ParseError, ParseErrorKind, PoolConfigError,
    Ranges, RegionKind,
};
pub use memkit_types::CpuId;
pub use pool::{DirectMap, HeaderMapping, Pool, PoolError, PoolStats, Pools, PoolsError};
