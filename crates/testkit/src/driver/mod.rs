//! The driver: applies actions to a [`Target`] and to the reference model, and after every
//! action compares every byte the system shows.
//!
//! ```text
//!   Action ─┬─▶ Target (frames, dataspaces, region maps, MMU)  ──▶ every mapped page, every
//!           │                                                       manager read, frame counts
//!           └─▶ Model (a Vec<u8> per dataspace, regions per space) ──▶ compared after each step
//! ```
//!
//! The model knows nothing of frames or sharing: a copy is a snapshot of the source's bytes
//! at the time of the copy, so copy-on-write is right exactly when the bytes agree. A
//! dataspace's bytes past its size read as zeros through any mapping; a page wholly past its
//! size is refused (the manager's `map` refuses offsets at or past the size). An operation
//! that fails changes nothing; the only failures the model accepts of a valid request are
//! the out-of-memory ones (`-L4_ENOMEM`), and a fault that fails for want of a frame only
//! when the dataspace's pool has no free frame left.
//!
//! One file per concern: this one holds the model, the counters and the driver's loop;
//! `dataspaces` the actions on dataspaces and pools, `regions` those on address spaces,
//! `check` the comparison after every action.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use memkit_dataspace::{
    ClientId, CopyLength, CopyRequest, DataspaceId, DmFlags, FactoryId, MemAllocFlags, MemphysCopyRequest,
    MemphysOpenRequest, PoolId,
};
use memkit_region::{AttachRequest, DetachFlags, DetachResult, Flags};
use memkit_types::{
    Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Page, PhysAddr, PhysPlacement, Rights, VirtAddr,
};

use crate::action::{Action, Backing, Cut, OFFSETS, size_of_code};
use crate::target::{AccessError, Target};

mod check;
mod dataspaces;
mod regions;

const PAGE: u64 = PAGE_SIZE as u64;
/// `-L4_ENOMEM`.
const ENOMEM: i32 = -memkit_types::l4::L4_ENOMEM;

/// The clients the driver acts as: two threads of task 1 and a thread of task 2.
pub const CLIENTS: [ClientId; 3] = [ClientId::new(1, 0), ClientId::new(1, 1), ClientId::new(2, 0)];

/// The most dataspaces the driver keeps alive (further opens are skipped).
const MAX_DATASPACES: usize = 14;
/// The most regions per space.
const MAX_REGIONS: usize = 6;
/// Actions kept for the failure report.
const TRACE: usize = 40;

/// A dataspace of the model.
#[derive(Debug, Clone)]
struct ModelDataspace {
    id: DataspaceId,
    bytes: Vec<u8>,
    owner: ClientId,
    open: bool,
    pool: PoolId,
    superpages: bool,
}

impl ModelDataspace {
    /// Pages a mapping may show: those holding at least one byte of the dataspace.
    fn pages(&self) -> u64 {
        (self.bytes.len() as u64).div_ceil(PAGE)
    }

    /// The byte at `offset` as any view must show it: zero past the size.
    fn byte(&self, offset: u64) -> u8 {
        usize::try_from(offset).ok().and_then(|o| self.bytes.get(o)).copied().unwrap_or(0)
    }
}

/// A region of the model.
#[derive(Debug, Clone, Copy)]
struct ModelRegion {
    start: usize,
    pages: usize,
    ds: DataspaceId,
    offset: u64,
    rights: Rights,
    free: bool,
    eager: bool,
}

impl ModelRegion {
    fn end(&self) -> usize {
        self.start + self.pages * PAGE_SIZE
    }

    /// Whether `self` and `next` are one region to the region map ([`Action::Protect`]
    /// merges them): adjacent, the same dataspace at contiguous offsets, the same rights
    /// and flags.
    fn merges_with(&self, next: &ModelRegion) -> bool {
        self.end() == next.start
            && self.ds == next.ds
            && self.offset + (self.pages * PAGE_SIZE) as u64 == next.offset
            && self.rights == next.rights
            && (self.free, self.eager) == (next.free, next.eager)
    }
}

/// What the driver's runs reached: each counter is a path of the system that the checks
/// covered at least that many times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Counters {
    pub actions: u64,
    pub opened: u64,
    pub opened_bound: u64,
    pub opened_superpages: u64,
    pub opened_fixed: u64,
    pub opened_other_pool: u64,
    pub create_out_of_memory: u64,
    pub resized_up: u64,
    pub resized_down: u64,
    pub resized_superpages_down: u64,
    pub resize_out_of_memory: u64,
    pub copies: u64,
    pub cow_copies: u64,
    pub cow_copies_partial_tail: u64,
    pub cow_copies_sharing: u64,
    pub zero_length_copies: u64,
    pub copy_out_of_memory: u64,
    pub closed: u64,
    pub closed_while_attached: u64,
    pub close_all: u64,
    pub attached: u64,
    pub attached_twice_in_a_space: u64,
    pub eager_attaches: u64,
    pub detached_whole: u64,
    pub detached_head: u64,
    pub detached_tail: u64,
    pub detached_middle: u64,
    pub detach_free_clears: u64,
    pub stores: u64,
    pub loads: u64,
    pub cow_breaks: u64,
    pub fault_out_of_memory: u64,
    pub refused_accesses: u64,
    pub refused_requests: u64,
    pub manager_writes: u64,
    pub write_out_of_memory: u64,
    pub hogs: u64,
    pub pages_compared: u64,
    pub partial_tail_pages_compared: u64,
    pub shared_pages_compared: u64,
    pub skipped: u64,
    pub skipped_full: u64,
    pub protected: u64,
    pub protect_took_rights: u64,
    pub protect_split: u64,
    pub protect_merged: u64,
    pub remap_grown: u64,
    pub remap_grown_merged: u64,
    pub remap_shrunk: u64,
    pub remap_no_room: u64,
}

impl Counters {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Counters) {
        macro_rules! sum { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        sum!(
            actions,
            opened,
            opened_bound,
            opened_superpages,
            opened_fixed,
            opened_other_pool,
            create_out_of_memory,
            resized_up,
            resized_down,
            resized_superpages_down,
            resize_out_of_memory,
            copies,
            cow_copies,
            cow_copies_partial_tail,
            cow_copies_sharing,
            zero_length_copies,
            copy_out_of_memory,
            closed,
            closed_while_attached,
            close_all,
            attached,
            attached_twice_in_a_space,
            eager_attaches,
            detached_whole,
            detached_head,
            detached_tail,
            detached_middle,
            detach_free_clears,
            protected,
            protect_took_rights,
            protect_split,
            protect_merged,
            remap_grown,
            remap_grown_merged,
            remap_shrunk,
            remap_no_room,
            stores,
            loads,
            cow_breaks,
            fault_out_of_memory,
            refused_accesses,
            refused_requests,
            manager_writes,
            write_out_of_memory,
            hogs,
            pages_compared,
            partial_tail_pages_compared,
            shared_pages_compared,
            skipped,
            skipped_full
        );
    }
}

/// A disagreement between the system and the model, or a panic inside the system.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The step (0-based) at which it showed.
    pub step: u64,
    /// The action of that step.
    pub action: Option<Action>,
    /// What disagreed.
    pub message: String,
    /// The last actions before it, with their steps.
    pub trace: Vec<(u64, Action)>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "step {}: {}", self.step, self.message)?;
        if let Some(a) = self.action {
            writeln!(f, "  action: {a:?}")?;
        }
        writeln!(f, "  the last {} actions:", self.trace.len())?;
        for (s, a) in &self.trace {
            writeln!(f, "    {s:>8} {a:?}")?;
        }
        Ok(())
    }
}

/// Which known defects' action shapes to leave out (`MEMKIT_SYSTEM_SKIP=4,5`), so that a
/// long run can look past them while they are being fixed. Empty by default: the committed
/// tests run the full model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skips {
    /// Copies of zero bytes to a non-zero destination offset.
    pub zero_length_copy: bool,
    /// Accesses through a hosted space while its dataspace's pool is nearly dry, and
    /// taking frames out of pools.
    pub hosted_dry_access: bool,
    /// Checking bytes past a dataspace's size through mappings.
    pub tail_bytes: bool,
    /// Shrinking a dataspace to a size inside a page.
    pub shrink_into_page: bool,
    /// Copy-on-write copies that end inside a page before the source's end.
    pub cow_partial_tail: bool,
    /// Accepting whatever bytes a `write` that ran out of frames left instead of requiring
    /// that it change nothing (the manager writes nothing then).
    pub partial_write: bool,
    /// Regions attached with `DETACH_FREE`.
    pub detach_free: bool,
    /// Accesses through regions of closed dataspaces, and detaches of them.
    pub closed_access: bool,
    /// Shrinking superpage dataspaces.
    pub superpage_shrink: bool,
}

impl Skips {
    /// From `MEMKIT_SYSTEM_SKIP` (a comma-separated list of `zero-copy`, `dry-access`,
    /// `tail`, `shrink`, `cow-tail`, `partial-write`, `detach-free`,
    /// `closed-access`, `sp-shrink`).
    #[must_use]
    pub fn from_env() -> Self {
        let v = std::env::var("MEMKIT_SYSTEM_SKIP").unwrap_or_default();
        let has = |w: &str| v.split(',').any(|x| x.trim() == w);
        Skips {
            zero_length_copy: has("zero-copy"),
            hosted_dry_access: has("dry-access"),
            tail_bytes: has("tail"),
            shrink_into_page: has("shrink"),
            cow_partial_tail: has("cow-tail"),
            partial_write: has("partial-write"),
            detach_free: has("detach-free"),
            closed_access: has("closed-access"),
            superpage_shrink: has("sp-shrink"),
        }
    }
}

/// The driver over one target.
#[derive(Debug)]
pub struct Driver<T: Target> {
    target: T,
    dataspaces: Vec<ModelDataspace>,
    dead: Vec<DataspaceId>,
    regions: Vec<Vec<ModelRegion>>,
    hogged: Vec<(PoolId, Frame)>,
    pools: Vec<(PoolId, u64, u64)>,
    trace: VecDeque<(u64, Action)>,
    step: u64,
    /// What the run reached.
    pub counters: Counters,
    skips: Skips,
}

type Check = Result<(), String>;

fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

impl<T: Target> Driver<T> {
    /// A driver over `target` (which has no dataspaces yet).
    pub fn new(target: T, skips: Skips) -> Self {
        let pools = target.pools();
        let regions = vec![Vec::new(); target.spaces()];
        Driver {
            target,
            dataspaces: Vec::new(),
            dead: Vec::new(),
            regions,
            hogged: Vec::new(),
            pools,
            trace: VecDeque::new(),
            step: 0,
            counters: Counters::default(),
            skips,
        }
    }

    /// The target, to look at.
    pub fn target(&mut self) -> &mut T {
        &mut self.target
    }

    /// Runs `actions`, checking after each; stops at the first failure (a panic inside the
    /// system counts as one).
    ///
    /// # Errors
    /// The first [`Failure`].
    pub fn run(&mut self, actions: impl IntoIterator<Item = Action>) -> Result<(), Failure> {
        self.check_all().map_err(|m| self.failure(None, format!("before any action: {m}")))?;
        for a in actions {
            self.step(a)?;
        }
        Ok(())
    }

    /// Applies one action and checks everything.
    ///
    /// # Errors
    /// The [`Failure`] it found.
    pub fn step(&mut self, a: Action) -> Result<(), Failure> {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace.push_back((self.step, a));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply(a)?;
            self.check_all()
        }));
        let r = match outcome {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "a panic".into());
                Err(format!("panic: {msg}"))
            }
        };
        self.counters.actions += 1;
        let step = self.step;
        self.step += 1;
        r.map_err(|m| Failure { step, ..self.failure(Some(a), m) })
    }

    fn failure(&self, action: Option<Action>, message: String) -> Failure {
        Failure { step: self.step, action, message, trace: self.trace.iter().copied().collect() }
    }

    // ------------------------------------------------------------------ model helpers

    fn ds_index(&self, id: DataspaceId) -> Option<usize> {
        self.dataspaces.iter().position(|d| d.id == id)
    }

    fn ds(&self, id: DataspaceId) -> &ModelDataspace {
        &self.dataspaces[self.ds_index(id).expect("a region of a dataspace the model lost")]
    }

    /// A live dataspace for index `k`, or (for large `k`) a dead one's id.
    fn pick(&self, k: u8) -> Option<DataspaceId> {
        if k >= 240 && !self.dead.is_empty() {
            return Some(self.dead[k as usize % self.dead.len()]);
        }
        let n = self.dataspaces.len();
        if n == 0 {
            return None;
        }
        // Half the time one of the three newest, so that copies, attachments and accesses
        // meet on the same dataspaces.
        if k.is_multiple_of(2) {
            return Some(self.dataspaces[n - 1 - (k as usize / 2) % n.min(3)].id);
        }
        Some(self.dataspaces[k as usize / 2 % n].id)
    }

    fn describe(&self, id: DataspaceId) -> String {
        let d = self.ds(id);
        format!("{id}: {} bytes, pool {}, {}", d.bytes.len(), d.pool.index(), if d.open { "open" } else { "closed" })
    }

    fn referenced(&self, id: DataspaceId) -> bool {
        self.regions.iter().flatten().any(|r| r.ds == id)
    }

    /// Drops a closed dataspace that no region shows any more.
    fn collect(&mut self, id: DataspaceId) {
        if let Some(i) = self.ds_index(id)
            && !self.dataspaces[i].open
            && !self.referenced(id)
        {
            self.dataspaces.remove(i);
            self.dead.push(id);
            if self.dead.len() > 8 {
                self.dead.remove(0);
            }
        }
    }

    fn pool_free(&mut self, pool: PoolId) -> u64 {
        self.target.manager(|m, _| m.pool(pool).map_or(0, |s| s.free_frames().get()))
    }

    fn pool_of(&self, k: u8) -> (PoolId, u64, u64) {
        self.pools[k as usize % self.pools.len()]
    }

    /// The expected outcome of an operation that is valid: success, or out of memory.
    fn expect_valid(what: &str, r: Result<(), i32>) -> Result<bool, String> {
        match r {
            Ok(()) => Ok(true),
            Err(ENOMEM) => Ok(false),
            Err(code) => fail(format!("{what}: a valid request refused with code {code}")),
        }
    }

    fn expect_refused(&mut self, what: &str, r: Result<(), i32>) -> Check {
        match r {
            Ok(()) => fail(format!("{what}: an invalid request succeeded")),
            Err(_) => {
                self.counters.refused_requests += 1;
                Ok(())
            }
        }
    }

    // ------------------------------------------------------------------ actions

    fn apply(&mut self, a: Action) -> Check {
        match a {
            Action::Open { backing, size, pool, owner } => self.open(backing, size, pool, owner),
            Action::Resize { ds, size, caller } => self.resize(ds, size, caller),
            Action::Copy { ds, src, dst, len, flags, caller } => self.copy(ds, src, dst, len, flags, caller),
            Action::Close { ds, caller } => self.close(ds, caller),
            Action::CloseAll { caller, client, same_task } => self.close_all(caller, client, same_task),
            Action::Attach { space, ds, page, pages, flags } => self.attach(space, ds, page, pages, flags),
            Action::Detach { space, region, cut, keep } => self.detach(space, region, cut, keep),
            Action::Store { space, region, at, len, value } => self.store(space, region, at, len, value),
            Action::Load { space, region, at, len } => self.load(space, region, at, len),
            Action::Touch { space } => self.touch(space),
            Action::Write { ds, at, len, value } => self.write(ds, at, len, value),
            Action::Hog { pool, leave } => self.hog(pool, leave),
            Action::Unhog { every } => self.unhog(every),
            Action::Protect { space, region, from, pages, rights } => self.protect(space, region, from, pages, rights),
            Action::Remap { space, region, pages, grow } => self.remap(space, region, pages, grow),
        }
    }

    /// At the dataspace limit, closes the oldest open dataspace (as its owner) first.
    fn make_room(&mut self) -> Check {
        if self.dataspaces.len() < MAX_DATASPACES {
            return Ok(());
        }
        let Some(d) = self.dataspaces.iter().find(|d| d.open) else { return Ok(()) };
        let (id, owner) = (d.id, d.owner);
        self.target.manager(|m, _| m.close(owner, id)).map_err(|e| format!("close of the oldest: {e}"))?;
        if let Some(i) = self.ds_index(id) {
            self.dataspaces[i].open = false;
        }
        self.counters.closed += 1;
        self.counters.closed_while_attached += u64::from(self.referenced(id));
        self.collect(id);
        Ok(())
    }
}
