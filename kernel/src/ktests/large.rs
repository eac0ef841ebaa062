//! 2 MiB mappings on real page tables: a superpage dataspace attached at a 2 MiB-aligned
//! address and offset faults in one page-directory entry per block; a partial detach, a
//! protect of part of the block, a shrink and a copy-on-write break split it into a page
//! table of small entries; and what a fault costs per MiB touched with either (for the
//! `bench` boot mode).

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_phys::DEFAULT_POOL;
use memkit_region::{AttachRequest, DetachFlags, EntrySize, FaultError, LARGE_PAGES, Mmu};
use memkit_spaces::SpaceId;
use memkit_types::{Frame, FrameSource, PAGE_SIZE, Page, PhysMemory, Rights, SUPERPAGE_SIZE, VirtAddr};

use super::fail;
use crate::frames::KernelFrames;
use crate::interrupts::{self, Fault};
use crate::phys_window::KernelPhysMemory;
use crate::serial::println;
use crate::smp::FLUSHES;
use crate::space::{SetPager, Spaces, WINDOW_START, new_tables, with_space_active};
use crate::testing::{Failure, Runner, TestResult, check, check_eq};

const CLIENT: ClientId = ClientId::new(3, 0);
const PAGE: usize = PAGE_SIZE;
const BLOCK: usize = SUPERPAGE_SIZE;

/// 2 MiB mappings on real page tables.
pub(crate) fn large(runner: &mut Runner, frames: &'static KernelFrames, kernel_root: Frame) {
    runner.run("large::a_superpage_block_faults_in_one_2mib_entry", || one_entry(frames, kernel_root));
    runner.run("large::a_partial_detach_splits_the_2mib_entry", || partial_detach(frames, kernel_root));
    runner.run("large::a_protect_of_part_of_the_block_splits_the_2mib_entry", || protect(frames, kernel_root));
    runner.run("large::a_shrink_splits_the_2mib_entry", || shrink(frames, kernel_root));
    runner.run("large::a_copy_on_write_break_splits_the_2mib_entry", || cow_break(frames, kernel_root));
}

/// One address space over a fresh manager.
struct Large {
    set: Spaces,
    id: SpaceId,
    kernel_root: Frame,
}

impl Large {
    fn new(frames: &'static KernelFrames, kernel_root: Frame) -> Result<Self, Failure> {
        let mut manager = Manager::new(Config::new(64 << 20), KernelPhysMemory);
        manager.set_pool(PoolId::DEFAULT, frames.pool(DEFAULT_POOL));
        let mut set = Spaces::new(manager);
        let (map, mmu) = new_tables(frames, kernel_root).map_err(|_| fail("no frame for the space's root"))?;
        let id = set.add_space(map, mmu);
        Ok(Large { set, id, kernel_root })
    }

    fn superpages(&mut self, bytes: usize) -> Result<DataspaceId, Failure> {
        self.set
            .manager_mut()
            .mem_open(FactoryId::ROOT, CLIENT, bytes as u64, 21, DmFlags::SUPERPAGES, "superpages")
            .map_err(|_| fail("mem_open of superpages"))
    }

    /// Attaches `bytes` of `ds` at `start` (fixed).
    fn attach_at(&mut self, ds: DataspaceId, bytes: usize, start: VirtAddr) -> Result<VirtAddr, Failure> {
        let request = AttachRequest::new(ds, bytes, Rights::RW).at(start);
        self.set.attach(self.id, &request).map_err(|_| fail("attach"))
    }

    /// The translation of the page at `addr` and the size of its entry, from the page tables.
    fn entry(&self, addr: VirtAddr) -> Option<(memkit_region::Translation, EntrySize)> {
        self.set.space(self.id)?.mmu.translate_entry(Page::containing_address(addr))
    }

    /// The frame behind byte `offset` of `ds`.
    fn frame_of(&mut self, ds: DataspaceId, offset: usize) -> Option<Frame> {
        let (pa, _) = self.set.manager_mut().phys_addr(ds, offset as u64).ok()?;
        Some(Frame::containing_address(pa))
    }

    /// Runs `body` in the space with its faults resolved: what it returned, the faults
    /// served and the last refusal.
    fn run<R>(&mut self, body: impl FnOnce() -> R) -> (R, u64, Option<FaultError>) {
        let root = self.set.space(self.id).expect("the space").mmu.root();
        let mut pager = SetPager::new(&mut self.set, self.id);
        let result = with_space_active(root, self.kernel_root, || interrupts::with_fault_handler(&mut pager, body));
        (result, pager.served, pager.refused)
    }

    /// Detaches every region and closes every dataspace; the space's tables go with `self`.
    fn teardown(mut self) -> TestResult {
        let regions = self.set.space(self.id).ok_or(fail("space"))?.map.regions();
        for region in regions {
            check!(self.set.detach(self.id, region.start, region.size, DetachFlags::empty()).is_ok());
        }
        self.set.check_invariants();
        check!(self.set.manager_mut().close_all(CLIENT, CLIENT, DmFlags::empty()).is_ok());
        check_eq!(self.set.manager().frames_held(PoolId::DEFAULT), 0);
        Ok(())
    }
}

fn at(start: VirtAddr, offset: usize) -> VirtAddr {
    VirtAddr::new(start.as_usize() + offset)
}

/// Writes a mark into every page of the block from `start`: its index.
fn stamp(start: VirtAddr) -> Result<(), Fault> {
    (0..LARGE_PAGES).try_for_each(|i| interrupts::probe_write(at(start, i * PAGE + 7), i as u8))
}

/// Whether every page of the block from `start` but those in `skip` holds its mark.
fn stamped(start: VirtAddr, skip: core::ops::Range<usize>) -> bool {
    (0..LARGE_PAGES)
        .filter(|i| !skip.contains(i))
        .all(|i| interrupts::probe_read(at(start, i * PAGE + 7)) == Ok(i as u8))
}

/// A region at a 2 MiB-aligned address.
fn base() -> VirtAddr {
    VirtAddr::new(WINDOW_START + 4 * BLOCK)
}

fn one_entry(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut l = Large::new(frames, kernel_root)?;
    let ds = l.superpages(2 * BLOCK)?;
    let start = l.attach_at(ds, 2 * BLOCK, base())?;
    check!(l.entry(start).is_none());
    let large_flushes = FLUSHES.large.load(core::sync::atomic::Ordering::SeqCst);
    // Every page of the first block written and read back: one fault.
    let (result, served, refused) = l.run(|| stamp(start).map(|()| stamped(start, 0..0)));
    check_eq!(result, Ok(true));
    check_eq!(served, 1);
    check!(refused.is_none());
    check!(FLUSHES.large.load(core::sync::atomic::Ordering::SeqCst) > large_flushes);
    let Some((t, size)) = l.entry(start) else { return Err(fail("the block is mapped")) };
    check_eq!(size, EntrySize::Large);
    check_eq!(Some(t.frame), l.frame_of(ds, 0));
    check_eq!(t.rights & Rights::RW, Rights::RW);
    let Some((t, size)) = l.entry(at(start, 300 * PAGE)) else { return Err(fail("page 300 is mapped")) };
    check_eq!((size, Some(t.frame)), (EntrySize::Large, l.frame_of(ds, 300 * PAGE)));
    // The bytes are the dataspace's.
    let mut byte = [0];
    check!(l.set.manager_mut().read(ds, (300 * PAGE + 7) as u64, &mut byte).is_ok());
    check_eq!(byte, [44]);
    // The second block: a read maps it whole too.
    let (result, served, _) = l.run(|| interrupts::probe_read(at(start, BLOCK + 5)));
    check_eq!((result, served), (Ok(0), 1));
    check!(l.entry(at(start, 2 * BLOCK - PAGE)).is_some_and(|(_, s)| s == EntrySize::Large));
    l.set.check_invariants();
    println!(
        "    2 MiB: 2 faults for 1024 pages, {} page-table frames",
        l.set.space(l.id).ok_or(fail("space"))?.mmu.table_frames()
    );
    // A whole detach: both entries flushed as such.
    let before = FLUSHES.large.load(core::sync::atomic::Ordering::SeqCst);
    check!(l.set.detach(l.id, start, 2 * BLOCK, DetachFlags::empty()).is_ok());
    check!(FLUSHES.large.load(core::sync::atomic::Ordering::SeqCst) >= before + 2);
    check!(l.entry(start).is_none() && l.entry(at(start, BLOCK)).is_none());
    l.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn partial_detach(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut l = Large::new(frames, kernel_root)?;
    let ds = l.superpages(BLOCK)?;
    let start = l.attach_at(ds, BLOCK, base())?;
    let (result, served, _) = l.run(|| stamp(start));
    check_eq!((result, served), (Ok(()), 1));
    check!(l.set.detach(l.id, at(start, 100 * PAGE), 2 * PAGE, DetachFlags::empty()).is_ok());
    l.set.check_invariants();
    check!(l.entry(at(start, 100 * PAGE)).is_none() && l.entry(at(start, 101 * PAGE)).is_none());
    for i in [0, 99, 102, 511] {
        let Some((t, size)) = l.entry(at(start, i * PAGE)) else { return Err(fail("a kept page lost its entry")) };
        check_eq!((size, Some(t.frame)), (EntrySize::Small, l.frame_of(ds, i * PAGE)));
    }
    // The other pages read their marks without a fault; the detached ones are refused.
    let (result, served, _) = l.run(|| stamped(start, 100..102));
    check_eq!((result, served), (true, 0));
    let (result, _, refused) = l.run(|| interrupts::probe_read(at(start, 100 * PAGE)));
    check!(result.is_err());
    check_eq!(refused, Some(FaultError::NoRegion(at(start, 100 * PAGE))));
    l.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn protect(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut l = Large::new(frames, kernel_root)?;
    let ds = l.superpages(BLOCK)?;
    let start = l.attach_at(ds, BLOCK, base())?;
    let (result, _, _) = l.run(|| stamp(start));
    check!(result.is_ok());
    check!(l.set.protect(l.id, at(start, 8 * PAGE), 8 * PAGE, Rights::READ).is_ok());
    l.set.check_invariants();
    for i in [0, 7, 16, 511] {
        let e = l.entry(at(start, i * PAGE));
        check!(e.is_some_and(|(t, s)| s == EntrySize::Small && t.rights.contains(Rights::WRITE)));
    }
    for i in 8..16 {
        let e = l.entry(at(start, i * PAGE));
        check!(e.is_some_and(|(t, s)| s == EntrySize::Small && !t.rights.contains(Rights::WRITE)));
    }
    let (result, served, refused) = l.run(|| {
        (interrupts::probe_write(at(start, 9 * PAGE), 1), interrupts::probe_write(at(start, 16 * PAGE + 7), 16))
    });
    check!(result.0.is_err());
    check!(result.1.is_ok());
    check!(matches!(refused, Some(FaultError::Forbidden { .. })));
    check_eq!(served, 0);
    let (result, served, _) = l.run(|| stamped(start, 0..0));
    check_eq!((result, served), (true, 0));
    // A protect of the whole block keeps one entry.
    let whole = l.attach_at(ds, BLOCK, at(base(), 2 * BLOCK))?;
    let (result, _, _) = l.run(|| interrupts::probe_write(whole, 3));
    check!(result.is_ok());
    check!(l.set.protect(l.id, whole, BLOCK, Rights::READ).is_ok());
    let e = l.entry(at(whole, 5 * PAGE));
    check!(e.is_some_and(|(t, s)| s == EntrySize::Large && !t.rights.contains(Rights::WRITE)));
    l.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn shrink(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut l = Large::new(frames, kernel_root)?;
    let ds = l.superpages(BLOCK)?;
    let start = l.attach_at(ds, BLOCK, base())?;
    let (result, _, _) = l.run(|| stamp(start));
    check!(result.is_ok());
    {
        let (m, mut r) = l.set.manager_and_revoker();
        check!(m.resize(CLIENT, ds, (300 * PAGE + 8) as u64, &mut r).is_ok());
    }
    l.set.check_invariants();
    check!(l.entry(at(start, 301 * PAGE)).is_none());
    check!(l.entry(at(start, 300 * PAGE)).is_some_and(|(_, s)| s == EntrySize::Small));
    let (result, served, _) = l.run(|| stamped(start, 301..LARGE_PAGES));
    check_eq!((result, served), (true, 0));
    let (result, _, refused) = l.run(|| interrupts::probe_read(at(start, 301 * PAGE)));
    check!(result.is_err());
    check!(matches!(refused, Some(FaultError::Backing(_))));
    l.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

fn cow_break(frames: &'static KernelFrames, kernel_root: Frame) -> TestResult {
    let free_before = frames.free_frames().get();
    let mut l = Large::new(frames, kernel_root)?;
    let src = l
        .set
        .manager_mut()
        .mem_open(FactoryId::ROOT, CLIENT, BLOCK as u64, 21, DmFlags::empty(), "anonymous")
        .map_err(|_| fail("mem_open"))?;
    // One run of 512 frames for the whole block: the frame allocator is a buddy, so the run
    // is 2 MiB aligned and the block qualifies for one entry.
    let run = l.set.manager_mut().map_run(src, 0, LARGE_PAGES as u64).map_err(|_| fail("map_run"))?;
    check!(run.is_some_and(|f| f.number().is_multiple_of(LARGE_PAGES as u64)));
    let start = l.attach_at(src, BLOCK, base())?;
    let (result, served, _) = l.run(|| stamp(start));
    check_eq!((result, served), (Ok(()), 1));
    check!(l.entry(start).is_some_and(|(_, s)| s == EntrySize::Large));
    let copy = l.set.copy_on_write(CLIENT, src, "copy").map_err(|_| fail("COW copy"))?;
    // Write-protected whole: still one entry.
    check!(l.entry(start).is_some_and(|(t, s)| s == EntrySize::Large && !t.rights.contains(Rights::WRITE)));
    let breaks = l.set.cow_breaks();
    let (result, served, _) = l.run(|| interrupts::probe_write(at(start, 200 * PAGE + 7), 0xee));
    check_eq!((result, served), (Ok(()), 1));
    check_eq!(l.set.cow_breaks(), breaks + 1);
    l.set.check_invariants();
    let (Some((broken, s1)), Some((kept, s2))) = (l.entry(at(start, 200 * PAGE)), l.entry(at(start, 201 * PAGE)))
    else {
        return Err(fail("the pages keep entries"));
    };
    check_eq!((s1, s2), (EntrySize::Small, EntrySize::Small));
    check!(broken.rights.contains(Rights::WRITE) && !kept.rights.contains(Rights::WRITE));
    check!(run.is_some_and(|f| broken.frame.number() != f.number() + 200 && kept.frame.number() == f.number() + 201));
    // The source shows the new byte, the copy keeps the old ones; the rest reads through.
    let (result, served, _) = l.run(|| (interrupts::probe_read(at(start, 200 * PAGE + 7)), stamped(start, 200..201)));
    check_eq!((result, served), ((Ok(0xee), true), 0));
    let mut byte = [0];
    check!(l.set.manager_mut().read(copy, (200 * PAGE + 7) as u64, &mut byte).is_ok());
    check_eq!(byte, [200]);
    let mut frame_byte = [0];
    KernelPhysMemory.read(broken.frame.start_address().checked_add(7).ok_or(fail("address"))?, &mut frame_byte);
    check_eq!(frame_byte, [0xee]);
    l.teardown()?;
    check_eq!(frames.free_frames().get(), free_before);
    Ok(())
}

/// The cost of faulting in `mib` MiB of a superpage dataspace, one store per 4 KiB page:
/// with 2 MiB entries (`large`: the region at a 2 MiB-aligned address) or with 4 KiB ones
/// (the region 4 KiB past such an address, so that no block lines up). Returns the TSC
/// cycles the stores took and the faults served.
///
/// # Errors
/// When the space cannot be built or a store faults unresolved.
pub(crate) fn fault_cost(
    frames: &'static KernelFrames,
    kernel_root: Frame,
    large: bool,
    mib: usize,
) -> Result<(u64, u64), Failure> {
    let mut l = Large::new(frames, kernel_root)?;
    let bytes = mib << 20;
    let ds = l.superpages(bytes)?;
    let start = at(base(), if large { 0 } else { PAGE });
    let start = l.attach_at(ds, bytes, start)?;
    let (result, served, _) = l.run(|| {
        let begin = crate::bench::cycles();
        for i in 0..bytes / PAGE {
            interrupts::probe_write(at(start, i * PAGE), 1)?;
        }
        Ok::<u64, Fault>(crate::bench::cycles() - begin)
    });
    let spent = result.map_err(|_| fail("a store faulted unresolved"))?;
    l.teardown()?;
    Ok((spent, served))
}
