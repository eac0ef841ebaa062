//! The whole stack hosted: a dataspace manager over the RAM, and address spaces (region
//! maps over windows) whose faults are real and resolved through the manager.
//!
//! ```text
//!   System ── one spin lock ──▶ Stack { manager: Manager<S, RamRef>, spaces: [AddressSpace] }
//!     │                                   ▲
//!     └─ per window: Registration ────────┘ the fault handler locks the stack, resolves the
//!                                           fault in the space's region map, and on a
//!                                           copy-on-write break unmaps the old frame from the
//!                                           other spaces
//! ```
//!
//! # Fault-around
//! A fault on a page whose aligned neighbours (a block of [`DEFAULT_FAULT_AROUND`] pages by
//! default, see [`System::set_fault_around`]) are still unmapped and have no frame yet gives
//! the whole stretch one run of contiguous frames ([`Manager::map_run`]) and maps it with one
//! `mmap`, so the signal and the `mmap` are paid once per run instead of once per page, and
//! the run merges with its neighbours into one kernel mapping. This is what Linux does for
//! file mappings (`fault_around_bytes`). The price: frames are committed for pages that may
//! never be touched (at most the block size minus one per fault). A block of one page keeps
//! strict one-page laziness.
//!
//! ```text
//!   block of 16 pages:  |....|....|....|.X..|   X faults, every page still empty
//!                        └──── one frame run, one mmap ────┘
//!   otherwise (a neighbour mapped or populated, or a copy-on-write page): one page
//! ```
//!
//! One lock covers the manager and every space, so that a fault in one space can revoke
//! mappings in another without lock-ordering trouble. The [crate's locking
//! rule](crate#the-locking-rule) applies: [`System::lock`] only around operations, never while
//! loading or storing window memory.
//!
//! # Coherence
//! The system keeps its spaces coherent exactly as
//! [`SpaceSet`](memkit_region::SpaceSet) does: one manager reference per dataspace for
//! as long as any region of any space shows it; a copy-on-write break unmaps every other
//! mapping of the page's old frame for that dataspace, in every space, the faulting one
//! included (another region of the same space may show the same page); a `DETACH_FREE`
//! region's detached part is cleared through the manager; destroying a space detaches its
//! regions with `KEEP`.
//!
//! # Loads and stores
//! [`System::load`] and [`System::store`] first touch each page of the range with a real
//! access ([`probe`](crate::access::probe)): a page not mapped yet takes a real fault,
//! resolved by the handler. They then take the lock, resolve any page still not accessible
//! (as the fault would, fault-around included; this is where an error is found), and copy
//! with real loads and stores, which cannot fault because nothing can unmap the pages while
//! the lock is held. An access that cannot be served (rights, no
//! region, no frame left) is an error and nothing is written; destroying a space waits for
//! such an access to finish, and an access of a space destroyed meanwhile fails.
//!
//! Using the system from inside its own lock (`sys.lock(|_| sys.store(..))`) would deadlock;
//! it is detected per thread instead: the fallible methods return
//! [`SpaceError::Reentered`], [`System::lock`] panics, and a raw access of window memory
//! inside the lock ends the process with a message ([`fault`](crate::fault)).
//!
//! # Window size
//! A space's window is at most [`Window::MAX_LEN`] bytes: its MMU keeps one word per page.

use spin::mutex::{TicketMutex, TicketMutexGuard};
use std::collections::BTreeMap;
use std::sync::Arc;

use memkit_dataspace::{DataspaceId, Manager, PageRange, RevokeKind, Revoker};
use memkit_region::Mmu;
use memkit_region::{
    AddressSpace, AttachError, AttachRequest, Backing, BackingError, DetachError, DetachFlags, Detached, FaultError,
    MapError, RegionMap,
};
use memkit_types::{
    Access, Frame, FrameCount, FrameSource, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights,
    VirtAddr,
};

use crate::fault::{self, FaultResolver, RegisterError, Registration, Resolution, Unserviceable};
use crate::held::{Held, holds};
use crate::ram::HostRam;
use crate::window::{HostMmu, Window, WindowError};

/// The RAM as the manager sees it: a shared handle implementing [`PhysMemory`].
#[derive(Debug, Clone)]
pub struct RamRef(pub Arc<HostRam>);

impl PhysMemory for RamRef {
    fn zero(&self, frame: Frame, count: FrameCount) {
        self.0.zero(frame, count);
    }
    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        self.0.copy(src, dst, count);
    }
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        self.0.read(addr, buf);
    }
    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        self.0.write(addr, buf);
    }
}

/// An address space of a [`System`]: its slot and a serial number never given to another
/// space in the process, so that the id of a destroyed space stays invalid when its slot is
/// reused, and another system refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId {
    index: usize,
    serial: u64,
}

impl SpaceId {
    /// The space's slot (reused after the space is destroyed).
    #[must_use]
    pub fn index(self) -> usize {
        self.index
    }
}

impl core::fmt::Display for SpaceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "space {}", self.index)
    }
}

/// One hosted address space: a region map over a window and its MMU.
pub type HostAddressSpace = AddressSpace<DataspaceId, HostMmu>;

/// Why an address space could not be made or reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceError {
    /// The window could not be reserved.
    Window(WindowError),
    /// The window could not be registered with the fault handler.
    Register(RegisterError),
    /// No such space.
    NoSpace(SpaceId),
    /// The address (or the range from it) is outside the space's window.
    OutsideWindow(VirtAddr),
    /// An access of window memory that cannot be served: no region, beyond the rights, no
    /// frame left (nothing was loaded or stored).
    Fault {
        /// The first address that could not be served.
        addr: VirtAddr,
        /// The access.
        access: Access,
        /// Why.
        error: FaultError,
    },
    /// The calling thread holds this system's lock ([`System::lock`]): the operation would
    /// deadlock.
    Reentered,
}

impl core::fmt::Display for SpaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpaceError::Window(e) => e.fmt(f),
            SpaceError::Register(e) => e.fmt(f),
            SpaceError::NoSpace(s) => write!(f, "no {s}"),
            SpaceError::OutsideWindow(a) => write!(f, "address {a} is outside the space's window"),
            SpaceError::Fault { addr, access, error } => {
                let what = match access {
                    Access::Read => "load",
                    Access::Write => "store",
                    Access::Execute => "fetch",
                };
                write!(f, "{what} at {addr} cannot be served: {error}")
            }
            SpaceError::Reentered => f.write_str("the system is used from inside its own lock (System::lock)"),
        }
    }
}

impl std::error::Error for SpaceError {}

impl SpaceError {
    /// The seed's code: `-L4_ENOMEM` (-12) for resources, the fault's code for a fault
    /// (`-L4_ENOMEM` when no frame is left, `-L4_EPERM` beyond the rights), `-L4_EINVAL` (-22)
    /// otherwise.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            SpaceError::Window(e) => e.code(),
            SpaceError::Register(e) => e.code(),
            SpaceError::Fault { error, .. } => error.code(),
            SpaceError::NoSpace(_) | SpaceError::OutsideWindow(_) | SpaceError::Reentered => -22,
        }
    }
}

/// The serial number of the next space created, by any system.
static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many times a load or store resolves its pages before it gives up on a range whose
/// pages keep unmapping each other (never seen: a second round settles every known case).
const RESOLVE_ROUNDS: usize = 4;

/// The number of pages a fault maps at once by default when its neighbours are still
/// empty (64 KiB, as Linux's `fault_around_bytes`).
pub const DEFAULT_FAULT_AROUND: usize = 16;

/// The largest fault-around block: 512 pages (2 MiB).
pub const MAX_FAULT_AROUND: usize = 512;

/// Why a fault-around block size was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAroundError {
    /// The size (in pages) is zero, not a power of two, or above [`MAX_FAULT_AROUND`].
    BadSize(usize),
}

impl core::fmt::Display for FaultAroundError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultAroundError::BadSize(n) => {
                write!(f, "fault-around of {n} pages: must be a power of two from 1 to {MAX_FAULT_AROUND}")
            }
        }
    }
}

impl std::error::Error for FaultAroundError {}

impl FaultAroundError {
    /// The seed's code: `-L4_EINVAL` (-22).
    #[must_use]
    pub fn code(self) -> i32 {
        -22
    }
}

/// Everything behind the [`System`]'s lock.
#[derive(Debug)]
pub struct Stack<S: FrameSource> {
    /// The dataspace manager.
    pub manager: Manager<S, RamRef>,
    spaces: Vec<Option<HostAddressSpace>>,
    /// For each space slot, the serial number of the space in it (numbers are unique in the
    /// process, so the id of a destroyed space, or of another system's, is refused).
    serials: Vec<u64>,
    /// The number of regions of all spaces showing each dataspace; the stack holds one
    /// manager reference for each dataspace in here.
    attachments: BTreeMap<DataspaceId, u32>,
    /// Pages per fault-around block (a power of two; 1: off).
    fault_around: usize,
}

/// The frames copy-on-write breaks replaced during one operation: the first without
/// allocating (a fault's, in the signal handler), any further ones in a list.
#[derive(Debug, Default)]
struct Replaced {
    first: Option<(DataspaceId, u64, Frame)>,
    more: Vec<(DataspaceId, u64, Frame)>,
}

impl Replaced {
    fn push(&mut self, r: (DataspaceId, u64, Frame)) {
        if self.first.is_none() {
            self.first = Some(r);
        } else {
            self.more.push(r);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (DataspaceId, u64, Frame)> + '_ {
        self.first.iter().chain(self.more.iter()).copied()
    }
}

/// The manager seen by a region map: frames on faults, references on attach and detach.
struct Store<'a, S: FrameSource> {
    manager: &'a mut Manager<S, RamRef>,
    attachments: &'a mut BTreeMap<DataspaceId, u32>,
    /// The copy-on-write breaks during this operation: (dataspace, offset, old frame). A
    /// fault maps one page, so it breaks at most one and allocates nothing; an eager attach
    /// may break one per page.
    replaced: Replaced,
    /// A `DETACH_FREE` release to carry out once the region map is done.
    release: Option<(DataspaceId, u64, u64)>,
}

impl<S: FrameSource> Backing for Store<'_, S> {
    type Id = DataspaceId;

    fn rights(&self, id: DataspaceId) -> Option<Rights> {
        // The rights of the handle: attaching beyond them is refused.
        self.manager.rights(id).ok()
    }

    fn map(&mut self, id: DataspaceId, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        match self.manager.map(id, offset, access) {
            Ok(m) => {
                if let Some(old) = m.replaced {
                    self.replaced.push((id, offset, old));
                }
                Ok((m.frame, m.rights))
            }
            Err(memkit_dataspace::MapError::InvalidId(_)) => Err(BackingError::UnknownDataspace),
            Err(memkit_dataspace::MapError::OffsetOutOfRange(o, _)) => Err(BackingError::OutOfRange(o)),
            Err(memkit_dataspace::MapError::Forbidden(_, access)) => Err(BackingError::Forbidden(access)),
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => Err(BackingError::OutOfMemory),
            // A refusal a later manager adds: the access is refused.
            Err(_) => Err(BackingError::Forbidden(access)),
        }
    }

    fn attached(&mut self, id: DataspaceId) {
        // One manager reference per dataspace shown anywhere: a region split after the
        // dataspace was closed needs no new reference (the manager would refuse one).
        let n = self.attachments.entry(id).or_insert(0);
        if *n == 0 {
            // The attach checked `rights` (an open handle) just before: this succeeds.
            let _ = self.manager.inc_ref(id);
        }
        *n += 1;
    }

    fn detached(&mut self, id: DataspaceId) {
        if let Some(n) = self.attachments.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.attachments.remove(&id);
                let _ = self.manager.dec_ref(id);
            }
        }
    }

    fn release(&mut self, id: DataspaceId, offset: u64, size: u64) {
        self.release = Some((id, offset, size));
    }
}

/// Takes mappings away in every space (what the manager calls before sharing or freeing
/// frames).
#[derive(Debug)]
pub struct SpacesRevoker<'a> {
    spaces: &'a mut [Option<HostAddressSpace>],
}

impl Revoker for SpacesRevoker<'_> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let offset = pages.start.saturating_mul(PAGE_SIZE as u64);
        let size = pages.end.saturating_sub(pages.start).saturating_mul(PAGE_SIZE as u64);
        for s in self.spaces.iter_mut().flatten() {
            // An MMU error here can only be the mapping budget refusing to split a run
            // for a protect; unmapping the pages instead always succeeds and is safe
            // (they fault again and are resolved with the right rights).
            if s.map.revoke(&mut s.mmu, ds, offset, size, keep).is_err() {
                let _ = s.map.revoke(&mut s.mmu, ds, offset, size, Rights::empty());
            }
        }
    }
}

impl<S: FrameSource> Stack<S> {
    /// The manager and a revoker over every space, for manager operations that invalidate
    /// mappings (`copy`, `resize`, `clear`, ...).
    pub fn manager_and_revoker(&mut self) -> (&mut Manager<S, RamRef>, SpacesRevoker<'_>) {
        (&mut self.manager, SpacesRevoker { spaces: &mut self.spaces })
    }

    fn store(&mut self) -> Store<'_, S> {
        Store {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        }
    }

    /// The number of regions of all spaces showing `ds`.
    #[must_use]
    pub fn attachments(&self, ds: DataspaceId) -> u32 {
        self.attachments.get(&ds).copied().unwrap_or(0)
    }

    /// The address space `id`.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn space(&self, id: SpaceId) -> Result<&HostAddressSpace, SpaceError> {
        let index = self.index_of(id).ok_or(SpaceError::NoSpace(id))?;
        self.spaces[index].as_ref().ok_or(SpaceError::NoSpace(id))
    }

    /// The region map of space `id`.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn region_map(&self, id: SpaceId) -> Result<&RegionMap<DataspaceId>, SpaceError> {
        self.space(id).map(|s| &s.map)
    }

    /// The region map of space `id`, to reserve and free areas.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn region_map_mut(&mut self, id: SpaceId) -> Result<&mut RegionMap<DataspaceId>, SpaceError> {
        let index = self.index_of(id).ok_or(SpaceError::NoSpace(id))?;
        self.spaces[index].as_mut().map(|s| &mut s.map).ok_or(SpaceError::NoSpace(id))
    }

    /// The ids of the live spaces.
    #[must_use]
    pub fn space_ids(&self) -> Vec<SpaceId> {
        let live = self.spaces.iter().zip(&self.serials).enumerate().filter(|(_, (s, _))| s.is_some());
        live.map(|(index, (_, &serial))| SpaceId { index, serial }).collect()
    }

    /// Attaches in space `id` ([`RegionMap::attach`]).
    ///
    /// # Errors
    /// As [`RegionMap::attach`]; `Ok(Err(..))` when there is no such space.
    pub fn attach(
        &mut self,
        id: SpaceId,
        req: &AttachRequest<DataspaceId>,
    ) -> Result<Result<VirtAddr, AttachError>, SpaceError> {
        let index = self.index_of(id).ok_or(SpaceError::NoSpace(id))?;
        let space = self.spaces[index].as_mut().ok_or(SpaceError::NoSpace(id))?;
        let mut store = Store {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let r = space.attach(&mut store, req);
        let replaced = core::mem::take(&mut store.replaced);
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        Ok(r)
    }

    /// Detaches in space `id` ([`RegionMap::detach`]). With `DETACH_FREE` (and no `KEEP`)
    /// the detached part of the dataspace is cleared through the manager (its frames freed,
    /// its mappings elsewhere revoked), when the dataspace is still open.
    ///
    /// # Errors
    /// As [`RegionMap::detach`]; the outer error when there is no such space.
    pub fn detach(
        &mut self,
        id: SpaceId,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Result<Detached<DataspaceId>, DetachError>, SpaceError> {
        let index = self.index_of(id).ok_or(SpaceError::NoSpace(id))?;
        let space = self.spaces[index].as_mut().ok_or(SpaceError::NoSpace(id))?;
        let mut store = Store {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let d = space.detach(&mut store, start, size, flags);
        if d.is_ok()
            && let Some((ds, offset, len)) = store.release
        {
            let (m, mut r) = self.manager_and_revoker();
            if let Ok(info) = m.info(ds) {
                let owner = info.owner;
                let len = len.min(info.size.saturating_sub(offset));
                // Clearing may fail only for want of a frame to unshare an edge page; the
                // detach itself has happened either way.
                let _ = m.clear(owner, ds, offset, len, &mut r);
            }
        }
        Ok(d)
    }

    /// The fault-around block size in pages (1: off).
    #[must_use]
    pub fn fault_around(&self) -> usize {
        self.fault_around
    }

    /// Sets the fault-around block size ([`System::set_fault_around`]).
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    pub fn set_fault_around(&mut self, pages: usize) -> Result<(), FaultAroundError> {
        if !pages.is_power_of_two() || pages > MAX_FAULT_AROUND {
            return Err(FaultAroundError::BadSize(pages));
        }
        self.fault_around = pages;
        Ok(())
    }

    /// Resolves a fault in space `index`, by fault-around when it applies; on a copy-on-write
    /// break, unmaps every other mapping of the page's old frame for that dataspace, in every
    /// space (this one included: another region may show the same page). Allocation-free as
    /// long as the manager's `map` and `map_run` and the region map's `resolve` are.
    fn resolve(&mut self, index: usize, addr: VirtAddr, access: Access) -> Result<(), FaultError> {
        let Some(Some(space)) = self.spaces.get_mut(index) else { return Err(FaultError::NoRegion(addr)) };
        if self.fault_around > 1 && fault_around(&mut self.manager, space, addr, access, self.fault_around) {
            return Ok(());
        }
        let mut store = Store {
            manager: &mut self.manager,
            attachments: &mut self.attachments,
            replaced: Replaced::default(),
            release: None,
        };
        let r = space.resolve(&mut store, addr, access).map(|_| ());
        let replaced = core::mem::take(&mut store.replaced);
        for (ds, offset, old) in replaced.iter() {
            self.unmap_replaced(ds, offset, old);
        }
        r
    }

    /// Whether the page of `addr` in space `index` is mapped for `access` (so an access there
    /// cannot fault while the lock is held).
    fn accessible(&self, index: usize, addr: VirtAddr, access: Access) -> bool {
        let Some(Some(space)) = self.spaces.get(index) else { return false };
        space.mmu.translate(Page::containing_address(addr)).is_some_and(|t| t.rights.allows(access))
    }

    /// Makes `addr` of space `index` accessible for `access`: nothing when its page is mapped
    /// with the rights, else resolves it as a fault would.
    fn prepare(&mut self, index: usize, addr: VirtAddr, access: Access) -> Result<(), FaultError> {
        if self.accessible(index, addr, access) {
            return Ok(());
        }
        self.resolve(index, addr, access)
    }

    fn unmap_replaced(&mut self, ds: DataspaceId, offset: u64, old: Frame) {
        for s in self.spaces.iter_mut().flatten() {
            s.map.unmap_stale(&mut s.mmu, ds, offset, old);
        }
    }

    /// The slot of space `id` while it lives.
    fn index_of(&self, id: SpaceId) -> Option<usize> {
        let live = self.spaces.get(id.index).is_some_and(Option::is_some);
        (live && self.serials.get(id.index) == Some(&id.serial)).then_some(id.index)
    }

    /// Checks the invariants of every space (region map and MMU), that every translation lies
    /// in a region and within its rights, and that the reference bookkeeping matches the
    /// regions.
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let mut counted: BTreeMap<DataspaceId, u32> = BTreeMap::new();
        for s in self.spaces.iter().flatten() {
            s.map.check_invariants();
            s.mmu.check_invariants();
            let mut in_regions = 0;
            for r in s.map.regions() {
                *counted.entry(r.dataspace).or_insert(0) += 1;
                let first = Page::containing_address(r.start).number();
                for p in first..first + r.size / PAGE_SIZE {
                    if let Some(t) = s.mmu.translate(page_numbered(p)) {
                        in_regions += 1;
                        assert!(r.rights.contains(t.rights), "a translation beyond its region's rights at page {p:#x}");
                    }
                }
            }
            assert_eq!(in_regions, s.mmu.mapped_pages(), "a translation outside every region");
        }
        assert_eq!(counted, self.attachments, "attachment counts do not match the regions");
        assert_eq!(self.serials.len(), self.spaces.len(), "a space slot without a serial number");
    }
}

/// The lock over the stack: a ticket lock, so that a thread that releases it and takes it
/// again at once (a store loop) cannot starve a destroyer or a faulting thread.
/// Waiters give their time slice up (`sched_yield`, which a signal handler may call): with
/// more threads than CPUs, the next ticket's holder may be waiting for a CPU.
type StackLock<S> = TicketMutex<Stack<S>, YieldRelax>;

/// Relaxes by yielding the CPU.
#[derive(Debug)]
struct YieldRelax;

impl spin::RelaxStrategy for YieldRelax {
    fn relax() {
        std::thread::yield_now();
    }
}

/// The stack, locked by this thread (and recorded as such until the guard drops).
struct StackGuard<'a, S: FrameSource> {
    guard: TicketMutexGuard<'a, Stack<S>>,
    _held: Held,
}

impl<'a, S: FrameSource> StackGuard<'a, S> {
    fn new(guard: TicketMutexGuard<'a, Stack<S>>, key: usize) -> Self {
        StackGuard { guard, _held: Held::new(key) }
    }
}

impl<S: FrameSource> core::ops::Deref for StackGuard<'_, S> {
    type Target = Stack<S>;
    fn deref(&self) -> &Stack<S> {
        &self.guard
    }
}

impl<S: FrameSource> core::ops::DerefMut for StackGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut Stack<S> {
        &mut self.guard
    }
}

/// The key of a stack's lock in the record of held locks: its address.
fn key_of<S: FrameSource>(stack: &Arc<StackLock<S>>) -> usize {
    Arc::as_ptr(stack).cast::<()>() as usize
}

/// The page numbered `n`.
fn page_numbered(n: usize) -> Page {
    Page::containing_address(VirtAddr::new(n << PAGE_SHIFT))
}

/// Maps the stretch of still-unmapped pages around `addr` inside its aligned block of
/// `block` pages, its region and its dataspace, onto one fresh run of contiguous frames, when
/// that stretch is longer than one page and none of its pages has a frame yet. Returns
/// whether it did; `false` leaves the fault to the one-page path (a frame run allocated but
/// not mapped stays with the dataspace, and that path maps its page). Allocation-free.
fn fault_around<S: FrameSource>(
    manager: &mut Manager<S, RamRef>,
    space: &mut HostAddressSpace,
    addr: VirtAddr,
    access: Access,
    block: usize,
) -> bool {
    let Some(r) = space.map.region_at(addr) else { return false };
    if !r.rights.allows(access) {
        return false;
    }
    let Ok(size) = manager.info(r.dataspace).map(|i| i.size) else { return false };
    let page = Page::containing_address(addr).number();
    let region_first = Page::containing_address(r.start).number();
    // Pages of the region that show bytes of the dataspace.
    let backed = size.div_ceil(PAGE_SIZE as u64).saturating_sub(r.offset / PAGE_SIZE as u64);
    let region_end = region_first + (r.size / PAGE_SIZE).min(usize::try_from(backed).unwrap_or(usize::MAX));
    let lo = (page & !(block - 1)).max(region_first);
    let hi = (page | (block - 1)).saturating_add(1).min(region_end);
    if page >= hi || space.mmu.translate(page_numbered(page)).is_some() {
        return false;
    }
    let mut first = page;
    while first > lo && space.mmu.translate(page_numbered(first - 1)).is_none() {
        first -= 1;
    }
    let mut end = page + 1;
    while end < hi && space.mmu.translate(page_numbered(end)).is_none() {
        end += 1;
    }
    if end - first < 2 {
        return false;
    }
    let offset = r.offset + ((first - region_first) * PAGE_SIZE) as u64;
    let Ok(Some(frame)) = manager.map_run(r.dataspace, offset, (end - first) as u64) else { return false };
    // Fresh frames allow everything: the region's rights alone decide.
    match space.mmu.map(page_numbered(first), frame, PageCount::new(end - first), r.rights, r.cache) {
        Ok(flush) => {
            flush.flush(&space.mmu);
            true
        }
        Err(_) => false,
    }
}

struct SpaceResolver<S: FrameSource> {
    stack: Arc<StackLock<S>>,
    index: usize,
}

impl<S: FrameSource + Send + 'static> FaultResolver for SpaceResolver<S>
where
    Manager<S, RamRef>: Send,
{
    fn resolve_fault(&self, addr: VirtAddr, access: Access) -> Resolution {
        if holds(key_of(&self.stack)) {
            return Resolution::Reentered;
        }
        match self.stack.lock().resolve(self.index, addr, access) {
            Ok(()) => Resolution::Resolved,
            Err(FaultError::Backing(BackingError::OutOfMemory)) => {
                Resolution::Unserviceable(Unserviceable::OutOfMemory)
            }
            Err(FaultError::Mmu(MapError::OutOfMemory)) => Resolution::Unserviceable(Unserviceable::NoMapping),
            Err(_) => Resolution::Refused,
        }
    }
}

/// The hosted stack: RAM, the dataspace manager over it, and address spaces with real
/// faults.
pub struct System<S: FrameSource> {
    ram: Arc<HostRam>,
    stack: Arc<StackLock<S>>,
    // Registrations live outside the stack's lock: dropping one waits for the handlers inside
    // its window, and those may be waiting for the stack's lock.
    registrations: spin::Mutex<Vec<Option<Registration>>>,
}

impl<S: FrameSource> core::fmt::Debug for System<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("System").field("ram", &self.ram).finish_non_exhaustive()
    }
}

impl<S: FrameSource + Send + 'static> System<S>
where
    Manager<S, RamRef>: Send,
{
    /// A system over `ram` with `manager` (whose memory is `RamRef(ram)`).
    #[must_use]
    pub fn new(ram: Arc<HostRam>, manager: Manager<S, RamRef>) -> Self {
        System {
            ram,
            stack: Arc::new(StackLock::new(Stack {
                manager,
                spaces: Vec::new(),
                serials: Vec::new(),
                attachments: BTreeMap::new(),
                fault_around: DEFAULT_FAULT_AROUND,
            })),
            registrations: spin::Mutex::new(Vec::new()),
        }
    }

    /// The RAM.
    #[must_use]
    pub fn ram(&self) -> &Arc<HostRam> {
        &self.ram
    }

    /// The stack, locked by this thread; [`SpaceError::Reentered`] when this thread holds
    /// the lock already.
    fn locked(&self) -> Result<StackGuard<'_, S>, SpaceError> {
        let key = key_of(&self.stack);
        if holds(key) {
            return Err(SpaceError::Reentered);
        }
        Ok(StackGuard::new(self.stack.lock(), key))
    }

    /// Sets how many pages a fault maps at once when its neighbours are still empty: a
    /// power of two up to [`MAX_FAULT_AROUND`]; 1 turns fault-around off (every page faults
    /// and gets its frame on its own). [`DEFAULT_FAULT_AROUND`] at first. The trade-off:
    /// one signal and one `mmap` per block instead of per page, against up to `pages - 1`
    /// frames committed per fault before their pages are touched.
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    ///
    /// # Panics
    /// As [`lock`](Self::lock), inside this system's lock.
    pub fn set_fault_around(&self, pages: usize) -> Result<(), FaultAroundError> {
        self.lock(|s| s.set_fault_around(pages))
    }

    /// Creates an address space with a window of `size` bytes (at most [`Window::MAX_LEN`]).
    ///
    /// # Errors
    /// [`SpaceError::Window`], [`SpaceError::Register`], [`SpaceError::Reentered`].
    pub fn create_space(&self, size: usize) -> Result<SpaceId, SpaceError> {
        if holds(key_of(&self.stack)) {
            return Err(SpaceError::Reentered);
        }
        let window = Window::new(size).map_err(SpaceError::Window)?;
        let (start, len) = (window.start(), window.len());
        let mmu = HostMmu::try_new(window, Arc::clone(&self.ram)).map_err(SpaceError::Window)?;
        let space = AddressSpace::new(RegionMap::new(start, len), mmu);
        let id = {
            let mut stack = self.locked()?;
            let stack = &mut *stack;
            let index = stack.spaces.iter().position(Option::is_none).unwrap_or(stack.spaces.len());
            if index == stack.spaces.len() {
                stack.spaces.push(None);
                stack.serials.push(0);
            }
            stack.spaces[index] = Some(space);
            stack.serials[index] = NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            SpaceId { index, serial: stack.serials[index] }
        };
        let index = id.index;
        let resolver = Arc::new(SpaceResolver { stack: Arc::clone(&self.stack), index });
        match fault::register(start, len, resolver) {
            Ok(reg) => {
                let mut regs = self.registrations.lock();
                if regs.len() <= index {
                    regs.resize_with(index + 1, || None);
                }
                regs[index] = Some(reg);
                Ok(id)
            }
            Err(e) => {
                self.stack.lock().spaces[index] = None;
                Err(SpaceError::Register(e))
            }
        }
    }

    /// Destroys space `id`: stops its faults, waits for the loads and stores in flight in
    /// it, detaches every region (with `KEEP`), releases its window. Loads and stores of the
    /// space that start after it fail with [`SpaceError::NoSpace`].
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], [`SpaceError::Reentered`].
    pub fn destroy_space(&self, id: SpaceId) -> Result<(), SpaceError> {
        if holds(key_of(&self.stack)) {
            return Err(SpaceError::Reentered);
        }
        // Registrations are dropped outside the stack's lock (a handler inside the window may
        // be waiting for it); the registrations' lock orders destroyers of the same space.
        let mut regs = self.registrations.lock();
        if self.lock(|s| s.index_of(id)).is_none() {
            return Err(SpaceError::NoSpace(id));
        }
        let reg = regs.get_mut(id.index).and_then(Option::take);
        drop(reg);
        drop(regs);
        // Loads and stores hold the lock while they touch the window: taking it waits for
        // them, and the window is released before it is given back.
        let mut stack = self.locked()?;
        let stack = &mut *stack;
        let index = stack.index_of(id).ok_or(SpaceError::NoSpace(id))?;
        if let Some(mut space) = stack.spaces[index].take() {
            let (start, len) = (space.map.window_start(), space.map.window_size());
            let mut store = stack.store();
            let _ =
                space.map.detach_all(&mut store, &mut space.mmu, start, len, DetachFlags::OVERLAP | DetachFlags::KEEP);
            drop(space);
        }
        Ok(())
    }

    /// Runs `f` with the stack locked. `f` must not load or store window memory, nor use this
    /// system (its methods fail with [`SpaceError::Reentered`] there).
    ///
    /// # Panics
    /// When this thread holds the lock already (`f` of an outer `lock` calls `lock`):
    /// waiting would deadlock.
    pub fn lock<R>(&self, f: impl FnOnce(&mut Stack<S>) -> R) -> R {
        match self.locked() {
            Ok(mut stack) => f(&mut stack),
            Err(_) => panic!("System::lock called inside System::lock on the same thread: it would deadlock"),
        }
    }

    /// Resolves every page of `addr .. addr + len` of space `id` for `access` and returns the
    /// locked stack (so nothing can unmap the pages).
    fn reach(&self, id: SpaceId, addr: VirtAddr, len: usize, access: Access) -> Result<StackGuard<'_, S>, SpaceError> {
        if holds(key_of(&self.stack)) {
            return Err(SpaceError::Reentered);
        }
        // First touches are real faults: probe each page without the lock (a probe the
        // handler cannot serve just returns false; the pass under the lock below finds out
        // why). The window is checked first so that only its pages are probed; a space
        // destroyed meanwhile makes the probes fail harmlessly and the pass below report it.
        let window = self.lock(|s| s.space(id).map(|sp| (sp.map.window_start(), sp.map.window_size())))?;
        let inside =
            addr.checked_offset_from(window.0).is_some_and(|o| o.checked_add(len).is_some_and(|e| e <= window.1));
        if !inside {
            return Err(SpaceError::OutsideWindow(addr));
        }
        let end = addr.as_usize() + len;
        let mut at = addr.as_usize();
        while at < end {
            // SAFETY: window memory (checked above) or, if the space went away since,
            // unmapped or reused addresses, which a probe touches without changing a byte.
            let _ = unsafe { crate::access::probe(VirtAddr::new(at), access == Access::Write) };
            at = (at & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
        let mut stack = self.locked()?;
        let space = stack.space(id)?;
        let (start, size) = (space.map.window_start(), space.map.window_size());
        let inside = addr.checked_offset_from(start).is_some_and(|o| o.checked_add(len).is_some_and(|e| e <= size));
        if !inside {
            return Err(SpaceError::OutsideWindow(addr));
        }
        let pages = || {
            let first = addr.as_usize();
            core::iter::successors(Some(first), |&at| Some((at & !(PAGE_SIZE - 1)) + PAGE_SIZE))
                .take_while(move |&at| at < first + len)
                .map(VirtAddr::new)
        };
        // Resolving a later page may unmap an earlier one (a copy-on-write break unmaps the
        // old frame's other mappings, and two regions may show the same page): resolve until
        // every page is mapped for the access, which the copy relies on.
        for _ in 0..RESOLVE_ROUNDS {
            for a in pages() {
                stack.prepare(id.index, a, access).map_err(|error| SpaceError::Fault { addr: a, access, error })?;
            }
            if pages().all(|a| stack.accessible(id.index, a, access)) {
                return Ok(stack);
            }
        }
        let addr = pages().find(|&a| !stack.accessible(id.index, a, access)).unwrap_or(addr);
        let rights = Rights::empty();
        Err(SpaceError::Fault { addr, access, error: FaultError::Forbidden { addr, access, rights } })
    }

    /// Loads `buf.len()` bytes at `addr` of space `id` with real loads. Every page is
    /// resolved first, as a fault would (demand-zero, fault-around); the loads then run with
    /// the lock held, so no page can be unmapped under them and the space cannot be
    /// destroyed meanwhile.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], [`SpaceError::OutsideWindow`], [`SpaceError::Fault`] (no
    /// region, beyond the rights, no frame left), [`SpaceError::Reentered`]; nothing is
    /// loaded then.
    pub fn load(&self, id: SpaceId, addr: VirtAddr, buf: &mut [u8]) -> Result<(), SpaceError> {
        let stack = self.reach(id, addr, buf.len(), Access::Read)?;
        // SAFETY: the range is inside space id's window, on pages mapped readable (reach
        // checked each under the lock), and the lock held in `stack` keeps them so: no load
        // can fault.
        unsafe { crate::access::load_bytes(addr, buf) };
        drop(stack);
        Ok(())
    }

    /// Stores `buf` at `addr` of space `id` with real stores, resolving every page first
    /// (see [`load`](Self::load)).
    ///
    /// # Errors
    /// As [`load`](Self::load); nothing is stored then.
    pub fn store(&self, id: SpaceId, addr: VirtAddr, buf: &[u8]) -> Result<(), SpaceError> {
        let stack = self.reach(id, addr, buf.len(), Access::Write)?;
        // SAFETY: the range is inside space id's window, on pages mapped writable (reach
        // checked each under the lock), and the lock held in `stack` keeps them so: no store
        // can fault.
        unsafe { crate::access::store_bytes(addr, buf) };
        drop(stack);
        Ok(())
    }

    /// Makes `addr` of space `id` accessible for `access` now, as a fault there would (the
    /// page stays mapped), or says why a fault could not.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn resolve(&self, id: SpaceId, addr: VirtAddr, access: Access) -> Result<(), SpaceError> {
        self.reach(id, addr, 1, access).map(drop)
    }

    /// Whether an access to `addr` in space `id` is served: [`resolve`](Self::resolve)
    /// succeeds (so the page is mapped now), exactly what a fault there would do. Callers
    /// use it to refuse an access instead of letting it end the process.
    #[must_use]
    pub fn would_resolve(&self, id: SpaceId, addr: VirtAddr, access: Access) -> bool {
        self.resolve(id, addr, access).is_ok()
    }

    /// Checks the invariants of the whole stack ([`Stack::check_invariants`]).
    ///
    /// # Panics
    /// On the first broken invariant, or as [`lock`](Self::lock).
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.lock(|s| s.check_invariants());
    }
}

impl<S: FrameSource> Drop for System<S> {
    fn drop(&mut self) {
        // Stop every fault first (outside the stack's lock), then the spaces go with the stack.
        let regs: Vec<_> = self.registrations.lock().drain(..).collect();
        drop(regs);
    }
}
