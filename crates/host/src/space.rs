//! An address space whose faults the handler resolves: a window, its state, a spin lock.

use std::sync::Arc;

use memkit_types::{Access, VirtAddr};

use crate::fault::{self, FaultResolver, RegisterError, Registration, Resolution};
use crate::held;

/// The state behind a [`HostSpace`]'s lock: typically a region map owning a
/// [`HostMmu`](crate::HostMmu).
pub trait SpaceState: Send + 'static {
    /// Resolves a fault at `addr` (mapping the page) and returns whether it did.
    ///
    /// Runs inside the signal handler with the space's lock held: it must not allocate and
    /// must not touch window memory.
    fn resolve_fault(&mut self, addr: VirtAddr, access: Access) -> bool;
}

struct Locked<S>(spin::Mutex<S>);

impl<S: SpaceState> FaultResolver for Locked<S> {
    fn resolve_fault(&self, addr: VirtAddr, access: Access) -> Resolution {
        if held::holds(self.key()) {
            return Resolution::Reentered;
        }
        self.0.lock().resolve_fault(addr, access).into()
    }
}

impl<S> Locked<S> {
    /// The key of this lock in the record of held locks: its address.
    fn key(&self) -> usize {
        core::ptr::from_ref(self).cast::<()>() as usize
    }
}

/// An address space: the window `start .. start + len`, whose faults go to `S`.
///
/// See the [crate-level locking rule](crate#the-locking-rule): hold the lock
/// ([`with`](HostSpace::with)) only around map operations, never while loading or storing
/// window memory.
pub struct HostSpace<S: SpaceState> {
    // Declared first so it drops first: no fault reaches the state once it is gone.
    registration: Registration,
    state: Arc<Locked<S>>,
    start: VirtAddr,
    len: usize,
}

impl<S: SpaceState> core::fmt::Debug for HostSpace<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostSpace")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl<S: SpaceState> HostSpace<S> {
    /// Routes the faults at `start .. start + len` to `state`.
    ///
    /// # Errors
    /// [`RegisterError`] when the handler cannot be installed or the window table is full.
    pub fn new(start: VirtAddr, len: usize, state: S) -> Result<Self, RegisterError> {
        let state = Arc::new(Locked(spin::Mutex::new(state)));
        let registration = fault::register(start, len, Arc::clone(&state) as Arc<dyn FaultResolver>)?;
        Ok(HostSpace { registration, state, start, len })
    }

    /// The first address of the window.
    #[must_use]
    pub fn start(&self) -> VirtAddr {
        self.start
    }

    /// The window's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a window is never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address `offset` bytes into the window.
    ///
    /// # Panics
    /// If `offset` is not inside the window.
    #[must_use]
    pub fn addr(&self, offset: usize) -> VirtAddr {
        assert!(offset < self.len, "offset {offset:#x} outside a window of {:#x}", self.len);
        VirtAddr::new(self.start.as_usize() + offset)
    }

    /// Runs `f` on the state with the lock held. `f` must not load or store window memory
    /// (a fault there ends the process with a message: it would wait for this lock).
    ///
    /// # Panics
    /// When this thread holds the lock already (`f` of an outer `with` calls `with`):
    /// waiting would deadlock.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let key = self.state.key();
        assert!(
            !held::holds(key),
            "HostSpace::with called inside HostSpace::with on the same thread: it would deadlock"
        );
        let mut state = self.state.0.lock();
        let _held = held::Held::new(key);
        f(&mut state)
    }
}
