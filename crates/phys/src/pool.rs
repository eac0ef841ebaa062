//! Pools of physical memory (DROPS DMphys `memphys_*`, seed 003).
//!
//! A machine has eight pools. Pool 7 ([`ISA_DMA_POOL`](crate::ISA_DMA_POOL)) is the usable RAM below 16 MiB,
//! for ISA DMA; pools 1 to 6 are empty unless [`MachineOf::configure_pool`] gives them a
//! window; pool 0 ([`DEFAULT_POOL`](crate::DEFAULT_POOL)) is all other usable RAM. Each pool has its own
//! [`LockedAllocator`] over the span of its RAM, the holes and reserved ranges inside the
//! span passed as reserved regions, and its header inside its own RAM.
//!
//! ```text
//!   0        640K     5M            16M                                   512M
//!   |usable|..hole..|kernel|usable | usable ........................... |
//!   |<------------- pool 7 -------->|<------------- pool 0 ------------->|
//!                        header ▲ (top)                         header ▲ (top)
//! ```
//!
//! The headers are reached through a [`HeaderMapping`]: however the caller maps physical
//! memory (a plain buffer in tests, a memfd's direct map hosted, the boot identity map then a
//! higher-half direct map in a kernel). [`DirectMap`] covers the common case of one
//! contiguous mapping of RAM. After the mapping changes, [`Pools::attach`] picks the headers
//! up again from their new addresses.

use core::fmt;

use lock_api::RawMutex;
use memkit_types::{Frame, FrameCount, FrameSource, FrameSourceError, Order, PhysAddr, PhysPlacement};

use crate::allocator::{Allocator, get_header};
use crate::area::MemoryArea;
use crate::error::{AttachError, GetHeaderError, InitError};
use crate::locked::{DefaultRawMutex, LockedAllocator};
use crate::machine::{MachineOf, POOL_COUNT};
use crate::reach::{Path, hit};

/// How the pools reach their header words: the caller's mapping of physical memory.
pub trait HeaderMapping<'h> {
    /// The words of physical `region` (4 KiB aligned, a multiple of 8 bytes) as this
    /// mapping reaches them, `None` when it does not. [`Pools`] asks for disjoint regions in
    /// increasing address order, each once.
    fn map(&mut self, region: MemoryArea) -> Option<&'h mut [u64]>;
}

/// One contiguous mapping of physical memory: `words[0]` is the word at physical address
/// `base`. A plain buffer in tests; the direct map of RAM hosted or in a kernel.
#[derive(Debug)]
pub struct DirectMap<'h> {
    rest: &'h mut [u64],
    base: u64,
}

impl<'h> DirectMap<'h> {
    /// The mapping whose first word is at physical address `base`.
    #[must_use]
    pub fn new(words: &'h mut [u64], base: PhysAddr) -> Self {
        DirectMap { rest: words, base: base.as_u64() }
    }
}

impl<'h> HeaderMapping<'h> for DirectMap<'h> {
    fn map(&mut self, region: MemoryArea) -> Option<&'h mut [u64]> {
        let skip = region.start.as_u64().checked_sub(self.base)?;
        if !skip.is_multiple_of(8) || !region.size.is_multiple_of(8) {
            return None;
        }
        let (skip, len) = (usize::try_from(skip / 8).ok()?, usize::try_from(region.size / 8).ok()?);
        if skip.checked_add(len)? > self.rest.len() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let (mine, after) = rest[skip..].split_at_mut(len);
        self.rest = after;
        self.base = region.end();
        Some(mine)
    }
}

/// Why the pools cannot be built or attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolsError {
    /// No room for this pool's header.
    Header(usize, GetHeaderError),
    /// The mapping does not reach this header region.
    Unmapped(MemoryArea),
    /// This pool's allocator could not be initialised.
    Init(usize, InitError),
    /// The words at this pool's header are not its header.
    Attach(usize, AttachError),
}

impl fmt::Display for PoolsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolsError::Header(p, e) => write!(f, "pool {p}: {e}"),
            PoolsError::Unmapped(r) => write!(f, "header region {r} is not mapped"),
            PoolsError::Init(p, e) => write!(f, "pool {p}: {e}"),
            PoolsError::Attach(p, e) => write!(f, "pool {p}: {e}"),
        }
    }
}

impl core::error::Error for PoolsError {}

/// Why a pool refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool number is not 0 to 7.
    NoSuchPool(usize),
    /// The pool has no memory.
    EmptyPool(usize),
    /// A fixed address that is not 4 KiB aligned.
    Unaligned(PhysAddr),
    /// The pool's allocator refused.
    Source(FrameSourceError),
}

impl PoolError {
    /// The seed's code (seed 003): `-L4_ENOMEM` (-12) when memory is short, `-L4_EINVAL`
    /// (-22) for a request that can never succeed.
    #[must_use]
    pub const fn code(self) -> i32 {
        match self {
            PoolError::Source(FrameSourceError::Exhausted(_) | FrameSourceError::InUse(_)) => {
                -memkit_types::l4::L4_ENOMEM
            }
            _ => -memkit_types::l4::L4_EINVAL,
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::NoSuchPool(p) => write!(f, "there is no pool {p} (pools are 0-7)"),
            PoolError::EmptyPool(p) => write!(f, "pool {p} has no memory"),
            PoolError::Unaligned(a) => write!(f, "address {a} is not 4 KiB aligned"),
            PoolError::Source(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for PoolError {}

/// What a pool holds, for printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool number.
    pub id: usize,
    /// From its first usable byte to its last.
    pub span: MemoryArea,
    /// Its header region.
    pub header: MemoryArea,
    /// Frames it manages (usable RAM minus its header).
    pub total_frames: FrameCount,
    /// Frames free now.
    pub free_frames: FrameCount,
    /// The largest free block's order.
    pub largest_free_order: Option<Order>,
}

impl PoolStats {
    /// The largest free block in bytes (0 when nothing is free).
    #[must_use]
    pub fn largest_free_bytes(&self) -> u64 {
        self.largest_free_order.map_or(0, Order::bytes)
    }
}

/// One pool: its number and its allocator.
pub struct Pool<'h, R: RawMutex = DefaultRawMutex> {
    id: usize,
    allocator: LockedAllocator<'h, R>,
}

impl<R: RawMutex> fmt::Debug for Pool<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("id", &self.id).field("span", &self.allocator.area()).finish_non_exhaustive()
    }
}

impl<'h, R: RawMutex> Pool<'h, R> {
    /// The pool number.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// The pool's allocator (a [`FrameSource`]).
    #[must_use]
    pub fn allocator(&self) -> &LockedAllocator<'h, R> {
        &self.allocator
    }

    /// What the pool holds now.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let a = self.allocator.lock();
        PoolStats {
            id: self.id,
            span: a.area(),
            header: a.header_region(),
            total_frames: a.total_frames(),
            free_frames: a.free_frames(),
            largest_free_order: a.largest_free_order(),
        }
    }
}

/// The eight pools of a machine.
///
/// [`Pools::new`] returns them by value; [`Pools::empty`] (a `const fn`) with
/// [`Pools::build`] builds them where they are to live instead, a `static` or a field of one,
/// one pool at a time, so that the whole (several KiB) never passes through the stack.
pub struct Pools<'h, R: RawMutex = DefaultRawMutex> {
    pools: [Option<Pool<'h, R>>; POOL_COUNT],
}

impl<R: RawMutex> fmt::Debug for Pools<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pools.iter().flatten()).finish()
    }
}

/// A pool number, its span and its header region.
type PlanEntry = (usize, MemoryArea, MemoryArea);

/// The span, header region and pool number of every pool with memory, by header address.
fn header_plan<const N: usize>(machine: &MachineOf<N>) -> Result<([PlanEntry; POOL_COUNT], usize), PoolsError> {
    let mut plan = [(0, MemoryArea::default(), MemoryArea::default()); POOL_COUNT];
    let mut n = 0;
    for id in 0..POOL_COUNT {
        let ranges = machine.pool_ranges(id);
        if ranges.as_slice().is_empty() {
            continue;
        }
        let span = ranges.span();
        let header = get_header(span, ranges.gaps()).map_err(|e| PoolsError::Header(id, e))?;
        plan[n] = (id, span, header);
        n += 1;
    }
    plan[..n].sort_unstable_by_key(|p| p.2.start);
    Ok((plan, n))
}

impl<'h, R: RawMutex> Pools<'h, R> {
    /// No pools yet: the place to [`build`](Self::build) them in. A `const fn`, so the pools
    /// can be a `static` (behind a lock) built at run time without a copy.
    #[must_use]
    pub const fn empty() -> Self {
        Pools { pools: [const { None }; POOL_COUNT] }
    }

    /// Builds the pools of `machine`: finds each pool's header region, maps it through
    /// `mapping` and initialises the pool's allocator there.
    ///
    /// # Errors
    /// [`PoolsError`] when a header finds no room, is not mapped, or cannot be initialised.
    pub fn new<const N: usize>(
        machine: &MachineOf<N>,
        mapping: &mut impl HeaderMapping<'h>,
    ) -> Result<Self, PoolsError> {
        let mut pools = Self::empty();
        pools.build(machine, mapping)?;
        Ok(pools)
    }

    /// As [`new`](Self::new), in place: the pools of `machine` replace whatever `self` held,
    /// each written into its slot. On an error `self` holds no pools.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn build<const N: usize>(
        &mut self,
        machine: &MachineOf<N>,
        mapping: &mut impl HeaderMapping<'h>,
    ) -> Result<(), PoolsError> {
        self.fill(machine, mapping, |id, span, header, words| {
            let ranges = machine.pool_ranges(id);
            Allocator::init(span, header, words, ranges.gaps()).map_err(|e| PoolsError::Init(id, e))
        })
    }

    /// Picks up the pools of `machine` whose headers [`new`](Pools::new) wrote, through a new
    /// mapping of the same physical memory.
    ///
    /// # Errors
    /// [`PoolsError`] when a header is not mapped or does not hold a valid header.
    pub fn attach<const N: usize>(
        machine: &MachineOf<N>,
        mapping: &mut impl HeaderMapping<'h>,
    ) -> Result<Self, PoolsError> {
        let mut pools = Self::empty();
        pools.reattach(machine, mapping)?;
        Ok(pools)
    }

    /// As [`attach`](Self::attach), in place: drops the views `self` holds and attaches new
    /// ones through `mapping`. On an error `self` holds no pools.
    ///
    /// # Errors
    /// As [`attach`](Self::attach).
    pub fn reattach<const N: usize>(
        &mut self,
        machine: &MachineOf<N>,
        mapping: &mut impl HeaderMapping<'h>,
    ) -> Result<(), PoolsError> {
        self.fill(machine, mapping, |id, _, _, words| Allocator::attach(words).map_err(|e| PoolsError::Attach(id, e)))
    }

    /// Empties the pools, then makes each pool of `machine`'s header plan with `make` (from
    /// its id, span, header region and header words, in increasing address order); on any
    /// error the pools are left empty. The one filling of [`build`](Pools::build) and
    /// [`reattach`](Pools::reattach).
    fn fill<const N: usize>(
        &mut self,
        machine: &MachineOf<N>,
        mapping: &mut impl HeaderMapping<'h>,
        mut make: impl FnMut(usize, MemoryArea, MemoryArea, &'h mut [u64]) -> Result<Allocator<'h>, PoolsError>,
    ) -> Result<(), PoolsError> {
        self.pools = [const { None }; POOL_COUNT];
        let result = (|| {
            let (plan, n) = header_plan(machine)?;
            for &(id, span, header) in &plan[..n] {
                let words = mapping.map(header).ok_or(PoolsError::Unmapped(header))?;
                let a = make(id, span, header, words)?;
                self.pools[id] = Some(Pool { id, allocator: LockedAllocator::new(a) });
            }
            Ok(())
        })();
        if result.is_err() {
            self.pools = [const { None }; POOL_COUNT];
        }
        result
    }

    /// Pool `id`, if it has memory.
    #[must_use]
    pub fn pool(&self, id: usize) -> Option<&Pool<'h, R>> {
        self.pools.get(id).and_then(Option::as_ref)
    }

    /// The pools with memory, by number.
    pub fn iter(&self) -> impl Iterator<Item = &Pool<'h, R>> {
        self.pools.iter().flatten()
    }

    /// The statistics of every pool with memory, by number.
    pub fn stats(&self) -> impl Iterator<Item = PoolStats> + '_ {
        self.iter().map(Pool::stats)
    }

    /// The pool whose span holds `frame`.
    #[must_use]
    pub fn pool_of(&self, frame: Frame) -> Option<usize> {
        let a = MemoryArea::from_frames(frame, FrameCount::new(1));
        self.iter().find(|p| p.allocator.area().contains(a)).map(Pool::id)
    }

    fn get(&self, id: usize) -> Result<&Pool<'h, R>, PoolError> {
        if id >= POOL_COUNT {
            return Err(PoolError::NoSuchPool(id));
        }
        self.pool(id).ok_or(PoolError::EmptyPool(id))
    }

    /// `count` contiguous frames from pool `pool` (`memphys_open`): anywhere, aligned to
    /// `2^align` frames, or exactly at a fixed address (`align` is then ignored).
    ///
    /// # Errors
    /// [`PoolError`]: no such pool, an empty pool, an unaligned fixed address, or the
    /// allocator's refusal (no room, a frame of the fixed range in use or outside the pool).
    pub fn allocate(
        &self,
        pool: usize,
        placement: PhysPlacement,
        count: FrameCount,
        align: Order,
    ) -> Result<Frame, PoolError> {
        let p = self.get(pool)?;
        match placement {
            PhysPlacement::AnyAddr => FrameSource::allocate(&p.allocator, count, align, None).map_err(|e| {
                if matches!(e, FrameSourceError::Exhausted(_)) {
                    hit(Path::PoolExhausted);
                }
                PoolError::Source(e)
            }),
            PhysPlacement::Fixed(addr) => {
                let f = Frame::from_start_address(addr).ok_or(PoolError::Unaligned(addr))?;
                p.allocator.allocate_at(f, count).map_err(PoolError::Source)?;
                Ok(f)
            }
        }
    }

    /// Gives `count` frames from `start` on back to pool `pool`.
    ///
    /// # Errors
    /// [`PoolError`]: no such pool, an empty pool, or a frame that is not allocated in it.
    pub fn free(&self, pool: usize, start: Frame, count: FrameCount) -> Result<(), PoolError> {
        FrameSource::free(&self.get(pool)?.allocator, start, count).map_err(PoolError::Source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    use crate::machine::{DEFAULT_POOL, ISA_DMA_LIMIT, ISA_DMA_POOL, Machine};

    #[test]
    fn default_machine_pools_in_a_plain_buffer() {
        let machine = Machine::default_machine();
        // Physical memory up to 512 MiB as one buffer (zero pages are not touched).
        let mut ram = vec![0u64; (512 << 20) / 8];
        let pools: Pools<'_> = Pools::new(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero())).unwrap();
        let ids: std::vec::Vec<usize> = pools.iter().map(Pool::id).collect();
        assert_eq!(ids, [DEFAULT_POOL, ISA_DMA_POOL]);
        let dma = pools.pool(ISA_DMA_POOL).unwrap().stats();
        assert!(dma.span.end() <= ISA_DMA_LIMIT.as_u64());
        let f = pools.allocate(ISA_DMA_POOL, PhysPlacement::AnyAddr, FrameCount::new(3), Order::ZERO).unwrap();
        assert!(f.start_address() < ISA_DMA_LIMIT);
        // The kernel image is never handed out, ANY_ADDR or fixed.
        assert!(
            pools
                .allocate(ISA_DMA_POOL, PhysPlacement::Fixed(PhysAddr::new(0x20_0000)), FrameCount::new(1), Order::ZERO)
                .is_err()
        );
        let fixed = PhysAddr::new(0x1000_0000);
        assert_eq!(
            pools.allocate(DEFAULT_POOL, PhysPlacement::Fixed(fixed), FrameCount::new(5), Order::ZERO),
            Ok(Frame::containing_address(fixed))
        );
        assert_eq!(
            pools
                .allocate(DEFAULT_POOL, PhysPlacement::Fixed(fixed), FrameCount::new(1), Order::ZERO)
                .map_err(PoolError::code),
            Err(-12)
        );
        assert_eq!(pools.pool_of(Frame::containing_address(fixed)), Some(DEFAULT_POOL));
        assert_eq!(
            pools.allocate(3, PhysPlacement::AnyAddr, FrameCount::new(1), Order::ZERO),
            Err(PoolError::EmptyPool(3))
        );
        assert_eq!(
            pools.allocate(8, PhysPlacement::AnyAddr, FrameCount::new(1), Order::ZERO),
            Err(PoolError::NoSuchPool(8))
        );
        let before: std::vec::Vec<PoolStats> = pools.stats().collect();
        // The headers live in `ram` at their physical addresses: attach again through a new view.
        let pools: Pools<'_> = Pools::attach(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero())).unwrap();
        let after: std::vec::Vec<PoolStats> = pools.stats().collect();
        assert_eq!(before, after);
        pools.free(DEFAULT_POOL, Frame::containing_address(fixed), FrameCount::new(5)).unwrap();
        pools.free(ISA_DMA_POOL, f, FrameCount::new(3)).unwrap();
        for p in pools.iter() {
            let s = p.stats();
            assert_eq!(s.free_frames, s.total_frames);
            p.allocator().lock().check_invariants();
        }
    }
}
