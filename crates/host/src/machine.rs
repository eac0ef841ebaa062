//! A machine brought up hosted, written once: its RAM as a memfd, its pools with their
//! headers in that RAM, the dataspace manager over the pools and the [`System`] (address
//! spaces with real faults) over the manager. The command line and the benchmarks start
//! from here.
//!
//! ```text
//!   Machine (memory map) ─▶ HostRam (memfd, up to the last usable byte)
//!                        ─▶ Pools (8 pools, headers in the RAM's direct map)
//!                        ─▶ Manager (root quota: every frame the pools hold; pool n → PoolId n)
//!                        ─▶ System (no spaces yet; fault-around on)
//! ```
//!
//! The RAM and the pools live as long as the process (they are leaked): the pools keep
//! their headers in the RAM's direct map, and the fault handler may reach them at any time.

use std::sync::Arc;

use memkit_dataspace::{Config, Manager, PoolId};
use memkit_phys::{LockedAllocator, Machine, Pools, PoolsError};
use memkit_types::{FrameSource, PAGE_SIZE};

use crate::ram::{HostRam, RamError};
use crate::system::{RamRef, System};

/// A pool's allocator as the hosted dataspace manager uses it.
pub type PoolSource = &'static LockedAllocator<'static>;

/// Why a machine could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The memory map has no usable RAM.
    NoUsableRam,
    /// The RAM of this many bytes could not be made.
    Ram(u64, RamError),
    /// The RAM's header mapping was taken already.
    HeadersTaken,
    /// The pools could not be built.
    Pools(PoolsError),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::NoUsableRam => f.write_str("the memory map has no usable RAM"),
            BootError::Ram(size, e) => write!(f, "RAM of {size:#x} bytes: {e}"),
            BootError::HeadersTaken => f.write_str("the RAM's headers are taken"),
            BootError::Pools(e) => write!(f, "pools: {e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// A machine brought up hosted: its RAM, its pools and the [`System`] over them.
pub struct HostedMachine {
    /// The pools (leaked: their headers live in the RAM).
    pub pools: &'static Pools<'static>,
    /// The dataspace manager over the pools and the address spaces.
    pub system: System<PoolSource>,
    /// The RAM, leaked for the life of the process; kept here so that it stays reachable.
    ram: &'static Arc<HostRam>,
}

impl core::fmt::Debug for HostedMachine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostedMachine").field("pools", &self.pools).finish_non_exhaustive()
    }
}

impl HostedMachine {
    /// Brings `machine` up: RAM up to its last usable byte, the eight pools with their
    /// headers in that RAM, and a dataspace manager whose root factory may use every frame
    /// the pools hold (the usable RAM minus the pools' headers), each pool `n` as the
    /// manager's pool `n`.
    ///
    /// # Errors
    /// [`BootError`]: no usable RAM, the memfd or its mapping failed, the pools' headers
    /// found no room.
    pub fn boot(machine: &Machine) -> Result<Self, BootError> {
        let usable = machine.usable();
        if usable.as_slice().is_empty() {
            return Err(BootError::NoUsableRam);
        }
        let size = usable.span().end().next_multiple_of(PAGE_SIZE as u64);
        let ram = Arc::new(HostRam::new(size).map_err(|e| BootError::Ram(size, e))?);
        let leaked: &'static Arc<HostRam> = Box::leak(Box::new(Arc::clone(&ram)));
        let mut mapping = leaked.header_mapping().ok_or(BootError::HeadersTaken)?;
        let pools: &'static Pools<'static> =
            Box::leak(Box::new(Pools::new(machine, &mut mapping).map_err(BootError::Pools)?));
        // The root quota is what the pools can deliver: their frames, without the headers
        // they keep in the RAM (the usable bytes would promise those too).
        let deliverable: u64 = pools.iter().map(|p| p.allocator().total_frames().get() * PAGE_SIZE as u64).sum();
        let mut manager = Manager::new(Config::new(deliverable), RamRef(Arc::clone(&ram)));
        for pool in pools.iter() {
            if let Some(id) = PoolId::new(pool.id() as u32) {
                manager.set_pool(id, pool.allocator());
            }
        }
        Ok(HostedMachine { pools, system: System::new(ram, manager), ram: leaked })
    }

    /// The RAM (alive for the rest of the process).
    #[must_use]
    pub fn ram(&self) -> &'static Arc<HostRam> {
        self.ram
    }
}
