//! The hosted system: `memkit-host`'s `System`, address spaces that are `PROT_NONE`
//! windows whose pages the `SIGSEGV` handler maps, over a memfd. Loads and stores are real
//! CPU accesses.
//!
//! Loads and stores go through `System::load` and `System::store`, which resolve every page
//! first and report an access that cannot be served (no region, beyond the rights, no frame
//! left) as an error with nothing written, so the driver makes every access and checks how
//! it ended against the model.

use std::sync::Arc;

use crate::ModelFrameSource;
use memkit_dataspace::{Config, DataspaceId, Manager, PoolId, Revoker};
use memkit_host::{HostRam, HostSpaceId, RamRef, System};
use memkit_region::{
    AttachError, AttachRequest, DetachError, DetachFlags, Detached, Mmu, ProtectError, Remap, RemapError, Translation,
};
use memkit_types::{Access, Frame, FrameCount, PAGE_SIZE, Page, Rights, VirtAddr};

use crate::Action;
use crate::driver::{Counters, Driver, Failure, Skips};
use crate::target::{AccessError, Target};

/// The pools: (pool, first frame, frames). Pool 0 has room for two 2 MiB superpages.
const POOLS: [(u32, u64, u64); 3] = [(0, 0, 1280), (1, 1280, 64), (7, 1344, 64)];
/// RAM frames.
const RAM_FRAMES: u64 = 1408;
/// Address spaces.
const SPACES: usize = 3;
/// Pages per window.
const WINDOW_PAGES: usize = 48;

/// The hosted runtime's `System` with three spaces.
#[derive(Debug)]
pub struct HostedSystem {
    sys: System<ModelFrameSource>,
    spaces: Vec<HostSpaceId>,
    windows: Vec<(usize, usize)>,
}

impl HostedSystem {
    /// A system over fresh RAM.
    ///
    /// # Panics
    /// If the RAM or a window cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let ram = Arc::new(HostRam::new(RAM_FRAMES * PAGE_SIZE as u64).expect("a memfd for RAM"));
        let mut manager = Manager::new(Config::new(1 << 30), RamRef(Arc::clone(&ram)));
        for (p, first, n) in POOLS {
            let src = ModelFrameSource::new(Frame::from_number(first), FrameCount::new(n));
            manager.set_pool(PoolId::new(p).expect("0-7"), src);
        }
        let sys = System::new(ram, manager);
        let spaces: Vec<HostSpaceId> =
            (0..SPACES).map(|_| sys.create_space(WINDOW_PAGES * PAGE_SIZE).expect("a window")).collect();
        let windows = spaces
            .iter()
            .map(|&id| {
                sys.lock(|s| {
                    let m = s.region_map(id).expect("a space just made");
                    (m.window_start().as_usize(), m.window_size())
                })
            })
            .collect();
        HostedSystem { sys, spaces, windows }
    }
}

impl Default for HostedSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for HostedSystem {
    type Source = ModelFrameSource;
    type Memory = RamRef;

    fn manager<R>(&mut self, f: impl FnOnce(&mut Manager<ModelFrameSource, RamRef>, &mut dyn Revoker) -> R) -> R {
        self.sys.lock(|s| {
            let (m, mut r) = s.manager_and_revoker();
            f(m, &mut r)
        })
    }

    fn pools(&self) -> Vec<(PoolId, u64, u64)> {
        POOLS.iter().map(|&(p, first, n)| (PoolId::new(p).expect("0-7"), first, n)).collect()
    }

    fn spaces(&self) -> usize {
        SPACES
    }

    fn window(&self, space: usize) -> (usize, usize) {
        self.windows[space]
    }

    fn attach(&mut self, space: usize, req: &AttachRequest<DataspaceId>) -> Result<VirtAddr, AttachError> {
        let id = self.spaces[space];
        self.sys.lock(|s| s.attach(id, req)).unwrap_or(Err(AttachError::UnknownDataspace))
    }

    fn detach(
        &mut self,
        space: usize,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<DataspaceId>, DetachError> {
        let id = self.spaces[space];
        self.sys.lock(|s| s.detach(id, start, size, flags)).unwrap_or(Err(DetachError::NoRegion(start)))
    }

    fn protect(&mut self, space: usize, start: VirtAddr, size: usize, rights: Rights) -> Result<(), ProtectError> {
        let id = self.spaces[space];
        self.sys.lock(|s| s.protect(id, start, size, rights)).unwrap_or(Err(ProtectError::NotMapped(start)))
    }

    fn remap(&mut self, space: usize, start: VirtAddr, old: usize, new: usize) -> Result<VirtAddr, RemapError> {
        let id = self.spaces[space];
        self.sys.lock(|s| s.remap(id, start, old, new, Remap::InPlace)).unwrap_or(Err(RemapError::NotMapped(start)))
    }

    fn reports_refused_access(&self) -> bool {
        true
    }

    fn would_resolve(&mut self, space: usize, addr: VirtAddr, access: Access) -> Option<bool> {
        Some(self.sys.would_resolve(self.spaces[space], addr, access))
    }

    fn load(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]) -> Result<(), AccessError> {
        self.sys.load(self.spaces[space], addr, buf).map_err(|e| AccessError { code: e.code(), message: e.to_string() })
    }

    fn store(&mut self, space: usize, addr: VirtAddr, buf: &[u8]) -> Result<(), AccessError> {
        self.sys
            .store(self.spaces[space], addr, buf)
            .map_err(|e| AccessError { code: e.code(), message: e.to_string() })
    }

    fn translation(&mut self, space: usize, page: Page) -> Option<Translation> {
        let id = self.spaces[space];
        self.sys.lock(|s| s.space(id).ok()?.mmu.translate(page))
    }

    fn read_mapped(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]) {
        self.sys.load(self.spaces[space], addr, buf).expect("a load inside the window");
    }

    fn check_invariants(&mut self) {
        self.sys.lock(|s| {
            s.manager.check_invariants();
            for id in s.space_ids() {
                if let Ok(m) = s.region_map(id) {
                    m.check_invariants();
                }
            }
        });
    }
}

/// Runs `actions` on a fresh hosted system; returns what the run reached and its first
/// failure.
///
/// # Panics
/// If the RAM or a window cannot be made.
pub fn run_hosted(actions: impl IntoIterator<Item = Action>, skips: Skips) -> (Counters, Result<(), Failure>) {
    let mut driver = Driver::new(HostedSystem::new(), skips);
    let r = driver.run(actions);
    (driver.counters.clone(), r)
}
