//! One address space used by every CPU at once: concurrent faults, a detach and a
//! copy-on-write break while other CPUs access the pages, and what each costs in TLB
//! shootdowns.
//!
//! The space lives in a [`SpaceSet`](memkit_spaces::SpaceSet) behind one lock
//! ([`SHARED`]); every CPU resolves its page faults through [`LockedPager`], which takes that
//! lock. The lock structure is deliberately simple: one lock per set, held for one fault
//! resolution or one operation; a CPU spinning on it takes interrupts, so it answers the
//! shootdown of the CPU that holds it.
//!
//! # Unsafe
//! Loads and stores through the probes, into pages of the shared space's regions, which no
//! Rust object occupies.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_phys::DEFAULT_POOL;
use memkit_region::{AttachRequest, DetachFlags, Mmu};
use memkit_spaces::SpaceId;
use memkit_types::{Access, Frame, FrameSource, PAGE_SIZE, Page, Rights, VirtAddr};

use super::fail;
use crate::frames::KernelFrames;
use crate::interrupts::{self, PageFaultHandler};
use crate::phys_window::KernelPhysMemory;
use crate::serial::println;
use crate::smp::{self, FLUSHES};
use crate::space::{Spaces, WINDOW_START, new_tables, with_space_active};
use crate::testing::{Runner, TestResult, check, check_eq};

const CLIENT: ClientId = ClientId::new(2, 0);
const PAGE: usize = PAGE_SIZE;
/// Pages each CPU touches on its own in the "different pages" test.
const OWN_PAGES: usize = 32;

/// The shared space: the set, the space's id, its root and the kernel's root.
struct Shared {
    set: Spaces,
    id: SpaceId,
    root: Frame,
    kernel_root: Frame,
}

static SHARED: spin::Mutex<Option<Shared>> = spin::Mutex::new(None);
/// Where the job works: the region's start.
static BASE: AtomicU64 = AtomicU64::new(0);
/// The dataspace the job works on.
static DATASPACE: spin::Mutex<Option<DataspaceId>> = spin::Mutex::new(None);
/// CPUs that reached the meeting point of the current job.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Set by CPU 0 once its operation returned.
static DONE: AtomicBool = AtomicBool::new(false);
/// Accesses that saw memory they must not have seen, and other failures, in any job.
static WRONG: AtomicUsize = AtomicUsize::new(0);

/// Resolves this CPU's faults in the shared space, under the set's lock.
struct LockedPager;

impl PageFaultHandler for LockedPager {
    fn page_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        let mut shared = SHARED.lock();
        let Some(shared) = shared.as_mut() else { return false };
        shared.set.resolve(shared.id, addr, access).is_ok()
    }
}

/// Runs `body` on this CPU with the shared space active and its faults resolved.
fn in_space<R>(body: impl FnOnce() -> R) -> R {
    let (root, kernel_root) = {
        let shared = SHARED.lock();
        let shared = shared.as_ref().expect("the shared space exists");
        (shared.root, shared.kernel_root)
    };
    with_space_active(root, kernel_root, || interrupts::with_fault_handler(&mut LockedPager, body))
}

/// Waits until every online CPU has called it for this round.
fn meet(round: usize) {
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    while ARRIVED.load(Ordering::SeqCst) < round * smp::online() {
        core::hint::spin_loop();
    }
}

fn addr(at: u64) -> VirtAddr {
    VirtAddr::new(at as usize)
}

/// What a reader on another CPU makes of one access while CPU 0 changes the page.
enum Seen {
    /// What the page showed before the change: go on.
    Before,
    /// What it must show after the change: done.
    After,
    /// What it must never show (counted in [`WRONG`]): done.
    Wrong,
}

/// Accesses a page in a loop (`access`) until `judge` sees the change, counting what must
/// not be seen. `judge` takes the access's outcome and whether CPU 0's operation had
/// returned ([`DONE`]) before the access began: any outcome from before the change after
/// that is a stale translation, one the shootdown did not reach.
fn watch<T>(mut access: impl FnMut() -> T, judge: impl Fn(T, bool) -> Seen) {
    loop {
        let after = DONE.load(Ordering::SeqCst);
        match judge(access(), after) {
            Seen::Before => {}
            Seen::After => break,
            Seen::Wrong => {
                WRONG.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// The tests of one space used by every CPU at once.
pub(crate) fn concurrent(runner: &mut Runner, frames: &'static KernelFrames, kernel_root: Frame) {
    runner
        .run("smp::faults_on_one_page_from_every_cpu_resolve_once", || with_shared(frames, kernel_root, 4, same_page));
    runner.run("smp::faults_on_different_pages_from_every_cpu", || {
        with_shared(frames, kernel_root, OWN_PAGES * smp::online(), different_pages)
    });
    runner.run("smp::after_a_detach_returns_no_cpu_reaches_the_pages", || {
        with_shared(frames, kernel_root, 1, detach_while_reading)
    });
    runner.run("smp::after_a_copy_on_write_break_no_cpu_reads_the_old_frame", || {
        with_shared(frames, kernel_root, 1, cow_break_while_reading)
    });
    runner.run("smp::shootdown_counts_for_detaching_1_32_and_1024_pages", || shootdown_counts(frames, kernel_root));
    runner.run("smp::after_a_partial_detach_of_a_2mib_entry_no_cpu_reaches_the_page", || {
        with_shared(frames, kernel_root, 1, large_detach_while_reading)
    });
    for op in [Across::CowCopy, Across::Protect, Across::Shrink] {
        runner.run(op.test_name(), || across_regions_counts(frames, kernel_root, op));
    }
}

/// Builds the shared space with one read-write dataspace of `pages` attached, runs `test`,
/// and tears everything down: every frame back.
fn with_shared(
    frames: &'static KernelFrames,
    kernel_root: Frame,
    pages: usize,
    test: impl FnOnce(DataspaceId) -> TestResult,
) -> TestResult {
    let free_before = frames.free_frames();
    let mut manager = Manager::new(Config::new(64 << 20), KernelPhysMemory);
    manager.set_pool(PoolId::DEFAULT, frames.pool(DEFAULT_POOL));
    let mut set = Spaces::new(manager);
    let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("no frame for the space's root"))?;
    let root = mmu.root();
    let id = set.add_space(map, mmu);
    let ds = set
        .manager_mut()
        .mem_open(FactoryId::ROOT, CLIENT, (pages * PAGE) as u64, 12, DmFlags::empty(), "shared")
        .map_err(|_| fail("mem_open"))?;
    let request = AttachRequest::new(ds, pages * PAGE, Rights::RW).search(VirtAddr::new(WINDOW_START));
    let start = set.attach(id, &request).map_err(|_| fail("attach"))?;
    BASE.store(start.as_u64(), Ordering::SeqCst);
    *DATASPACE.lock() = Some(ds);
    *SHARED.lock() = Some(Shared { set, id, root, kernel_root });
    WRONG.store(0, Ordering::SeqCst);
    ARRIVED.store(0, Ordering::SeqCst);
    DONE.store(false, Ordering::SeqCst);
    let result = test(ds);
    let Some(mut shared) = SHARED.lock().take() else { return Err(fail("the shared space is gone")) };
    shared.set.check_invariants();
    let regions = shared.set.space(id).expect("the space").map.regions();
    for region in regions {
        check!(shared.set.detach(id, region.start, region.size, DetachFlags::empty()).is_ok());
    }
    check!(shared.set.manager_mut().close_all(CLIENT, CLIENT, DmFlags::empty()).is_ok());
    shared.set.check_invariants();
    drop(shared);
    result?;
    check_eq!(WRONG.load(Ordering::SeqCst), 0);
    check_eq!(frames.free_frames(), free_before);
    Ok(())
}

/// Every CPU stores its mark into its own byte of one fresh page at the same moment: one
/// fault wins, the others find the page mapped; no store is lost and the page has one frame.
fn same_page(ds: DataspaceId) -> TestResult {
    smp::run_on_all(
        |cpu, _| {
            in_space(|| {
                meet(1);
                let at = addr(BASE.load(Ordering::SeqCst) + cpu as u64 * 64);
                if interrupts::probe_write(at, cpu as u8 + 1).is_err() {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
            });
        },
        0,
    );
    let base = BASE.load(Ordering::SeqCst);
    let marks = in_space(|| {
        let mut marks = [0u8; smp::MAX_CPUS];
        for (cpu, mark) in marks.iter_mut().enumerate().take(smp::online()) {
            *mark = interrupts::probe_read(addr(base + cpu as u64 * 64)).unwrap_or(0);
        }
        marks
    });
    for (cpu, &mark) in marks.iter().enumerate().take(smp::online()) {
        check_eq!(mark, cpu as u8 + 1);
    }
    let shared = SHARED.lock();
    let shared = shared.as_ref().ok_or(fail("shared"))?;
    check_eq!(shared.set.manager().frames_held(PoolId::DEFAULT), 1);
    let page = Page::containing_address(addr(base));
    check!(shared.set.space(shared.id).ok_or(fail("space"))?.mmu.translate(page).is_some());
    let _ = ds;
    Ok(())
}

/// Each CPU faults in its own pages while the others fault in theirs; every page keeps
/// its CPU's marks.
fn different_pages(_: DataspaceId) -> TestResult {
    smp::run_on_all(
        |cpu, _| {
            in_space(|| {
                meet(1);
                let base = BASE.load(Ordering::SeqCst) + (cpu * OWN_PAGES * PAGE) as u64;
                for i in 0..OWN_PAGES {
                    let at = addr(base + (i * PAGE + i) as u64);
                    if interrupts::probe_write(at, (cpu * 40 + i) as u8).is_err() {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                }
                for i in 0..OWN_PAGES {
                    let at = addr(base + (i * PAGE + i) as u64);
                    if interrupts::probe_read(at) != Ok((cpu * 40 + i) as u8) {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        },
        0,
    );
    let shared = SHARED.lock();
    let shared = shared.as_ref().ok_or(fail("shared"))?;
    check_eq!(shared.set.manager().frames_held(PoolId::DEFAULT), (OWN_PAGES * smp::online()) as u64);
    Ok(())
}

/// The other CPUs read the page in a loop, so their TLBs hold its translation; CPU 0
/// detaches it. Once the detach has returned, every read must fault (and be refused).
fn detach_while_reading(_: DataspaceId) -> TestResult {
    let base = BASE.load(Ordering::SeqCst);
    if in_space(|| interrupts::probe_write(addr(base), 0x77)).is_err() {
        return Err(fail("the page is written before the readers start"));
    }
    smp::run_on_all(
        |cpu, _| {
            let base = BASE.load(Ordering::SeqCst);
            if cpu == 0 {
                meet(1);
                let mut shared = SHARED.lock();
                let shared = shared.as_mut().expect("the shared space");
                let detached = shared.set.detach(shared.id, addr(base), PAGE, DetachFlags::empty());
                if detached.is_err() {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                DONE.store(true, Ordering::SeqCst);
                return;
            }
            in_space(|| {
                if interrupts::probe_read(addr(base)) != Ok(0x77) {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                meet(1);
                // After the detach every read faults and is refused.
                watch(
                    || interrupts::probe_read(addr(base)),
                    |read, after| match read {
                        Err(_) => Seen::After,
                        Ok(_) if after => Seen::Wrong,
                        Ok(_) => Seen::Before,
                    },
                );
            });
        },
        0,
    );
    Ok(())
}

/// The other CPUs read the page of the dataspace in a loop; CPU 0 makes a copy-on-write
/// copy (write-protecting the page) and writes to the page, breaking the copy: the page gets
/// a new frame, the old one stays with the copy. Once the write has returned, every read
/// must see the new byte.
fn cow_break_while_reading(ds: DataspaceId) -> TestResult {
    let base = BASE.load(Ordering::SeqCst);
    if in_space(|| interrupts::probe_write(addr(base), 0x11)).is_err() {
        return Err(fail("the page is written before the readers start"));
    }
    smp::run_on_all(
        |cpu, _| {
            let base = BASE.load(Ordering::SeqCst);
            if cpu == 0 {
                meet(1);
                {
                    let mut shared = SHARED.lock();
                    let shared = shared.as_mut().expect("the shared space");
                    let ds = DATASPACE.lock().expect("the shared dataspace");
                    if shared.set.copy_on_write(CLIENT, ds, "copy").is_err() {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // The write faults (write-protected), breaks the copy under the lock, and
                // stores into the page's new frame.
                if in_space(|| interrupts::probe_write(addr(base), 0x22)).is_err() {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                DONE.store(true, Ordering::SeqCst);
                return;
            }
            in_space(|| {
                meet(1);
                // After the break every read sees the new byte.
                watch(
                    || interrupts::probe_read(addr(base)),
                    |read, after| match read {
                        Ok(0x22) => Seen::After,
                        Ok(0x11) if !after => Seen::Before,
                        _ => Seen::Wrong,
                    },
                );
            });
        },
        0,
    );
    let shared = SHARED.lock();
    let shared = shared.as_ref().ok_or(fail("shared"))?;
    check_eq!(shared.set.cow_breaks(), 1);
    let _ = ds;
    Ok(())
}

/// The space is active on every other CPU (each reads every page once, then waits) while
/// CPU 0 detaches 1, 32 and 1 024 pages: one round of IPIs each, to every other CPU (none on
/// one CPU); single
/// pages flushed one by one up to 32, the whole TLB beyond.
fn shootdown_counts(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    for pages in [1usize, 32, 1024] {
        let [rounds, ipis, single, full] = detach_shootdown(frames, kernel_root, pages)?;
        println!(
            "shootdown: detach of {pages} pages with {} CPUs: {rounds} rounds, {ipis} IPIs, {single} pages flushed one by one, {full} full flushes",
            smp::online()
        );
        // One round to every other CPU; none when this is the only one.
        let others = (smp::online() - 1) as u64;
        check_eq!(rounds, u64::from(others > 0));
        check_eq!(ipis, others);
        if pages as u64 >= smp::FULL_FLUSH_PAGES {
            check_eq!(single, 0);
            check_eq!(full, smp::online() as u64);
        } else {
            check_eq!(single, (pages * smp::online()) as u64);
            check_eq!(full, 0);
        }
    }
    Ok(())
}

/// What one detach of `pages` pages costs in TLB maintenance while the space is active on
/// every other CPU, each having read every page: `[rounds, IPIs, pages flushed one by one,
/// full flushes]`, summed over all CPUs. A fresh space each time.
///
/// # Errors
/// When the space cannot be built or torn down, or an access went wrong.
pub(crate) fn detach_shootdown(
    frames: &'static KernelFrames,
    kernel_root: Frame,
    pages: usize,
) -> Result<[u64; 4], crate::testing::Failure> {
    let test = |_: DataspaceId| -> TestResult {
        smp::run_on_all(
            |cpu, pages| {
                if cpu == 0 {
                    meet(1);
                    let before = FLUSHES.snapshot();
                    let base = BASE.load(Ordering::SeqCst);
                    let mut shared = SHARED.lock();
                    let shared = shared.as_mut().expect("the shared space");
                    if shared.set.detach(shared.id, addr(base), pages * PAGE, DetachFlags::empty()).is_err() {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                    let after = FLUSHES.snapshot();
                    for (i, slot) in COUNTS.iter().enumerate() {
                        slot.store(after[i] - before[i], Ordering::SeqCst);
                    }
                    DONE.store(true, Ordering::SeqCst);
                    return;
                }
                in_space(|| {
                    let base = BASE.load(Ordering::SeqCst);
                    for i in 0..pages {
                        let _ = interrupts::probe_read(addr(base + (i * PAGE) as u64));
                    }
                    meet(1);
                    while !DONE.load(Ordering::SeqCst) {
                        core::hint::spin_loop();
                    }
                });
            },
            pages,
        );
        Ok(())
    };
    with_shared(frames, kernel_root, pages, test)?;
    Ok(core::array::from_fn(|i| COUNTS[i].load(Ordering::SeqCst)))
}

static COUNTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// A superpage block mapped with one 2 MiB entry that every other CPU reads; CPU 0 detaches
/// one page of it, which splits the entry. Once the detach has returned, a read of that page
/// must fault (and be refused), while the pages around it still read their bytes.
fn large_detach_while_reading(_: DataspaceId) -> TestResult {
    const BLOCK: usize = memkit_types::SUPERPAGE_SIZE;
    let start = {
        let mut shared = SHARED.lock();
        let shared = shared.as_mut().ok_or(fail("shared"))?;
        let ds = shared
            .set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, BLOCK as u64, 21, DmFlags::SUPERPAGES, "superpages")
            .map_err(|_| fail("mem_open of superpages"))?;
        let request = AttachRequest::new(ds, BLOCK, Rights::RW).search(VirtAddr::new(WINDOW_START)).align(21);
        shared.set.attach(shared.id, &request).map_err(|_| fail("attach"))?
    };
    BASE.store(start.as_u64(), Ordering::SeqCst);
    let marks = in_space(|| {
        (0..512).try_for_each(|i| interrupts::probe_write(addr(start.as_u64() + (i * PAGE) as u64), i as u8))
    });
    check!(marks.is_ok());
    {
        let shared = SHARED.lock();
        let shared = shared.as_ref().ok_or(fail("shared"))?;
        let entry =
            shared.set.space(shared.id).ok_or(fail("space"))?.mmu.translate_entry(Page::containing_address(start));
        check!(entry.is_some_and(|(_, size)| size == memkit_region::EntrySize::Large));
    }
    smp::run_on_all(
        |cpu, _| {
            let base = BASE.load(Ordering::SeqCst);
            let gone = base + (100 * PAGE) as u64;
            if cpu == 0 {
                meet(1);
                let mut shared = SHARED.lock();
                let shared = shared.as_mut().expect("the shared space");
                if shared.set.detach(shared.id, addr(gone), PAGE, DetachFlags::empty()).is_err() {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                DONE.store(true, Ordering::SeqCst);
                return;
            }
            in_space(|| {
                if interrupts::probe_read(addr(gone)) != Ok(100) {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                meet(1);
                loop {
                    let after = DONE.load(Ordering::SeqCst);
                    match interrupts::probe_read(addr(gone)) {
                        Ok(_) if after => {
                            // A stale 2 MiB translation: the shootdown did not reach this CPU.
                            WRONG.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                for i in [0u64, 99, 101, 511] {
                    if interrupts::probe_read(addr(base + i * PAGE as u64)) != Ok(i as u8) {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        },
        0,
    );
    Ok(())
}

/// Regions the operations of [`Across`] change at once.
pub(crate) const REGIONS: usize = 8;

/// An operation that changes the mappings of [`REGIONS`] regions of the shared space at
/// once, each region showing one page of the dataspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Across {
    /// A copy-on-write copy of the dataspace: every page write-protected.
    CowCopy,
    /// A protect of the whole range to read-only.
    Protect,
    /// A shrink of the dataspace to one page: the pages of the other regions unmapped and
    /// their frames freed.
    Shrink,
}

impl Across {
    /// The row's name in the bench table.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Across::CowCopy => "copy-on-write copy",
            Across::Protect => "protect to read-only",
            Across::Shrink => "shrink to one page",
        }
    }

    const fn test_name(self) -> &'static str {
        match self {
            Across::CowCopy => "smp::a_cow_copy_across_8_regions_costs_one_round_and_leaves_no_writable_entry",
            Across::Protect => "smp::a_protect_across_8_regions_costs_one_round_and_leaves_no_writable_entry",
            Across::Shrink => "smp::a_shrink_across_7_regions_costs_one_round_and_leaves_no_entry",
        }
    }

    fn from_arg(arg: usize) -> Self {
        match arg {
            0 => Across::CowCopy,
            1 => Across::Protect,
            _ => Across::Shrink,
        }
    }

    /// The pages it takes rights from.
    const fn pages(self) -> usize {
        match self {
            Across::CowCopy | Across::Protect => REGIONS,
            Across::Shrink => REGIONS - 1,
        }
    }

    /// Whether another CPU's write to region `i` goes through afterwards: through a fault
    /// that breaks the copy after a copy-on-write copy, not after a protect, and only in
    /// the page a shrink keeps.
    const fn writable_after(self, i: usize) -> bool {
        match self {
            Across::CowCopy => true,
            Across::Protect => false,
            Across::Shrink => i == 0,
        }
    }

    const fn arg(self) -> usize {
        match self {
            Across::CowCopy => 0,
            Across::Protect => 1,
            Across::Shrink => 2,
        }
    }
}

/// The copy [`Across::CowCopy`] made.
static COPY: spin::Mutex<Option<DataspaceId>> = spin::Mutex::new(None);

/// One operation across [`REGIONS`] regions (7 for the shrink) costs one round of IPIs to
/// every other CPU (none on one CPU), and its pages are flushed one by one on every CPU.
fn across_regions_counts(frames: &'static KernelFrames, kernel_root: Frame, op: Across) -> TestResult {
    let [rounds, ipis, single, full] = across_regions_shootdown(frames, kernel_root, op)?;
    println!(
        "shootdown: {} across {REGIONS} regions with {} CPUs: {rounds} rounds, {ipis} IPIs, {single} pages flushed one by one, {full} full flushes",
        op.name(),
        smp::online()
    );
    let others = (smp::online() - 1) as u64;
    check_eq!(rounds, u64::from(others > 0));
    check_eq!(ipis, others);
    check_eq!(single, (op.pages() * smp::online()) as u64);
    check_eq!(full, 0);
    Ok(())
}

/// What one [`Across`] operation costs in TLB maintenance while the space is active on
/// every other CPU, each having written every page (so its TLB holds writable entries):
/// `[rounds, IPIs, pages flushed one by one, full flushes]`. After the operation has
/// returned, every other CPU writes every page again: a copy-on-write copy's writes break
/// the copy (and the copy keeps the old bytes), a protect's are refused, a shrink's find
/// nothing past the page kept. A write through a stale entry would show as a write that
/// succeeded or as a changed byte in the copy.
///
/// # Errors
/// When the space cannot be built or torn down, or an access went wrong.
pub(crate) fn across_regions_shootdown(
    frames: &'static KernelFrames,
    kernel_root: Frame,
    op: Across,
) -> Result<[u64; 4], crate::testing::Failure> {
    let test = |ds: DataspaceId| -> TestResult {
        *COPY.lock() = None;
        let base = BASE.load(Ordering::SeqCst);
        {
            // The one region of the dataspace becomes REGIONS regions of one page each.
            let mut shared = SHARED.lock();
            let shared = shared.as_mut().ok_or(fail("shared"))?;
            let id = shared.id;
            check!(shared.set.detach(id, addr(base), REGIONS * PAGE, DetachFlags::empty()).is_ok());
            for i in 0..REGIONS {
                let at = addr(base + (i * PAGE) as u64);
                let request = AttachRequest::new(ds, PAGE, Rights::RW).offset((i * PAGE) as u64).at(at);
                check!(shared.set.attach(id, &request).is_ok());
            }
            check_eq!(shared.set.attachments(ds), REGIONS as u32);
        }
        smp::run_on_all(across_job, op.arg());
        let mut shared = SHARED.lock();
        let shared = shared.as_mut().ok_or(fail("shared"))?;
        if op == Across::CowCopy {
            // The copy keeps the bytes from before: no write reached a shared frame.
            let copy = COPY.lock().ok_or(fail("no copy"))?;
            for i in 0..REGIONS {
                let mut bytes = [0u8; smp::MAX_CPUS];
                check!(shared.set.manager_mut().read(copy, (i * PAGE) as u64, &mut bytes).is_ok());
                check!(bytes.iter().take(smp::online()).all(|&b| b == 0x11));
            }
        }
        Ok(())
    };
    with_shared(frames, kernel_root, REGIONS, test)?;
    Ok(core::array::from_fn(|i| COUNTS[i].load(Ordering::SeqCst)))
}

/// The job of [`across_regions_shootdown`] on every CPU.
fn across_job(cpu: usize, arg: usize) {
    let op = Across::from_arg(arg);
    let base = BASE.load(Ordering::SeqCst);
    let page = |i: usize| addr(base + (i * PAGE + cpu) as u64);
    if cpu == 0 {
        in_space(|| {
            for i in 0..REGIONS {
                for c in 0..smp::online() {
                    if interrupts::probe_write(addr(base + (i * PAGE + c) as u64), 0x11).is_err() {
                        WRONG.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        meet(1);
        // Every other CPU has written every page.
        meet(2);
        let before = FLUSHES.snapshot();
        {
            let mut shared = SHARED.lock();
            let shared = shared.as_mut().expect("the shared space");
            let ds = DATASPACE.lock().expect("the shared dataspace");
            let done = match op {
                Across::CowCopy => shared.set.copy_on_write(CLIENT, ds, "copy").map(|c| *COPY.lock() = Some(c)).is_ok(),
                Across::Protect => {
                    let id = shared.id;
                    shared.set.protect(id, addr(base), REGIONS * PAGE, Rights::READ).is_ok()
                }
                Across::Shrink => {
                    let (manager, mut revoker) = shared.set.manager_and_revoker();
                    manager.resize(CLIENT, ds, PAGE as u64, &mut revoker).is_ok()
                }
            };
            if !done {
                WRONG.fetch_add(1, Ordering::SeqCst);
            }
        }
        let after = FLUSHES.snapshot();
        for (i, slot) in COUNTS.iter().enumerate() {
            slot.store(after[i] - before[i], Ordering::SeqCst);
        }
        DONE.store(true, Ordering::SeqCst);
        return;
    }
    in_space(|| {
        meet(1);
        // CPU 0 wrote every page; this CPU writes its byte of each, so its TLB holds a
        // writable entry for each.
        for i in 0..REGIONS {
            if interrupts::probe_write(page(i), 0x11).is_err() {
                WRONG.fetch_add(1, Ordering::SeqCst);
            }
        }
        meet(2);
        while !DONE.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        for i in 0..REGIONS {
            if interrupts::probe_write(page(i), 0x22).is_ok() != op.writable_after(i) {
                WRONG.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
}

/// Pages each CPU faults in for [`fault_rate`].
pub(crate) const FAULT_PAGES: usize = 64;
/// CPUs that fault in [`fault_rate`]'s job; the others only meet.
static FAULTING: AtomicUsize = AtomicUsize::new(0);
/// The cycles [`fault_rate`]'s faults took, from the first meeting to the second.
static FAULT_CYCLES: AtomicU64 = AtomicU64::new(0);

/// Faults per million TSC cycles when `cpus` CPUs at once each write one byte into each
/// of [`FAULT_PAGES`] fresh pages of their own, in one space and under the set's one lock,
/// and the shootdown rounds those faults cost.
///
/// # Errors
/// When the space cannot be built or torn down, or a fault was refused.
pub(crate) fn fault_rate(
    frames: &'static KernelFrames,
    kernel_root: Frame,
    cpus: usize,
) -> Result<(f64, u64), crate::testing::Failure> {
    FAULTING.store(cpus, Ordering::SeqCst);
    let test = |_: DataspaceId| -> TestResult {
        smp::run_on_all(
            |cpu, _| {
                in_space(|| {
                    meet(1);
                    let start = crate::bench::cycles();
                    if cpu < FAULTING.load(Ordering::SeqCst) {
                        let base = BASE.load(Ordering::SeqCst) + (cpu * FAULT_PAGES * PAGE) as u64;
                        for i in 0..FAULT_PAGES {
                            if interrupts::probe_write(addr(base + (i * PAGE) as u64), 1).is_err() {
                                WRONG.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    meet(2);
                    if cpu == 0 {
                        FAULT_CYCLES.store(crate::bench::cycles() - start, Ordering::SeqCst);
                    }
                });
            },
            0,
        );
        Ok(())
    };
    let before = FLUSHES.snapshot();
    with_shared(frames, kernel_root, FAULT_PAGES * smp::online(), test)?;
    let rounds = FLUSHES.snapshot()[0] - before[0];
    let faults = (cpus * FAULT_PAGES) as f64;
    Ok((faults * 1e6 / FAULT_CYCLES.load(Ordering::SeqCst).max(1) as f64, rounds))
}
