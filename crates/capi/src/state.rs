//! The one process-wide hosted system behind a lock, booted on the first call or by
//! [`memkit_init`].
//!
//! ```text
//!   memkit_init / first call ─▶ HostedMachine::boot(default machine): RAM, pools, manager
//!                             ─▶ one address space (the process's region map)
//!                             ─▶ kernel heaps over pool 0 (kernel_heap, pinned_heap, ...)
//! ```

use core::ffi::c_int;
use std::sync::{Mutex, PoisonError};

use memkit_dataspace::ClientId;
use memkit_heap::{AddressHeaps, DirectMapPageSource, KernelHeaps, RegionPageSource, SingleCpu};
use memkit_host::{HostSpaceId, HostedMachine, PoolSource, System};
use memkit_phys::Machine;

use crate::errors::{L4_ENOMEM, neg};
use crate::handles::CapTable;
use crate::pmallocator::Headers;
use crate::types::MEMKIT_CLIENT;

/// The kernel heaps of the process (`kernel_heap`, `pinned_heap`, ...), over pool 0.
pub(crate) type Heaps = AddressHeaps<'static, DirectMapPageSource<PoolSource>, SingleCpu>;
/// A private heap made by `init_heap`, over the caller's area.
pub(crate) type PrivateHeap = AddressHeaps<'static, RegionPageSource, SingleCpu>;

/// The size of the process's address space window: 16 GiB of virtual addresses, reserved
/// without memory behind them.
pub(crate) const SPACE_SIZE: usize = 16 << 30;

/// The owner of the dataspaces the process opens.
pub(crate) const ME: ClientId = ClientId::new(MEMKIT_CLIENT.task, MEMKIT_CLIENT.thread);

/// Everything behind the lock.
pub(crate) struct State {
    /// The dataspace manager and the address spaces.
    pub(crate) system: System<PoolSource>,
    /// The process's address space.
    pub(crate) space: HostSpaceId,
    /// L4Re's capability slots.
    pub(crate) caps: CapTable,
    /// The kernel heaps (leaked: blocks live as long as the process).
    pub(crate) heaps: &'static Heaps,
    /// The private heaps `init_heap` made, in order (leaked for the same reason), with the
    /// area each owns (start, length).
    pub(crate) private_heaps: Vec<(&'static PrivateHeap, usize, usize)>,
    /// The headers of the physical allocators `pmallocator_init_region` made.
    pub(crate) phys: Headers,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn boot() -> Option<State> {
    let machine = Machine::default_machine();
    let booted = HostedMachine::boot(&machine).ok()?;
    let ram = booted.ram();
    let HostedMachine { pools, system, .. } = booted;
    let space = system.create_space(SPACE_SIZE).ok()?;
    let pool = pools.pool(memkit_phys::DEFAULT_POOL)?;
    let source: &'static DirectMapPageSource<PoolSource> = Box::leak(Box::new(ram.heap_page_source(pool.allocator())?));
    let heaps: &'static Heaps = Box::leak(Box::new(AddressHeaps::new(KernelHeaps::new(source, source, SingleCpu))));
    heaps.init(true).ok()?;
    Some(State { system, space, caps: CapTable::new(), heaps, private_heaps: Vec::new(), phys: Headers::default() })
}

/// Runs `f` on the booted system (booting it first); `-L4_ENOMEM` when it cannot boot.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> Result<R, c_int> {
    memkit_host::prepare_thread();
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = boot();
    }
    match guard.as_mut() {
        Some(state) => Ok(f(state)),
        None => Err(neg(L4_ENOMEM)),
    }
}

/// Boots memkit's hosted system now: the embedded default machine (512 MiB of RAM in eight
/// pools), the dataspace manager, the process's address space and the kernel heaps. Every
/// other entry boots it on its first call; calling this first only moves that cost.
/// Calling it again does nothing.
///
/// Returns `0`, or `-L4_ENOMEM` when the RAM, the address space or the heaps cannot be
/// made.
#[unsafe(no_mangle)]
pub extern "C" fn memkit_init() -> c_int {
    match with(|_| ()) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// Checks the invariants of what this crate keeps behind the lock: the capability slots
/// and the allocator headers.
///
/// # Panics
/// On the first broken invariant.
#[cfg(any(test, feature = "check"))]
pub fn check_invariants() {
    let _ = with(|s| {
        s.caps.check_invariants();
        s.phys.check_invariants();
    });
}

/// [`check_invariants`], and those of the hosted system below: the dataspace manager, its
/// pools and the address spaces (slower: it walks every frame).
///
/// # Panics
/// On the first broken invariant.
#[cfg(any(test, feature = "check"))]
pub fn check_all_invariants() {
    check_invariants();
    let _ = with(|s| s.system.check_invariants());
}
