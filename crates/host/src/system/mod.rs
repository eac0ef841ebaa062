//! The whole stack hosted: a dataspace manager over the RAM, and address spaces (region
//! maps over windows) whose faults are real and resolved through the manager.
//!
//! ```text
//!   System ── one ticket lock ──▶ Stack { manager: Manager<S, RamRef>,
//!     │                                       spaces: memkit_spaces::Spaces<HostMmu> }
//!     │                                     ▲
//!     └─ per window: Registration ──────────┘ the fault handler locks the stack and resolves
//!                                             the fault through Spaces::resolve
//! ```
//!
//! # Coherence and fault-around
//! The manager and the spaces are `memkit-spaces`'s ([`Spaces`] over [`HostMmu`]): one
//! manager reference per dataspace for as long as any region of any space shows it; a
//! copy-on-write copy write-protects the source in every space, a shrink or a clear unmaps
//! the lost pages, a copy-on-write break unmaps the page's old frame wherever it still
//! shows (the faulting space included), each through the reverse index; a `DETACH_FREE`
//! region's detached part is cleared through the manager; destroying a space detaches its
//! regions with `KEEP`. Fault-around ([`memkit_spaces::around`]) is on here, a block of
//! [`DEFAULT_FAULT_AROUND`] pages ([`System::set_fault_around`]): a signal and an `mmap`
//! cost far more than the frames a block commits early.
//!
//! One lock covers the manager and every space, so that a fault in one space can revoke
//! mappings in another without lock-ordering trouble. The [crate's locking
//! rule](crate#the-locking-rule) applies: [`System::lock`] only around operations, never while
//! loading or storing window memory.
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
//! [`SystemError::Reentered`], [`System::lock`] panics, and a raw access of window memory
//! inside the lock ends the process with a message ([`fault`](crate::fault)).
//!
//! # Window size
//! A space's window is at most [`Window::MAX_LEN`] bytes: its MMU keeps one word per page.

use spin::mutex::{TicketMutex, TicketMutexGuard};
use std::sync::Arc;

use memkit_dataspace::{DataspaceId, Manager};
use memkit_region::{
    AddressSpace, AttachError, AttachRequest, BackingError, DetachError, DetachFlags, Detached, FaultError, MapError,
    Mmu, RegionMap,
};
use memkit_spaces::Spaces;
pub use memkit_spaces::{DEFAULT_FAULT_AROUND, FaultAroundError, MAX_FAULT_AROUND};
use memkit_types::{Access, Frame, FrameCount, FrameSource, PAGE_SIZE, Page, PhysAddr, PhysMemory, Rights, VirtAddr};

use crate::fault::{self, FaultResolver, RegisterError, Registration, Resolution, Unserviceable};
use crate::held::{Held, holds};
use crate::ram::HostRam;
use crate::window::{HostMmu, Window, WindowError};

mod vma;

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

/// An address space of a [`System`]: its slot in the system's
/// [`Spaces`](memkit_spaces::Spaces) (a [`memkit_spaces::SpaceId`]) and a serial number never
/// given to another space in the process, so that the id of a destroyed space stays invalid
/// when its slot is reused, and another system refuses it. (`memkit_spaces::SpaceId` alone
/// names a slot: a set hands it to whoever holds the set, so it needs no serial.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostSpaceId {
    index: usize,
    serial: u64,
}

impl HostSpaceId {
    /// The space's slot (reused after the space is destroyed).
    #[must_use]
    pub fn index(self) -> usize {
        self.index
    }

    /// The space's slot as the system's [`Spaces`](memkit_spaces::Spaces) names it.
    #[must_use]
    pub fn slot(self) -> memkit_spaces::SpaceId {
        memkit_spaces::SpaceId(self.index)
    }
}

impl core::fmt::Display for HostSpaceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "space {}", self.index)
    }
}

/// One hosted address space: a region map over a window and its MMU.
pub type HostAddressSpace = AddressSpace<DataspaceId, HostMmu>;

/// Why an operation of a [`System`] failed: the address space could not be made or
/// reached, or the access could not be served. The hosted runtime's own cases (the window,
/// the fault handler's registration, the lock) beside the ones a
/// [`memkit_spaces::SpaceError`] reports (no such space, the operation's own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemError {
    /// The window could not be reserved.
    Window(WindowError),
    /// The window could not be registered with the fault handler.
    Register(RegisterError),
    /// No such space.
    NoSpace(HostSpaceId),
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

impl core::fmt::Display for SystemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SystemError::Window(e) => e.fmt(f),
            SystemError::Register(e) => e.fmt(f),
            SystemError::NoSpace(s) => write!(f, "no {s}"),
            SystemError::OutsideWindow(a) => write!(f, "address {a} is outside the space's window"),
            SystemError::Fault { addr, access, error } => {
                let what = match access {
                    Access::Read => "load",
                    Access::Write => "store",
                    Access::Execute => "fetch",
                };
                write!(f, "{what} at {addr} cannot be served: {error}")
            }
            SystemError::Reentered => f.write_str("the system is used from inside its own lock (System::lock)"),
        }
    }
}

impl std::error::Error for SystemError {}

impl SystemError {
    /// The seed's code: `-L4_ENOMEM` (-12) for resources, the fault's code for a fault
    /// (`-L4_ENOMEM` when no frame is left, `-L4_EPERM` beyond the rights), `-L4_EINVAL` (-22)
    /// otherwise.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            SystemError::Window(e) => e.code(),
            SystemError::Register(e) => e.code(),
            SystemError::Fault { error, .. } => error.code(),
            SystemError::NoSpace(_) | SystemError::OutsideWindow(_) | SystemError::Reentered => {
                -memkit_types::l4::L4_EINVAL
            }
        }
    }
}

/// The serial number of the next space created, by any system.
static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many times a load or store resolves its pages before it gives up on a range whose
/// pages keep unmapping each other (never seen: a second round settles every known case).
const RESOLVE_ROUNDS: usize = 4;

/// Everything behind the [`System`]'s lock: the dataspace manager and the address spaces
/// ([`Spaces`]: region maps over windows, the reverse index, the fault-around block), and
/// the serial number of each space.
#[derive(Debug)]
pub struct Stack<S: FrameSource> {
    /// The dataspace manager.
    pub manager: Manager<S, RamRef>,
    spaces: Spaces<HostMmu>,
    /// For each space slot, the serial number of the space in it (numbers are unique in the
    /// process, so the id of a destroyed space, or of another system's, is refused).
    serials: Vec<u64>,
}

/// Takes mappings away in every space (what the manager calls before sharing or freeing
/// frames), visiting the regions the reverse index names.
pub type SpacesRevoker<'a> = memkit_spaces::SpacesRevoker<'a, HostMmu>;

impl<S: FrameSource> Stack<S> {
    /// The manager and a revoker over every space, for manager operations that invalidate
    /// mappings (`copy`, `resize`, `clear`, ...).
    pub fn manager_and_revoker(&mut self) -> (&mut Manager<S, RamRef>, SpacesRevoker<'_>) {
        (&mut self.manager, self.spaces.revoker())
    }

    /// The spaces (region maps, MMUs, the reverse index), to look at.
    #[must_use]
    pub fn spaces(&self) -> &Spaces<HostMmu> {
        &self.spaces
    }

    /// The number of regions of all spaces showing `ds`.
    #[must_use]
    pub fn attachments(&self, ds: DataspaceId) -> u32 {
        self.spaces.attachments(ds)
    }

    /// The address space `id`.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`].
    pub fn space(&self, id: HostSpaceId) -> Result<&HostAddressSpace, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        self.spaces.get(index).ok_or(SystemError::NoSpace(id))
    }

    /// The region map of space `id`.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`].
    pub fn region_map(&self, id: HostSpaceId) -> Result<&RegionMap<DataspaceId>, SystemError> {
        self.space(id).map(|s| &s.map)
    }

    /// A spaces result as this system's: the operation's own error inside.
    fn inner<T, E>(id: HostSpaceId, r: Result<T, memkit_spaces::SpaceError<E>>) -> Result<Result<T, E>, SystemError> {
        match r {
            Ok(x) => Ok(Ok(x)),
            Err(memkit_spaces::SpaceError::Op(e)) => Ok(Err(e)),
            // `NoSpace`, or an error a later spaces crate adds.
            Err(_) => Err(SystemError::NoSpace(id)),
        }
    }

    /// The ids of the live spaces.
    #[must_use]
    pub fn space_ids(&self) -> Vec<HostSpaceId> {
        self.spaces.ids().map(|index| HostSpaceId { index: index.0, serial: self.serials[index.0] }).collect()
    }

    /// Attaches in space `id` ([`Spaces::attach`]).
    ///
    /// # Errors
    /// As [`RegionMap::attach`]; `Ok(Err(..))` when there is no such space.
    pub fn attach(
        &mut self,
        id: HostSpaceId,
        req: &AttachRequest<DataspaceId>,
    ) -> Result<Result<VirtAddr, AttachError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        match self.spaces.attach(&mut self.manager, index, req) {
            Ok(a) => Ok(Ok(a)),
            Err(memkit_spaces::SpaceError::Op(e)) => Ok(Err(e)),
            // `NoSpace`, or an error a later spaces crate adds.
            Err(_) => Err(SystemError::NoSpace(id)),
        }
    }

    /// Detaches in space `id` ([`Spaces::detach`]). With `DETACH_FREE` (and no `KEEP`)
    /// the detached part of the dataspace is cleared through the manager (its frames freed,
    /// its mappings elsewhere revoked), when the dataspace is still open.
    ///
    /// # Errors
    /// As [`RegionMap::detach`]; the outer error when there is no such space.
    pub fn detach(
        &mut self,
        id: HostSpaceId,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Result<Detached<DataspaceId>, DetachError>, SystemError> {
        let index = self.index_of(id).ok_or(SystemError::NoSpace(id))?;
        match self.spaces.detach(&mut self.manager, index, start, size, flags) {
            Ok(d) => Ok(Ok(d)),
            Err(memkit_spaces::SpaceError::Op(e)) => Ok(Err(e)),
            // `NoSpace`, or an error a later spaces crate adds.
            Err(_) => Err(SystemError::NoSpace(id)),
        }
    }

    /// The fault-around block size in pages (1: off).
    #[must_use]
    pub fn fault_around(&self) -> usize {
        self.spaces.fault_around()
    }

    /// Sets the fault-around block size ([`System::set_fault_around`]).
    ///
    /// # Errors
    /// [`FaultAroundError::BadSize`] (nothing changes).
    pub fn set_fault_around(&mut self, pages: usize) -> Result<(), FaultAroundError> {
        self.spaces.set_fault_around(pages)
    }

    /// Resolves a fault in space slot `index` ([`Spaces::resolve`]: fault-around when it
    /// applies; a copy-on-write break unmaps the old frame wherever the page still shows
    /// it). Allocation-free as long as the manager's `map` and `map_run` and the region
    /// map's `resolve` are.
    fn resolve(&mut self, index: usize, addr: VirtAddr, access: Access) -> Result<(), FaultError> {
        match self.spaces.resolve(&mut self.manager, memkit_spaces::SpaceId(index), addr, access) {
            Ok(_) => Ok(()),
            Err(memkit_spaces::SpaceError::Op(e)) => Err(e),
            // `NoSpace`, or an error a later spaces crate adds.
            Err(_) => Err(FaultError::NoRegion(addr)),
        }
    }

    /// Whether the page of `addr` in space `index` is mapped for `access` (so an access there
    /// cannot fault while the lock is held).
    fn accessible(&self, index: usize, addr: VirtAddr, access: Access) -> bool {
        let Some(space) = self.spaces.get(memkit_spaces::SpaceId(index)) else { return false };
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

    /// The slot of space `id` while it lives.
    fn index_of(&self, id: HostSpaceId) -> Option<memkit_spaces::SpaceId> {
        let slot = id.slot();
        let live = self.spaces.get(slot).is_some();
        (live && self.serials.get(id.index) == Some(&id.serial)).then_some(slot)
    }

    /// Checks the invariants of every space ([`Spaces::check_invariants`]: region maps, the
    /// reverse index, translations within their regions' rights), of every MMU, and that
    /// every translation lies in a region.
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        self.spaces.check_invariants();
        for id in self.spaces.ids() {
            let s = self.spaces.get(id).expect("a listed space exists");
            s.mmu.check_invariants();
            let mut in_regions = 0;
            for r in s.map.regions() {
                let first = Page::containing_address(r.start).number();
                for p in first..first + r.size / PAGE_SIZE {
                    if s.mmu.translate(page_numbered(p)).is_some() {
                        in_regions += 1;
                    }
                }
            }
            assert_eq!(in_regions, s.mmu.mapped_pages(), "a translation outside every region");
        }
        assert!(self.serials.len() >= self.spaces.ids().last().map_or(0, |i| i.0 + 1), "a space without a serial");
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
#[cfg(any(test, feature = "check"))]
fn page_numbered(n: usize) -> Page {
    Page::containing_address(VirtAddr::new(n << memkit_types::PAGE_SHIFT))
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
        let mut spaces = Spaces::new();
        let _ = spaces.set_fault_around(DEFAULT_FAULT_AROUND);
        System {
            ram,
            stack: Arc::new(StackLock::new(Stack { manager, spaces, serials: Vec::new() })),
            registrations: spin::Mutex::new(Vec::new()),
        }
    }

    /// The RAM.
    #[must_use]
    pub fn ram(&self) -> &Arc<HostRam> {
        &self.ram
    }

    /// The stack, locked by this thread; [`SystemError::Reentered`] when this thread holds
    /// the lock already.
    fn locked(&self) -> Result<StackGuard<'_, S>, SystemError> {
        let key = key_of(&self.stack);
        if holds(key) {
            return Err(SystemError::Reentered);
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
    /// [`SystemError::Window`], [`SystemError::Register`], [`SystemError::Reentered`].
    pub fn create_space(&self, size: usize) -> Result<HostSpaceId, SystemError> {
        if holds(key_of(&self.stack)) {
            return Err(SystemError::Reentered);
        }
        let window = Window::new(size).map_err(SystemError::Window)?;
        let (start, len) = (window.start(), window.len());
        let mmu = HostMmu::try_new(window, Arc::clone(&self.ram)).map_err(SystemError::Window)?;
        let id = {
            let mut stack = self.locked()?;
            let stack = &mut *stack;
            let index = stack.spaces.add(RegionMap::new(start, len), mmu).0;
            if stack.serials.len() <= index {
                stack.serials.resize(index + 1, 0);
            }
            stack.serials[index] = NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            HostSpaceId { index, serial: stack.serials[index] }
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
                let mut stack = self.stack.lock();
                let stack = &mut *stack;
                // A new space has no region: removing it detaches nothing.
                let _ = stack.spaces.remove(&mut stack.manager, memkit_spaces::SpaceId(index));
                Err(SystemError::Register(e))
            }
        }
    }

    /// Destroys space `id`: stops its faults, waits for the loads and stores in flight in
    /// it, detaches every region (with `KEEP`), releases its window. Loads and stores of the
    /// space that start after it fail with [`SystemError::NoSpace`].
    ///
    /// # Errors
    /// [`SystemError::NoSpace`], [`SystemError::Reentered`].
    pub fn destroy_space(&self, id: HostSpaceId) -> Result<(), SystemError> {
        if holds(key_of(&self.stack)) {
            return Err(SystemError::Reentered);
        }
        // Registrations are dropped outside the stack's lock (a handler inside the window may
        // be waiting for it); the registrations' lock orders destroyers of the same space.
        let mut regs = self.registrations.lock();
        if self.lock(|s| s.index_of(id)).is_none() {
            return Err(SystemError::NoSpace(id));
        }
        let reg = regs.get_mut(id.index).and_then(Option::take);
        drop(reg);
        drop(regs);
        // Loads and stores hold the lock while they touch the window: taking it waits for
        // them, and the window is released before it is given back.
        let mut stack = self.locked()?;
        let stack = &mut *stack;
        let index = stack.index_of(id).ok_or(SystemError::NoSpace(id))?;
        // Every region is detached with `KEEP` and the window released with the space. An
        // MMU that cannot unmap is not one of a window (it always can): the space stays.
        let space = stack.spaces.remove(&mut stack.manager, index);
        drop(space);
        Ok(())
    }

    /// Runs `f` with the stack locked. `f` must not load or store window memory, nor use this
    /// system (its methods fail with [`SystemError::Reentered`] there).
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
    fn reach(
        &self,
        id: HostSpaceId,
        addr: VirtAddr,
        len: usize,
        access: Access,
    ) -> Result<StackGuard<'_, S>, SystemError> {
        if holds(key_of(&self.stack)) {
            return Err(SystemError::Reentered);
        }
        // First touches are real faults: probe each page without the lock (a probe the
        // handler cannot serve just returns false; the pass under the lock below finds out
        // why). The window is checked first so that only its pages are probed; a space
        // destroyed meanwhile makes the probes fail harmlessly and the pass below report it.
        let window = self.lock(|s| s.space(id).map(|sp| (sp.map.window_start(), sp.map.window_size())))?;
        let inside =
            addr.checked_offset_from(window.0).is_some_and(|o| o.checked_add(len).is_some_and(|e| e <= window.1));
        if !inside {
            return Err(SystemError::OutsideWindow(addr));
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
            return Err(SystemError::OutsideWindow(addr));
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
                stack.prepare(id.index, a, access).map_err(|error| SystemError::Fault { addr: a, access, error })?;
            }
            if pages().all(|a| stack.accessible(id.index, a, access)) {
                return Ok(stack);
            }
        }
        let addr = pages().find(|&a| !stack.accessible(id.index, a, access)).unwrap_or(addr);
        let rights = Rights::empty();
        Err(SystemError::Fault { addr, access, error: FaultError::Forbidden { addr, access, rights } })
    }

    /// Loads `buf.len()` bytes at `addr` of space `id` with real loads. Every page is
    /// resolved first, as a fault would (demand-zero, fault-around); the loads then run with
    /// the lock held, so no page can be unmapped under them and the space cannot be
    /// destroyed meanwhile.
    ///
    /// # Errors
    /// [`SystemError::NoSpace`], [`SystemError::OutsideWindow`], [`SystemError::Fault`] (no
    /// region, beyond the rights, no frame left), [`SystemError::Reentered`]; nothing is
    /// loaded then.
    pub fn load(&self, id: HostSpaceId, addr: VirtAddr, buf: &mut [u8]) -> Result<(), SystemError> {
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
    pub fn store(&self, id: HostSpaceId, addr: VirtAddr, buf: &[u8]) -> Result<(), SystemError> {
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
    pub fn resolve(&self, id: HostSpaceId, addr: VirtAddr, access: Access) -> Result<(), SystemError> {
        self.reach(id, addr, 1, access).map(drop)
    }

    /// Whether an access to `addr` in space `id` is served: [`resolve`](Self::resolve)
    /// succeeds (so the page is mapped now), exactly what a fault there would do. Callers
    /// use it to refuse an access instead of letting it end the process.
    #[must_use]
    pub fn would_resolve(&self, id: HostSpaceId, addr: VirtAddr, access: Access) -> bool {
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
