//! The one process-wide hosted system behind a lock, booted on the first call or by
//! [`memkit_init`].
//!
//! ```text
//!   memkit_init / first call ─▶ HostedMachine::boot(default machine): RAM, pools, manager
//!                             ─▶ one address space (the process's region map)
//!                             ─▶ kernel heaps over pool 0 (kernel_heap, pinned_heap, ...)
//! ```

use core::ffi::c_int;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use memkit_dataspace::{ClientId, FactoryId};
use memkit_heap::{AddressHeaps, DirectMapPageSource, KernelHeaps, RegionPageSource, SingleCpu};
use memkit_host::{HostSpaceId, HostedMachine, PoolSource, System};
use memkit_phys::Machine;

use crate::errors::{L4_ENOMEM, neg};
use crate::handles::{CapTable, Object};
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
    /// The areas `l4rm_area_reserve*` made, by area id: each area's start. An id is never
    /// given twice; the entry goes when its area is freed.
    pub(crate) areas: BTreeMap<u32, usize>,
    /// The next area id.
    pub(crate) next_area: u32,
    /// Factories whose slot was freed while dataspaces were still charged to them: each is
    /// destroyed (its limit given back to its parent) once nothing is charged to it.
    pub(crate) orphans: Vec<FactoryId>,
}

/// The slot of the root memory allocator (`l4re_env()->mem_alloc`): the first slot, which
/// the boot fills and no call frees.
pub(crate) const ROOT_FACTORY_CAP: crate::types::l4_cap_idx_t = 1 << crate::types::L4_CAP_SHIFT;

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
    let mut caps = CapTable::new();
    let root = caps.alloc().ok()?;
    debug_assert_eq!(root, ROOT_FACTORY_CAP);
    caps.set(root, Some(Object::Factory(FactoryId::ROOT))).ok()?;
    Some(State {
        system,
        space,
        caps,
        heaps,
        private_heaps: Vec::new(),
        phys: Headers::default(),
        areas: BTreeMap::new(),
        next_area: 1,
        orphans: Vec::new(),
    })
}

impl State {
    /// Destroys the orphaned factories that nothing is charged to any more.
    fn reap_orphans(&mut self) {
        let orphans = &mut self.orphans;
        self.system.lock(|st| {
            // A factory's children are charged to it: destroying one may free its parent.
            loop {
                let before = orphans.len();
                orphans.retain(|&f| st.manager.destroy_factory(f).is_err() && st.manager.quota(f).is_some());
                if orphans.len() == before {
                    break;
                }
            }
        });
    }
}

/// Runs `f` on the booted system (booting it first); `-L4_ENOMEM` when it cannot boot.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> Result<R, c_int> {
    memkit_host::prepare_thread();
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = boot();
    }
    match guard.as_mut() {
        Some(state) => {
            let r = f(state);
            if !state.orphans.is_empty() {
                state.reap_orphans();
            }
            Ok(r)
        }
        None => Err(neg(L4_ENOMEM)),
    }
}

/// Runs `f` on the system: the boot error or `f`'s value or code, for the entries that
/// return `0` (or a count) or a negated code.
pub(crate) fn run(f: impl FnOnce(&mut State) -> Result<c_int, c_int>) -> c_int {
    match with(f) {
        Ok(Ok(v) | Err(v)) | Err(v) => v,
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
        assert_eq!(s.caps.get(ROOT_FACTORY_CAP), Ok(Some(Object::Factory(FactoryId::ROOT))), "the root factory's slot");
        assert!(s.areas.keys().all(|&id| id < s.next_area), "an area id at or past the next");
        let listed = s.system.lock(|st| st.region_map(s.space).map(memkit_region::RegionMap::areas));
        if let Ok(areas) = listed {
            for (id, start) in &s.areas {
                assert!(areas.iter().any(|a| a.start.as_usize() == *start), "area {id} at {start:#x} is no area");
            }
        }
        for f in &s.orphans {
            assert!(s.system.lock(|st| st.manager.quota(*f)).is_some_and(|q| q.used > 0), "orphan {f} is empty");
        }
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
