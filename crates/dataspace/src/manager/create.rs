//! Creating dataspaces: `Mem_alloc::alloc`, `l4dm_mem_open`, `l4dm_memphys_open`, and the
//! common core that checks a request, allocates all its frames or none, and only then charges
//! the factory and hands out a slot.

use alloc::string::String;
use alloc::vec::Vec;

use memkit_types::{
    Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SHIFT, PhysAddr, PhysMemory, PhysPlacement,
    SUPERPAGE_SHIFT,
};

use super::{
    Dataspace, Kind, MAX_ALIGN_SHIFT, MAX_SIZE, Manager, NewDataspace, PAGE, Slot, Spec, allocate_frames,
    backing_pages, free_frames, order_for_align, release_entries,
};
use crate::entry::Entry;
use crate::error::CreateError;
use crate::flags::{DmFlags, MemAllocFlags};
use crate::ids::{ClientId, DataspaceId, FactoryId, PoolId};
use crate::request::MemphysOpenRequest;

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// `L4Re::Mem_alloc::alloc`: anonymous memory from pool 0, charged to `factory`.
    ///
    /// `size` is in bytes and kept as given; the backing is page (superpage) granular. A
    /// negative `size` with [`MemAllocFlags::CONTINUOUS`] allocates as much contiguous memory
    /// as possible while leaving at least `-size` bytes of the factory's quota. `align` is
    /// log2 and raised to at least the page shift (the superpage shift with `SUPER_PAGES`).
    /// `paddr` is used only with [`MemAllocFlags::FIXED_PADDR`], which is honoured only on a
    /// system without an MMU.
    ///
    /// # Errors
    /// `-L4_ERANGE`: [`CreateError::SizeNotSupported`], [`CreateError::AlignmentOutOfRange`],
    /// [`CreateError::AddressOutOfPool`]; `-L4_ENOMEM`: [`CreateError::OutOfMemory`],
    /// [`CreateError::QuotaExceeded`], [`CreateError::AddressInUse`]; and
    /// [`CreateError::FixedAddressNeedsNoMmu`], [`CreateError::MisalignedAddress`],
    /// [`CreateError::InvalidFactory`], [`CreateError::PoolMissing`], [`CreateError::NoHandle`].
    pub fn alloc(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        size: i64,
        flags: MemAllocFlags,
        align: u32,
        paddr: PhysAddr,
    ) -> Result<DataspaceId, CreateError> {
        let mut kind = Kind::from_properties(
            flags.contains(MemAllocFlags::CONTINUOUS),
            flags.contains(MemAllocFlags::PINNED),
            flags.contains(MemAllocFlags::SUPER_PAGES),
        );
        let placement = if flags.contains(MemAllocFlags::FIXED_PADDR) {
            if self.config.mmu {
                return Err(CreateError::FixedAddressNeedsNoMmu(paddr));
            }
            kind |= Kind::FIXED;
            PhysPlacement::Fixed(paddr)
        } else {
            PhysPlacement::AnyAddr
        };
        if size < 0 {
            if !kind.contains(Kind::CONTIGUOUS) || kind.contains(Kind::FIXED) {
                return Err(CreateError::SizeNotSupported(size.into()));
            }
            return self.alloc_maximum(factory, owner, size.unsigned_abs(), kind, align);
        }
        self.create(NewDataspace {
            factory,
            owner,
            size: size as u64,
            kind,
            pool: PoolId::DEFAULT,
            align,
            placement,
            name: "",
        })
    }

    /// `l4dm_mem_open`: a dataspace from pool 0. `flags` may hold `CONTIGUOUS`, `PINNED` and
    /// `RESIZE` (accepted: every dataspace can be resized by its owner); `align` is log2.
    ///
    /// # Errors
    /// As [`alloc`](Manager::alloc).
    pub fn mem_open(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        size: u64,
        align: u32,
        flags: DmFlags,
        name: &str,
    ) -> Result<DataspaceId, CreateError> {
        let kind = Self::kind_of(flags);
        self.create(NewDataspace {
            factory,
            owner,
            size,
            kind,
            pool: PoolId::DEFAULT,
            align,
            placement: PhysPlacement::AnyAddr,
            name,
        })
    }

    /// `l4dm_memphys_open`: a dataspace in pool `pool` (0–7), at a fixed physical address or
    /// anywhere. A fixed placement is always one contiguous run (on MMU systems too: this is
    /// the privileged pool interface). `align` (log2) places a contiguous dataspace; flags:
    /// `CONTIGUOUS`, `PINNED`, `SUPERPAGES`.
    ///
    /// # Errors
    /// As [`alloc`](Manager::alloc), and [`CreateError::PoolOutOfRange`].
    pub fn memphys_open(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        req: MemphysOpenRequest<'_>,
    ) -> Result<DataspaceId, CreateError> {
        let pool = PoolId::new(req.pool).ok_or(CreateError::PoolOutOfRange(req.pool))?;
        let mut kind = Self::kind_of(req.flags);
        if matches!(req.addr, PhysPlacement::Fixed(_)) {
            kind |= Kind::FIXED;
        }
        self.create(NewDataspace {
            factory,
            owner,
            size: req.size,
            kind,
            pool,
            align: req.align,
            placement: req.addr,
            name: req.name,
        })
    }

    pub(super) fn kind_of(flags: DmFlags) -> Kind {
        Kind::from_properties(
            flags.contains(DmFlags::CONTIGUOUS),
            flags.contains(DmFlags::PINNED),
            flags.contains(DmFlags::SUPERPAGES),
        )
    }

    pub(super) fn create(&mut self, new: NewDataspace<'_>) -> Result<DataspaceId, CreateError> {
        let NewDataspace { factory, owner, size, kind, pool, align, placement, name } = new;
        let pages = match backing_pages(size, kind.granule()) {
            Some(p) if size > 0 => p,
            _ => return Err(CreateError::SizeNotSupported(size.into())),
        };
        self.build(Spec { factory, owner, pages, size, kind, pool, align, placement, name })
    }

    /// The largest contiguous dataspace that leaves `keep` bytes of the factory's quota.
    fn alloc_maximum(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        keep: u64,
        kind: Kind,
        align: u32,
    ) -> Result<DataspaceId, CreateError> {
        let room = self.room(factory).ok_or(CreateError::InvalidFactory(factory))?;
        let granule = kind.granule();
        let most = (room.saturating_sub(keep) / PAGE).min(MAX_SIZE / PAGE) / granule * granule;
        if most == 0 {
            return Err(CreateError::QuotaExceeded(factory, keep.saturating_add(granule * PAGE)));
        }
        let pool = self.pools[PoolId::DEFAULT.index()].as_ref().ok_or(CreateError::PoolMissing(PoolId::DEFAULT))?;
        let most = most.min(pool.free_frames().get() / granule * granule);
        // Binary search for the largest run the pool can serve: `lo` is known to fit.
        let min_align = if kind.contains(Kind::SUPERPAGES) { SUPERPAGE_SHIFT } else { PAGE_SHIFT };
        if align > MAX_ALIGN_SHIFT {
            return Err(CreateError::AlignmentOutOfRange(align));
        }
        let order = order_for_align(align.max(min_align));
        let (mut lo, mut hi) = (0u64, most / granule);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match allocate_frames(&self.pools, PoolId::DEFAULT, mid * granule, order) {
                Ok(frame) => {
                    free_frames(&self.pools, PoolId::DEFAULT, frame, mid * granule);
                    lo = mid;
                }
                Err(_) => hi = mid - 1,
            }
        }
        if lo == 0 {
            return Err(CreateError::OutOfMemory(FrameCount::new(granule)));
        }
        let pages = lo * granule;
        self.build(Spec {
            factory,
            owner,
            pages,
            size: pages * PAGE,
            kind,
            pool: PoolId::DEFAULT,
            align,
            placement: PhysPlacement::AnyAddr,
            name: "",
        })
    }

    fn take_slot(&mut self) -> Result<(), CreateError> {
        if self.free_slots.is_empty() {
            if self.slots.len() >= u32::MAX as usize {
                return Err(CreateError::NoHandle(self.live));
            }
            self.slots.try_reserve(1).map_err(|_| CreateError::NoHandle(self.live))?;
            self.free_slots.try_reserve(1).map_err(|_| CreateError::NoHandle(self.live))?;
            self.slots.push(Slot::default());
            self.free_slots.push((self.slots.len() - 1) as u32);
        }
        Ok(())
    }

    /// Builds a dataspace: checks everything, then allocates its frames (all or none), then
    /// charges its factory and gives it a slot.
    fn build(&mut self, spec: Spec<'_>) -> Result<DataspaceId, CreateError> {
        let room = self.room(spec.factory).ok_or(CreateError::InvalidFactory(spec.factory))?;
        let min_align = if spec.kind.contains(Kind::SUPERPAGES) { SUPERPAGE_SHIFT } else { PAGE_SHIFT };
        if spec.align > MAX_ALIGN_SHIFT {
            return Err(CreateError::AlignmentOutOfRange(spec.align));
        }
        let align = spec.align.max(min_align);
        let Some(source) = self.pools[spec.pool.index()].as_ref() else {
            return Err(CreateError::PoolMissing(spec.pool));
        };
        // No dataspace may be larger than its pool: those pages could never have frames
        // (the quota spans every pool).
        if spec.pages > source.total_frames().get() {
            return Err(CreateError::OutOfMemory(FrameCount::new(spec.pages)));
        }
        let bytes = spec.pages * PAGE;
        if bytes > room {
            return Err(CreateError::QuotaExceeded(spec.factory, bytes));
        }
        let mut entries = Vec::new();
        entries
            .try_reserve_exact(spec.pages as usize)
            .map_err(|_| CreateError::OutOfMemory(FrameCount::new(spec.pages)))?;
        self.take_slot()?;
        let pool = spec.pool;
        match spec.placement {
            PhysPlacement::Fixed(addr) => {
                let granule_bytes = spec.kind.granule() * PAGE;
                if !addr.is_aligned(granule_bytes) {
                    return Err(CreateError::MisalignedAddress(addr));
                }
                let end = addr.checked_add(bytes).ok_or(CreateError::AddressOutOfPool(addr))?;
                if pool.limit().is_some_and(|l| end.as_u64() > l) {
                    return Err(CreateError::AddressOutOfPool(addr));
                }
                let start = Frame::containing_address(addr);
                let source = self.pools[pool.index()].as_ref().ok_or(CreateError::PoolMissing(pool))?;
                source.allocate_at(start, FrameCount::new(spec.pages)).map_err(|e| match e {
                    FrameSourceError::InUse(f) => CreateError::AddressInUse(f.start_address()),
                    FrameSourceError::Exhausted(n) => CreateError::OutOfMemory(n),
                    // `Invalid`, `NotAllocated`, and any refusal a later source adds.
                    _ => CreateError::AddressOutOfPool(addr),
                })?;
                self.memory.zero(start, FrameCount::new(spec.pages));
                entries.extend((0..spec.pages).map(|i| Entry::new(Frame::from_number(start.number() + i), pool)));
            }
            PhysPlacement::AnyAddr if spec.kind.is_one_run() => {
                let start = allocate_frames(&self.pools, pool, spec.pages, order_for_align(align))
                    .map_err(|_| CreateError::OutOfMemory(FrameCount::new(spec.pages)))?;
                self.memory.zero(start, FrameCount::new(spec.pages));
                entries.extend((0..spec.pages).map(|i| Entry::new(Frame::from_number(start.number() + i), pool)));
            }
            PhysPlacement::AnyAddr if spec.kind.is_bound() => {
                self.fill_granules(&mut entries, pool, spec.kind.granule(), spec.pages)
                    .map_err(|()| CreateError::OutOfMemory(FrameCount::new(spec.kind.granule())))?;
            }
            PhysPlacement::AnyAddr => entries.resize(spec.pages as usize, Entry::EMPTY),
        }
        if let Some(f) = self.factory_mut(spec.factory) {
            f.used += bytes;
        }
        let index = self.free_slots.pop().unwrap_or_default();
        let slot = &mut self.slots[index as usize];
        slot.ds = Some(Dataspace {
            owner: spec.owner,
            factory: spec.factory,
            name: String::from(spec.name),
            size: spec.size,
            kind: spec.kind,
            pool,
            align,
            entries,
            refs: 0,
            open: true,
        });
        self.live += 1;
        Ok(DataspaceId::new(index, slot.generation))
    }

    /// Appends `pages` pages in granules of `granule` frames (each granule allocated and
    /// zeroed separately); on failure frees what it appended and leaves `entries` as it was.
    pub(super) fn fill_granules(
        &mut self,
        entries: &mut Vec<Entry>,
        pool: PoolId,
        granule: u64,
        pages: u64,
    ) -> Result<(), ()> {
        let before = entries.len();
        let order = Order::for_frames(FrameCount::new(granule)).unwrap_or(Order::ZERO);
        for _ in 0..pages / granule {
            match allocate_frames(&self.pools, pool, granule, order) {
                Ok(start) => {
                    self.memory.zero(start, FrameCount::new(granule));
                    entries.extend((0..granule).map(|i| Entry::new(Frame::from_number(start.number() + i), pool)));
                }
                Err(_) => {
                    release_entries(&self.pools, &mut self.shares, &entries[before..], true);
                    entries.truncate(before);
                    return Err(());
                }
            }
        }
        Ok(())
    }
}
