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
//! loading or storing window memory (use [`System::load`] and [`System::store`], which take no
//! lock).

use std::sync::Arc;

use memkit_dataspace::{DataspaceId, Manager, PageRange, RevokeKind, Revoker};
use memkit_region::Mmu;
use memkit_region::{
    AddressSpace, AttachError, AttachRequest, Backing, BackingError, DetachError, DetachFlags, Detached, RegionMap,
};
use memkit_types::{
    Access, Frame, FrameCount, FrameSource, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights,
    VirtAddr,
};

use crate::fault::{self, FaultResolver, RegisterError, Registration};
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

/// An address space of a [`System`], by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(pub usize);

impl core::fmt::Display for SpaceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "space {}", self.0)
    }
}

/// One hosted address space: a region map over a window and its MMU.
pub type HostAddressSpace = AddressSpace<DataspaceId, HostMmu>;

/// Why an address space could not be made or reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceError {
    /// The window could not be reserved.
    Window(WindowError),
    /// The window could not be registered with the fault handler.
    Register(RegisterError),
    /// No such space.
    NoSpace(SpaceId),
    /// The address is outside the space's window.
    OutsideWindow(VirtAddr),
}

impl core::fmt::Display for SpaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpaceError::Window(e) => e.fmt(f),
            SpaceError::Register(e) => e.fmt(f),
            SpaceError::NoSpace(s) => write!(f, "no {s}"),
            SpaceError::OutsideWindow(a) => write!(f, "address {a} is outside the space's window"),
        }
    }
}

impl std::error::Error for SpaceError {}

impl SpaceError {
    /// The seed's code: `-L4_ENOMEM` (-12) for resources, `-L4_EINVAL` (-22) otherwise.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            SpaceError::Window(e) => e.code(),
            SpaceError::Register(e) => e.code(),
            SpaceError::NoSpace(_) | SpaceError::OutsideWindow(_) => -22,
        }
    }
}

/// The number of pages a fault maps at once by default when its neighbours are still
/// empty (64 KiB, as Linux's `fault_around_bytes`).
pub const DEFAULT_FAULT_AROUND: usize = 16;

/// The largest fault-around block: 512 pages (2 MiB).
pub const MAX_FAULT_AROUND: usize = 512;

/// Why a fault-around block size was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Pages per fault-around block (a power of two; 1: off).
    fault_around: usize,
}

/// The manager seen by a region map: frames on faults, references on attach and detach.
struct Store<'a, S: FrameSource> {
    manager: &'a mut Manager<S, RamRef>,
    /// A page whose frame a copy-on-write break replaced: (dataspace, offset).
    replaced: Option<(DataspaceId, u64)>,
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
                if m.replaced.is_some() {
                    self.replaced = Some((id, offset));
                }
                Ok((m.frame, m.rights))
            }
            Err(memkit_dataspace::MapError::InvalidId(_)) => Err(BackingError::UnknownDataspace),
            Err(memkit_dataspace::MapError::OffsetOutOfRange(o, _)) => Err(BackingError::OutOfRange(o)),
            Err(memkit_dataspace::MapError::Forbidden(_, access)) => Err(BackingError::Forbidden(access)),
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => Err(BackingError::OutOfMemory),
        }
    }

    fn attached(&mut self, id: DataspaceId) {
        let _ = self.manager.inc_ref(id);
    }

    fn detached(&mut self, id: DataspaceId) {
        let _ = self.manager.dec_ref(id);
    }

    fn release(&mut self, _id: DataspaceId, _offset: u64, _size: u64) {
        // The frames stay with the dataspace until it is resized or closed: the manager has
        // no "discard" that keeps the contents' meaning (a later attach would see zeros).
    }
}

/// Takes mappings away in every space (what the manager calls before sharing or freeing
/// frames).
#[derive(Debug)]
pub struct SpacesRevoker<'a> {
    spaces: &'a mut [Option<HostAddressSpace>],
    skip: Option<usize>,
}

impl Revoker for SpacesRevoker<'_> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let offset = pages.start * PAGE_SIZE as u64;
        let size = (pages.end - pages.start) * PAGE_SIZE as u64;
        for (i, space) in self.spaces.iter_mut().enumerate() {
            if Some(i) == self.skip {
                continue;
            }
            if let Some(s) = space {
                // An MMU error here can only be the mapping budget refusing to split a run
                // for a protect; unmapping the pages instead always succeeds and is safe
                // (they fault again and are resolved with the right rights).
                if s.map.revoke(&mut s.mmu, ds, offset, size, keep).is_err() {
                    let _ = s.map.revoke(&mut s.mmu, ds, offset, size, Rights::empty());
                }
            }
        }
    }
}

impl<S: FrameSource> Stack<S> {
    /// The manager and a revoker over every space, for manager operations that invalidate
    /// mappings (`copy`, `resize`, `clear`, ...).
    pub fn manager_and_revoker(&mut self) -> (&mut Manager<S, RamRef>, SpacesRevoker<'_>) {
        (&mut self.manager, SpacesRevoker { spaces: &mut self.spaces, skip: None })
    }

    /// The address space `id`.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn space(&self, id: SpaceId) -> Result<&HostAddressSpace, SpaceError> {
        self.spaces.get(id.0).and_then(Option::as_ref).ok_or(SpaceError::NoSpace(id))
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
        self.spaces.get_mut(id.0).and_then(Option::as_mut).map(|s| &mut s.map).ok_or(SpaceError::NoSpace(id))
    }

    /// The ids of the live spaces.
    #[must_use]
    pub fn space_ids(&self) -> Vec<SpaceId> {
        self.spaces.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| SpaceId(i)).collect()
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
        let space = self.spaces.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut store = Store { manager: &mut self.manager, replaced: None };
        Ok(space.attach(&mut store, req))
    }

    /// Detaches in space `id` ([`RegionMap::detach`]).
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
        let space = self.spaces.get_mut(id.0).and_then(Option::as_mut).ok_or(SpaceError::NoSpace(id))?;
        let mut store = Store { manager: &mut self.manager, replaced: None };
        Ok(space.detach(&mut store, start, size, flags))
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
    /// break, unmaps the page from the other spaces (they still map the frame the break
    /// replaced). Allocation-free as long as the manager's `map` and `map_run` and the region
    /// map's `resolve` are.
    fn resolve(&mut self, index: usize, addr: VirtAddr, access: Access) -> bool {
        let Some(Some(space)) = self.spaces.get_mut(index) else { return false };
        if self.fault_around > 1 && fault_around(&mut self.manager, space, addr, access, self.fault_around) {
            return true;
        }
        let mut store = Store { manager: &mut self.manager, replaced: None };
        let ok = space.resolve(&mut store, addr, access).is_ok();
        if let Some((ds, offset)) = store.replaced {
            let page = offset / PAGE_SIZE as u64;
            let mut others = SpacesRevoker { spaces: &mut self.spaces, skip: Some(index) };
            others.revoke(ds, PageRange { start: page, end: page + 1 }, RevokeKind::All);
        }
        ok
    }
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
    stack: Arc<spin::Mutex<Stack<S>>>,
    index: usize,
}

impl<S: FrameSource + Send + 'static> FaultResolver for SpaceResolver<S>
where
    Manager<S, RamRef>: Send,
{
    fn resolve_fault(&self, addr: VirtAddr, access: Access) -> bool {
        self.stack.lock().resolve(self.index, addr, access)
    }
}

/// The hosted stack: RAM, the dataspace manager over it, and address spaces with real
/// faults.
pub struct System<S: FrameSource> {
    ram: Arc<HostRam>,
    stack: Arc<spin::Mutex<Stack<S>>>,
    // Registrations live outside the stack's lock: dropping one waits for the handlers inside
    // its window, and those may be waiting for the stack's lock.
    registrations: spin::Mutex<Vec<Option<(Registration, VirtAddr, usize)>>>,
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
            stack: Arc::new(spin::Mutex::new(Stack {
                manager,
                spaces: Vec::new(),
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

    /// Sets how many pages a fault maps at once when its neighbours are still empty: a
    /// power of two up to [`MAX_FAULT_AROUND`]; 1 turns fault-around off (every page faults
    /// and gets its frame on its own). [`DEFAULT_FAULT_AROUND`] at first. The trade-off:
    /// one signal and one `mmap` per block instead of per page, against up to `pages - 1`
    /// frames committed per fault before their pages are touched.
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    pub fn set_fault_around(&self, pages: usize) -> Result<(), FaultAroundError> {
        self.stack.lock().set_fault_around(pages)
    }

    /// Creates an address space with a window of `size` bytes.
    ///
    /// # Errors
    /// [`SpaceError::Window`], [`SpaceError::Register`].
    pub fn create_space(&self, size: usize) -> Result<SpaceId, SpaceError> {
        let window = Window::new(size).map_err(SpaceError::Window)?;
        let (start, len) = (window.start(), window.len());
        let space = AddressSpace::new(RegionMap::new(start, len), HostMmu::new(window, Arc::clone(&self.ram)));
        let index = {
            let mut stack = self.stack.lock();
            let index = stack.spaces.iter().position(Option::is_none).unwrap_or(stack.spaces.len());
            if index == stack.spaces.len() {
                stack.spaces.push(None);
            }
            stack.spaces[index] = Some(space);
            index
        };
        let resolver = Arc::new(SpaceResolver { stack: Arc::clone(&self.stack), index });
        match fault::register(start, len, resolver) {
            Ok(reg) => {
                let mut regs = self.registrations.lock();
                if regs.len() <= index {
                    regs.resize_with(index + 1, || None);
                }
                regs[index] = Some((reg, start, len));
                Ok(SpaceId(index))
            }
            Err(e) => {
                self.stack.lock().spaces[index] = None;
                Err(SpaceError::Register(e))
            }
        }
    }

    /// Destroys space `id`: stops its faults, detaches every region, releases its window.
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`].
    pub fn destroy_space(&self, id: SpaceId) -> Result<(), SpaceError> {
        let (reg, start, len) =
            self.registrations.lock().get_mut(id.0).and_then(Option::take).ok_or(SpaceError::NoSpace(id))?;
        drop(reg);
        let mut stack = self.stack.lock();
        let stack = &mut *stack;
        if let Some(mut space) = stack.spaces.get_mut(id.0).and_then(Option::take) {
            let mut store = Store { manager: &mut stack.manager, replaced: None };
            let _ = space.map.detach_all(&mut store, &mut space.mmu, start, len, DetachFlags::OVERLAP);
        }
        Ok(())
    }

    /// Runs `f` with the stack locked. `f` must not load or store window memory.
    pub fn lock<R>(&self, f: impl FnOnce(&mut Stack<S>) -> R) -> R {
        f(&mut self.stack.lock())
    }

    fn check(&self, id: SpaceId, addr: VirtAddr, len: usize) -> Result<(), SpaceError> {
        let regs = self.registrations.lock();
        let &(_, start, size) = regs.get(id.0).and_then(Option::as_ref).ok_or(SpaceError::NoSpace(id))?;
        let inside = addr.checked_offset_from(start).is_some_and(|o| o.checked_add(len).is_some_and(|e| e <= size));
        if inside { Ok(()) } else { Err(SpaceError::OutsideWindow(addr)) }
    }

    /// Loads `buf.len()` bytes at `addr` of space `id` with real loads (faults are resolved
    /// by the handler; one the region map refuses ends the process with `SIGSEGV`).
    ///
    /// # Errors
    /// [`SpaceError::NoSpace`], [`SpaceError::OutsideWindow`] (nothing is loaded then).
    pub fn load(&self, id: SpaceId, addr: VirtAddr, buf: &mut [u8]) -> Result<(), SpaceError> {
        self.check(id, addr, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: addr + i is inside the space's registered window (checked above).
            *b = unsafe { crate::access::load_u8(VirtAddr::new(addr.as_usize() + i)) };
        }
        Ok(())
    }

    /// Stores `buf` at `addr` of space `id` with real stores.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn store(&self, id: SpaceId, addr: VirtAddr, buf: &[u8]) -> Result<(), SpaceError> {
        self.check(id, addr, buf.len())?;
        for (i, &b) in buf.iter().enumerate() {
            // SAFETY: addr + i is inside the space's registered window (checked above).
            unsafe { crate::access::store_u8(VirtAddr::new(addr.as_usize() + i), b) };
        }
        Ok(())
    }

    /// Whether an access to `addr` in space `id` would be resolved (a mapped page that allows
    /// it, or a region whose rights allow it), so that callers can refuse an access instead
    /// of letting it end the process.
    #[must_use]
    pub fn would_resolve(&self, id: SpaceId, addr: VirtAddr, access: Access) -> bool {
        self.lock(|stack| {
            let Ok(space) = stack.space(id) else { return false };
            let Some(r) = space.map.region_at(addr) else { return false };
            let Some(within) = addr.checked_offset_from(r.start) else { return false };
            let offset = r.offset + within as u64;
            let size = stack.manager.info(r.dataspace).map(|i| i.size).unwrap_or(0);
            r.rights.allows(access) && offset < size.next_multiple_of(PAGE_SIZE as u64)
        })
    }
}

impl<S: FrameSource> Drop for System<S> {
    fn drop(&mut self) {
        // Stop every fault first (outside the stack's lock), then the spaces go with the stack.
        let regs: Vec<_> = self.registrations.lock().drain(..).collect();
        drop(regs);
    }
}
