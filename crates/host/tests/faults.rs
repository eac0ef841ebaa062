//! Real page faults in host windows, resolved by a simple table resolver: demand-zero pages,
//! sharing between two spaces, copy-on-write isolation, concurrent faults, and the faults
//! that must still end the process (in child processes).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memkit_host::access::{fetch_add_u64, load_u8, store_u8};
use memkit_host::{HostMmu, HostRam, HostSpace, MappingBudget, Populate, SpaceState, Window};
use memkit_region::{MapError, Mmu};
use memkit_types::{Access, CacheMode, Frame, FrameCount, PAGE_SIZE, Page, PageCount, PhysMemory, Rights, VirtAddr};

/// A frame source for the tests: a bump allocator over the RAM.
#[derive(Debug, Default)]
struct Bump(AtomicU64);

impl Bump {
    fn next(&self) -> Frame {
        Frame::from_number(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Backing of one page of a space.
#[derive(Debug, Clone, Copy)]
enum Backing {
    /// Nothing: an access outside every region.
    None,
    /// A frame allocated on first touch, zero-filled.
    DemandZero(Rights),
    /// This frame, shared.
    Shared(Frame, Rights),
    /// A private copy of this frame, made on the first write; reads share it read-only.
    CopyOnWrite(Frame),
}

/// A toy region map: one backing per page of the window.
#[derive(Debug)]
struct Table {
    mmu: HostMmu,
    pages: Vec<Backing>,
    frames: Arc<Bump>,
}

impl SpaceState for Table {
    fn resolve_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        let page = Page::containing_address(addr);
        let Some(i) = page.checked_distance_from(self.mmu.window().first_page()).map(|c| c.get()) else {
            return false;
        };
        let Some(&backing) = self.pages.get(i) else { return false };
        if let Some(t) = self.mmu.translate(page) {
            if t.rights.allows(access) {
                return true; // another thread resolved it meanwhile
            }
            if let (Backing::CopyOnWrite(src), Access::Write) = (backing, access) {
                let copy = self.frames.next();
                self.mmu.ram().copy(src, copy, FrameCount::new(1));
                self.mmu.unmap(page, PageCount::new(1)).unwrap().ignore();
                self.mmu.map(page, copy, PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
                self.pages[i] = Backing::Shared(copy, Rights::RW);
                return true;
            }
            return false;
        }
        let (frame, rights) = match backing {
            Backing::None => return false,
            Backing::DemandZero(r) => {
                let f = self.frames.next();
                self.mmu.ram().zero(f, FrameCount::new(1));
                self.pages[i] = Backing::Shared(f, r);
                (f, r)
            }
            Backing::Shared(f, r) => (f, r),
            Backing::CopyOnWrite(f) if access == Access::Write => {
                let copy = self.frames.next();
                self.mmu.ram().copy(f, copy, FrameCount::new(1));
                self.pages[i] = Backing::Shared(copy, Rights::RW);
                (copy, Rights::RW)
            }
            Backing::CopyOnWrite(f) => (f, Rights::READ),
        };
        if !rights.allows(access) {
            return false;
        }
        self.mmu.map(page, frame, PageCount::new(1), rights, CacheMode::WriteBack).is_ok_and(|f| {
            f.ignore();
            true
        })
    }
}

fn space(ram: &Arc<HostRam>, frames: &Arc<Bump>, pages: Vec<Backing>) -> HostSpace<Table> {
    let window = Window::new(pages.len() * PAGE_SIZE).unwrap();
    let start = window.start();
    let len = window.len();
    let mmu = HostMmu::new(window, Arc::clone(ram));
    HostSpace::new(start, len, Table { mmu, pages, frames: Arc::clone(frames) }).unwrap()
}

fn setup(frames: u64) -> (Arc<HostRam>, Arc<Bump>) {
    (Arc::new(HostRam::new(frames * PAGE_SIZE as u64).unwrap()), Arc::new(Bump::default()))
}

fn byte(s: &HostSpace<Table>, offset: usize) -> u8 {
    // SAFETY: the offset is inside the space's window (addr checks it).
    unsafe { load_u8(s.addr(offset)) }
}

fn set(s: &HostSpace<Table>, offset: usize, v: u8) {
    // SAFETY: the offset is inside the space's window.
    unsafe { store_u8(s.addr(offset), v) }
}

#[test]
fn demand_zero_pages_read_zero_then_hold_stores() {
    let (ram, frames) = setup(64);
    let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW); 16]);
    for p in 0..16 {
        assert_eq!(byte(&s, p * PAGE_SIZE + 7), 0);
        set(&s, p * PAGE_SIZE + 7, p as u8 + 1);
    }
    for p in 0..16 {
        assert_eq!(byte(&s, p * PAGE_SIZE + 7), p as u8 + 1);
    }
    // The stores reached RAM: find them through the direct map.
    let mapped = s.with(|t| t.mmu.translate(Page::containing_address(s.addr(3 * PAGE_SIZE))).unwrap());
    let mut b = [0u8; 1];
    ram.read(mapped.frame.start_address().checked_add(7).unwrap(), &mut b);
    assert_eq!(b[0], 4);
    assert_eq!(s.with(|t| t.mmu.mapped_pages()), 16);
}

#[test]
fn two_spaces_sharing_frames_see_each_others_stores() {
    let (ram, frames) = setup(64);
    let shared: Vec<Backing> = (0..4).map(|_| Backing::Shared(frames.next(), Rights::RW)).collect();
    let a = space(&ram, &frames, shared.clone());
    let b = space(&ram, &frames, shared);
    set(&a, 100, 0xaa);
    assert_eq!(byte(&b, 100), 0xaa);
    set(&b, 3 * PAGE_SIZE + 5, 0x55);
    assert_eq!(byte(&a, 3 * PAGE_SIZE + 5), 0x55);
}

#[test]
fn copy_on_write_copy_stays_isolated_while_both_write() {
    let (ram, frames) = setup(64);
    let original: Vec<Frame> = (0..4).map(|_| frames.next()).collect();
    let a = space(&ram, &frames, original.iter().map(|&f| Backing::Shared(f, Rights::RW)).collect());
    for p in 0..4 {
        set(&a, p * PAGE_SIZE, 10 + p as u8);
    }
    // The copy shares the frames read-only until it writes. (The original's later stores
    // must not show through: the toy copies eagerly for pages the original will write.)
    let b = space(&ram, &frames, original.iter().map(|&f| Backing::CopyOnWrite(f)).collect());
    assert_eq!(byte(&b, 2 * PAGE_SIZE), 12);
    set(&b, 2 * PAGE_SIZE, 99); // breaks COW on a page it had mapped read-only
    set(&b, 3 * PAGE_SIZE, 77); // breaks COW on first touch
    set(&a, 2 * PAGE_SIZE, 42);
    assert_eq!(byte(&a, 2 * PAGE_SIZE), 42);
    assert_eq!(byte(&b, 2 * PAGE_SIZE), 99);
    assert_eq!(byte(&a, 3 * PAGE_SIZE), 13);
    assert_eq!(byte(&b, 3 * PAGE_SIZE), 77);
    assert_eq!(byte(&b, 0), 10);
}

#[test]
fn threads_faulting_on_the_same_pages_lose_no_write() {
    const PAGES: usize = 64;
    const THREADS: usize = 4;
    let (ram, frames) = setup(256);
    let s = Arc::new(space(&ram, &frames, vec![Backing::DemandZero(Rights::RW); PAGES]));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for round in 0..3 {
                    for p in 0..PAGES {
                        // Every thread stores its own byte and adds to a shared counter.
                        set(&s, p * PAGE_SIZE + 64 + t, (t + round) as u8 + 1);
                        // SAFETY: an aligned address inside the window.
                        unsafe { fetch_add_u64(s.addr(p * PAGE_SIZE), 1) };
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    for p in 0..PAGES {
        // SAFETY: inside the window.
        let count = unsafe { memkit_host::access::load_u64(s.addr(p * PAGE_SIZE)) };
        assert_eq!(count, (THREADS * 3) as u64, "page {p}");
        for t in 0..THREADS {
            assert_eq!(byte(&s, p * PAGE_SIZE + 64 + t), (t + 2) as u8 + 1);
        }
    }
    assert_eq!(s.with(|t| t.mmu.mapped_pages()), PAGES);
}

#[test]
fn contiguous_runs_merge_and_the_budget_fails_cleanly() {
    let (ram, _) = setup(64);
    let budget = Arc::new(MappingBudget::with_limit(6));
    let window = Window::new(32 * PAGE_SIZE).unwrap();
    let first = window.first_page();
    let mut mmu = HostMmu::with_budget(window, Arc::clone(&ram), Arc::clone(&budget));
    let page = |i: usize| first.checked_add(PageCount::new(i)).unwrap();
    // Pages 0..4 then 4..8 on consecutive frames: one run.
    mmu.map(page(0), Frame::from_number(0), PageCount::new(4), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
    mmu.map(page(4), Frame::from_number(4), PageCount::new(4), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
    assert_eq!(mmu.mappings(), 3);
    assert_eq!(budget.used(), 2);
    // Two more separate runs use the budget up.
    mmu.map(page(10), Frame::from_number(20), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
    mmu.map(page(12), Frame::from_number(30), PageCount::new(1), Rights::READ, CacheMode::WriteBack).unwrap().ignore();
    assert_eq!(budget.used(), 6);
    assert_eq!(
        mmu.map(page(20), Frame::from_number(40), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap_err(),
        MapError::OutOfMemory
    );
    // A change that splits a run is refused too, and changes nothing.
    assert_eq!(mmu.protect(page(2), PageCount::new(1), Rights::READ).unwrap_err(), MapError::OutOfMemory);
    assert_eq!(mmu.translate(page(2)).unwrap().rights, Rights::RW);
    assert_eq!(mmu.translate(page(20)), None);
    // Extending a run costs nothing.
    mmu.map(page(8), Frame::from_number(8), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
    assert_eq!(budget.used(), 6);
    assert_eq!(
        mmu.map(page(8), Frame::from_number(9), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap_err(),
        MapError::AlreadyMapped(page(8))
    );
    assert_eq!(
        mmu.map(page(31), Frame::from_number(9), PageCount::new(2), Rights::RW, CacheMode::WriteBack).unwrap_err(),
        MapError::OutOfRange(page(31))
    );
    assert_eq!(
        mmu.map(page(25), Frame::from_number(63), PageCount::new(2), Rights::RW, CacheMode::WriteBack).unwrap_err(),
        MapError::InvalidFrame(Frame::from_number(63))
    );
    // Unmapping gives the budget back.
    mmu.unmap(page(10), PageCount::new(3)).unwrap().ignore();
    assert_eq!(budget.used(), 2);
    mmu.unmap(page(0), PageCount::new(32)).unwrap().ignore();
    assert_eq!(budget.used(), 0);
    assert_eq!(mmu.mapped_pages(), 0);
}

#[test]
fn a_window_of_100k_separate_pages_stops_before_the_kernel_limit() {
    // Every other page on non-consecutive frames: each mapping is its own VMA. The system
    // budget must refuse before the kernel's vm.max_map_count would.
    let pages = 80_000;
    let (ram, _) = setup(pages as u64);
    let window = Window::new(2 * pages * PAGE_SIZE).unwrap();
    let first = window.first_page();
    let budget = Arc::new(budget_like_system());
    let mut mmu = HostMmu::with_budget(window, Arc::clone(&ram), Arc::clone(&budget));
    let mut refused = None;
    for i in 0..pages {
        let page = first.checked_add(PageCount::new(2 * i)).unwrap();
        let frame = Frame::from_number(((i * 7919) % pages) as u64);
        match mmu.map(page, frame, PageCount::new(1), Rights::RW, CacheMode::WriteBack) {
            Ok(f) => f.ignore(),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("the budget must refuse before 80 000 separate mappings");
    assert_eq!(err, MapError::OutOfMemory);
    assert!(at > 10_000, "refused too early, at {at}");
    // The budget refused (not the kernel): it is used up to within one mapping pair.
    assert!(budget.used() + 2 > budget.limit(), "{} of {}", budget.used(), budget.limit());
    // The window still works after the refusal.
    mmu.unmap(first, PageCount::new(2)).unwrap().ignore();
    mmu.map(first, Frame::from_number(0), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
}

fn budget_like_system() -> MappingBudget {
    MappingBudget::with_limit(MappingBudget::system().limit())
}

// ---- faults that must still end the process, in a child process ----

const CHILD: &str = "MEMKIT_HOST_CHILD";

fn run_child(case: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap()
}

fn child_case() -> Option<String> {
    std::env::var(CHILD).ok()
}

fn signal_of(out: &std::process::Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

#[test]
fn write_to_a_read_only_region_ends_the_process_with_sigsegv() {
    if child_case().as_deref() == Some("write_to_a_read_only_region_ends_the_process_with_sigsegv") {
        let (ram, frames) = setup(16);
        let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::READ); 2]);
        assert_eq!(byte(&s, 0), 0); // a read is fine
        eprintln!("reached the store");
        set(&s, 0, 1);
        eprintln!("survived the store");
        std::process::exit(0);
    }
    let out = run_child("write_to_a_read_only_region_ends_the_process_with_sigsegv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reached the store"), "{err}");
    assert!(!err.contains("survived"), "{err}");
    assert_eq!(signal_of(&out), Some(libc::SIGSEGV), "{:?}", out.status);
}

#[test]
fn access_outside_every_region_ends_the_process_with_sigsegv() {
    if child_case().as_deref() == Some("access_outside_every_region_ends_the_process_with_sigsegv") {
        let (ram, frames) = setup(16);
        let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW), Backing::None]);
        set(&s, 0, 1);
        eprintln!("reached the load");
        let v = byte(&s, PAGE_SIZE);
        eprintln!("survived the load: {v}");
        std::process::exit(0);
    }
    let out = run_child("access_outside_every_region_ends_the_process_with_sigsegv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reached the load"), "{err}");
    assert!(!err.contains("survived"), "{err}");
    assert_eq!(signal_of(&out), Some(libc::SIGSEGV), "{:?}", out.status);
}

#[test]
fn a_wild_pointer_outside_every_window_still_ends_with_sigsegv() {
    if child_case().as_deref() == Some("a_wild_pointer_outside_every_window_still_ends_with_sigsegv") {
        let (ram, frames) = setup(16);
        let _s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW); 2]);
        eprintln!("reached the wild store");
        // SAFETY: deliberately not: this child process must die here.
        unsafe { store_u8(VirtAddr::new(0x10), 1) };
        eprintln!("survived");
        std::process::exit(0);
    }
    let out = run_child("a_wild_pointer_outside_every_window_still_ends_with_sigsegv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reached the wild store") && !err.contains("survived"), "{err}");
    assert_eq!(signal_of(&out), Some(libc::SIGSEGV), "{:?}", out.status);
}

#[inline(never)]
fn recurse(depth: u64, sink: &mut [u8; 1024]) -> u64 {
    let mut local = [depth as u8; 1024];
    std::hint::black_box(&mut local);
    sink[0] = sink[0].wrapping_add(local[7]);
    if depth == u64::MAX { 0 } else { recurse(depth + 1, &mut local) + std::hint::black_box(1) }
}

#[test]
fn a_stack_overflow_still_prints_rusts_message() {
    if child_case().as_deref() == Some("a_stack_overflow_still_prints_rusts_message") {
        let (ram, frames) = setup(16);
        let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW); 2]);
        set(&s, 0, 1); // the handler is installed and has resolved a fault
        let t = std::thread::Builder::new()
            .name("overflowing".into())
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut sink = [0u8; 1024];
                recurse(0, &mut sink)
            })
            .unwrap();
        let _ = t.join();
        std::process::exit(0);
    }
    let out = run_child("a_stack_overflow_still_prints_rusts_message");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has overflowed its stack"), "stderr: {err}");
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "{:?}", out.status);
}

#[test]
fn every_populate_mode_maps_the_frames_it_is_given() {
    let ram = Arc::new(HostRam::new(64 * PAGE_SIZE as u64).unwrap());
    for (k, mode) in [Populate::Always, Populate::Runs, Populate::Never].into_iter().enumerate() {
        let window = Window::new(8 * PAGE_SIZE).unwrap();
        let first = window.first_page();
        let mut mmu = HostMmu::new(window, Arc::clone(&ram));
        mmu.set_populate(mode);
        let base = 16 * k as u64;
        for f in 0..5 {
            let frame = Frame::from_number(base + f);
            ram.write(frame.start_address(), &[f as u8 + 1]);
        }
        // A run of four pages and a single page.
        mmu.map(first, Frame::from_number(base), PageCount::new(4), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
        let single = first.checked_add(PageCount::new(6)).unwrap();
        mmu.map(single, Frame::from_number(base + 4), PageCount::new(1), Rights::RW, CacheMode::WriteBack)
            .unwrap()
            .ignore();
        mmu.check_invariants();
        let page = |i: usize| VirtAddr::new(first.start_address().as_usize() + i * PAGE_SIZE);
        for (i, f) in [(0, 0), (1, 1), (2, 2), (3, 3), (6, 4)] {
            // SAFETY: page i of the window is mapped read-write just above.
            assert_eq!(unsafe { load_u8(page(i)) }, f as u8 + 1, "{mode:?}: page {i}");
        }
        // SAFETY: page 6 is mapped read-write.
        unsafe { store_u8(page(6), 0x5a) };
        let mut b = [0u8];
        ram.read(Frame::from_number(base + 4).start_address(), &mut b);
        assert_eq!(b, [0x5a], "{mode:?}: the store reached the frame");
        assert_eq!(mmu.mapped_pages(), 5);
    }
}

#[test]
fn a_fault_inside_the_spaces_own_lock_aborts_with_a_message() {
    const CASE: &str = "a_fault_inside_the_spaces_own_lock_aborts_with_a_message";
    if child_case().as_deref() == Some(CASE) {
        let (ram, frames) = setup(16);
        let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW)]);
        // Deliberately wrong: window memory touched inside `with` (it used to deadlock).
        let v = s.with(|_| byte(&s, 0));
        eprintln!("survived the load: {v}");
        std::process::exit(0);
    }
    let out = run_child(CASE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "{:?} {err}", out.status);
    assert!(err.contains("memkit: unresolved read fault at 0x") && err.contains("holds the lock"), "{err}");
}

#[test]
fn nested_with_panics_instead_of_deadlocking() {
    let (ram, frames) = setup(16);
    let s = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW)]);
    let nested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.with(|_| s.with(|_| ()))));
    assert!(nested.is_err());
    // The lock and the record were released by the unwinding: faults are served again.
    set(&s, 0, 3);
    assert_eq!(byte(&s, 0), 3);
    // Another space's lock is no obstacle.
    let other = space(&ram, &frames, vec![Backing::DemandZero(Rights::RW)]);
    s.with(|_| set(&other, 0, 4));
    assert_eq!(byte(&other, 0), 4);
}
