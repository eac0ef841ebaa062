//! Address spaces: region maps on real page tables, faults resolved through them, and the
//! fixture that builds a space for each test.

use core::sync::atomic::Ordering;

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, MemphysOpenRequest, PoolId};
use memkit_phys::{DEFAULT_POOL, ISA_DMA_LIMIT, ISA_DMA_POOL};
use memkit_region::{AttachRequest, DetachFlags, FaultError, Flags, Mmu, Remap};
use memkit_spaces::SpaceId;
use memkit_types::{Access, Frame, FrameSource, PAGE_SIZE, Page, PhysMemory, Rights, VirtAddr};

use super::fail;
use crate::frames::KernelFrames;
use crate::interrupts::{self, FAULTS_REPORTED, FAULTS_RESOLVED, Fault};
use crate::phys_window::KernelPhysMemory;
use crate::serial::println;
use crate::space::{KernelManager, SetPager, Space, Spaces, WINDOW_SIZE, WINDOW_START, new_tables, with_space_active};
use crate::testing::{Runner, TestResult, check, check_eq};

/// Address spaces: region maps on real page tables, faults resolved through them.
pub(crate) fn spaces(runner: &mut Runner, frames: &'static KernelFrames, kernel_root: Frame) {
    runner.run("space::lazy_pages_are_mapped_on_first_touch", || lazy_pages(frames, kernel_root));
    runner.run("space::copy_on_write_is_broken_by_a_write_fault", || copy_on_write(frames, kernel_root));
    runner.run("space::forbidden_access_is_reported_not_mapped", || forbidden_access(frames, kernel_root));
    runner.run("space::detach_unmaps_and_frames_go_back", || detach_gives_back(frames, kernel_root));
    runner.run("space::isa_dma_dataspace_is_contiguous_below_16mib", || isa_dma_dataspace(frames, kernel_root));
    runner.run("space::copy_on_write_across_two_address_spaces", || fork(frames, kernel_root));
    runner.run("space::copy_on_write_break_unmaps_the_old_frame_in_its_own_space", || {
        cow_break_in_own_space(frames, kernel_root)
    });
    runner.run("space::detach_free_gives_the_frames_back", || detach_free(frames, kernel_root));
    runner.run("space::thousand_lazy_pages_in_random_order", || many_lazy_pages(frames, kernel_root));
    runner.run("space::execute_needs_the_execute_right", || execute_right(frames, kernel_root));
    runner.run("space::protect_write_protects_and_merges_back", || protect(frames, kernel_root));
    runner.run("space::remap_grows_and_moves_with_the_frames", || remap(frames, kernel_root));
    runner.run("space::a_replacing_attach_takes_the_place", || replace(frames, kernel_root));
}

const CLIENT: ClientId = ClientId::new(1, 0);
const PAGE: usize = PAGE_SIZE;

fn new_manager(frames: &'static KernelFrames) -> KernelManager {
    let mut manager = Manager::new(Config::new(64 << 20), KernelPhysMemory);
    manager.set_pool(PoolId::DEFAULT, frames.pool(DEFAULT_POOL));
    if let Some(isa) = PoolId::new(ISA_DMA_POOL as u32) {
        manager.set_pool(isa, frames.pool(ISA_DMA_POOL));
    }
    manager
}

fn at(start: VirtAddr, offset: usize) -> VirtAddr {
    start.checked_add(offset).expect("inside the window")
}

fn page(addr: VirtAddr) -> Page {
    Page::containing_address(addr)
}

/// Everything a space test needs, built fresh: one address space in a [`Spaces`] set (the
/// same wiring as several spaces).
struct Fixture {
    set: Spaces,
    id: SpaceId,
    kernel_root: Frame,
}

impl Fixture {
    fn new(frames: &'static KernelFrames, kernel_root: Frame) -> Result<Self, crate::testing::Failure> {
        let mut set = Spaces::new(new_manager(frames));
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("no frame for the space's root"))?;
        let id = set.add_space(map, mmu);
        Ok(Fixture { set, id, kernel_root })
    }

    fn manager(&self) -> &KernelManager {
        self.set.manager()
    }

    fn space(&self) -> &Space {
        self.set.space(self.id).expect("the fixture's space exists")
    }

    fn open(&mut self, pages: usize, name: &str) -> Result<DataspaceId, crate::testing::Failure> {
        self.set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, (pages * PAGE) as u64, 12, DmFlags::empty(), name)
            .map_err(|_| fail("mem_open"))
    }

    fn attach(&mut self, ds: DataspaceId, pages: usize, rights: Rights) -> Result<VirtAddr, crate::testing::Failure> {
        self.attach_with(ds, pages, rights, Flags::empty())
    }

    fn attach_with(
        &mut self,
        ds: DataspaceId,
        pages: usize,
        rights: Rights,
        flags: Flags,
    ) -> Result<VirtAddr, crate::testing::Failure> {
        let request = AttachRequest::new(ds, pages * PAGE, rights).search(VirtAddr::new(WINDOW_START)).flags(flags);
        self.set.attach(self.id, &request).map_err(|_| fail("attach"))
    }

    fn detach(&mut self, start: VirtAddr, size: usize) -> bool {
        self.set.detach(self.id, start, size, DetachFlags::empty()).is_ok()
    }

    /// A copy-on-write copy of `ds`: its pages are write-protected in the space first.
    fn copy_on_write(&mut self, ds: DataspaceId) -> Result<DataspaceId, crate::testing::Failure> {
        self.set.copy_on_write(CLIENT, ds, "copy").map_err(|_| fail("COW copy"))
    }

    /// Detaches every region and closes every dataspace (`close_all`): afterwards the
    /// manager holds no frame, and dropping the fixture gives back the space's tables.
    fn teardown(mut self) -> TestResult {
        for region in self.space().map.regions() {
            check!(self.detach(region.start, region.size));
        }
        self.set.check_invariants();
        check!(self.set.manager_mut().close_all(CLIENT, CLIENT, DmFlags::empty()).is_ok());
        check_eq!(self.manager().frames_held(PoolId::DEFAULT), 0);
        check_eq!(self.manager().frames_held(PoolId::new(ISA_DMA_POOL as u32).expect("pool 7")), 0);
        Ok(())
    }

    /// Runs `body` in the space with its faults resolved by a pager; returns what `body`
    /// returned, the faults served, the last refusal and the copy-on-write breaks.
    fn run<R>(&mut self, body: impl FnOnce() -> R) -> (R, u64, Option<FaultError>, u64) {
        let breaks_before = self.set.cow_breaks();
        let space_root = self.space().mmu.root();
        let mut pager = SetPager::new(&mut self.set, self.id);
        let result =
            with_space_active(space_root, self.kernel_root, || interrupts::with_fault_handler(&mut pager, body));
        let (served, refused) = (pager.served, pager.refused);
        (result, served, refused, self.set.cow_breaks() - breaks_before)
    }
}

fn lazy_pages(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    {
        let mut f = Fixture::new(frames, kernel_root)?;
        let ds = f.open(16, "lazy")?;
        let start = f.attach(ds, 16, Rights::RW)?;
        check!((0..16).all(|i| f.space().mmu.translate(page(at(start, i * PAGE))).is_none()));
        check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
        let resolved_before = FAULTS_RESOLVED.load(Ordering::SeqCst);
        let (result, served, refused, _) = f.run(|| -> Result<[u8; 16], Fault> {
            for i in 0..8 {
                interrupts::probe_write(at(start, i * PAGE + i), i as u8 + 1)?;
            }
            let mut seen = [0; 16];
            for (i, value) in seen.iter_mut().enumerate() {
                *value = interrupts::probe_read(at(start, i * PAGE + i))?;
            }
            Ok(seen)
        });
        let Ok(seen) = result else { return Err(fail("a lazy page faulted unresolved")) };
        check_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        // One fault per page: 8 first writes, 8 first reads; the read-back of the written
        // pages does not fault.
        check_eq!(served, 16);
        check_eq!(FAULTS_RESOLVED.load(Ordering::SeqCst) - resolved_before, 16);
        check!(refused.is_none());
        check_eq!(f.manager().frames_held(PoolId::DEFAULT), 16);
        let first = f.space().mmu.translate(page(start));
        check!(first.is_some_and(|t| t.rights.contains(Rights::WRITE)));
        check!(f.space().mmu.table_frames() >= 4);
        println!(
            "    lazy: {served} faults served, {} frames held, {} page-table frames",
            f.manager().frames_held(PoolId::DEFAULT),
            f.space().mmu.table_frames()
        );
        f.set.check_invariants();
        f.set.manager_mut().check_invariants();
        check!(f.detach(start, 16 * PAGE));
        check_eq!(f.set.manager_mut().close(CLIENT, ds), Ok(()));
    }
    // Detached and closed, the dataspace's frames are back; the dropped space gave back its
    // tables.
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn copy_on_write(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let a = f.open(4, "source")?;
    let ra = f.attach(a, 4, Rights::RW)?;
    let (result, _, _, _) = f.run(|| -> Result<(), Fault> {
        for i in 0..4 {
            interrupts::probe_write(at(ra, i * PAGE), 0xa0 + i as u8)?;
        }
        Ok(())
    });
    check!(result.is_ok());
    let b = f.copy_on_write(a)?;
    // The source's pages are write-protected now; nothing was copied.
    check!(f.space().mmu.translate(page(ra)).is_some_and(|t| !t.rights.contains(Rights::WRITE)));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 4);
    let rb = f.attach(b, 4, Rights::RW)?;
    let (result, served, refused, breaks) = f.run(|| -> Result<[u8; 6], Fault> {
        let shared = interrupts::probe_read(rb)?; // read: maps the shared frame
        interrupts::probe_write(rb, 0xb0)?; // write: breaks COW in the copy
        interrupts::probe_write(at(ra, PAGE), 0xc1)?; // write: breaks COW in the source
        Ok([
            shared,
            interrupts::probe_read(rb)?,
            interrupts::probe_read(ra)?,
            interrupts::probe_read(at(ra, PAGE))?,
            interrupts::probe_read(at(rb, PAGE))?,
            interrupts::probe_read(at(rb, 3 * PAGE))?,
        ])
    });
    let Ok(seen) = result else { return Err(fail("a COW page faulted unresolved")) };
    check_eq!(seen, [0xa0, 0xb0, 0xa0, 0xc1, 0xa1, 0xa3]);
    check!(refused.is_none());
    check_eq!(breaks, 2);
    let (ta, tb) = (f.space().mmu.translate(page(ra)), f.space().mmu.translate(page(rb)));
    let (Some(ta), Some(tb)) = (ta, tb) else { return Err(fail("pages mapped")) };
    check!(ta.frame != tb.frame);
    check!(tb.rights.contains(Rights::WRITE));
    // Pages 2 and 3 are still shared: 4 + 2 frames in all.
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 6);
    println!("    copy-on-write: {served} faults served, {breaks} breaks, 6 frames for 8 pages");
    f.set.check_invariants();
    f.set.manager_mut().check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn forbidden_access(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(2, "read-only")?;
    let ro = f.attach(ds, 2, Rights::READ)?;
    let outside = VirtAddr::new(WINDOW_START + WINDOW_SIZE / 2);
    let reported_before = FAULTS_REPORTED.load(Ordering::SeqCst);
    let (results, served, refused, _) = f.run(|| {
        let read = interrupts::probe_read(ro);
        let write = interrupts::probe_write(at(ro, PAGE), 1);
        let stray = interrupts::probe_read(outside);
        (read, write, stray)
    });
    let (read, write, stray) = results;
    check_eq!(read, Ok(0));
    check_eq!(write.map_err(|e| (e.addr, e.access)), Err((at(ro, PAGE), Access::Write)));
    check_eq!(stray.map_err(|e| (e.addr, e.access)), Err((outside, Access::Read)));
    check_eq!(refused, Some(FaultError::NoRegion(outside)));
    check_eq!(served, 1);
    check_eq!(FAULTS_REPORTED.load(Ordering::SeqCst) - reported_before, 2);
    // The write was not mapped, the stray access neither.
    check!(f.space().mmu.translate(page(at(ro, PAGE))).is_none_or(|t| !t.rights.contains(Rights::WRITE)));
    check!(f.space().mmu.translate(page(outside)).is_none());
    check!(f.space().mmu.translate(page(ro)).is_some_and(|t| !t.rights.contains(Rights::WRITE)));
    // A forbidden write of a mapped read-only page is refused as Forbidden.
    let (write, _, refused, _) = f.run(|| interrupts::probe_write(ro, 1));
    check!(write.is_err());
    check!(matches!(refused, Some(FaultError::Forbidden { access: Access::Write, .. })));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn detach_gives_back(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(8, "detached")?;
    let start = f.attach(ds, 8, Rights::RW)?;
    let (result, served, _, _) = f.run(|| (0..8).try_for_each(|i| interrupts::probe_write(at(start, i * PAGE), 9)));
    check!(result.is_ok());
    check_eq!(served, 8);
    check!(f.detach(start, 8 * PAGE));
    check!((0..8).all(|i| f.space().mmu.translate(page(at(start, i * PAGE))).is_none()));
    // After the detach the region is gone: a touch is refused, not mapped.
    let (after, _, refused, _) = f.run(|| interrupts::probe_read(start));
    check!(after.is_err());
    check_eq!(refused, Some(FaultError::NoRegion(start)));
    check_eq!(f.set.manager_mut().close(CLIENT, ds), Ok(()));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
    drop(f);
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn isa_dma_dataspace(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let mut f = Fixture::new(frames, kernel_root)?;
    let size = 4 * PAGE as u64;
    let ds = f
        .set
        .manager_mut()
        .memphys_open(
            FactoryId::ROOT,
            CLIENT,
            MemphysOpenRequest::new(ISA_DMA_POOL as u32, size).align(12).flags(DmFlags::CONTIGUOUS).name("dma"),
        )
        .map_err(|_| fail("memphys_open in pool 7"))?;
    let Ok((addr, contiguous)) = f.set.manager_mut().phys_addr(ds, 0) else { return Err(fail("phys_addr")) };
    check!(addr.as_u64() + size <= ISA_DMA_LIMIT.as_u64());
    check!(contiguous >= size);
    // Mapped into an address space, the device's view and the CPU's agree.
    let start = f.attach(ds, 4, Rights::RW)?;
    let (result, served, _, _) = f.run(|| interrupts::probe_write(at(start, PAGE + 5), 0x5d));
    check!(result.is_ok());
    check_eq!(served, 1);
    let mut byte = [0];
    KernelPhysMemory.read(addr.checked_add(PAGE as u64 + 5).expect("in RAM"), &mut byte);
    check_eq!(byte, [0x5d]);
    f.teardown()
}

/// Runs `body` in space `id` of `set` with the set resolving its faults; returns what `body`
/// returned and the faults served.
fn run_in<R>(set: &mut Spaces, id: SpaceId, kernel_root: Frame, body: impl FnOnce() -> R) -> (R, u64) {
    let root = set.space(id).map(|s| s.mmu.root()).expect("the space exists");
    let mut pager = SetPager::new(set, id);
    let result = with_space_active(root, kernel_root, || interrupts::with_fault_handler(&mut pager, body));
    (result, pager.served)
}

/// A fork: a parent space's dataspace copied on write into a child space at the same
/// virtual address; each side's writes stay its own.
fn fork(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    {
        let mut set = Spaces::new(new_manager(frames));
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("parent tables"))?;
        let parent = set.add_space(map, mmu);
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("child tables"))?;
        let child = set.add_space(map, mmu);
        let a = set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, 2 * PAGE as u64, 12, DmFlags::empty(), "parent")
            .map_err(|_| fail("mem_open"))?;
        let base = VirtAddr::new(WINDOW_START);
        let request = AttachRequest::new(a, 2 * PAGE, Rights::RW).at(base);
        check!(set.attach(parent, &request).is_ok());
        let (wrote, _) = run_in(&mut set, parent, kernel_root, || {
            interrupts::probe_write(base, 0x11).and_then(|()| interrupts::probe_write(at(base, PAGE), 0x22))
        });
        check!(wrote.is_ok());

        let b = set.copy_on_write(CLIENT, a, "child").map_err(|_| fail("COW copy"))?;
        let request = AttachRequest::new(b, 2 * PAGE, Rights::RW).at(base);
        check!(set.attach(child, &request).is_ok());
        // The child sees the parent's bytes at the same address, then writes its own.
        let (child_view, child_faults) = run_in(&mut set, child, kernel_root, || {
            let before = interrupts::probe_read(base)?;
            interrupts::probe_write(base, 0x33)?;
            Ok::<_, Fault>([before, interrupts::probe_read(base)?, interrupts::probe_read(at(base, PAGE))?])
        });
        check_eq!(child_view.map_err(|f| f.addr), Ok([0x11, 0x33, 0x22]));
        check!(child_faults >= 2);
        // The parent still sees its own bytes; its write to the second page breaks COW on
        // its side, which the child does not see.
        let (parent_view, _) = run_in(&mut set, parent, kernel_root, || {
            interrupts::probe_write(at(base, PAGE), 0x44)?;
            Ok::<_, Fault>([interrupts::probe_read(base)?, interrupts::probe_read(at(base, PAGE))?])
        });
        check_eq!(parent_view.map_err(|f| f.addr), Ok([0x11, 0x44]));
        let (child_view, _) = run_in(&mut set, child, kernel_root, || interrupts::probe_read(at(base, PAGE)));
        check_eq!(child_view.map_err(|f| f.addr), Ok(0x22));
        let parent_frame = set.space(parent).and_then(|s| s.mmu.translate(page(base))).map(|t| t.frame);
        let child_frame = set.space(child).and_then(|s| s.mmu.translate(page(base))).map(|t| t.frame);
        check!(parent_frame.is_some() && child_frame.is_some() && parent_frame != child_frame);
        set.check_invariants();
        println!("    fork: {} frames for 2 spaces of 2 pages", set.manager().frames_held(PoolId::DEFAULT));

        for id in [parent, child] {
            check!(set.remove_space(id).is_ok());
        }
        check_eq!(set.manager_mut().close(CLIENT, a), Ok(()));
        check_eq!(set.manager_mut().close(CLIENT, b), Ok(()));
        check_eq!(set.manager().frames_held(PoolId::DEFAULT), 0);
    }
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// One dataspace attached twice in one space, both regions mapped; a copy-on-write copy,
/// then a write through the first region gives the page a new frame: the second region
/// must not keep the old one (it would read the bytes from before the write).
fn cow_break_in_own_space(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(1, "twice")?;
    let first = f.attach(ds, 1, Rights::RW)?;
    let second = f.attach(ds, 1, Rights::RW)?;
    let (seen, _, _, _) = f.run(|| interrupts::probe_write(first, 0x0d).and_then(|()| interrupts::probe_read(second)));
    check_eq!(seen.map_err(|e| e.addr), Ok(0x0d));
    check!(f.space().mmu.translate(page(second)).is_some());
    f.copy_on_write(ds)?;
    let (seen, _, refused, _) =
        f.run(|| interrupts::probe_write(first, 0x0e).and_then(|()| interrupts::probe_read(second)));
    check!(refused.is_none());
    check_eq!(seen.map_err(|e| e.addr), Ok(0x0e));
    let (t1, t2) = (f.space().mmu.translate(page(first)), f.space().mmu.translate(page(second)));
    check!(t2.is_none_or(|t2| t1.is_some_and(|t1| t1.frame == t2.frame)));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// A region attached with `DETACH_FREE`: its detach frees the dataspace's memory behind
/// it (the dataspace stays open), and the next attachment reads zeros.
fn detach_free(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(2, "freed")?;
    let start = f.attach_with(ds, 2, Rights::RW, Flags::DETACH_FREE)?;
    let (wrote, _, _, _) =
        f.run(|| interrupts::probe_write(start, 0x77).and_then(|()| interrupts::probe_write(at(start, PAGE), 0x78)));
    check!(wrote.is_ok());
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 2);
    check!(f.detach(start, 2 * PAGE));
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), 0);
    let again = f.attach(ds, 2, Rights::READ)?;
    let (seen, _, _, _) =
        f.run(|| Ok::<_, Fault>([interrupts::probe_read(again)?, interrupts::probe_read(at(again, PAGE))?]));
    check_eq!(seen.map_err(|e| e.addr), Ok([0, 0]));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn many_lazy_pages(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    const PAGES: usize = 1024;
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(PAGES, "many")?;
    let start = f.attach(ds, PAGES, Rights::RW)?;
    // A full-period walk of the pages (an odd step modulo a power of two), two bytes each.
    let order = |i: usize| (i * 617 + 5) % PAGES;
    let (result, served, refused, _) = f.run(|| -> Result<usize, Fault> {
        for i in 0..PAGES {
            let p = order(i);
            interrupts::probe_write(at(start, p * PAGE + p % 4000), p as u8)?;
            interrupts::probe_write(at(start, p * PAGE + 4095), (p >> 8) as u8)?;
        }
        let mut wrong = 0;
        for p in 0..PAGES {
            let low = interrupts::probe_read(at(start, p * PAGE + p % 4000))?;
            let high = interrupts::probe_read(at(start, p * PAGE + 4095))?;
            wrong += usize::from(usize::from(low) | usize::from(high) << 8 != p);
        }
        Ok(wrong)
    });
    check_eq!(result.map_err(|f| f.addr), Ok(0));
    check_eq!(served, PAGES as u64);
    check!(refused.is_none());
    check_eq!(f.manager().frames_held(PoolId::DEFAULT), PAGES as u64);
    println!(
        "    {PAGES} pages: {served} faults served, {} frames held, {} page-table frames",
        f.manager().frames_held(PoolId::DEFAULT),
        f.space().mmu.table_frames()
    );
    f.set.check_invariants();
    f.set.manager_mut().check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// Code in a region runs only when the region allows `EXECUTE`: a fetch from a region
/// without it faults and is refused (with no-execute pages on, as QEMU's CPUs have them).
fn execute_right(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    const RET: u8 = 0xc3;
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    check!(crate::cpu::no_execute_enabled());
    let ds = f.open(1, "code")?;
    let data = f.attach(ds, 1, Rights::RW)?;
    let code = f.attach(ds, 1, Rights::READ | Rights::EXECUTE)?;
    let (results, _, refused, _) = f.run(|| {
        let wrote = interrupts::probe_write(data, RET);
        let ran = interrupts::probe_execute(code);
        let refused_run = interrupts::probe_execute(data);
        (wrote, ran, refused_run)
    });
    let (wrote, ran, refused_run) = results;
    check_eq!(wrote, Ok(()));
    check_eq!(ran, Ok(()));
    check_eq!(refused_run.map_err(|e| (e.addr, e.access)), Err((data, Access::Execute)));
    check!(matches!(refused, Some(FaultError::Forbidden { access: Access::Execute, .. })));
    check!(f.space().mmu.translate(page(data)).is_some_and(|t| !t.rights.contains(Rights::EXECUTE)));
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// `protect` on real page tables: a read-only middle refuses stores, keeps its frames, and
/// merges back into one region when writable again.
fn protect(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(4, "protected")?;
    let r = f.attach(ds, 4, Rights::RW)?;
    let (result, _, _, _) = f.run(|| (0..4).try_for_each(|i| interrupts::probe_write(at(r, i * PAGE), 0x40 + i as u8)));
    check!(result.is_ok());
    let frame = f.space().mmu.translate(page(at(r, PAGE))).map(|t| t.frame);
    check!(f.set.protect(f.id, at(r, PAGE), 2 * PAGE, Rights::READ).is_ok());
    check_eq!(f.space().map.region_count(), 3);
    check!(f.space().mmu.translate(page(at(r, PAGE))).is_some_and(|t| t.rights == Rights::READ));
    let (results, _, refused, _) = f.run(|| {
        (interrupts::probe_read(at(r, PAGE)), interrupts::probe_write(at(r, PAGE), 1), interrupts::probe_write(r, 2))
    });
    check_eq!(results.0, Ok(0x41));
    check!(results.1.is_err());
    check_eq!(results.2, Ok(()));
    check!(matches!(refused, Some(FaultError::Forbidden { access: Access::Write, .. })));
    check!(f.set.protect(f.id, r, 4 * PAGE, Rights::RW).is_ok());
    check_eq!(f.space().map.region_count(), 1);
    let (result, _, _, _) = f.run(|| interrupts::probe_write(at(r, PAGE), 3));
    check_eq!(result, Ok(()));
    check_eq!(f.space().mmu.translate(page(at(r, PAGE))).map(|t| t.frame), frame);
    f.set.check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// `remap` on real page tables: in place, then moved; the data moves with the frames.
fn remap(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let ds = f.open(16, "grown")?;
    let r = f.attach(ds, 2, Rights::RW)?;
    let blocker = f.open(1, "blocker")?;
    let b = f.attach(blocker, 1, Rights::RW)?;
    check_eq!(b, at(r, 2 * PAGE));
    let (result, _, _, _) = f.run(|| interrupts::probe_write(at(r, PAGE + 5), 0x5a));
    check!(result.is_ok());
    // Blocked in place; moved when it may.
    check!(f.set.remap(f.id, r, 2 * PAGE, 4 * PAGE, Remap::InPlace).is_err());
    let Ok(to) = f.set.remap(f.id, r, 2 * PAGE, 4 * PAGE, Remap::MayMove) else { return Err(fail("remap move")) };
    check!(to != r);
    check!(f.space().mmu.translate(page(at(r, PAGE))).is_none());
    let (result, _, _, _) = f.run(|| {
        let old = interrupts::probe_read(at(to, PAGE + 5))?;
        interrupts::probe_write(at(to, 3 * PAGE), 7)?;
        Ok::<u8, Fault>(old)
    });
    check_eq!(result, Ok(0x5a));
    // Shrink in place: the tail goes.
    check!(f.set.remap(f.id, to, 4 * PAGE, PAGE, Remap::InPlace).is_ok());
    check!(f.space().mmu.translate(page(at(to, 3 * PAGE))).is_none());
    f.set.check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// A replacing attach on real page tables: the old pages are unmapped and the new
/// dataspace shows through at once.
fn replace(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut f = Fixture::new(frames, kernel_root)?;
    let old = f.open(4, "old")?;
    let r = f.attach(old, 4, Rights::RW)?;
    let (result, _, _, _) = f.run(|| (0..4).try_for_each(|i| interrupts::probe_write(at(r, i * PAGE), 0x11)));
    check!(result.is_ok());
    let new = f.open(1, "new")?;
    let req = AttachRequest::new(new, PAGE, Rights::RW).at(at(r, PAGE)).replacing();
    check!(f.set.attach(f.id, &req).is_ok());
    check_eq!(f.space().map.region_count(), 3);
    check!(f.space().mmu.translate(page(at(r, PAGE))).is_none());
    let (result, _, _, _) =
        f.run(|| Ok::<_, Fault>((interrupts::probe_read(at(r, PAGE))?, interrupts::probe_read(at(r, 2 * PAGE))?)));
    check_eq!(result, Ok((0, 0x11)));
    f.set.check_invariants();
    f.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}
