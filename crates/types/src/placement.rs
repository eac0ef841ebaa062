//! Where physical memory is taken from: anywhere, or at a fixed address.

use crate::PhysAddr;

/// Where a run of frames goes in its pool: the `addr` argument of DROPS'
/// `l4dm_memphys_open` and `l4dm_memphys_copy` (seed 003), and `Fixed_paddr` of
/// `L4Re::Mem_alloc` (seed 000). The pools (`memkit-phys`) and the dataspace manager
/// (`memkit-dataspace`) take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PhysPlacement {
    /// `L4DM_MEMPHYS_ANY_ADDR`: wherever the pool has a fitting free run.
    #[default]
    AnyAddr,
    /// Exactly at this physical address (page aligned), as one contiguous run.
    Fixed(PhysAddr),
}
