//! The dataspace manager: dataspaces, factories (quotas), pools and copy-on-write.
//!
//! ```text
//!   Manager ─┬─ pools[0..8]: S: FrameSource         (pool 7: frames below 16 MiB)
//!            ├─ memory: M: PhysMemory               (zero, copy, read, write frames)
//!            ├─ factories: limit, used, parent       (child limits charged to parents)
//!            ├─ slots[i] = (generation, Dataspace)   (DataspaceId = index + generation)
//!            │     Dataspace: owner, factory, size (bytes), kind, pool,
//!            │                entries: Vec<Entry>   (one per backing page, sized on create/resize)
//!            └─ shares: frame -> n                   (frames referenced by n >= 2 entries)
//! ```
//!
//! Copy-on-write states of one page entry (the copy's and the source's entries alike):
//!
//! ```text
//!   empty ──map/write──▶ own frame ──COW copy──▶ shared (COW, n >= 2)
//!                            ▲                      │ write: copy to a new frame, n -= 1
//!                            └──── write, n == 1 ───┘ (the last sharer keeps the frame)
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use memkit_types::{
    Access, Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysMemory,
    Rights, SUPERPAGE_ORDER, SUPERPAGE_SHIFT,
};

use crate::entry::Entry;
use crate::error::{
    CloseAllError, CloseError, CopyError, CreateError, DestroyFactoryError, FactoryError, InfoError, MapError,
    PhysAddrError, RangeError, RefError, ResizeError, ShareError, TaskError,
};
use crate::flags::{CopyLength, DmFlags, MemAllocFlags, Placement};
use crate::ids::{ClientId, DataspaceId, FactoryId, PoolId, TaskCharge};
use crate::refcount::ShareCounts;

/// The largest dataspace: 64 TiB.
pub const MAX_SIZE: u64 = 1 << 46;
/// The largest log2 alignment: 2^52 bytes, the physical address width.
pub const MAX_ALIGN_SHIFT: u32 = PAGE_SHIFT + Order::MAX.get() as u32;
const PAGE: u64 = PAGE_SIZE as u64;

/// `OutOfRange` unless the `len` bytes from `offset` lie inside a dataspace of `size` bytes.
fn check_byte_range(size: u64, offset: u64, len: usize) -> Result<(), RangeError> {
    let len = len as u64;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(RangeError::OutOfRange(offset, len));
    }
    Ok(())
}

/// Splits the `len` bytes from `offset` into one piece per page they touch:
/// (page index, offset within the page, the piece's range in a buffer of `len` bytes).
fn page_pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, u64, core::ops::Range<usize>)> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = offset + done as u64;
        let within = at % PAGE;
        let n = (PAGE_SIZE - within as usize).min(len - done);
        let piece = (at / PAGE, within, done..done + n);
        done += n;
        Some(piece)
    })
}
const SUPERPAGE_FRAMES: u64 = 1 << SUPERPAGE_ORDER.get();

bitflags::bitflags! {
    /// How a dataspace is backed.
    ///
    /// A dataspace with none of these bits is *anonymous*: frames are allocated and zeroed on
    /// first touch and may be shared copy-on-write. Any bit makes it *bound* to its frames:
    /// they are allocated at creation, never replaced and never shared, so that physical
    /// addresses handed out for DMA stay valid; a copy-on-write copy of a bound dataspace is
    /// therefore an eager copy.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Kind: u8 {
        /// One physically contiguous run (`Continuous`, `L4DM_CONTIGUOUS`).
        const CONTIGUOUS = 1 << 0;
        /// Allocated at creation, never given back while the dataspace lives (`Pinned`).
        const PINNED = 1 << 1;
        /// Backed by 2 MiB frames (`Super_pages`, `L4DM_MEMPHYS_SUPERPAGES`).
        const SUPERPAGES = 1 << 2;
        /// At a physical address the creator chose (`Fixed_paddr`, `memphys_open` with an
        /// address); always contiguous.
        const FIXED = 1 << 3;
    }
}

impl Kind {
    /// The kind with the properties a caller's flags ask for, whichever seed's flags they are.
    fn from_properties(contiguous: bool, pinned: bool, superpages: bool) -> Kind {
        let mut kind = Kind::empty();
        kind.set(Kind::CONTIGUOUS, contiguous);
        kind.set(Kind::PINNED, pinned);
        kind.set(Kind::SUPERPAGES, superpages);
        kind
    }

    fn is_bound(self) -> bool {
        !self.is_empty()
    }

    fn granule(self) -> u64 {
        if self.contains(Kind::SUPERPAGES) { SUPERPAGE_FRAMES } else { 1 }
    }

    fn is_one_run(self) -> bool {
        self.intersects(Kind::CONTIGUOUS | Kind::FIXED)
    }
}

/// How the manager is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Config {
    /// Whether the system has an MMU. `Mem_alloc`-style `Fixed_paddr` requests succeed only
    /// without one (seed 000); `memphys_open` always accepts a fixed address (seed 003).
    pub mmu: bool,
    /// The root factory's limit in bytes.
    pub root_limit: u64,
}

impl Config {
    /// An MMU system whose root factory may use `root_limit` bytes.
    #[must_use]
    pub const fn new(root_limit: u64) -> Self {
        Config { mmu: true, root_limit }
    }

    /// The same configuration for a system without an MMU.
    #[must_use]
    pub const fn without_mmu(self) -> Self {
        Config { mmu: false, ..self }
    }
}

/// What a revocation takes away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RevokeKind {
    /// Write access: the pages became copy-on-write shared; mappings may stay read-only.
    Write,
    /// Every access: the pages' frames are going away or being replaced.
    All,
}

/// Pages `start .. end` of a dataspace (page indices, not bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageRange {
    /// The first page.
    pub start: u64,
    /// One past the last page.
    pub end: u64,
}

/// Whoever knows the mappings of dataspaces (the region maps) and can take them back.
///
/// The manager does not know where its dataspaces are mapped. An operation that invalidates
/// existing mappings calls [`revoke`](Revoker::revoke) *before* it frees or shares the
/// frames: a copy-on-write copy revokes write access to the source pages it starts sharing;
/// shrinking, `clear` and `allocate` revoke all access to pages whose frames go away or are
/// replaced. Callers without mappings pass [`NoRevoker`].
pub trait Revoker {
    /// Takes `kind` access away from every mapping of `pages` of `ds`.
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind);
}

/// A [`Revoker`] for callers that map nothing.
#[derive(Clone, Copy, Default, Debug)]
pub struct NoRevoker;

impl Revoker for NoRevoker {
    fn revoke(&mut self, _ds: DataspaceId, _pages: PageRange, _kind: RevokeKind) {}
}

/// The answer to [`Manager::map`]: the frame of the page and the rights it allows now.
#[must_use = "a mapping that replaced a frame obliges the caller to unmap the old one elsewhere"]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// The frame backing the page.
    pub frame: Frame,
    /// What the page allows now, within the rights of the id mapped: read and execute for a
    /// page shared copy-on-write (a write must fault again and call `map` with
    /// [`Access::Write`]), all the id grants otherwise.
    pub rights: Rights,
    /// The frame this page had before a copy-on-write break. Other mappings of this page of
    /// this dataspace (in other address spaces) still point at it and must be removed.
    pub replaced: Option<Frame>,
}

/// What [`Manager::info`] reports about a dataspace (`l4dm_mem_info`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Info<'a> {
    /// The size in bytes, as given.
    pub size: u64,
    /// The owner.
    pub owner: ClientId,
    /// The name given at creation.
    pub name: &'a str,
    /// The next live dataspace, for iteration (`next_id`); `None` after the last.
    pub next_id: Option<DataspaceId>,
    /// How it is backed.
    pub kind: Kind,
    /// The pool its frames come from.
    pub pool: PoolId,
    /// Its log2 alignment.
    pub align: u32,
    /// The factory it is charged to.
    pub factory: FactoryId,
    /// References from attachments and extra handles.
    pub refs: u32,
}

/// A factory's quota.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Quota {
    /// The limit in bytes.
    pub limit: u64,
    /// Bytes charged: dataspaces' backing, nested factories' limits and tasks.
    pub used: u64,
}

struct Dataspace {
    owner: ClientId,
    factory: FactoryId,
    name: String,
    size: u64,
    kind: Kind,
    pool: PoolId,
    align: u32,
    entries: Vec<Entry>,
    refs: u32,
    open: bool,
}

impl Dataspace {
    fn charge(&self) -> u64 {
        self.entries.len() as u64 * PAGE
    }
}

#[derive(Default)]
struct Slot {
    generation: u32,
    ds: Option<Dataspace>,
}

#[derive(Debug)]
struct Factory {
    parent: Option<FactoryId>,
    limit: u64,
    used: u64,
}

/// The request to build one dataspace (the common core of `alloc`, `mem_open`,
/// `memphys_open` and the copies).
struct Spec<'a> {
    factory: FactoryId,
    owner: ClientId,
    pages: u64,
    size: u64,
    kind: Kind,
    pool: PoolId,
    align: u32,
    placement: Placement,
    name: &'a str,
}

/// The dataspace manager.
///
/// Generic over the frame source of its pools (`S`, the frame allocator's pools or a test
/// model) and over the access to frame contents (`M`).
///
/// # Concurrency
/// Every operation takes `&mut self`: a manager shared between threads is wrapped in one
/// lock by its owner (`spin::Mutex` in a kernel, `std::sync::Mutex` hosted). The fault path
/// ([`map`](Manager::map)) takes no other lock than the frame source's own and allocates no
/// heap memory, so it may run under that lock in a fault handler.
///
/// # Lifetime rule
/// A dataspace's memory lives while its owner's handle is open **or** a reference
/// ([`inc_ref`](Manager::inc_ref), taken by each attachment and each extra handle) remains.
/// `close` (and `close_all`, `resize` to 0) only drop the owner's handle: the id stops
/// working for `info`, `close`, `resize`, `copy` and new references, but `map`, `read`,
/// `write` and `dec_ref` keep working for holders of references, and no mapping elsewhere
/// is revoked. The frames and the quota charge go when the last reference goes.
pub struct Manager<S, M> {
    config: Config,
    memory: M,
    pools: [Option<S>; PoolId::COUNT],
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    live: u32,
    factories: Vec<Option<Factory>>,
    tasks: alloc::collections::BTreeMap<u32, (FactoryId, u64)>,
    next_task: u32,
    shares: ShareCounts,
}

impl<S, M> fmt::Debug for Manager<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.config)
            .field("dataspaces", &self.live)
            .field("factories", &self.factories.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

fn lookup(slots: &mut [Slot], id: DataspaceId) -> Option<&mut Dataspace> {
    let slot = slots.get_mut(id.index())?;
    if slot.generation != id.generation() {
        return None;
    }
    slot.ds.as_mut()
}

fn lookup_open(slots: &mut [Slot], id: DataspaceId) -> Option<&mut Dataspace> {
    lookup(slots, id).filter(|d| d.open)
}

fn allocate_frames<S: FrameSource>(
    pools: &[Option<S>; PoolId::COUNT],
    pool: PoolId,
    count: u64,
    align: Order,
) -> Result<Frame, FrameSourceError> {
    let source = pools[pool.index()].as_ref().ok_or(FrameSourceError::Invalid)?;
    source.allocate(FrameCount::new(count), align, pool.limit().map(PhysAddr::new))
}

fn free_frames<S: FrameSource>(pools: &[Option<S>; PoolId::COUNT], pool: PoolId, start: Frame, count: u64) {
    if let Some(source) = pools[pool.index()].as_ref() {
        let freed = source.free(start, FrameCount::new(count));
        debug_assert!(freed.is_ok(), "freeing {count} frames at {start:?}: {freed:?}");
    }
}

/// Gives back the frames of `entries`: shared frames lose one reference, frames of a bound
/// dataspace go back in runs of consecutive frames, others one by one.
fn release_entries<S: FrameSource>(
    pools: &[Option<S>; PoolId::COUNT],
    shares: &mut ShareCounts,
    entries: &[Entry],
    bound: bool,
) {
    let mut run: Option<(Frame, u64, PoolId)> = None;
    for e in entries {
        let Some(number) = e.frame_number() else { continue };
        if !bound {
            if shares.unshare(number) {
                free_frames(pools, e.pool(), Frame::from_number(number), 1);
            }
            continue;
        }
        let frame = Frame::from_number(number);
        match run {
            Some((start, n, pool)) if pool == e.pool() && start.number() + n == frame.number() => {
                run = Some((start, n + 1, pool));
            }
            _ => {
                if let Some((start, n, pool)) = run {
                    free_frames(pools, pool, start, n);
                }
                run = Some((frame, 1, e.pool()));
            }
        }
    }
    if let Some((start, n, pool)) = run {
        free_frames(pools, pool, start, n);
    }
}

/// Gives page `entry` a frame of its own that may be written: allocates and zeroes an empty
/// page, copies a page still shared copy-on-write. Returns the frame and the frame it
/// replaced. Allocates no heap memory.
fn make_writable<S: FrameSource, M: PhysMemory>(
    pools: &[Option<S>; PoolId::COUNT],
    memory: &M,
    shares: &mut ShareCounts,
    pool: PoolId,
    entry: &mut Entry,
) -> Result<(Frame, Option<Frame>), FrameSourceError> {
    match entry.frame() {
        None => {
            let frame = allocate_frames(pools, pool, 1, Order::ZERO)?;
            memory.zero(frame, FrameCount::new(1));
            *entry = Entry::new(frame, pool);
            Ok((frame, None))
        }
        Some(old) if entry.is_cow() && shares.is_shared(old) => {
            let frame = allocate_frames(pools, pool, 1, Order::ZERO)?;
            memory.copy(old, frame, FrameCount::new(1));
            let last = shares.unshare(old.number());
            debug_assert!(!last, "a shared frame lost its last reference on a copy-on-write break");
            *entry = Entry::new(frame, pool);
            Ok((frame, Some(old)))
        }
        Some(frame) => {
            *entry = entry.with_cow(false);
            Ok((frame, None))
        }
    }
}

/// Number of backing pages for `size` bytes in granules of `granule` pages, or `None` past
/// [`MAX_SIZE`].
fn backing_pages(size: u64, granule: u64) -> Option<u64> {
    if size > MAX_SIZE {
        return None;
    }
    Some(size.div_ceil(PAGE).next_multiple_of(granule))
}

fn order_for_align(align: u32) -> Order {
    Order::try_new(align.saturating_sub(PAGE_SHIFT)).unwrap_or(Order::MAX)
}

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// A manager without pools, whose root factory has `config.root_limit` bytes.
    #[must_use]
    pub fn new(config: Config, memory: M) -> Self {
        Manager {
            config,
            memory,
            pools: Default::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            factories: alloc::vec![Some(Factory { parent: None, limit: config.root_limit, used: 0 })],
            tasks: alloc::collections::BTreeMap::new(),
            next_task: 0,
            shares: ShareCounts::default(),
        }
    }

    /// Gives pool `pool` its frame source, replacing (and returning) a previous one.
    ///
    /// Frames of dataspaces already built from the previous source still go back to the
    /// pool number they came from: replace a source only while no dataspace uses it.
    pub fn set_pool(&mut self, pool: PoolId, source: S) -> Option<S> {
        self.pools[pool.index()].replace(source)
    }

    /// The frame source of `pool`, if it has one.
    #[must_use]
    pub fn pool(&self, pool: PoolId) -> Option<&S> {
        self.pools[pool.index()].as_ref()
    }

    /// The access to frame contents.
    #[must_use]
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> Config {
        self.config
    }

    /// The number of live (open) dataspaces.
    #[must_use]
    pub fn live(&self) -> u32 {
        self.live
    }

    // ----------------------------------------------------------------- factories and tasks

    fn factory_mut(&mut self, f: FactoryId) -> Option<&mut Factory> {
        self.factories.get_mut(f.0 as usize).and_then(Option::as_mut)
    }

    fn room(&self, f: FactoryId) -> Option<u64> {
        let fac = self.factories.get(f.0 as usize)?.as_ref()?;
        Some(fac.limit - fac.used)
    }

    /// `create_factory(limit)`: a factory nested in `parent`, whose `limit` bytes are charged
    /// to the parent until it is destroyed.
    ///
    /// # Errors
    /// [`FactoryError::InvalidFactory`], [`FactoryError::QuotaExceeded`] when the parent has
    /// less than `limit` left, [`FactoryError::NoHandle`].
    pub fn create_factory(&mut self, parent: FactoryId, limit: u64) -> Result<FactoryId, FactoryError> {
        let room = self.room(parent).ok_or(FactoryError::InvalidFactory(parent))?;
        if limit > room {
            return Err(FactoryError::QuotaExceeded(parent, limit));
        }
        let id = u32::try_from(self.factories.len())
            .map_err(|_| FactoryError::NoHandle(self.factories.iter().flatten().count() as u32))?;
        if let Some(p) = self.factory_mut(parent) {
            p.used += limit;
        }
        self.factories.push(Some(Factory { parent: Some(parent), limit, used: 0 }));
        Ok(FactoryId(id))
    }

    /// Destroys an empty factory (the release of its last handle, `dec_refcnt`), giving its
    /// limit back to its parent.
    ///
    /// # Errors
    /// [`DestroyFactoryError::InvalidFactory`] for an unknown factory or the root,
    /// [`DestroyFactoryError::InUse`] while anything is charged to it.
    pub fn destroy_factory(&mut self, f: FactoryId) -> Result<(), DestroyFactoryError> {
        let fac = self.factory_mut(f).ok_or(DestroyFactoryError::InvalidFactory(f))?;
        let Some(parent) = fac.parent else { return Err(DestroyFactoryError::InvalidFactory(f)) };
        if fac.used != 0 {
            return Err(DestroyFactoryError::InUse(f, fac.used));
        }
        let limit = fac.limit;
        self.factories[f.0 as usize] = None;
        if let Some(p) = self.factory_mut(parent) {
            p.used -= limit;
        }
        Ok(())
    }

    /// A factory's limit and usage.
    #[must_use]
    pub fn quota(&self, f: FactoryId) -> Option<Quota> {
        let fac = self.factories.get(f.0 as usize)?.as_ref()?;
        Some(Quota { limit: fac.limit, used: fac.used })
    }

    /// `create_task`: charges a new address space's `bytes` (its region map and page tables,
    /// which the region layer builds) to `factory`.
    ///
    /// # Errors
    /// [`TaskError::InvalidFactory`], [`TaskError::QuotaExceeded`].
    pub fn create_task(&mut self, factory: FactoryId, bytes: u64) -> Result<TaskCharge, TaskError> {
        let room = self.room(factory).ok_or(TaskError::InvalidFactory(factory))?;
        if bytes > room {
            return Err(TaskError::QuotaExceeded(factory, bytes));
        }
        let id = self.next_task;
        self.next_task = self.next_task.wrapping_add(1);
        if self.tasks.contains_key(&id) {
            return Err(TaskError::InvalidTask(id));
        }
        if let Some(fac) = self.factory_mut(factory) {
            fac.used += bytes;
        }
        self.tasks.insert(id, (factory, bytes));
        Ok(TaskCharge(id))
    }

    /// Gives a task's charge back to its factory.
    ///
    /// # Errors
    /// [`TaskError::InvalidTask`] if the charge was already given back.
    pub fn destroy_task(&mut self, task: TaskCharge) -> Result<(), TaskError> {
        let (factory, bytes) = self.tasks.remove(&task.0).ok_or(TaskError::InvalidTask(task.0))?;
        if let Some(fac) = self.factory_mut(factory) {
            fac.used -= bytes;
        }
        Ok(())
    }

    // ----------------------------------------------------------------- creation

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
            Placement::Fixed(paddr)
        } else {
            Placement::AnyAddr
        };
        if size < 0 {
            if !kind.contains(Kind::CONTIGUOUS) || kind.contains(Kind::FIXED) {
                return Err(CreateError::SizeNotSupported(size.into()));
            }
            return self.alloc_maximum(factory, owner, size.unsigned_abs(), kind, align);
        }
        self.create(factory, owner, size as u64, kind, PoolId::DEFAULT, align, placement, "")
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
        self.create(factory, owner, size, kind, PoolId::DEFAULT, align, Placement::AnyAddr, name)
    }

    /// `l4dm_memphys_open`: a dataspace in pool `pool` (0–7), at a fixed physical address or
    /// anywhere. A fixed placement is always one contiguous run (on MMU systems too: this is
    /// the privileged pool interface). `align` (log2) places a contiguous dataspace; flags:
    /// `CONTIGUOUS`, `PINNED`, `SUPERPAGES`.
    ///
    /// # Errors
    /// As [`alloc`](Manager::alloc), and [`CreateError::PoolOutOfRange`].
    #[allow(clippy::too_many_arguments)]
    pub fn memphys_open(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        pool: u32,
        placement: Placement,
        size: u64,
        align: u32,
        flags: DmFlags,
        name: &str,
    ) -> Result<DataspaceId, CreateError> {
        let pool = PoolId::new(pool).ok_or(CreateError::PoolOutOfRange(pool))?;
        let mut kind = Self::kind_of(flags);
        if matches!(placement, Placement::Fixed(_)) {
            kind |= Kind::FIXED;
        }
        self.create(factory, owner, size, kind, pool, align, placement, name)
    }

    fn kind_of(flags: DmFlags) -> Kind {
        Kind::from_properties(
            flags.contains(DmFlags::CONTIGUOUS),
            flags.contains(DmFlags::PINNED),
            flags.contains(DmFlags::SUPERPAGES),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        factory: FactoryId,
        owner: ClientId,
        size: u64,
        kind: Kind,
        pool: PoolId,
        align: u32,
        placement: Placement,
        name: &str,
    ) -> Result<DataspaceId, CreateError> {
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
            placement: Placement::AnyAddr,
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
            Placement::Fixed(addr) => {
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
                    FrameSourceError::Invalid | FrameSourceError::NotAllocated(_) => {
                        CreateError::AddressOutOfPool(addr)
                    }
                })?;
                self.memory.zero(start, FrameCount::new(spec.pages));
                entries.extend((0..spec.pages).map(|i| Entry::new(Frame::from_number(start.number() + i), pool)));
            }
            Placement::AnyAddr if spec.kind.is_one_run() => {
                let start = allocate_frames(&self.pools, pool, spec.pages, order_for_align(align))
                    .map_err(|_| CreateError::OutOfMemory(FrameCount::new(spec.pages)))?;
                self.memory.zero(start, FrameCount::new(spec.pages));
                entries.extend((0..spec.pages).map(|i| Entry::new(Frame::from_number(start.number() + i), pool)));
            }
            Placement::AnyAddr if spec.kind.is_bound() => {
                self.fill_granules(&mut entries, pool, spec.kind.granule(), spec.pages)
                    .map_err(|()| CreateError::OutOfMemory(FrameCount::new(spec.kind.granule())))?;
            }
            Placement::AnyAddr => entries.resize(spec.pages as usize, Entry::EMPTY),
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
    fn fill_granules(&mut self, entries: &mut Vec<Entry>, pool: PoolId, granule: u64, pages: u64) -> Result<(), ()> {
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

    // ----------------------------------------------------------------- lifetime

    /// Frees a dataspace's frames and charge and its slot.
    fn destroy(&mut self, id: DataspaceId) {
        let slot = &mut self.slots[id.index()];
        let Some(ds) = slot.ds.take() else { return };
        // A slot whose generation would wrap is retired, so that no id ever names two
        // dataspaces.
        let retired = slot.generation >= DataspaceId::MAX_GENERATION;
        if !retired {
            slot.generation += 1;
        }
        release_entries(&self.pools, &mut self.shares, &ds.entries, ds.kind.is_bound());
        if let Some(f) = self.factory_mut(ds.factory) {
            f.used -= ds.charge();
        }
        if !retired {
            self.free_slots.push(id.index() as u32);
        }
        if ds.open {
            self.live -= 1;
        }
    }

    /// Takes a reference (an attachment or an extra handle) to an open dataspace.
    ///
    /// # Errors
    /// [`RefError::InvalidId`] for an unknown or closed dataspace,
    /// [`RefError::CountOutOfRange`] at `u32::MAX` references.
    pub fn inc_ref(&mut self, ds: DataspaceId) -> Result<(), RefError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(RefError::InvalidId(ds))?;
        d.refs = d.refs.checked_add(1).ok_or(RefError::CountOutOfRange(ds, d.refs))?;
        Ok(())
    }

    /// Drops one reference; the last reference to a closed dataspace frees it.
    ///
    /// # Errors
    /// As [`dec_refcnt`](Manager::dec_refcnt).
    pub fn dec_ref(&mut self, ds: DataspaceId) -> Result<(), RefError> {
        self.dec_refcnt(ds, 1)
    }

    /// `L4::Kobject::dec_refcnt(diff)`: drops `diff` references at once.
    ///
    /// # Errors
    /// [`RefError::InvalidId`] for an unknown (or freed) dataspace,
    /// [`RefError::CountOutOfRange`] when fewer than `diff` references are held.
    pub fn dec_refcnt(&mut self, ds: DataspaceId, diff: u32) -> Result<(), RefError> {
        let d = lookup(&mut self.slots, ds).ok_or(RefError::InvalidId(ds))?;
        d.refs = d.refs.checked_sub(diff).ok_or(RefError::CountOutOfRange(ds, d.refs))?;
        if d.refs == 0 && !d.open {
            self.destroy(ds);
        }
        Ok(())
    }

    /// `l4dm_close`: drops the owner's handle. The memory goes now if no reference remains,
    /// else with the last reference (see the lifetime rule on [`Manager`]).
    ///
    /// # Errors
    /// [`CloseError::InvalidId`] for an unknown or closed dataspace,
    /// [`CloseError::PermissionDenied`] unless `caller` is the owner and the id grants
    /// `WRITE` (as for `resize` to 0: a read-only handle cannot end the memory).
    pub fn close(&mut self, caller: ClientId, ds: DataspaceId) -> Result<(), CloseError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(CloseError::InvalidId(ds))?;
        if d.owner != caller || !ds.rights().contains(Rights::WRITE) {
            return Err(CloseError::PermissionDenied(ds, caller));
        }
        self.close_unchecked(ds);
        Ok(())
    }

    fn close_unchecked(&mut self, ds: DataspaceId) {
        let Some(d) = lookup_open(&mut self.slots, ds) else { return };
        d.open = false;
        let refs = d.refs;
        self.live -= 1;
        if refs == 0 {
            self.destroy(ds);
        }
    }

    /// `l4dm_close_all`: closes every dataspace owned by `client`, or with
    /// [`DmFlags::SAME_TASK`] by any thread of `client`'s task. Any thread of that task may
    /// ask. Returns how many were closed.
    ///
    /// # Errors
    /// [`CloseAllError::InvalidClient`] for [`ClientId::INVALID`],
    /// [`CloseAllError::PermissionDenied`] when `caller` is in another task.
    pub fn close_all(&mut self, caller: ClientId, client: ClientId, flags: DmFlags) -> Result<u32, CloseAllError> {
        if client.is_invalid() {
            return Err(CloseAllError::InvalidClient(client));
        }
        if caller.task != client.task {
            return Err(CloseAllError::PermissionDenied(client, caller));
        }
        let same_task = flags.contains(DmFlags::SAME_TASK);
        let mut closed = 0;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(d) = slot.ds.as_ref() else { continue };
            let hit = if same_task { d.owner.task == client.task } else { d.owner == client };
            if d.open && hit {
                self.close_unchecked(DataspaceId::new(i as u32, slot.generation));
                closed += 1;
            }
        }
        Ok(closed)
    }

    // ----------------------------------------------------------------- queries

    /// The first live dataspace, to start an iteration with [`Info::next_id`].
    #[must_use]
    pub fn first_id(&self) -> Option<DataspaceId> {
        self.next_open_from(0)
    }

    fn next_open_from(&self, index: usize) -> Option<DataspaceId> {
        self.slots
            .iter()
            .enumerate()
            .skip(index)
            .find(|(_, s)| s.ds.as_ref().is_some_and(|d| d.open))
            .map(|(i, s)| DataspaceId::new(i as u32, s.generation))
    }

    /// `l4dm_mem_info`: size, owner, name and the next id of a live dataspace. Anyone may ask
    /// (it is debugging information), so `-L4_EPERM` does not occur.
    ///
    /// # Errors
    /// [`InfoError::InvalidId`] for an unknown or closed dataspace.
    pub fn info(&self, ds: DataspaceId) -> Result<Info<'_>, InfoError> {
        let d = self
            .slots
            .get(ds.index())
            .filter(|s| s.generation == ds.generation())
            .and_then(|s| s.ds.as_ref())
            .filter(|d| d.open)
            .ok_or(InfoError::InvalidId(ds))?;
        Ok(Info {
            size: d.size,
            owner: d.owner,
            name: &d.name,
            next_id: self.next_open_from(ds.index() + 1),
            kind: d.kind,
            pool: d.pool,
            align: d.align,
            factory: d.factory,
            refs: d.refs,
        })
    }

    /// The rights the id `ds` grants, if it names an open dataspace (what a region map may
    /// attach it with at most).
    ///
    /// # Errors
    /// [`InfoError::InvalidId`] for an unknown or closed dataspace.
    pub fn rights(&self, ds: DataspaceId) -> Result<Rights, InfoError> {
        self.info(ds).map(|_| ds.rights())
    }

    /// `l4dm_share`: an id of the open dataspace `ds` granting `rights` (e.g. read-only,
    /// `L4DM_RO`), to pass to another client. A handle can only be narrowed: the new id
    /// grants nothing `ds` does not. The new id names the same dataspace (it compares equal
    /// to `ds`); the lifetime rule is unchanged (the owner's handle, or a reference, keeps the
    /// memory alive).
    ///
    /// # Errors
    /// [`ShareError::InvalidId`] for an unknown or closed dataspace, [`ShareError::Widening`]
    /// when `rights` names a right `ds` does not grant.
    pub fn share(&self, ds: DataspaceId, rights: Rights) -> Result<DataspaceId, ShareError> {
        self.info(ds).map_err(|_| ShareError::InvalidId(ds))?;
        if !ds.rights().contains(rights) {
            return Err(ShareError::Widening(ds, rights));
        }
        Ok(ds.narrowed(rights))
    }

    // ----------------------------------------------------------------- resize

    /// `l4dm_mem_resize`: shrinking frees the tail (revoking every mapping of it first) and
    /// zeroes the rest of the last page kept, 0 closes the dataspace, growing adds memory
    /// (zero-filled). A contiguous dataspace grows in place or not at all.
    ///
    /// # Errors
    /// [`ResizeError::InvalidId`], [`ResizeError::PermissionDenied`] (not the owner, or an id
    /// without `WRITE`), [`ResizeError::SizeNotSupported`], [`ResizeError::QuotaExceeded`],
    /// [`ResizeError::OutOfMemory`] (also for a shrink whose new last page is shared
    /// copy-on-write and needs a frame of its own to be zeroed past the new size),
    /// [`ResizeError::CannotGrowInPlace`]. On error nothing changed.
    pub fn resize<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        new_size: u64,
        revoker: &mut R,
    ) -> Result<(), ResizeError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(ResizeError::InvalidId(ds))?;
        if d.owner != caller || !ds.rights().contains(Rights::WRITE) {
            return Err(ResizeError::PermissionDenied(ds, caller));
        }
        if new_size == 0 {
            self.close_unchecked(ds);
            return Ok(());
        }
        let kind = d.kind;
        let pool = d.pool;
        let factory = d.factory;
        let old_size = d.size;
        let old_pages = d.entries.len() as u64;
        let new_pages = backing_pages(new_size, kind.granule()).ok_or(ResizeError::SizeNotSupported(new_size))?;
        if new_pages > old_pages {
            let extra = new_pages - old_pages;
            let room = self.room(factory).unwrap_or(0);
            if extra * PAGE > room {
                return Err(ResizeError::QuotaExceeded(factory, extra * PAGE));
            }
            // No dataspace may be larger than its pool: those pages could never have frames.
            if self.pools[pool.index()].as_ref().is_some_and(|p| new_pages > p.total_frames().get()) {
                return Err(ResizeError::OutOfMemory(FrameCount::new(new_pages)));
            }
            let d = lookup_open(&mut self.slots, ds).ok_or(ResizeError::InvalidId(ds))?;
            d.entries
                .try_reserve_exact(extra as usize)
                .map_err(|_| ResizeError::OutOfMemory(FrameCount::new(extra)))?;
        }
        // No byte past the size may keep old data, since a mapping shows whole pages (and a
        // superpage mapping whole superpages): a shrink zeroes the kept backing past the new
        // size, a grow zeroes what lies past the old size (the owner may have written there
        // through a mapping of its last page). This may break copy-on-write, so it runs
        // before anything else that could fail.
        let (from, to) = if new_size < old_size {
            (new_size, new_pages.min(old_pages) * PAGE)
        } else {
            (old_size, old_pages * PAGE)
        };
        if from < to {
            self.zero_bytes(ds, from, to, revoker).map_err(ResizeError::OutOfMemory)?;
        }
        let mut entries = match lookup_open(&mut self.slots, ds) {
            Some(d) => core::mem::take(&mut d.entries),
            None => return Err(ResizeError::InvalidId(ds)),
        };
        // A shrink unmaps every page wholly past the new size, not only the backing pages it
        // frees: a superpage dataspace keeps the rest of its last granule, whose pages the
        // fault path no longer maps (they are past the size).
        let first_past = new_size.div_ceil(PAGE);
        if new_size < old_size && first_past < old_pages {
            revoker.revoke(ds, PageRange { start: first_past, end: old_pages }, RevokeKind::All);
        }
        let result = self.resize_entries(&mut entries, kind, pool, old_pages, new_pages);
        let Some(d) = lookup_open(&mut self.slots, ds) else { return Err(ResizeError::InvalidId(ds)) };
        d.entries = entries;
        result?;
        d.size = new_size;
        if let Some(f) = self.factory_mut(factory) {
            f.used = f.used + new_pages * PAGE - old_pages * PAGE;
        }
        Ok(())
    }

    fn resize_entries(
        &mut self,
        entries: &mut Vec<Entry>,
        kind: Kind,
        pool: PoolId,
        old_pages: u64,
        new_pages: u64,
    ) -> Result<(), ResizeError> {
        if new_pages < old_pages {
            // `resize` has revoked every mapping of these pages.
            release_entries(&self.pools, &mut self.shares, &entries[new_pages as usize..], kind.is_bound());
            entries.truncate(new_pages as usize);
            return Ok(());
        }
        let extra = new_pages - old_pages;
        if extra == 0 {
            return Ok(());
        }
        if kind.is_one_run() {
            let last =
                entries.last().and_then(|e| e.frame()).ok_or(ResizeError::OutOfMemory(FrameCount::new(extra)))?;
            let next = Frame::from_number(last.number() + 1);
            let next_addr = next.start_address();
            let end = next_addr.checked_add(extra * PAGE).ok_or(ResizeError::CannotGrowInPlace(next_addr))?;
            if pool.limit().is_some_and(|l| end.as_u64() > l) {
                return Err(ResizeError::CannotGrowInPlace(next_addr));
            }
            let source = self.pools[pool.index()].as_ref().ok_or(ResizeError::CannotGrowInPlace(next_addr))?;
            source.allocate_at(next, FrameCount::new(extra)).map_err(|e| match e {
                FrameSourceError::Exhausted(n) => ResizeError::OutOfMemory(n),
                _ => ResizeError::CannotGrowInPlace(next_addr),
            })?;
            self.memory.zero(next, FrameCount::new(extra));
            entries.extend((0..extra).map(|i| Entry::new(Frame::from_number(next.number() + i), pool)));
        } else if kind.is_bound() {
            self.fill_granules(entries, pool, kind.granule(), extra)
                .map_err(|()| ResizeError::OutOfMemory(FrameCount::new(kind.granule())))?;
        } else {
            entries.resize(new_pages as usize, Entry::EMPTY);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- the fault path

    /// The frame for `offset` of `ds`, for a page fault of kind `access`.
    ///
    /// The first touch of an anonymous page allocates a frame from the dataspace's pool and
    /// zeroes it. A write to a page shared copy-on-write copies it to a new frame from the
    /// dataspace's pool (the frame it replaced is reported in [`Mapping::replaced`]); a read
    /// of such a page returns the shared frame with read and execute rights only. Works on
    /// closed dataspaces that still have references. Allocates no heap memory.
    ///
    /// The rights returned never exceed the rights of the id: a fault through a read-only
    /// handle gets a read-only mapping, and a write fault through it is refused.
    ///
    /// # Errors
    /// [`MapError::InvalidId`], [`MapError::OffsetOutOfRange`] at or past the size,
    /// [`MapError::Forbidden`] when the id does not grant `access`,
    /// [`MapError::OutOfMemory`] when no frame is free (nothing changed).
    pub fn map(&mut self, ds: DataspaceId, offset: u64, access: Access) -> Result<Mapping, MapError> {
        let d = lookup(&mut self.slots, ds).ok_or(MapError::InvalidId(ds))?;
        if offset >= d.size {
            return Err(MapError::OffsetOutOfRange(offset, d.size));
        }
        let granted = ds.rights();
        if !granted.allows(access) {
            return Err(MapError::Forbidden(ds, access));
        }
        let pool = d.pool;
        let entry = &mut d.entries[(offset / PAGE) as usize];
        if let Some(frame) = entry.frame()
            && entry.is_cow()
            && access != Access::Write
        {
            if self.shares.is_shared(frame) {
                let rights = (Rights::READ | Rights::EXECUTE) & granted;
                return Ok(Mapping { frame, rights, replaced: None });
            }
            *entry = entry.with_cow(false);
        }
        let (frame, replaced) = make_writable(&self.pools, &self.memory, &mut self.shares, pool, entry)
            .map_err(|_| MapError::OutOfMemory(FrameCount::new(1)))?;
        Ok(Mapping { frame, rights: granted, replaced })
    }

    /// Gives the `count` pages from `offset` of `ds`, none of which has a frame yet, one run
    /// of `count` physically contiguous frames, zeroed in one call: what `count` calls of
    /// [`map`](Manager::map) would do, but with frames that a pager can map as one run
    /// (fault-around). Returns the run's first frame (page `offset + i × 4 KiB` gets frame
    /// `first + i`, the id's rights), or `None` when a page of the range already has a frame:
    /// nothing changed then, and the caller maps page by page. Allocates no heap memory.
    ///
    /// # Errors
    /// [`MapError::InvalidId`], [`MapError::OffsetOutOfRange`] when the range reaches past
    /// the size, [`MapError::Forbidden`] when the id does not grant reads,
    /// [`MapError::OutOfMemory`] when no run of `count` contiguous frames is free.
    /// Nothing changes on an error. A `count` of zero changes nothing and returns `None`.
    pub fn map_run(&mut self, ds: DataspaceId, offset: u64, count: u64) -> Result<Option<Frame>, MapError> {
        let d = lookup(&mut self.slots, ds).ok_or(MapError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Read) {
            return Err(MapError::Forbidden(ds, Access::Read));
        }
        let first = offset / PAGE;
        let Some(last) = count.checked_sub(1).map(|n| first.saturating_add(n)) else { return Ok(None) };
        if last.saturating_mul(PAGE) >= d.size {
            return Err(MapError::OffsetOutOfRange(last.saturating_mul(PAGE), d.size));
        }
        let range = first as usize..=last as usize;
        if d.entries[range.clone()].iter().any(|e| e.frame().is_some()) {
            return Ok(None);
        }
        let pool = d.pool;
        let frame = allocate_frames(&self.pools, pool, count, Order::ZERO)
            .map_err(|_| MapError::OutOfMemory(FrameCount::new(count)))?;
        self.memory.zero(frame, FrameCount::new(count));
        for (i, entry) in d.entries[range].iter_mut().enumerate() {
            *entry = Entry::new(Frame::from_number(frame.number() + i as u64), pool);
        }
        Ok(Some(frame))
    }

    /// Reads `buf.len()` bytes from `offset` of `ds`; pages never touched read as zeros.
    /// Allocates nothing.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::Forbidden`] without `READ`,
    /// [`RangeError::OutOfRange`].
    pub fn read(&mut self, ds: DataspaceId, offset: u64, buf: &mut [u8]) -> Result<(), RangeError> {
        let d = lookup(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Read) {
            return Err(RangeError::Forbidden(ds, Access::Read));
        }
        check_byte_range(d.size, offset, buf.len())?;
        for (page, within, piece) in page_pieces(offset, buf.len()) {
            match d.entries[page as usize].frame() {
                Some(frame) => {
                    let addr = PhysAddr::new(frame.start_address().as_u64() + within);
                    self.memory.read(addr, &mut buf[piece]);
                }
                None => buf[piece].fill(0),
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of `ds`, as stores through a mapping would: allocating pages
    /// on first touch and breaking copy-on-write (revoking every mapping of a page whose
    /// frame is replaced).
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::Forbidden`] without `WRITE`,
    /// [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`] (no byte is written; pages
    /// before the one that found no frame keep the private frames they were given, holding
    /// the bytes they showed before).
    pub fn write<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        offset: u64,
        buf: &[u8],
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let d = lookup(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Write) {
            return Err(RangeError::Forbidden(ds, Access::Write));
        }
        check_byte_range(d.size, offset, buf.len())?;
        // Every page gets a writable frame of its own before one byte is written, so that
        // running out of frames part-way changes no byte: a page made writable holds what it
        // showed before (zeros on a first touch, the shared bytes after a copy-on-write
        // break), and the write itself cannot fail.
        for (page, _, _) in page_pieces(offset, buf.len()) {
            self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
        }
        for (page, within, piece) in page_pieces(offset, buf.len()) {
            let frame = self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
            let addr = PhysAddr::new(frame.start_address().as_u64() + within);
            self.memory.write(addr, &buf[piece]);
        }
        Ok(())
    }

    /// Gives page `page` of `ds` a writable frame of its own, revoking the mappings of a
    /// frame it replaces.
    fn writable_page<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        page: u64,
        revoker: &mut R,
    ) -> Result<Frame, FrameCount> {
        let Some(d) = lookup(&mut self.slots, ds) else { return Err(FrameCount::new(0)) };
        let pool = d.pool;
        let entry = &mut d.entries[page as usize];
        let (frame, replaced) =
            make_writable(&self.pools, &self.memory, &mut self.shares, pool, entry).map_err(|_| FrameCount::new(1))?;
        if replaced.is_some() {
            revoker.revoke(ds, PageRange { start: page, end: page + 1 }, RevokeKind::All);
        }
        Ok(frame)
    }

    fn zero_bytes<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        from: u64,
        to: u64,
        revoker: &mut R,
    ) -> Result<(), FrameCount> {
        const ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
        let mut at = from;
        while at < to {
            let within = at % PAGE;
            let n = (PAGE - within).min(to - at);
            let present = lookup(&mut self.slots, ds).and_then(|d| d.entries[(at / PAGE) as usize].frame()).is_some();
            if present {
                let frame = self.writable_page(ds, at / PAGE, revoker)?;
                self.memory.write(PhysAddr::new(frame.start_address().as_u64() + within), &ZEROS[..n as usize]);
            }
            at += n;
        }
        Ok(())
    }

    fn check_owned_range(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
    ) -> Result<(Kind, u64), RangeError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if d.owner.task != caller.task {
            return Err(RangeError::PermissionDenied(ds, caller));
        }
        if !ds.rights().allows(Access::Write) {
            return Err(RangeError::Forbidden(ds, Access::Write));
        }
        let end = offset.checked_add(len).filter(|e| *e <= d.size).ok_or(RangeError::OutOfRange(offset, len))?;
        Ok((d.kind, end))
    }

    /// Zeroes `offset .. offset + len` of `ds`. Whole pages of an anonymous dataspace lose
    /// their frames (every mapping of them is revoked first) and read as zeros again; the
    /// partial pages at the edges, and every page of a bound dataspace, are zeroed in place.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::PermissionDenied`] unless the caller's task
    /// owns `ds`, [`RangeError::Forbidden`] unless the id grants `WRITE`,
    /// [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`] when an edge page is
    /// shared copy-on-write and no frame is left to unshare it.
    pub fn clear<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let (kind, end) = self.check_owned_range(caller, ds, offset, len)?;
        let first_full = offset.div_ceil(PAGE);
        let end_full = end / PAGE;
        // Unshare the partial edge pages first: after that nothing below can fail, so a
        // failure leaves the contents as they were.
        for (from, to) in [(offset, end.min(first_full * PAGE)), (end_full * PAGE, end)] {
            let page = from / PAGE;
            let present = lookup(&mut self.slots, ds).and_then(|d| d.entries.get(page as usize)?.frame()).is_some();
            if from < to && present {
                self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
            }
        }
        if kind.is_bound() || first_full >= end_full {
            if kind.is_bound() && first_full < end_full {
                if let Some(d) = lookup(&mut self.slots, ds) {
                    for e in &d.entries[first_full as usize..end_full as usize] {
                        if let Some(f) = e.frame() {
                            self.memory.zero(f, FrameCount::new(1));
                        }
                    }
                }
                self.zero_bytes(ds, offset, first_full * PAGE, revoker).map_err(RangeError::OutOfMemory)?;
                self.zero_bytes(ds, end_full * PAGE, end, revoker).map_err(RangeError::OutOfMemory)?;
            } else {
                self.zero_bytes(ds, offset, end, revoker).map_err(RangeError::OutOfMemory)?;
            }
            return Ok(());
        }
        self.zero_bytes(ds, offset, first_full * PAGE, revoker).map_err(RangeError::OutOfMemory)?;
        self.zero_bytes(ds, end_full * PAGE, end, revoker).map_err(RangeError::OutOfMemory)?;
        revoker.revoke(ds, PageRange { start: first_full, end: end_full }, RevokeKind::All);
        if let Some(d) = lookup(&mut self.slots, ds) {
            let range = &mut d.entries[first_full as usize..end_full as usize];
            release_entries(&self.pools, &mut self.shares, range, false);
            range.fill(Entry::EMPTY);
        }
        Ok(())
    }

    /// Populates `offset .. offset + len` of `ds`: every page in it gets a frame of its own
    /// (allocated and zeroed, or copied out of a copy-on-write share, revoking the mappings of
    /// the frame it replaces), so that [`phys_addr`](Manager::phys_addr) can report it.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::PermissionDenied`], [`RangeError::Forbidden`]
    /// unless the id grants `WRITE`, [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`]
    /// (pages before the failing one stay populated).
    pub fn allocate<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let (_, end) = self.check_owned_range(caller, ds, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        for page in offset / PAGE..end.div_ceil(PAGE) {
            self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
        }
        Ok(())
    }

    /// The physical address of `offset` in `ds` and the number of bytes from there that are
    /// physically contiguous (up to the dataspace's size), for DMA.
    ///
    /// # Errors
    /// [`PhysAddrError::InvalidId`], [`PhysAddrError::OffsetOutOfRange`],
    /// [`PhysAddrError::NotResident`] for a page without a frame of its own (populate it
    /// with [`allocate`](Manager::allocate)), [`PhysAddrError::Forbidden`] unless the id
    /// grants read and write (a device may do both at the address).
    pub fn phys_addr(&mut self, ds: DataspaceId, offset: u64) -> Result<(PhysAddr, u64), PhysAddrError> {
        let d = lookup(&mut self.slots, ds).ok_or(PhysAddrError::InvalidId(ds))?;
        if !ds.rights().contains(Rights::RW) {
            return Err(PhysAddrError::Forbidden(ds));
        }
        if offset >= d.size {
            return Err(PhysAddrError::OffsetOutOfRange(offset, d.size));
        }
        let size = d.size;
        let shares = &mut self.shares;
        let mut own = |e: Entry| e.frame().filter(|f| !(e.is_cow() && shares.is_shared(*f)));
        let page = (offset / PAGE) as usize;
        let frame = own(d.entries[page]).ok_or(PhysAddrError::NotResident(offset))?;
        let mut end = (page as u64 + 1) * PAGE;
        for (next, e) in (frame.number() + 1..).zip(&d.entries[page + 1..]) {
            if end >= size || own(*e).is_none_or(|f| f.number() != next) {
                break;
            }
            end += PAGE;
        }
        let addr = PhysAddr::new(frame.start_address().as_u64() + offset % PAGE);
        Ok((addr, end.min(size) - offset))
    }

    // ----------------------------------------------------------------- copies

    /// `l4dm_copy`: a copy of the whole dataspace, owned by `caller`, charged to the source's
    /// factory, in the source's pool. With [`DmFlags::COW`] (and neither source nor copy
    /// bound to their frames) the copy shares the source's frames until either side writes.
    ///
    /// # Errors
    /// As [`copy_long`](Manager::copy_long).
    pub fn copy<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        flags: DmFlags,
        name: &str,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        self.copy_long(caller, ds, 0, 0, CopyLength::WholeDataspace, flags, name, revoker)
    }

    /// `l4dm_copy_long`: copies `num` bytes from `src_offs` of `ds` to `dst_offs` of a new
    /// dataspace of `dst_offs + num` bytes (zeros before `dst_offs`). Offsets and lengths
    /// need no alignment: with [`DmFlags::COW`], when source and destination offsets are equal
    /// modulo the page size, the pages wholly inside the range are shared and only the
    /// partial edge pages are copied; otherwise every byte is copied.
    ///
    /// # Errors
    /// [`CopyError::InvalidId`], [`CopyError::PermissionDenied`] unless the caller's task
    /// owns `ds` and the id grants `READ`, [`CopyError::SourceOutOfRange`], [`CopyError::DestinationOutOfRange`],
    /// [`CopyError::Create`] (size, quota, memory).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_long<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        src_offs: u64,
        dst_offs: u64,
        num: CopyLength,
        flags: DmFlags,
        name: &str,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        self.copy_into(caller, ds, src_offs, dst_offs, num, None, Placement::AnyAddr, 0, 0, flags, name, revoker)
    }

    /// `l4dm_memphys_copy`: as [`copy_long`](Manager::copy_long), into pool `dst_pool`
    /// (the source's with [`DmFlags::SAME_POOL`]) at `dst_addr` (one contiguous run) or
    /// anywhere, of `max(dst_size, dst_offs + num)` bytes aligned to `dst_align` (log2).
    /// Unlike DMphys, [`DmFlags::COW`] is honoured for copies that are not bound to their
    /// frames: the copy shares the source's frames, and the pages it breaks come from
    /// `dst_pool`.
    ///
    /// # Errors
    /// As [`copy_long`](Manager::copy_long), and [`CreateError::PoolOutOfRange`] inside
    /// [`CopyError::Create`].
    #[allow(clippy::too_many_arguments)]
    pub fn memphys_copy<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        src_offs: u64,
        dst_offs: u64,
        num: CopyLength,
        dst_pool: u32,
        dst_addr: Placement,
        dst_size: u64,
        dst_align: u32,
        flags: DmFlags,
        name: &str,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        let pool = if flags.contains(DmFlags::SAME_POOL) {
            None
        } else {
            Some(PoolId::new(dst_pool).ok_or(CopyError::Create(CreateError::PoolOutOfRange(dst_pool)))?)
        };
        self.copy_into(caller, ds, src_offs, dst_offs, num, pool, dst_addr, dst_size, dst_align, flags, name, revoker)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_into<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        src_offs: u64,
        dst_offs: u64,
        num: CopyLength,
        pool: Option<PoolId>,
        placement: Placement,
        dst_size: u64,
        dst_align: u32,
        flags: DmFlags,
        name: &str,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        let src = lookup_open(&mut self.slots, ds).ok_or(CopyError::InvalidId(ds))?;
        if src.owner.task != caller.task || !ds.rights().allows(Access::Read) {
            return Err(CopyError::PermissionDenied(ds, caller));
        }
        let (src_size, src_kind, src_pool, factory) = (src.size, src.kind, src.pool, src.factory);
        let num = match num {
            CopyLength::WholeDataspace => {
                src_size.checked_sub(src_offs).ok_or(CopyError::SourceOutOfRange(src_offs, 0))?
            }
            CopyLength::Bytes(n) => {
                if src_offs.checked_add(n).is_none_or(|e| e > src_size) {
                    return Err(CopyError::SourceOutOfRange(src_offs, n));
                }
                n
            }
        };
        let dst_end = dst_offs.checked_add(num).ok_or(CopyError::DestinationOutOfRange(dst_offs, num))?;
        let total = dst_end.max(dst_size);
        let mut kind = Self::kind_of(flags);
        if matches!(placement, Placement::Fixed(_)) {
            kind |= Kind::FIXED;
        }
        let pool = pool.unwrap_or(src_pool);
        let copy =
            self.create(factory, caller, total, kind, pool, dst_align, placement, name).map_err(CopyError::Create)?;
        let share = flags.contains(DmFlags::COW)
            && !kind.is_bound()
            && !src_kind.is_bound()
            && src_offs % PAGE == dst_offs % PAGE;
        match self.fill_copy(ds, copy, src_offs, dst_offs, num, share) {
            Ok(Some(shared)) => {
                revoker.revoke(ds, shared, RevokeKind::Write);
                Ok(copy)
            }
            Ok(None) => Ok(copy),
            Err(n) => {
                self.destroy(copy);
                Err(CopyError::Create(CreateError::OutOfMemory(n)))
            }
        }
    }

    /// Fills `copy` from `src`; returns the source pages that became shared.
    fn fill_copy(
        &mut self,
        src: DataspaceId,
        copy: DataspaceId,
        src_offs: u64,
        dst_offs: u64,
        num: u64,
        share: bool,
    ) -> Result<Option<PageRange>, FrameCount> {
        let dst_end = dst_offs + num;
        let mut shared: Option<PageRange> = None;
        // Take both entry tables out of their slots so both can be borrowed at once.
        let Some(s) = lookup(&mut self.slots, src) else { return Err(FrameCount::new(0)) };
        let mut src_entries = core::mem::take(&mut s.entries);
        let Some(d) = lookup(&mut self.slots, copy) else {
            if let Some(s) = lookup(&mut self.slots, src) {
                s.entries = src_entries;
            }
            return Err(FrameCount::new(0));
        };
        let dst_pool = d.pool;
        let mut dst_entries = core::mem::take(&mut d.entries);
        // The destination pages shared with the source: only those the copy covers wholly.
        // A partial page is copied byte by byte into a zeroed frame of its own, even at the
        // copy's end: the rest of the source's page may hold bytes the copy must never show
        // (a mapping shows the whole page).
        let all = if num == 0 { 0..0 } else { dst_offs / PAGE..dst_end.div_ceil(PAGE) };
        let middle = if share {
            let first = dst_offs.div_ceil(PAGE);
            first..(dst_end / PAGE).max(first)
        } else {
            all.end..all.end
        };
        if !middle.is_empty() {
            let first_src = (middle.start * PAGE - dst_offs + src_offs) / PAGE;
            let src_pages = first_src as usize..(first_src + (middle.end - middle.start)) as usize;
            let dst_pages = middle.start as usize..middle.end as usize;
            for (d, s) in dst_entries[dst_pages].iter_mut().zip(&mut src_entries[src_pages]) {
                if let Some(frame) = s.frame_number() {
                    self.shares.share(frame);
                    *s = s.with_cow(true);
                    *d = *s;
                }
            }
            shared = Some(PageRange { start: first_src, end: first_src + (middle.end - middle.start) });
        }
        let mut result = Ok(());
        for page in all.filter(|p| !middle.contains(p)) {
            let (a, b) = ((page * PAGE).max(dst_offs), ((page + 1) * PAGE).min(dst_end));
            let s_at = a - dst_offs + src_offs;
            if let Err(n) =
                self.copy_bytes(&src_entries, &mut dst_entries[page as usize], dst_pool, s_at, a % PAGE, b - a)
            {
                result = Err(n);
                break;
            }
        }
        if let Some(s) = lookup(&mut self.slots, src) {
            s.entries = src_entries;
        }
        if let Some(d) = lookup(&mut self.slots, copy) {
            d.entries = dst_entries;
        }
        result.map(|()| shared)
    }

    /// Copies `len` bytes from source offset `s_at` into the destination page `entry` at
    /// `within`; the destination page is new (not shared). Skips source bytes that read as
    /// zeros because their pages were never touched.
    fn copy_bytes(
        &mut self,
        src_entries: &[Entry],
        entry: &mut Entry,
        dst_pool: PoolId,
        s_at: u64,
        within: u64,
        len: u64,
    ) -> Result<(), FrameCount> {
        if len == 0 {
            return Ok(());
        }
        let first = (s_at / PAGE) as usize;
        let last = ((s_at + len - 1) / PAGE) as usize;
        if src_entries[first..=last].iter().all(|e| e.frame().is_none()) {
            return Ok(());
        }
        if within == 0
            && len == PAGE
            && s_at.is_multiple_of(PAGE)
            && let Some(sf) = src_entries[first].frame()
        {
            // A whole page: copy it into a fresh frame (or the bound page) without zeroing.
            let dst = match entry.frame() {
                Some(f) => f,
                None => {
                    let f = allocate_frames(&self.pools, dst_pool, 1, Order::ZERO).map_err(|_| FrameCount::new(1))?;
                    *entry = Entry::new(f, dst_pool);
                    f
                }
            };
            self.memory.copy(sf, dst, FrameCount::new(1));
            return Ok(());
        }
        let (dst, _) = make_writable(&self.pools, &self.memory, &mut self.shares, dst_pool, entry)
            .map_err(|_| FrameCount::new(1))?;
        let mut buf = [0u8; PAGE_SIZE];
        let buf = &mut buf[..len as usize];
        let split = ((PAGE - s_at % PAGE).min(len)) as usize;
        for (part, at) in [(0..split, s_at), (split..len as usize, s_at + split as u64)] {
            if part.is_empty() {
                continue;
            }
            match src_entries[(at / PAGE) as usize].frame() {
                Some(f) => self.memory.read(PhysAddr::new(f.start_address().as_u64() + at % PAGE), &mut buf[part]),
                None => buf[part].fill(0),
            }
        }
        self.memory.write(PhysAddr::new(dst.start_address().as_u64() + within), buf);
        Ok(())
    }

    // ----------------------------------------------------------------- invariants

    /// The number of distinct frames dataspaces hold from `pool`.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn frames_held(&self, pool: PoolId) -> u64 {
        let mut frames: Vec<u64> = self
            .slots
            .iter()
            .filter_map(|s| s.ds.as_ref())
            .flat_map(|d| d.entries.iter())
            .filter(|e| e.pool() == pool)
            .filter_map(|e| e.frame().map(Frame::number))
            .collect();
        frames.sort_unstable();
        frames.dedup();
        frames.len() as u64
    }

    /// The frame behind every backing page of `ds` (`None` for a page never touched), past
    /// its size too: what a mapping of a whole page, or of a whole superpage, would show.
    /// `None` for an unknown or freed dataspace.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn backing_frames(&self, ds: DataspaceId) -> Option<Vec<Option<Frame>>> {
        let slot = self.slots.get(ds.index()).filter(|s| s.generation == ds.generation())?;
        Some(slot.ds.as_ref()?.entries.iter().map(|e| e.frame()).collect())
    }

    /// The number of frames currently shared copy-on-write by two or more page entries.
    #[cfg(any(test, feature = "check"))]
    #[must_use]
    pub fn shared_frames(&self) -> u64 {
        self.shares.iter().count() as u64
    }

    /// Checks every invariant; panics with a description at the first one broken.
    ///
    /// # Invariants
    /// - a dataspace has one entry per backing page: its size rounded up to pages
    ///   (superpages), and its charge is that many pages;
    /// - a bound dataspace has every page present, unshared, and without a copy-on-write
    ///   mark; a contiguous one has consecutive frames; a superpage one aligned 2 MiB runs;
    ///   frames of pool 7 end below 16 MiB;
    /// - a frame referenced by `n >= 2` entries has share count `n` and every such entry is
    ///   marked copy-on-write; a frame referenced once has no share count;
    /// - a factory's usage is the sum of its dataspaces' charges, its children's limits and
    ///   its tasks' charges, and at most its limit;
    /// - a slot holds a dataspace that is open or referenced; the live count counts the
    ///   open ones; free slots are empty.
    ///
    /// # Panics
    /// When an invariant does not hold.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&mut self) {
        use alloc::collections::BTreeMap;
        self.shares.check();
        let mut refs: BTreeMap<u64, (u32, bool)> = BTreeMap::new();
        let mut used: BTreeMap<u32, u64> = BTreeMap::new();
        let mut open = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(d) = slot.ds.as_ref() else {
                let retired = slot.generation >= DataspaceId::MAX_GENERATION;
                assert!(retired != self.free_slots.contains(&(i as u32)), "empty slot {i}: free or retired");
                continue;
            };
            assert!(!self.free_slots.contains(&(i as u32)), "slot {i} both used and free");
            assert!(d.open || d.refs > 0, "slot {i} neither open nor referenced");
            if d.open {
                open += 1;
            }
            let pages = backing_pages(d.size, d.kind.granule());
            assert_eq!(pages, Some(d.entries.len() as u64), "slot {i}: entries for size {}", d.size);
            assert!(d.align >= PAGE_SHIFT && d.align <= MAX_ALIGN_SHIFT, "slot {i}: alignment {}", d.align);
            *used.entry(d.factory.0).or_default() += d.charge();
            for (k, e) in d.entries.iter().enumerate() {
                let Some(f) = e.frame() else {
                    assert!(!d.kind.is_bound(), "slot {i}: bound dataspace page {k} empty");
                    continue;
                };
                assert!(self.pools[e.pool().index()].is_some(), "slot {i}: frame from a missing pool");
                if let Some(limit) = e.pool().limit() {
                    assert!(f.start_address().as_u64() + PAGE <= limit, "slot {i}: pool-7 frame {f:?} too high");
                }
                let r = refs.entry(f.number()).or_insert((0, true));
                r.0 += 1;
                r.1 &= e.is_cow();
                if d.kind.is_bound() {
                    assert!(!e.is_cow(), "slot {i}: bound page {k} marked copy-on-write");
                }
            }
            if d.kind.is_one_run() {
                for w in d.entries.windows(2) {
                    let (a, b) = (w[0].frame().map(Frame::number), w[1].frame().map(Frame::number));
                    assert_eq!(a.map(|n| n + 1), b, "slot {i}: contiguous dataspace not contiguous");
                }
            }
            if d.kind.contains(Kind::SUPERPAGES) {
                for chunk in d.entries.chunks(SUPERPAGE_FRAMES as usize) {
                    let first = chunk[0].frame().map_or(1, Frame::number);
                    assert_eq!(first % SUPERPAGE_FRAMES, 0, "slot {i}: superpage misaligned");
                    for (k, e) in chunk.iter().enumerate() {
                        assert_eq!(e.frame().map(Frame::number), Some(first + k as u64), "slot {i}: superpage split");
                    }
                }
            }
        }
        assert_eq!(open, self.live, "live count");
        for (frame, (n, all_cow)) in &refs {
            let counted = self.shares.get(Frame::from_number(*frame));
            if *n >= 2 {
                assert_eq!(counted, *n, "frame {frame:#x}: share count");
                assert!(all_cow, "frame {frame:#x} shared by {n} entries without copy-on-write marks");
            } else {
                assert_eq!(counted, 0, "frame {frame:#x} referenced once but counted shared");
            }
        }
        for (frame, n) in self.shares.iter() {
            assert_eq!(refs.get(&frame).map(|r| r.0), Some(n), "frame {frame:#x}: share count without entries");
        }
        for (fid, fac) in self.factories.iter().enumerate() {
            let Some(fac) = fac else { continue };
            let mut expect = used.get(&(fid as u32)).copied().unwrap_or(0);
            for child in self.factories.iter().flatten() {
                if child.parent == Some(FactoryId(fid as u32)) {
                    expect += child.limit;
                }
            }
            expect += self.tasks.values().filter(|(f, _)| f.0 == fid as u32).map(|(_, b)| b).sum::<u64>();
            assert_eq!(fac.used, expect, "factory {fid}: usage");
            assert!(fac.used <= fac.limit, "factory {fid}: usage above the limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PoolId;

    #[test]
    fn entries_pack_frame_pool_and_mark() {
        let f = Frame::from_number((1 << 40) - 1);
        let e = Entry::new(f, PoolId::ISA_DMA);
        assert_eq!(
            (e.frame(), e.frame_number(), e.pool(), e.is_cow()),
            (Some(f), Some(f.number()), PoolId::ISA_DMA, false)
        );
        let c = e.with_cow(true);
        assert!(c.is_cow() && c.frame() == Some(f) && c.pool() == PoolId::ISA_DMA);
        assert_eq!(c.with_cow(false), e);
        assert_eq!(Entry::EMPTY.frame(), None);
    }

    #[test]
    fn backing_is_page_or_superpage_granular() {
        assert_eq!(backing_pages(1, 1), Some(1));
        assert_eq!(backing_pages(PAGE, 1), Some(1));
        assert_eq!(backing_pages(PAGE + 1, 1), Some(2));
        assert_eq!(backing_pages(1, SUPERPAGE_FRAMES), Some(SUPERPAGE_FRAMES));
        assert_eq!(backing_pages(MAX_SIZE, 1), Some(MAX_SIZE / PAGE));
        assert_eq!(backing_pages(MAX_SIZE + 1, 1), None);
        assert_eq!(order_for_align(12), Order::ZERO);
        assert_eq!(order_for_align(21), SUPERPAGE_ORDER);
        assert_eq!(order_for_align(MAX_ALIGN_SHIFT), Order::MAX);
    }

    #[test]
    fn a_slot_whose_generation_would_wrap_is_retired() {
        use memkit_testkit::{ModelFrameSource, SparseRam};
        let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
        m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x100), FrameCount::new(16)));
        let me = ClientId::new(1, 0);
        let first = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "a").unwrap();
        m.close(me, first).unwrap();
        m.slots[first.index()].generation = DataspaceId::MAX_GENERATION;
        let last = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "b").unwrap();
        assert_eq!((last.index(), last.generation()), (first.index(), DataspaceId::MAX_GENERATION));
        m.close(me, last).unwrap();
        m.check_invariants();
        let next = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "c").unwrap();
        assert_ne!(next.index(), first.index(), "a retired slot is never reused");
        assert!(m.info(last).is_err() && m.info(DataspaceId::new(first.index() as u32, 0)).is_err());
        m.check_invariants();
    }

    #[test]
    fn kinds() {
        assert!(!Kind::empty().is_bound());
        assert!(Kind::PINNED.is_bound() && !Kind::PINNED.is_one_run());
        assert!(Kind::FIXED.is_one_run() && Kind::CONTIGUOUS.is_one_run());
        assert_eq!(Kind::SUPERPAGES.granule(), 512);
    }
}
