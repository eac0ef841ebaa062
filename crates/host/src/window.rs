//! Address-space windows and the `mmap`-backed [`Mmu`].
//!
//! ```text
//!   window (reserved PROT_NONE)
//!   |....|RRRR|....|WWWWWWWW|....|
//!          ▲          ▲
//!          │          └ mmap(MAP_SHARED|MAP_FIXED, memfd, frame offset), read-write
//!          └ a read-only mapping; "...." is still the reservation: touching it faults
//! ```
//!
//! Each maximal run of pages that map consecutive frames with the same rights is one kernel
//! VMA, and it splits the reservation around it, so a window costs at most `1 + 2 × runs`
//! VMAs. [`HostMmu`] keeps the count of runs up to date on every change and charges
//! `2 × runs` to a [`MappingBudget`], refusing a change with [`MapError::OutOfMemory`]
//! before the kernel's `vm.max_map_count` would be reached.
//!
//! # Unsafe
//! A window is a reservation the runtime made and no Rust reference points into: mapping,
//! protecting and unmapping pages inside it (checked against its range) is sound, and it is
//! released only when the window goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use memkit_region::{MapError, Mmu, TlbFlush, Translation};
use memkit_types::l4::{L4_EINVAL, L4_ENOMEM};
use memkit_types::{CacheMode, Frame, FrameCount, PAGE_SHIFT, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};
use rustix::mm::{MprotectFlags, ProtFlags};

use crate::ram::HostRam;
use crate::sys;

/// How many kernel mappings (VMAs) the runtime may still create.
///
/// The kernel refuses new mappings past `vm.max_map_count`; every window change is charged
/// here first so that the runtime fails with an error instead.
#[derive(Debug)]
pub struct MappingBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MappingBudget {
    /// The VMAs kept free for the rest of the program (thread stacks, allocator arenas).
    pub const MARGIN: usize = 1024;

    /// A budget of `limit` mappings.
    #[must_use]
    pub fn with_limit(limit: usize) -> Self {
        MappingBudget { limit, used: AtomicUsize::new(0) }
    }

    /// The process-wide budget: `vm.max_map_count` (65 530 when unreadable) minus the
    /// mappings the process has now minus [`MappingBudget::MARGIN`].
    pub fn system() -> &'static Arc<MappingBudget> {
        static SYSTEM: OnceLock<Arc<MappingBudget>> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(65_530);
            let now = std::fs::read_to_string("/proc/self/maps").map(|s| s.lines().count()).unwrap_or(0);
            Arc::new(MappingBudget::with_limit(max.saturating_sub(now).saturating_sub(Self::MARGIN)))
        })
    }

    /// The number of mappings the budget allows.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The number of mappings charged now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.limit))
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Why a window could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowError {
    /// The size is zero or not a multiple of 4 KiB.
    BadSize(usize),
    /// The size is above [`Window::MAX_LEN`].
    TooLarge(usize),
    /// The kernel refused the reservation (its errno).
    Os(i32),
    /// No memory for the MMU's table of the window's pages.
    NoTable(usize),
}

impl core::fmt::Display for WindowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WindowError::BadSize(s) => write!(f, "window size {s:#x} is zero or not a multiple of 4 KiB"),
            WindowError::TooLarge(s) => {
                write!(f, "window size {s:#x} is above the largest window ({:#x} bytes)", Window::MAX_LEN)
            }
            WindowError::Os(e) => write!(f, "cannot reserve a window: errno {e}"),
            WindowError::NoTable(s) => write!(f, "no memory for the page table of a window of {s:#x} bytes"),
        }
    }
}

impl std::error::Error for WindowError {}

impl WindowError {
    /// The seed's code: `-L4_EINVAL` (-22) for a bad size, `-L4_ENOMEM` (-12) otherwise.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            WindowError::BadSize(_) | WindowError::TooLarge(_) => -L4_EINVAL,
            WindowError::Os(_) | WindowError::NoTable(_) => -L4_ENOMEM,
        }
    }
}

/// A range of virtual addresses reserved `PROT_NONE`: the address space of one task.
///
/// # Invariants
/// `start .. start + len` was reserved by [`Window::new`] and is released on drop; no Rust
/// reference into it exists (programs reach it through raw loads and stores only).
#[derive(Debug)]
pub struct Window {
    start: VirtAddr,
    len: usize,
}

impl Window {
    /// The largest window: 64 GiB. A [`HostMmu`] keeps one word per page of its window (128
    /// MiB of table at this size), so the bookkeeping a window costs stays bounded.
    pub const MAX_LEN: usize = 1 << 36;

    /// Reserves `len` bytes of address space somewhere.
    ///
    /// # Errors
    /// [`WindowError::BadSize`] for a zero or unaligned length, [`WindowError::TooLarge`]
    /// above [`Window::MAX_LEN`], [`WindowError::Os`] when the kernel refuses.
    pub fn new(len: usize) -> Result<Self, WindowError> {
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(WindowError::BadSize(len));
        }
        if len > Self::MAX_LEN {
            return Err(WindowError::TooLarge(len));
        }
        let ptr = sys::reserve(len).map_err(|e| WindowError::Os(e.raw_os_error()))?;
        let start = VirtAddr::try_new(ptr as usize).map_err(|_| WindowError::Os(libc::EFAULT))?;
        Ok(Window { start, len })
    }

    /// The first address.
    #[must_use]
    pub fn start(&self) -> VirtAddr {
        self.start
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a window is never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` lies inside the window.
    #[must_use]
    pub fn contains(&self, addr: VirtAddr) -> bool {
        addr.checked_offset_from(self.start).is_some_and(|o| o < self.len)
    }

    /// The first page.
    #[must_use]
    pub fn first_page(&self) -> Page {
        Page::containing_address(self.start)
    }

    /// The number of pages.
    #[must_use]
    pub fn pages(&self) -> PageCount {
        PageCount::new(self.len / PAGE_SIZE)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the range is the reservation made in new() (with whatever was mapped over
        // it since); no reference into it exists and the window is going away.
        unsafe { sys::release(self.start.as_usize() as *mut _, self.len) };
    }
}

// A translation packed in a u64: bit 0 valid, bits 1..4 rights, bits 4..6 cache mode,
// bits 12.. the frame number.
const VALID: u64 = 1;

fn pack(t: Translation) -> u64 {
    let cache = match t.cache {
        CacheMode::WriteBack => 0,
        CacheMode::WriteCombining => 1,
        CacheMode::Uncached => 2,
    };
    (t.frame.number() << PAGE_SHIFT) | (u64::from(t.rights.bits()) << 1) | (cache << 4) | VALID
}

fn unpack(e: u64) -> Option<Translation> {
    if e & VALID == 0 {
        return None;
    }
    let cache = match (e >> 4) & 3 {
        0 => CacheMode::WriteBack,
        1 => CacheMode::WriteCombining,
        _ => CacheMode::Uncached,
    };
    Some(Translation {
        frame: Frame::from_number(e >> PAGE_SHIFT),
        rights: Rights::from_bits_truncate(((e >> 1) & 7) as u8),
        cache,
    })
}

fn prot_of(rights: Rights) -> ProtFlags {
    let mut p = ProtFlags::empty();
    if rights.contains(Rights::READ) {
        p |= ProtFlags::READ;
    }
    if rights.contains(Rights::WRITE) {
        p |= ProtFlags::WRITE;
    }
    if rights.contains(Rights::EXECUTE) {
        p |= ProtFlags::EXEC;
    }
    p
}

fn mprotect_of(rights: Rights) -> MprotectFlags {
    MprotectFlags::from_bits_retain(prot_of(rights).bits())
}

/// When a map also fills in the kernel's page-table entries (`MAP_POPULATE`).
///
/// Populating a run of pages in the `mmap` that maps it is much cheaper than letting each of
/// them take a kernel fault on first access; for a single page, the `mmap` is faster without
/// it and the one kernel fault that follows costs less than what it saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Populate {
    /// Every map.
    Always,
    /// Maps of more than one page (fault-around runs, eager maps).
    #[default]
    Runs,
    /// Never: the kernel fills the entries in on first access. Maps large ranges of a sparse
    /// RAM without allocating them.
    Never,
}

impl Populate {
    fn applies(self, pages: usize) -> bool {
        match self {
            Populate::Always => true,
            Populate::Runs => pages > 1,
            Populate::Never => false,
        }
    }
}

/// The [`Mmu`] of one window: frames of a [`HostRam`] mapped with `mmap`.
///
/// The cache mode is recorded but has no effect on Linux: every mapping is write-back.
/// `flush` does nothing: the kernel keeps TLBs coherent across `mmap` and `mprotect`.
///
/// # Invariants
/// `table[i]` describes page `i` of the window exactly as the kernel maps it; `runs` is the
/// number of maximal runs of mapped pages with consecutive frames and equal rights, and
/// `2 × runs` is charged to the budget.
#[derive(Debug)]
pub struct HostMmu {
    window: Window,
    ram: Arc<HostRam>,
    table: Box<[u64]>,
    runs: usize,
    budget: Arc<MappingBudget>,
    populate: Populate,
}

impl HostMmu {
    /// An MMU over `window`, mapping frames of `ram`, charging the process-wide budget.
    #[must_use]
    pub fn new(window: Window, ram: Arc<HostRam>) -> Self {
        Self::with_budget(window, ram, Arc::clone(MappingBudget::system()))
    }

    /// An MMU over `window` charging the process-wide budget, or
    /// [`WindowError::NoTable`] when the memory for its table cannot be had (instead of
    /// aborting, as [`new`](Self::new) does).
    ///
    /// # Errors
    /// [`WindowError::NoTable`].
    pub fn try_new(window: Window, ram: Arc<HostRam>) -> Result<Self, WindowError> {
        Self::try_with_budget(window, ram, Arc::clone(MappingBudget::system()))
    }

    /// An MMU charging `budget`.
    ///
    /// # Panics
    /// When the memory for the table of the window's pages cannot be had (see
    /// [`try_new`](Self::try_new)).
    #[must_use]
    pub fn with_budget(window: Window, ram: Arc<HostRam>, budget: Arc<MappingBudget>) -> Self {
        let len = window.len();
        Self::try_with_budget(window, ram, budget)
            .unwrap_or_else(|_| panic!("no memory for the table of a window of {len:#x} bytes"))
    }

    fn try_with_budget(window: Window, ram: Arc<HostRam>, budget: Arc<MappingBudget>) -> Result<Self, WindowError> {
        let pages = window.pages().get();
        // Ask for the memory fallibly first; `vec!` then takes it zeroed from the allocator
        // (untouched pages of a large table cost nothing until used), which a fallible
        // `resize` would not.
        let mut probe = Vec::<u64>::new();
        probe.try_reserve_exact(pages).map_err(|_| WindowError::NoTable(window.len()))?;
        drop(probe);
        let table = vec![0u64; pages].into_boxed_slice();
        Ok(HostMmu { window, ram, table, runs: 0, budget, populate: Populate::default() })
    }

    /// When a map also fills in the kernel's page-table entries (`MAP_POPULATE`); see
    /// [`Populate`] ([`Populate::Runs`] by default).
    pub fn set_populate(&mut self, populate: Populate) {
        self.populate = populate;
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// The RAM.
    #[must_use]
    pub fn ram(&self) -> &Arc<HostRam> {
        &self.ram
    }

    /// The number of kernel mappings this window splits into, at most.
    #[must_use]
    pub fn mappings(&self) -> usize {
        1 + 2 * self.runs
    }

    /// Checks the invariants: the run count matches the table, and the budget holds at least
    /// this window's charge.
    ///
    /// # Panics
    /// On the first broken invariant, naming it.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        let all = 0..self.table.len();
        let runs = if self.table.is_empty() { 0 } else { self.run_starts(&all, &|_, e| e) };
        assert_eq!(runs, self.runs, "run count out of date");
        assert!(self.budget.used() >= 2 * self.runs, "budget charged less than this window's runs");
        for (i, &e) in self.table.iter().enumerate() {
            if let Some(t) = unpack(e) {
                assert!(self.ram.contains(t.frame, FrameCount::new(1)), "page {i} maps a frame outside RAM");
            }
        }
    }

    /// The number of mapped pages.
    #[must_use]
    pub fn mapped_pages(&self) -> usize {
        self.table.iter().filter(|&&e| e & VALID != 0).count()
    }

    fn index_range(&self, page: Page, count: PageCount) -> Result<core::ops::Range<usize>, MapError> {
        let first = page.checked_distance_from(self.window.first_page()).ok_or(MapError::OutOfRange(page))?.get();
        let end =
            first.checked_add(count.get()).filter(|&e| e <= self.table.len()).ok_or(MapError::OutOfRange(page))?;
        Ok(first..end)
    }

    /// The number of run starts among `range` and the page after it, if the entries of
    /// `range` were replaced by `entry(i, old)`. Pure arithmetic: nothing is allocated, so the
    /// fault handler may call it.
    fn run_starts(&self, range: &core::ops::Range<usize>, entry: &impl Fn(usize, u64) -> u64) -> usize {
        let at = |i: usize| if range.contains(&i) { entry(i, self.table[i]) } else { self.table[i] };
        let end = (range.end + 1).min(self.table.len());
        (range.start..end)
            .filter(|&i| {
                let Some(b) = unpack(at(i)) else { return false };
                match i.checked_sub(1).and_then(|p| unpack(at(p))) {
                    Some(a) => {
                        !(b.frame.number() == a.frame.number() + 1 && a.rights == b.rights && a.cache == b.cache)
                    }
                    None => true,
                }
            })
            .count()
    }

    /// Charges the budget for replacing the entries of `range` by `entry(i, old)`, and returns
    /// the change in runs; `OutOfMemory` (nothing charged) when the budget is exhausted.
    fn charge(&self, range: &core::ops::Range<usize>, entry: &impl Fn(usize, u64) -> u64) -> Result<isize, MapError> {
        let before = self.run_starts(range, &|_, e| e);
        let after = self.run_starts(range, entry);
        if after > before && !self.budget.charge(2 * (after - before)) {
            return Err(MapError::OutOfMemory);
        }
        Ok(after as isize - before as isize)
    }

    /// Undoes [`charge`](Self::charge) after a failed syscall.
    fn uncharge(&self, delta: isize) {
        if delta > 0 {
            self.budget.release(2 * delta.unsigned_abs());
        }
    }

    /// Commits the entries and the change in runs.
    fn commit(&mut self, range: core::ops::Range<usize>, entry: &impl Fn(usize, u64) -> u64, delta: isize) {
        for i in range {
            self.table[i] = entry(i, self.table[i]);
        }
        if delta < 0 {
            self.budget.release(2 * delta.unsigned_abs());
        }
        self.runs = self.runs.checked_add_signed(delta).unwrap_or(0);
    }

    fn page_at(&self, index: usize) -> Page {
        self.window.first_page().checked_add(PageCount::new(index)).unwrap_or(self.window.first_page())
    }

    fn addr_of(&self, index: usize) -> *mut core::ffi::c_void {
        (self.window.start().as_usize() + index * PAGE_SIZE) as *mut _
    }
}

impl Mmu for HostMmu {
    fn map(
        &mut self,
        page: Page,
        frame: Frame,
        count: PageCount,
        rights: Rights,
        cache: CacheMode,
    ) -> Result<TlbFlush, MapError> {
        let range = self.index_range(page, count)?;
        if !self.ram.contains(frame, FrameCount::new(count.get() as u64)) {
            return Err(MapError::InvalidFrame(frame));
        }
        if let Some(i) = range.clone().find(|&i| self.table[i] & VALID != 0) {
            return Err(MapError::AlreadyMapped(self.page_at(i)));
        }
        if range.is_empty() {
            return Ok(TlbFlush::new(page, count));
        }
        let first = range.start;
        let entry = move |i: usize, _| {
            pack(Translation { frame: Frame::from_number(frame.number() + (i - first) as u64), rights, cache })
        };
        let delta = self.charge(&range, &entry)?;
        // SAFETY: the range lies inside this window (index_range checked it), which is the
        // runtime's reservation, and no Rust reference points into window memory.
        let mapped = unsafe {
            sys::map_fixed(
                self.addr_of(first),
                range.len() * PAGE_SIZE,
                prot_of(rights),
                self.ram.fd(),
                frame.start_address().as_u64(),
                self.populate.applies(range.len()),
            )
        };
        if mapped.is_err() {
            self.uncharge(delta);
            return Err(MapError::OutOfMemory);
        }
        self.commit(range, &entry, delta);
        Ok(TlbFlush::new(page, count))
    }

    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        let range = self.index_range(page, count)?;
        let Some(first_mapped) = range.clone().find(|&i| self.table[i] & VALID != 0) else {
            return Ok(TlbFlush::new(page, count));
        };
        let last_mapped = range.clone().rev().find(|&i| self.table[i] & VALID != 0).unwrap_or(first_mapped);
        let entry = |_, _| 0;
        let delta = self.charge(&range, &entry)?;
        // SAFETY: inside this window (checked), the runtime's reservation, unreferenced.
        let done =
            unsafe { sys::unmap_to_reserved(self.addr_of(first_mapped), (last_mapped + 1 - first_mapped) * PAGE_SIZE) };
        if done.is_err() {
            self.uncharge(delta);
            return Err(MapError::OutOfMemory);
        }
        self.commit(range, &entry, delta);
        Ok(TlbFlush::new(page, count))
    }

    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        let range = self.index_range(page, count)?;
        let entry = move |_, e: u64| match unpack(e) {
            Some(t) => pack(Translation { rights, ..t }),
            None => e,
        };
        let delta = self.charge(&range, &entry)?;
        // mprotect each maximal stretch of mapped pages (an unmapped page must stay PROT_NONE).
        let mut i = range.start;
        while i < range.end {
            if self.table[i] & VALID == 0 {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < range.end && self.table[j] & VALID != 0 {
                j += 1;
            }
            // SAFETY: pages i..j are mapped pages inside this window (checked), unreferenced.
            let done = unsafe { sys::protect(self.addr_of(i), (j - i) * PAGE_SIZE, mprotect_of(rights)) };
            if done.is_err() {
                self.restore_rights(range.start..i);
                self.uncharge(delta);
                return Err(MapError::OutOfMemory);
            }
            i = j;
        }
        self.commit(range, &entry, delta);
        Ok(TlbFlush::new(page, count))
    }

    fn translate(&self, page: Page) -> Option<Translation> {
        let i = page.checked_distance_from(self.window.first_page())?.get();
        self.table.get(i).copied().and_then(unpack)
    }

    fn flush(&self, _start: Page, _count: PageCount) {}
}

impl HostMmu {
    /// Puts back the rights the table records for the mapped pages of `range` (after a
    /// partly failed `protect`).
    fn restore_rights(&self, range: core::ops::Range<usize>) {
        for i in range {
            if let Some(t) = unpack(self.table[i]) {
                // SAFETY: page i is a mapped page of this window, unreferenced.
                let _ = unsafe { sys::protect(self.addr_of(i), PAGE_SIZE, mprotect_of(t.rights)) };
            }
        }
    }
}
