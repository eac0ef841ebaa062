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
//!
//! This file holds the manager's types and the helpers its operations share; the operations
//! live one group per file: `factory` (quotas and task charges), `create`, `lifetime`
//! (references, `close`, queries on handles), `resize`, `access` (the fault path, reads and
//! writes), `copy` and `check`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use memkit_types::{
    Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysMemory,
    PhysPlacement, Rights, SUPERPAGE_ORDER,
};

use crate::entry::Entry;
use crate::error::RangeError;
use crate::ids::{ClientId, DataspaceId, FactoryId, PoolId};
use crate::refcount::ShareCounts;

mod access;
#[cfg(any(test, feature = "check"))]
mod check;
mod copy;
mod create;
mod factory;
mod lifetime;
mod resize;
#[cfg(test)]
mod tests;

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
    /// [`Access::Write`](memkit_types::Access::Write)), all the id grants otherwise.
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

/// The request to create one dataspace of `size` bytes (the common core of `alloc`,
/// `mem_open`, `memphys_open` and the copies), before its backing is counted in pages.
#[derive(Clone, Copy)]
struct NewDataspace<'a> {
    factory: FactoryId,
    owner: ClientId,
    size: u64,
    kind: Kind,
    pool: PoolId,
    align: u32,
    placement: PhysPlacement,
    name: &'a str,
}

/// The request to build one dataspace: a [`NewDataspace`] with its backing in pages.
struct Spec<'a> {
    factory: FactoryId,
    owner: ClientId,
    pages: u64,
    size: u64,
    kind: Kind,
    pool: PoolId,
    align: u32,
    placement: PhysPlacement,
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
}
