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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use memkit_dataspace::{
    ClientId, CopyLength, DataspaceId, DmFlags, FactoryId, MemAllocFlags, Placement as DsPlacement, PoolId,
};
use memkit_region::{AttachRequest, DetachFlags, DetachResult, Flags};
use memkit_types::{Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Page, PhysAddr, Rights, VirtAddr};

use crate::action::{Action, Backing, Cut, OFFSETS, size_of_code};
use crate::target::{AccessError, Target};

const PAGE: u64 = PAGE_SIZE as u64;
/// `-L4_ENOMEM`.
const ENOMEM: i32 = -12;

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
}

impl ModelRegion {
    fn end(&self) -> usize {
        self.start + self.pages * PAGE_SIZE
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

    fn open(&mut self, backing: Backing, size: u8, pool: u8, owner: u8) -> Check {
        self.make_room()?;
        if self.dataspaces.len() >= MAX_DATASPACES {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let size = size_of_code(size);
        let owner = CLIENTS[owner as usize % CLIENTS.len()];
        let (pool, base, frames) = self.pool_of(pool);
        let p = pool.index() as u32;
        let (flags, placement) = match backing {
            Backing::Anonymous => (DmFlags::empty(), DsPlacement::AnyAddr),
            Backing::Contiguous => (DmFlags::CONTIGUOUS, DsPlacement::AnyAddr),
            Backing::Pinned => (DmFlags::PINNED, DsPlacement::AnyAddr),
            Backing::Superpages => (DmFlags::SUPERPAGES, DsPlacement::AnyAddr),
            Backing::Fixed(k) => {
                let page = base + (u64::from(k) * 7) % frames;
                (DmFlags::empty(), DsPlacement::Fixed(PhysAddr::new(page * PAGE)))
            }
        };
        let r = self.target.manager(|m, _| match (backing, pool == PoolId::DEFAULT, size % 3) {
            (Backing::Anonymous, true, 0) => m.mem_open(FactoryId::ROOT, owner, size, 0, flags, "anon"),
            (Backing::Superpages, true, 0) => {
                m.alloc(FactoryId::ROOT, owner, size as i64, MemAllocFlags::SUPER_PAGES, 0, PhysAddr::zero())
            }
            (Backing::Contiguous, true, 0) => {
                m.alloc(FactoryId::ROOT, owner, size as i64, MemAllocFlags::CONTINUOUS, 0, PhysAddr::zero())
            }
            _ => m.memphys_open(FactoryId::ROOT, owner, p, placement, size, 0, flags, "phys"),
        });
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        if size == 0 {
            return self.expect_refused("open of 0 bytes", code);
        }
        let fixed = matches!(backing, Backing::Fixed(_));
        if fixed && let Err(e) = r {
            // A fixed address may be taken, reserved (a pool header) or outside the pool.
            let _ = e;
            self.counters.create_out_of_memory += 1;
            return Ok(());
        }
        let ok = Self::expect_valid("open", code)?;
        self.counters.create_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let Ok(id) = r else { return Ok(()) };
        self.counters.opened += 1;
        self.counters.opened_bound += u64::from(backing != Backing::Anonymous);
        self.counters.opened_superpages += u64::from(backing == Backing::Superpages);
        self.counters.opened_fixed += u64::from(fixed);
        self.counters.opened_other_pool += u64::from(pool != PoolId::DEFAULT);
        self.dataspaces.push(ModelDataspace {
            id,
            bytes: vec![0; size as usize],
            owner,
            open: true,
            pool,
            superpages: backing == Backing::Superpages,
        });
        Ok(())
    }

    fn resize(&mut self, ds: u8, size: u8, caller: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let new = size_of_code(size);
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        if self.skips.superpage_shrink
            && self
                .ds_index(id)
                .is_some_and(|i| self.dataspaces[i].superpages && new < self.dataspaces[i].bytes.len() as u64)
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        if self.skips.shrink_into_page
            && self.ds_index(id).is_some_and(|i| new < self.dataspaces[i].bytes.len() as u64)
            && !new.is_multiple_of(PAGE)
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        let r = self.target.manager(|m, rv| m.resize(caller, id, new, rv)).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("resize of a closed dataspace", r);
        };
        if self.dataspaces[i].owner != caller {
            return self.expect_refused("resize by another client", r);
        }
        let ok = Self::expect_valid("resize", r)?;
        self.counters.resize_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let d = &mut self.dataspaces[i];
        if new == 0 {
            d.open = false;
            self.counters.closed += 1;
            self.collect(id);
            return Ok(());
        }
        let old = d.bytes.len() as u64;
        if new < old {
            self.counters.resized_down += 1;
            self.counters.resized_superpages_down += u64::from(d.superpages);
        } else if new > old {
            self.counters.resized_up += 1;
        }
        d.bytes.resize(new as usize, 0);
        Ok(())
    }

    fn copy(&mut self, ds: u8, src: u8, dst: u8, len: u8, flags: u8, caller: u8) -> Check {
        self.make_room()?;
        let Some(id) = self.pick(ds) else { return Ok(()) };
        if self.dataspaces.len() >= MAX_DATASPACES {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let src_offs = OFFSETS[src as usize % OFFSETS.len()];
        let dst_offs = OFFSETS[dst as usize % OFFSETS.len()];
        let src_size = self.ds_index(id).map_or(0, |i| self.dataspaces[i].bytes.len() as u64);
        let num = match len {
            0 => CopyLength::WholeDataspace,
            1 => CopyLength::Bytes(0),
            n => {
                let n = size_of_code(n - 2);
                // Mostly within the source (bit 5 asks for the length as drawn).
                CopyLength::Bytes(if flags & 0x20 == 0 { n.min(src_size.saturating_sub(src_offs)) } else { n })
            }
        };
        if self.skips.zero_length_copy
            && dst_offs > 0
            && (num == CopyLength::Bytes(0) || (num == CopyLength::WholeDataspace && src_offs >= src_size))
        {
            self.counters.skipped += 1;
            return Ok(());
        }
        if self.skips.cow_partial_tail && flags & 1 != 0 {
            let n = match num {
                CopyLength::WholeDataspace => src_size.saturating_sub(src_offs),
                CopyLength::Bytes(n) => n,
            };
            if !(dst_offs + n).is_multiple_of(PAGE) && src_offs + n < src_size {
                self.counters.skipped += 1;
                return Ok(());
            }
        }
        let mut dm = DmFlags::empty();
        for (bit, f) in [(1, DmFlags::COW), (2, DmFlags::CONTIGUOUS), (4, DmFlags::PINNED), (8, DmFlags::SUPERPAGES)] {
            if flags & bit != 0 {
                dm |= f;
            }
        }
        let other_pool = flags & 0x10 != 0;
        let src_pool = self.ds_index(id).map_or(PoolId::DEFAULT, |i| self.dataspaces[i].pool);
        let dst_pool = if other_pool { self.pool_of(flags.wrapping_add(src)).0 } else { src_pool };
        let shared_before = self.target.manager(|m, _| m.shared_frames());
        let r = self.target.manager(|m, rv| {
            if other_pool {
                let p = dst_pool.index() as u32;
                m.memphys_copy(caller, id, src_offs, dst_offs, num, p, DsPlacement::AnyAddr, 0, 0, dm, "pcopy", rv)
            } else if src_offs == 0 && dst_offs == 0 && num == CopyLength::WholeDataspace {
                m.copy(caller, id, dm, "copy", rv)
            } else {
                m.copy_long(caller, id, src_offs, dst_offs, num, dm, "copy_long", rv)
            }
        });
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("copy of a closed dataspace", code);
        };
        let s = &self.dataspaces[i];
        if s.owner.task != caller.task {
            return self.expect_refused("copy by another task", code);
        }
        let n = match num {
            CopyLength::WholeDataspace => src_size.checked_sub(src_offs),
            CopyLength::Bytes(n) => src_offs.checked_add(n).filter(|e| *e <= src_size).map(|_| n),
        };
        let Some(n) = n else { return self.expect_refused("copy from past the source's end", code) };
        let total = dst_offs + n;
        if total == 0 {
            return self.expect_refused("copy of 0 bytes to offset 0", code);
        }
        let ok = Self::expect_valid("copy", code)?;
        self.counters.copy_out_of_memory += u64::from(!ok);
        if !ok {
            return Ok(());
        }
        let Ok(copy) = r else { return Ok(()) };
        let mut bytes = vec![0u8; dst_offs as usize];
        bytes.extend_from_slice(&s.bytes[src_offs as usize..(src_offs + n) as usize]);
        self.counters.copies += 1;
        self.counters.zero_length_copies += u64::from(n == 0);
        if self.target.manager(|m, _| m.shared_frames()) > shared_before {
            self.counters.cow_copies_sharing += 1;
        }
        if dm.contains(DmFlags::COW) {
            self.counters.cow_copies += 1;
            self.counters.cow_copies_partial_tail += u64::from(src_offs + n < src_size && !total.is_multiple_of(PAGE));
        }
        self.dataspaces.push(ModelDataspace {
            id: copy,
            bytes,
            owner: caller,
            open: true,
            pool: dst_pool,
            superpages: dm.contains(DmFlags::SUPERPAGES),
        });
        Ok(())
    }

    fn close(&mut self, ds: u8, caller: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let r = self.target.manager(|m, _| m.close(caller, id)).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("close of a closed dataspace", r);
        };
        if self.dataspaces[i].owner != caller {
            return self.expect_refused("close by another client", r);
        }
        if let Err(c) = r {
            return fail(format!("close: refused with code {c}"));
        }
        self.dataspaces[i].open = false;
        self.counters.closed += 1;
        self.counters.closed_while_attached += u64::from(self.referenced(id));
        self.collect(id);
        Ok(())
    }

    fn close_all(&mut self, caller: u8, client: u8, same_task: bool) -> Check {
        let caller = CLIENTS[caller as usize % CLIENTS.len()];
        let client = CLIENTS[client as usize % CLIENTS.len()];
        let flags = if same_task { DmFlags::SAME_TASK } else { DmFlags::empty() };
        let r = self.target.manager(|m, _| m.close_all(caller, client, flags));
        if caller.task != client.task {
            return self.expect_refused("close_all of another task", r.map(|_| ()).map_err(|e| e.code()));
        }
        let n = r.map_err(|e| format!("close_all refused: {e}"))?;
        let hit =
            |d: &ModelDataspace| d.open && if same_task { d.owner.task == client.task } else { d.owner == client };
        let ids: Vec<DataspaceId> = self.dataspaces.iter().filter(|d| hit(d)).map(|d| d.id).collect();
        if n as usize != ids.len() {
            return fail(format!("close_all closed {n}, the model {}", ids.len()));
        }
        for id in ids {
            if let Some(i) = self.ds_index(id) {
                self.dataspaces[i].open = false;
            }
            self.collect(id);
        }
        self.counters.close_all += 1;
        Ok(())
    }

    fn attach(&mut self, space: u8, ds: u8, page: u8, pages: u8, flags: u8) -> Check {
        let space = space as usize % self.regions.len();
        let Some(id) = self.pick(ds) else { return Ok(()) };
        if self.regions[space].len() >= MAX_REGIONS {
            self.counters.skipped_full += 1;
            return Ok(());
        }
        let mut pages = 1 + (pages as usize % 8);
        let mut offset = u64::from(page % 8) * PAGE;
        if flags & 0x40 == 0
            && let Some(i) = self.ds_index(id)
        {
            // Mostly a region over pages the dataspace has (bit 6 asks for the range as drawn).
            let have = self.dataspaces[i].pages().max(1);
            offset = (offset / PAGE % have) * PAGE;
            pages = pages.min((have - offset / PAGE) as usize);
        }
        let mut rights = Rights::READ;
        if flags & 3 != 0 {
            rights |= Rights::WRITE;
        }
        if flags & 3 == 2 {
            rights |= Rights::EXECUTE;
        }
        let free = flags & 4 != 0 && !self.skips.detach_free;
        let eager = flags & 0x38 == 0x38;
        let mut f = Flags::empty();
        if free {
            f |= Flags::DETACH_FREE;
        }
        if eager {
            f |= Flags::EAGER_MAP;
        }
        let (wstart, wsize) = self.target.window(space);
        let req =
            AttachRequest::new(id, pages * PAGE_SIZE, rights).search(VirtAddr::new(wstart)).offset(offset).flags(f);
        let r = self.target.attach(space, &req);
        let code = r.as_ref().map(|_| ()).map_err(|e| e.code());
        let Some(i) = self.ds_index(id).filter(|&i| self.dataspaces[i].open) else {
            return self.expect_refused("attach of a closed dataspace", code);
        };
        // First fit from the window's start.
        let mut spots = self.regions[space].clone();
        spots.sort_by_key(|r| r.start);
        let mut at = wstart;
        for r in &spots {
            if r.start >= at + pages * PAGE_SIZE {
                break;
            }
            at = at.max(r.end());
        }
        if at + pages * PAGE_SIZE > wstart + wsize {
            return self.expect_refused("attach into a full window", code);
        }
        let d = &self.dataspaces[i];
        if eager && offset / PAGE + pages as u64 > d.pages() {
            return self.expect_refused("eager attach past the dataspace's end", code);
        }
        let pool = d.pool;
        let ok = Self::expect_valid("attach", code)?;
        self.counters.fault_out_of_memory += u64::from(!ok);
        if !ok {
            if self.pool_free(pool) > 0 {
                return fail("eager attach out of memory while its pool has free frames");
            }
            return Ok(());
        }
        let Ok(addr) = r else { return Ok(()) };
        if addr.as_usize() != at {
            return fail(format!("attach placed the region at {addr}, first fit is {at:#x}"));
        }
        self.counters.attached += 1;
        self.counters.eager_attaches += u64::from(eager);
        self.counters.attached_twice_in_a_space += u64::from(self.regions[space].iter().any(|r| r.ds == id));
        self.regions[space].push(ModelRegion { start: at, pages, ds: id, offset, rights, free });
        Ok(())
    }

    fn region(&self, space: u8, region: u8) -> Option<(usize, usize)> {
        let s = space as usize % self.regions.len();
        let n = self.regions[s].len();
        (n > 0).then(|| (s, region as usize % n))
    }

    fn detach(&mut self, space: u8, region: u8, cut: Cut, keep: bool) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let r = self.regions[s][ri];
        if self.skips.closed_access && !self.ds(r.ds).open && cut == Cut::Middle {
            self.counters.skipped += 1;
            return Ok(());
        }
        let k = 1 + (usize::from(region) / 7) % r.pages.max(2).saturating_sub(1).max(1);
        let (from, to, mut flags) = match cut {
            Cut::Head if r.pages > 1 => (r.start, r.start + k * PAGE_SIZE, DetachFlags::EXACT),
            Cut::Tail if r.pages > 1 => (r.end() - k * PAGE_SIZE, r.end(), DetachFlags::EXACT),
            Cut::Middle if r.pages > 2 => {
                let n = 1 + (usize::from(region) / 3) % (r.pages - 2);
                let first = 1 + (usize::from(region) / 5) % (r.pages - 1 - n);
                (r.start + first * PAGE_SIZE, r.start + (first + n) * PAGE_SIZE, DetachFlags::EXACT)
            }
            Cut::Overlap => (r.start, r.end(), DetachFlags::OVERLAP),
            _ => (r.start, r.end(), DetachFlags::EXACT),
        };
        if keep {
            flags |= DetachFlags::KEEP;
        }
        // An overlap detach names one byte inside the region.
        let (addr, size) = if flags.contains(DetachFlags::OVERLAP) {
            (r.start + (r.pages / 2) * PAGE_SIZE + 123, 1)
        } else {
            (from, to - from)
        };
        let ds = r.ds;
        let (pool, open) = {
            let d = self.ds(ds);
            (d.pool, d.open)
        };
        let free_before = self.pool_free(pool);
        let before = self.ds(ds).bytes.clone();
        let got = self.target.detach(s, VirtAddr::new(addr), size, flags).map_err(|e| format!("detach: {e}"))?;
        let whole = from == r.start && to == r.end();
        let want = if whole {
            DetachResult::DetachedDs
        } else if from > r.start && to < r.end() {
            DetachResult::SplitDs
        } else {
            DetachResult::KeptDs
        };
        if got.result != want || got.start.as_usize() != from || got.size != to - from {
            return fail(format!("detach did {got:?}, the model cuts {from:#x}..{to:#x} ({want:?})"));
        }
        match want {
            DetachResult::DetachedDs => self.counters.detached_whole += 1,
            DetachResult::SplitDs => self.counters.detached_middle += 1,
            DetachResult::KeptDs if from == r.start => self.counters.detached_head += 1,
            DetachResult::KeptDs => self.counters.detached_tail += 1,
        }
        let mut pieces = Vec::new();
        if from > r.start {
            pieces.push(ModelRegion { pages: (from - r.start) / PAGE_SIZE, ..r });
        }
        if to < r.end() {
            let skip = (to - r.start) as u64;
            pieces.push(ModelRegion { start: to, pages: (r.end() - to) / PAGE_SIZE, offset: r.offset + skip, ..r });
        }
        self.regions[s].remove(ri);
        self.regions[s].extend(pieces);
        if r.free && !keep && open {
            // DETACH_FREE: the detached part of the dataspace reads as zeros again (the
            // manager's `clear`, which may fail only for want of a frame to unshare an edge
            // page, and then changes nothing).
            let off = r.offset + (from - r.start) as u64;
            let len = (to - from) as u64;
            let i = self.ds_index(ds).expect("open");
            let size = self.dataspaces[i].bytes.len() as u64;
            if off < size {
                let end = (off + len).min(size);
                let mut zeroed = before.clone();
                zeroed[off as usize..end as usize].fill(0);
                let mut now = vec![0u8; size as usize];
                self.target.manager(|m, _| m.read(ds, 0, &mut now)).map_err(|e| format!("read: {e}"))?;
                if now == zeroed {
                    self.dataspaces[i].bytes = zeroed;
                    self.counters.detach_free_clears += 1;
                } else if now != before {
                    return fail(format!(
                        "DETACH_FREE of {off:#x}..{end:#x} of {ds}: the bytes there are neither cleared nor unchanged"
                    ));
                } else if free_before >= 2 {
                    return fail(format!(
                        "DETACH_FREE of {off:#x}..{end:#x} of {ds} left the bytes there (not cleared) while its pool had {free_before} free frames"
                    ));
                }
            }
        }
        self.collect(ds);
        Ok(())
    }

    /// Where an access of `len` bytes at `at` of region `(s, ri)` lands: the region, the
    /// dataspace offset of its first byte, and whether every page it touches shows the
    /// dataspace.
    fn access_range(&self, s: usize, ri: usize, at: u64, len: u64) -> (ModelRegion, u64, u64, bool) {
        let r = self.regions[s][ri];
        let rsize = (r.pages * PAGE_SIZE) as u64;
        let at = at % rsize;
        let len = len.min(rsize - at).max(1);
        let off = r.offset + at;
        let d = self.ds(r.ds);
        let last_page = (off + len - 1) / PAGE;
        (r, at, len, last_page < d.pages())
    }

    /// Makes an access through a space and checks its outcome against `valid`; returns
    /// whether it happened.
    fn access(
        &mut self,
        s: usize,
        addr: VirtAddr,
        buf: &mut [u8],
        access: Access,
        valid: bool,
        pool: PoolId,
    ) -> Result<bool, String> {
        // A region of a closed dataspace (skipped: `would_resolve` answers for it).
        let closed = self.skips.closed_access
            && self.regions[s]
                .iter()
                .any(|r| r.start <= addr.as_usize() && addr.as_usize() < r.end() && !self.ds(r.ds).open);
        if !self.target.reports_refused_access() {
            // Every page the access touches must be resolvable.
            let (first, last) = (addr.as_usize() / PAGE_SIZE, (addr.as_usize() + buf.len() - 1) / PAGE_SIZE);
            let mut all = Some(true);
            for p in first..=last {
                let at = VirtAddr::new((p * PAGE_SIZE).max(addr.as_usize()));
                match self.target.would_resolve(s, at, access) {
                    Some(w) => all = all.map(|a| a && w),
                    None => all = None,
                }
            }
            if let Some(w) = all
                && w != valid
                && !closed
            {
                return fail(format!(
                    "would_resolve({addr}, {} bytes, {access:?}) says {w}, the model {valid}",
                    buf.len()
                ));
            }
            if !valid {
                self.counters.refused_accesses += 1;
                return Ok(false);
            }
            if self.skips.hosted_dry_access && self.pool_free(pool) < 16 {
                self.counters.skipped += 1;
                return Ok(false);
            }
        }
        let r: Result<(), AccessError> =
            if access == Access::Write { self.target.store(s, addr, buf) } else { self.target.load(s, addr, buf) };
        match (r, valid) {
            (Ok(()), true) => Ok(true),
            (Ok(()), false) => fail(format!("{access:?} at {addr} succeeded where the model refuses it")),
            (Err(_), false) => {
                self.counters.refused_accesses += 1;
                Ok(false)
            }
            (Err(e), true) if e.code == ENOMEM => {
                self.counters.fault_out_of_memory += 1;
                let free = self.pool_free(pool);
                if free > 0 {
                    return fail(format!(
                        "{access:?} at {addr} failed for want of a frame while its pool has {free} free"
                    ));
                }
                Ok(false)
            }
            (Err(e), true) => fail(format!("{access:?} at {addr} refused: {}", e.message)),
        }
    }

    fn store(&mut self, space: u8, region: u8, at: u16, len: u8, value: u8) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let mut at = u64::from(at);
        {
            // Mostly at bytes the dataspace has (the top bit of `at` asks for it as drawn).
            let r = self.regions[s][ri];
            let have = (self.ds(r.ds).bytes.len() as u64).saturating_sub(r.offset).min((r.pages * PAGE_SIZE) as u64);
            if at & 0x8000 == 0 && have > 0 {
                at %= have;
            }
        }
        let (r, at, len, valid) = self.access_range(s, ri, at, u64::from(len) + 1);
        let d = self.ds(r.ds);
        let (pool, size) = (d.pool, d.bytes.len() as u64);
        let off = r.offset + at;
        let writable = r.rights.contains(Rights::WRITE);
        // Stores stay within the dataspace's size: what a store past it (inside the last
        // page) should leave is not the model's to say.
        let len = if valid && writable {
            if off >= size {
                self.counters.skipped += 1;
                return Ok(());
            }
            len.min(size - off)
        } else {
            len
        };
        let mut buf: Vec<u8> = (0..len).map(|i| value.wrapping_add(i as u8)).collect();
        let shared = self.target.manager(|m, _| m.shared_frames());
        let what = self.describe(r.ds);
        let done = self
            .access(s, VirtAddr::new(r.start + at as usize), &mut buf, Access::Write, valid && writable, pool)
            .map_err(|m| format!("{m} ({what})"))?;
        if done {
            self.counters.stores += 1;
            if self.target.manager(|m, _| m.shared_frames()) < shared {
                self.counters.cow_breaks += 1;
            }
            let i = self.ds_index(r.ds).expect("live");
            self.dataspaces[i].bytes[off as usize..(off + len) as usize].copy_from_slice(&buf);
        }
        Ok(())
    }

    fn load(&mut self, space: u8, region: u8, at: u16, len: u16) -> Check {
        let Some((s, ri)) = self.region(space, region) else { return Ok(()) };
        let (r, at, len, valid) = self.access_range(s, ri, u64::from(at), u64::from(len));
        let pool = self.ds(r.ds).pool;
        let mut buf = vec![0u8; len as usize];
        let addr = VirtAddr::new(r.start + at as usize);
        let what = self.describe(r.ds);
        if self.access(s, addr, &mut buf, Access::Read, valid, pool).map_err(|m| format!("{m} ({what})"))? {
            self.counters.loads += 1;
            let d = self.ds(r.ds);
            let off = r.offset + at;
            if let Some(k) = (0..len).find(|&k| buf[k as usize] != d.byte(off + k))
                && !(self.skips.tail_bytes && off + k >= d.bytes.len() as u64)
            {
                return fail(format!(
                    "load at {addr} (dataspace {} offset {:#x}, size {:#x}) read {:#04x}, the model {:#04x}",
                    r.ds,
                    off + k,
                    d.bytes.len(),
                    buf[k as usize],
                    d.byte(off + k)
                ));
            }
        }
        Ok(())
    }

    fn touch(&mut self, space: u8) -> Check {
        let s = space as usize % self.regions.len();
        for ri in 0..self.regions[s].len() {
            let r = self.regions[s][ri];
            for p in 0..r.pages {
                let (_, _, _, valid) = self.access_range(s, ri, (p * PAGE_SIZE) as u64, 1);
                let pool = self.ds(r.ds).pool;
                let mut b = [0u8];
                self.access(s, VirtAddr::new(r.start + p * PAGE_SIZE), &mut b, Access::Read, valid, pool)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, ds: u8, at: u16, len: u8, value: u8) -> Check {
        let Some(id) = self.pick(ds) else { return Ok(()) };
        let size = self.ds_index(id).map_or(0, |i| self.dataspaces[i].bytes.len() as u64);
        let at = u64::from(at) % (size + 2);
        let buf: Vec<u8> = (0..=len).map(|i| value.wrapping_add(i)).collect();
        let shared = self.target.manager(|m, _| m.shared_frames());
        let r = self.target.manager(|m, rv| m.write(id, at, &buf, rv)).map_err(|e| e.code());
        if self.target.manager(|m, _| m.shared_frames()) < shared {
            self.counters.cow_breaks += 1;
        }
        let Some(i) = self.ds_index(id) else { return self.expect_refused("write to a freed dataspace", r) };
        if at + buf.len() as u64 > size {
            return self.expect_refused("write past the end", r);
        }
        if Self::expect_valid("write", r)? {
            self.counters.manager_writes += 1;
            self.dataspaces[i].bytes[at as usize..at as usize + buf.len()].copy_from_slice(&buf);
        } else {
            self.counters.write_out_of_memory += 1;
            if self.skips.partial_write {
                let mut now = vec![0u8; size as usize];
                self.target.manager(|m, _| m.read(id, 0, &mut now)).map_err(|e| format!("read: {e}"))?;
                self.dataspaces[i].bytes = now;
            }
        }
        Ok(())
    }

    fn hog(&mut self, pool: u8, leave: u8) -> Check {
        if self.skips.hosted_dry_access {
            self.counters.skipped += 1;
            return Ok(());
        }
        let (pool, _, _) = self.pool_of(pool);
        let leave = u64::from(leave % 4);
        let taken = self.target.manager(|m, _| {
            let mut taken = Vec::new();
            if let Some(src) = m.pool(pool) {
                while src.free_frames().get() > leave {
                    match src.allocate(FrameCount::new(1), Order::ZERO, None) {
                        Ok(f) => taken.push(f),
                        Err(_) => break,
                    }
                }
            }
            taken
        });
        self.counters.hogs += 1;
        self.hogged.extend(taken.into_iter().map(|f| (pool, f)));
        Ok(())
    }

    fn unhog(&mut self, every: u8) -> Check {
        let every = usize::from(every % 4);
        let (give, keep): (Vec<_>, Vec<_>) = core::mem::take(&mut self.hogged)
            .into_iter()
            .enumerate()
            .partition(|(i, _)| every == 0 || i % (every + 1) == 0);
        self.hogged = keep.into_iter().map(|(_, x)| x).collect();
        self.target.manager(|m, _| {
            for (_, (pool, f)) in give {
                if let Some(src) = m.pool(pool) {
                    src.free(f, FrameCount::new(1)).map_err(|e| format!("giving back a hogged frame: {e}"))?;
                }
            }
            Ok(())
        })
    }

    // ------------------------------------------------------------------ the check

    /// Compares everything the system shows with the model.
    fn check_all(&mut self) -> Check {
        self.target.check_invariants();
        // Every dataspace through the manager.
        for d in &self.dataspaces {
            let size = d.bytes.len() as u64;
            let info = self.target.manager(|m, _| m.info(d.id).map(|i| (i.size, i.owner)).ok());
            match (d.open, info) {
                (true, Some((s, o))) if s == size && o == d.owner => {}
                (true, i) => return fail(format!("info({}) is {i:?}, the model ({size}, {})", d.id, d.owner)),
                (false, Some(_)) => return fail(format!("info({}) answers for a closed dataspace", d.id)),
                (false, None) => {}
            }
            let mut buf = vec![0u8; size as usize];
            self.target.manager(|m, _| m.read(d.id, 0, &mut buf)).map_err(|e| format!("read of {}: {e}", d.id))?;
            if let Some(k) = (0..buf.len()).find(|&k| buf[k] != d.bytes[k]) {
                return fail(format!(
                    "manager read of {} at {k:#x} (size {size:#x}): {:#04x}, the model {:#04x}",
                    d.id, buf[k], d.bytes[k]
                ));
            }
            let past = self.target.manager(|m, _| m.read(d.id, size, &mut [0u8]).is_ok());
            if past {
                return fail(format!("manager read of {} at its size {size:#x} succeeded", d.id));
            }
        }
        for id in &self.dead {
            if self.target.manager(|m, _| m.info(*id).is_ok()) {
                return fail(format!("info({id}) answers for a freed dataspace"));
            }
        }
        // Every page of every region, through the translation the CPU would use.
        let mut frames: BTreeMap<(DataspaceId, u64), Frame> = BTreeMap::new();
        let mut users: BTreeMap<Frame, Vec<(DataspaceId, u64, bool)>> = BTreeMap::new();
        let mut page_buf = vec![0u8; PAGE_SIZE];
        for s in 0..self.regions.len() {
            for ri in 0..self.regions[s].len() {
                let r = self.regions[s][ri];
                for p in 0..r.pages {
                    let addr = r.start + p * PAGE_SIZE;
                    let Some(t) = self.target.translation(s, Page::containing_address(VirtAddr::new(addr))) else {
                        continue;
                    };
                    let d = self.ds(r.ds);
                    let off = r.offset + (p * PAGE_SIZE) as u64;
                    let dpage = off / PAGE;
                    if dpage >= d.pages() {
                        return fail(format!(
                            "space {s} maps {addr:#x} (dataspace {} page {dpage}) past the dataspace's end ({:#x} bytes)",
                            r.ds,
                            d.bytes.len()
                        ));
                    }
                    if !r.rights.contains(t.rights) {
                        return fail(format!(
                            "space {s} maps {addr:#x} with {:?} beyond the region's {:?}",
                            t.rights, r.rights
                        ));
                    }
                    if let Some(f) = frames.insert((r.ds, dpage), t.frame)
                        && f != t.frame
                    {
                        return fail(format!(
                            "dataspace {} page {dpage} is mapped to two frames ({:#x} and {:#x}): one is stale",
                            r.ds,
                            f.number(),
                            t.frame.number()
                        ));
                    }
                    users.entry(t.frame).or_default().push((r.ds, dpage, t.rights.contains(Rights::WRITE)));
                    if !t.rights.contains(Rights::READ) {
                        continue;
                    }
                    self.target.read_mapped(s, VirtAddr::new(addr), &mut page_buf);
                    self.counters.pages_compared += 1;
                    let size = self.ds(r.ds).bytes.len() as u64;
                    self.counters.partial_tail_pages_compared += u64::from(off + PAGE > size);
                    let d = self.ds(r.ds);
                    for (k, &b) in page_buf.iter().enumerate() {
                        let o = off + k as u64;
                        if b != d.byte(o) && !(self.skips.tail_bytes && o >= size) {
                            return fail(format!(
                                "space {s} at {:#x} (dataspace {} offset {o:#x}, size {size:#x}, frame {:#x}) reads {b:#04x}, the model {:#04x}{}",
                                addr + k,
                                r.ds,
                                t.frame.number(),
                                d.byte(o),
                                if o >= size { " (past the dataspace's end)" } else { "" }
                            ));
                        }
                    }
                }
            }
        }
        for (f, u) in &users {
            let first = (u[0].0, u[0].1);
            if u.iter().any(|x| (x.0, x.1) != first) {
                self.counters.shared_pages_compared += 1;
                if u.iter().any(|x| x.2) {
                    return fail(format!(
                        "frame {:#x} is mapped writable while it backs several dataspace pages: {u:?}",
                        f.number()
                    ));
                }
            }
        }
        // Frames: the pools' use is the dataspaces' frames plus the hogged ones.
        for &(pool, _, _) in &self.pools {
            let hogged = self.hogged.iter().filter(|h| h.0 == pool).count() as u64;
            let (used, held) = self.target.manager(|m, _| {
                let s = m.pool(pool).expect("a pool the target listed");
                (s.total_frames().get() - s.free_frames().get(), m.frames_held(pool))
            });
            if used != held + hogged {
                return fail(format!(
                    "pool {} has {used} frames in use, dataspaces hold {held} and the driver {hogged}",
                    pool.index()
                ));
            }
        }
        Ok(())
    }
}
