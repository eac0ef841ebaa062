//! The software system: a [`SpaceSet`] of [`SoftMmu`] address spaces over the dataspace
//! manager, whose pools are the frame allocator's (`memkit-phys`) on a small machine.
//!
//! ```text
//!   machine: pool 7  0x0..0x40000        (64 frames, ISA DMA)
//!            pool 0  0x1000000..0x1500000 (1280 frames: room for two 2 MiB superpages)
//!            pool 1  0x1600000..0x1640000 (64 frames)
//!   3 spaces × 48-page windows; frame contents in a SparseRam
//! ```

use crate::SparseRam;
use memkit_dataspace::{Config, DataspaceId, Manager, PoolId, Revoker};
use memkit_phys::{DirectMap, LockedAllocator, Machine, MemoryArea, Pools};
use memkit_region::{
    AttachError, AttachRequest, DetachError, DetachFlags, Detached, Mmu, ProtectError, RegionMap, Remap, RemapError,
    SoftMmu, Translation,
};
use memkit_spaces::{SpaceId, SpaceSet};
use memkit_types::{Access, PAGE_SIZE, Page, PhysAddr, Rights, VirtAddr};

use crate::Action;
use crate::driver::{Counters, Driver, Failure, Skips};
use crate::target::{AccessError, Target};

/// The small machine's memory map (pool 1's window is configured on top).
pub const MEMORY_MAP: &str = "0x0 0x40000 usable\n0x1000000 0x1500000 usable\n0x1600000 0x1640000 usable\n";
/// Pool 1's window.
const POOL1: (u64, u64) = (0x160_0000, 0x164_0000);
/// The end of physical memory.
const PHYS_END: u64 = 0x164_0000;
/// Address spaces.
pub const SPACES: usize = 3;
/// Pages per space's window.
pub const WINDOW_PAGES: usize = 48;

/// The small machine, with pool 1 configured.
///
/// # Panics
/// Never: the map is a constant.
#[must_use]
pub fn machine() -> Machine {
    let mut m = Machine::parse(MEMORY_MAP, None).expect("the small machine's map parses");
    m.configure_pool(1, MemoryArea::from_bounds(PhysAddr::new(POOL1.0), PhysAddr::new(POOL1.1)))
        .expect("pool 1's window is valid");
    m
}

/// A [`SpaceSet`] over the small machine's pools.
#[derive(Debug)]
pub struct SoftSystem<'a, 'h> {
    set: SpaceSet<&'a LockedAllocator<'h>, SparseRam, SoftMmu>,
    pools: Vec<(PoolId, u64, u64)>,
}

impl<'a, 'h> SoftSystem<'a, 'h> {
    /// The system over `pools` (built from [`machine`]).
    #[must_use]
    pub fn new(machine: &Machine, pools: &'a Pools<'h>) -> Self {
        let mut manager = Manager::new(Config::new(1 << 30), SparseRam::new());
        let mut list = Vec::new();
        for p in pools.iter() {
            let id = PoolId::new(p.id() as u32).expect("pools are 0-7");
            manager.set_pool(id, p.allocator());
            let span = machine.pool_ranges(p.id()).span();
            list.push((id, span.start.as_u64() / PAGE_SIZE as u64, span.size / PAGE_SIZE as u64));
        }
        let mut set = SpaceSet::new(manager);
        for i in 0..SPACES {
            let start = VirtAddr::new(0x4000_0000 + i * 0x100_0000);
            set.add_space(RegionMap::new(start, WINDOW_PAGES * PAGE_SIZE), SoftMmu::new());
        }
        SoftSystem { set, pools: list }
    }
}

fn fault<E: core::fmt::Display>(code: i32, e: E) -> AccessError {
    AccessError { code, message: e.to_string() }
}

impl<'a, 'h> Target for SoftSystem<'a, 'h> {
    type Source = &'a LockedAllocator<'h>;
    type Memory = SparseRam;

    fn manager<R>(&mut self, f: impl FnOnce(&mut Manager<Self::Source, SparseRam>, &mut dyn Revoker) -> R) -> R {
        let (m, mut r) = self.set.manager_and_revoker();
        f(m, &mut r)
    }

    fn pools(&self) -> Vec<(PoolId, u64, u64)> {
        self.pools.clone()
    }

    fn spaces(&self) -> usize {
        SPACES
    }

    fn window(&self, space: usize) -> (usize, usize) {
        let s = self.set.space(SpaceId(space)).expect("the driver's spaces exist");
        (s.map.window_start().as_usize(), s.map.window_size())
    }

    fn attach(&mut self, space: usize, req: &AttachRequest<DataspaceId>) -> Result<VirtAddr, AttachError> {
        self.set.attach(SpaceId(space), req).map_err(|e| match e {
            memkit_spaces::SpaceError::Op(e) => e,
            // `NoSpace`, or an error a later spaces crate adds.
            _ => AttachError::UnknownDataspace,
        })
    }

    fn protect(&mut self, space: usize, start: VirtAddr, size: usize, rights: Rights) -> Result<(), ProtectError> {
        self.set.protect(SpaceId(space), start, size, rights).map_err(|e| match e {
            memkit_spaces::SpaceError::Op(e) => e,
            // `NoSpace`, or an error a later spaces crate adds.
            _ => ProtectError::NotMapped(start),
        })
    }

    fn remap(&mut self, space: usize, start: VirtAddr, old: usize, new: usize) -> Result<VirtAddr, RemapError> {
        self.set.remap(SpaceId(space), start, old, new, Remap::InPlace).map_err(|e| match e {
            memkit_spaces::SpaceError::Op(e) => e,
            // `NoSpace`, or an error a later spaces crate adds.
            _ => RemapError::NotMapped(start),
        })
    }

    fn detach(
        &mut self,
        space: usize,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<DataspaceId>, DetachError> {
        self.set.detach(SpaceId(space), start, size, flags).map_err(|e| match e {
            memkit_spaces::SpaceError::Op(e) => e,
            // `NoSpace`, or an error a later spaces crate adds.
            _ => DetachError::NoRegion(start),
        })
    }

    fn reports_refused_access(&self) -> bool {
        true
    }

    fn would_resolve(&mut self, _space: usize, _addr: VirtAddr, _access: Access) -> Option<bool> {
        None
    }

    fn load(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]) -> Result<(), AccessError> {
        self.set.load(SpaceId(space), addr, buf).map_err(|e| fault(e.code(), e))
    }

    fn store(&mut self, space: usize, addr: VirtAddr, buf: &[u8]) -> Result<(), AccessError> {
        self.set.store(SpaceId(space), addr, buf).map_err(|e| fault(e.code(), e))
    }

    fn translation(&mut self, space: usize, page: Page) -> Option<Translation> {
        self.set.space(SpaceId(space))?.mmu.translate(page)
    }

    fn read_mapped(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]) {
        let s = self.set.space(SpaceId(space)).expect("the driver's spaces exist");
        s.mmu.load(self.set.manager().memory(), addr, buf).expect("a readable translation");
    }

    fn check_invariants(&mut self) {
        self.set.check_invariants();
        self.set.manager_mut().check_invariants();
        for i in 0..SPACES {
            if let Some(s) = self.set.space(SpaceId(i)) {
                s.mmu.check_invariants();
            }
        }
    }
}

/// Runs `actions` on a fresh software system; returns what the run reached and its first
/// failure.
///
/// # Panics
/// If the small machine's pools cannot be built (a defect of the frame allocator).
pub fn run_soft(actions: impl IntoIterator<Item = Action>, skips: Skips) -> (Counters, Result<(), Failure>) {
    let m = machine();
    let mut words = vec![0u64; (PHYS_END / 8) as usize];
    let pools: Pools<'_> = Pools::new(&m, &mut DirectMap::new(&mut words, PhysAddr::zero())).expect("pools build");
    let mut driver = Driver::new(SoftSystem::new(&m, &pools), skips);
    let r = driver.run(actions);
    (driver.counters.clone(), r)
}
