//! The kernel's physical frames: memkit's eight pools built from the machine's memory map,
//! each a pmallocator whose header lives inside its own RAM, reached through whatever
//! physical window is in use.
//!
//! ```text
//!   0      640K   1M kernel image   16M                                       512M
//!   |usable|hole |###############| usable |  usable ...........................|header|
//!   |<---------------- pool 7 (ISA DMA) ---------->|<------------- pool 0 ---------------->|
//!                                  header ▲ (top of pool 7)
//!   views: Pools::new(identity mapping) ──switch page tables──▶ Pools::attach(direct map)
//! ```
//!
//! The headers hold frame numbers, word offsets and bits, never a pointer, so the views
//! attached through the higher-half direct map after the switch see exactly the state the
//! identity-mapped views left.
//!
//! # Unsafe
//! A pool's header is viewed as a `&mut [u64]` through the physical window: the header
//! regions are RAM, page aligned and disjoint, `Pools` asks for each once per mapping, and
//! every view made through one mapping is dropped before the next mapping is used.

use core::slice;

use memkit_phys::{
    AllocateError, Allocator, DEFAULT_POOL, FrameCache, FreeError, HeaderMapping, Machine, MapEntry, MemoryArea,
    MemoryMap, Pools, PoolsError, RegionKind, Stats,
};
use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, Order, PhysAddr, VirtAddr};

use crate::phys_window;
use crate::pvh::{self, MemoryKind};
use crate::smp::{MAX_CPUS, ThisCpu};

/// Why the pools could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramesError {
    /// More memory-map entries than a machine holds.
    TooManyEntries(MapEntry),
    /// The pools could not be built, or found again through the new mapping.
    Pools(PoolsError),
    /// The pools were re-attached before they were built.
    NotBuilt,
    /// The pools were re-attached after their caches made their mapping final.
    Settled,
}

/// The pools' headers through the current physical window.
#[derive(Debug)]
struct WindowMapping;

impl HeaderMapping<'static> for WindowMapping {
    fn map(&mut self, region: MemoryArea) -> Option<&'static mut [u64]> {
        let words = usize::try_from(region.size / 8).ok()?;
        let ptr = phys_window::current().ptr(region.start, words * 8).cast::<u64>();
        // SAFETY: the window maps the region (RAM the memory map reports, page aligned, so
        // aligned for u64). `Pools` asks for each header region once and the regions are
        // disjoint; [`KernelFrames`] drops every view made from one mapping before it makes
        // another, and the header frames are never handed out, so each slice is the only
        // access to its words while it lives.
        Some(unsafe { slice::from_raw_parts_mut(ptr, words) })
    }
}

/// The kernel's frame pools: a `static`, its pools (several KiB) built in place.
#[derive(Debug)]
pub(crate) struct KernelFrames {
    machine: spin::Once<Machine>,
    pools: spin::RwLock<Pools<'static>>,
    /// Per-CPU caches of single frames in front of the default pool, once the pools have
    /// their final mapping ([`enable_cache`](Self::enable_cache)).
    cache: spin::Once<Cache>,
}

/// The default pool's per-CPU frame caches, one slot per CPU index.
type Cache = FrameCache<'static, 'static, ThisCpu, MAX_CPUS>;

/// The machine the PVH memory map describes, with the kernel image (`image`, from the linker
/// symbols) reserved.
///
/// # Errors
/// [`FramesError::TooManyEntries`] when the map does not fit.
pub(crate) fn machine(map: &pvh::MemoryMap, image: MemoryArea) -> Result<Machine, FramesError> {
    let mut parsed = MemoryMap::new();
    let entries = map.entries().iter().map(|r| MapEntry {
        area: MemoryArea::from_bounds(r.start, r.end),
        kind: if r.kind == MemoryKind::Ram { RegionKind::Usable } else { RegionKind::Reserved },
    });
    for entry in entries {
        parsed.push(entry).map_err(FramesError::TooManyEntries)?;
    }
    Ok(Machine::from_map(parsed, Some(image)))
}

impl KernelFrames {
    /// No pools yet (see [`build`](Self::build)).
    pub(crate) const fn new() -> Self {
        KernelFrames { machine: spin::Once::new(), pools: spin::RwLock::new(Pools::empty()), cache: spin::Once::new() }
    }

    /// Builds the pools of `machine` in place, writing their headers through the current
    /// window.
    ///
    /// # Errors
    /// [`FramesError::Pools`] when a header finds no room or cannot be written.
    pub(crate) fn build(&self, machine: Machine) -> Result<(), FramesError> {
        let machine = self.machine.call_once(|| machine);
        self.pools.write().build(machine, &mut WindowMapping).map_err(FramesError::Pools)
    }

    /// Drops the views of the headers and attaches new ones through the current window
    /// (after the kernel switched page tables).
    ///
    /// # Errors
    /// [`FramesError::Pools`] when the words seen through the new window are not the headers.
    pub(crate) fn reattach(&self) -> Result<(), FramesError> {
        let machine = self.machine.get().ok_or(FramesError::NotBuilt)?;
        let mut pools = self.pools.try_write().ok_or(FramesError::Settled)?;
        pools.reattach(machine, &mut WindowMapping).map_err(FramesError::Pools)
    }

    /// Puts per-CPU caches of single frames in front of the default pool. The pools keep
    /// their mapping from now on: [`reattach`](Self::reattach) fails afterwards.
    ///
    /// # Errors
    /// [`FramesError::NotBuilt`] before the pools exist.
    pub(crate) fn enable_cache(&'static self) -> Result<(), FramesError> {
        let pools = spin::RwLockReadGuard::leak(self.pools.read());
        let pool = pools.pool(DEFAULT_POOL).ok_or(FramesError::NotBuilt)?;
        self.cache.call_once(|| FrameCache::new(pool.allocator(), ThisCpu));
        Ok(())
    }

    /// Frames parked in the per-CPU caches (allocated as far as the pool knows).
    pub(crate) fn cached_frames(&self) -> FrameCount {
        self.cache.get().map_or(FrameCount::new(0), FrameCache::cached_frames)
    }

    /// Runs `f` on the pools.
    pub(crate) fn with_pools<R>(&self, f: impl FnOnce(&Pools<'static>) -> R) -> R {
        f(&self.pools.read())
    }

    fn with<R>(&self, f: impl FnOnce(&mut Allocator<'static>) -> R) -> R {
        self.with_pools(|pools| {
            let pool = pools.pool(DEFAULT_POOL).expect("the default pool has memory");
            let mut allocator = pool.allocator().lock();
            f(&mut allocator)
        })
    }

    /// The default pool's header region.
    pub(crate) fn header(&self) -> MemoryArea {
        self.with(|a| a.header_region())
    }

    /// Where the default pool's view reads its header now.
    pub(crate) fn header_mapping_address(&self) -> VirtAddr {
        VirtAddr::new(phys_window::current().ptr(self.header().start, 8) as usize)
    }

    /// The default pool's free frames by order and totals.
    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats())
    }

    /// Runs the invariant checker of every pool.
    pub(crate) fn check_invariants(&self) {
        self.with_pools(|pools| pools.iter().for_each(|p| p.allocator().lock().check_invariants()));
    }

    /// Whether `frame` is free in the default pool.
    pub(crate) fn is_free(&self, frame: Frame) -> bool {
        self.with(|a| a.is_free(frame))
    }

    /// The seed's `allocate(order)`, from the default pool.
    ///
    /// # Errors
    /// As [`Allocator::allocate`].
    pub(crate) fn allocate_block(&self, order: Order) -> Result<Frame, AllocateError> {
        self.with(|a| a.allocate(order))
    }

    /// The seed's `free(area)`, to the default pool.
    ///
    /// # Errors
    /// As [`Allocator::free`].
    pub(crate) fn free_block(&self, area: MemoryArea) -> Result<(), FreeError> {
        self.with(|a| a.free(area))
    }

    /// Pool `pool` as a frame source (for the dataspace manager's pools).
    pub(crate) fn pool(&self, pool: usize) -> PoolFrames<'_> {
        PoolFrames { frames: self, pool }
    }
}

/// The default pool is the kernel's frame source (page tables, heap pages); single frames
/// go through the running CPU's cache once it is enabled.
impl FrameSource for KernelFrames {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        match self.cache.get() {
            Some(cache) => cache.allocate(count, align, limit),
            None => self.pool(DEFAULT_POOL).allocate(count, align, limit),
        }
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        match self.cache.get() {
            Some(cache) => cache.allocate_at(start, count),
            None => self.pool(DEFAULT_POOL).allocate_at(start, count),
        }
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        match self.cache.get() {
            Some(cache) => cache.free(start, count),
            None => self.pool(DEFAULT_POOL).free(start, count),
        }
    }

    /// Free in the pool plus parked in the caches.
    fn free_frames(&self) -> FrameCount {
        match self.cache.get() {
            Some(cache) => cache.free_frames(),
            None => self.pool(DEFAULT_POOL).free_frames(),
        }
    }

    fn total_frames(&self) -> FrameCount {
        self.pool(DEFAULT_POOL).total_frames()
    }
}

/// One pool of the kernel's frames, as a [`FrameSource`]; an empty pool serves nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolFrames<'f> {
    frames: &'f KernelFrames,
    pool: usize,
}

impl PoolFrames<'_> {
    fn with<R>(&self, empty: R, f: impl FnOnce(&memkit_phys::LockedAllocator<'static>) -> R) -> R {
        self.frames.with_pools(|pools| pools.pool(self.pool).map_or(empty, |p| f(p.allocator())))
    }
}

impl FrameSource for PoolFrames<'_> {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        self.with(Err(FrameSourceError::Exhausted(count)), |a| FrameSource::allocate(a, count, align, limit))
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.with(Err(FrameSourceError::Invalid), |a| FrameSource::allocate_at(a, start, count))
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        self.with(Err(FrameSourceError::NotAllocated(start)), |a| FrameSource::free(a, start, count))
    }

    fn free_frames(&self) -> FrameCount {
        self.with(FrameCount::new(0), FrameSource::free_frames)
    }

    fn total_frames(&self) -> FrameCount {
        self.with(FrameCount::new(0), FrameSource::total_frames)
    }
}
