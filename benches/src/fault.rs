//! Suite `fault`: a real page fault resolved by memkit on Linux against the kernel's own
//! first-touch fault on anonymous memory, in the same run, per page.
//!
//! ```text
//!   linux:  store ─▶ #PF ─▶ kernel allocates, zeroes, maps ─▶ retry
//!   memkit: store ─▶ #PF ─▶ SIGSEGV ─▶ handler: frame of the page, zero it through the
//!           direct map, mmap(MAP_FIXED) it into the window ─▶ sigreturn ─▶ retry (the kernel
//!           fills in the entry on a minor fault; a fault-around run is MAP_POPULATE'd at once)
//! ```
//!
//! Two memkit rows: a minimal demand-zero resolver (the runtime's own cost), and the whole
//! stack (the region map finds the region, the dataspace manager allocates the frame from
//! the frame allocator's pool and zeroes it, the MMU maps it).
//!
//! Each round maps a fresh window (memkit) or a fresh anonymous mapping (Linux) of `pages`
//! pages and stores one byte into each page in order; the best round counts. memkit's RAM is
//! populated beforehand, as a machine's RAM exists before it is used; the page's frame is
//! still zeroed on every fault, as a dataspace zero-fills on first touch.
//!
//! # Unsafe
//!
//! Stores into a window's pages through memkit's `store_u8`, which is sound because the
//! window is registered with the fault handler and every page of it is resolved before the
//! store is retried; and loads, stores and `munmap` on a fresh anonymous mapping this module
//! made, only inside it and only while it exists.

use std::sync::Arc;
use std::time::Instant;

use memkit_host::access::store_u8;
use memkit_host::{HostMmu, HostRam, HostSpace, Populate, SpaceState, Window};
use memkit_region::Mmu;
use memkit_types::{Access, CacheMode, Frame, FrameCount, PAGE_SIZE, Page, PageCount, PhysMemory, Rights, VirtAddr};

use crate::{MEMKIT, Options, Report};

/// The case name of the measured fault (a demand-zero resolver over one window).
pub const CASE: &str = "first-touch fault, ns per page";
/// The case name of the fault resolved by the whole stack (region map, dataspace manager,
/// frame allocator), one page per fault (fault-around off: strict laziness).
pub const STACK_CASE: &str = "first-touch fault via region map + dataspace, ns per page";
/// The case name of the whole stack with fault-around: a fault whose aligned block of
/// [`AROUND`] pages is still empty maps the block with one frame run and one `mmap`.
pub const STACK_AROUND_CASE: &str = "first-touch fault via region map + dataspace, fault-around 16 pages, ns per page";
/// The fault-around block of [`STACK_AROUND_CASE`], in pages.
pub const AROUND: usize = 16;

/// Demand-zero resolution over one window: page `i` gets frame `i`, so neighbouring faults
/// extend one mapping (one kernel VMA) instead of making one each.
#[derive(Debug)]
struct DemandZero {
    mmu: HostMmu,
}

impl SpaceState for DemandZero {
    fn resolve_fault(&mut self, addr: VirtAddr, access: Access) -> bool {
        let page = Page::containing_address(addr);
        if let Some(t) = self.mmu.translate(page) {
            return t.rights.allows(access);
        }
        let Some(index) = page.checked_distance_from(self.mmu.window().first_page()) else { return false };
        let frame = Frame::from_number(index.get() as u64);
        self.mmu.ram().zero(frame, FrameCount::new(1));
        match self.mmu.map(page, frame, PageCount::new(1), Rights::RW, CacheMode::WriteBack) {
            Ok(flush) => {
                flush.ignore();
                true
            }
            Err(_) => false,
        }
    }
}

fn memkit_round(ram: &Arc<HostRam>, pages: usize, populate: Populate) -> f64 {
    let window = Window::new(pages * PAGE_SIZE).expect("reserve a window");
    let (start, len) = (window.start(), window.len());
    let mut mmu = HostMmu::new(window, Arc::clone(ram));
    mmu.set_populate(populate);
    let space = HostSpace::new(start, len, DemandZero { mmu }).expect("register the window");
    let t = Instant::now();
    for i in 0..pages {
        // SAFETY: every page of the window is resolved by DemandZero.
        unsafe { store_u8(space.addr(i * PAGE_SIZE), 1) };
    }
    t.elapsed().as_nanos() as f64 / pages as f64
}

fn linux_round(pages: usize) -> f64 {
    let len = pages * PAGE_SIZE;
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses replaces nothing.
    let ptr = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE,
        )
    }
    .expect("anonymous mapping");
    // Keep transparent huge pages out: the comparison is per 4 KiB page.
    // SAFETY: advice on our own fresh mapping; it does not change its contents.
    let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxNoHugepage) };
    let base = ptr.cast::<u8>();
    let t = Instant::now();
    for i in 0..pages {
        // SAFETY: inside the fresh read-write mapping of `len` bytes.
        let p = unsafe { base.add(i * PAGE_SIZE) };
        // SAFETY: p is inside the mapping; nothing else refers to it.
        unsafe { p.write_volatile(1) };
    }
    let ns = t.elapsed().as_nanos() as f64 / pages as f64;
    // SAFETY: the mapping made above, no longer used.
    let _ = unsafe { rustix::mm::munmap(ptr, len) };
    ns
}

/// The whole hosted stack, once per suite run: RAM, pools, the dataspace manager, spaces.
struct Stack {
    system: memkit_host::System<&'static memkit_phys::LockedAllocator<'static>>,
}

impl Stack {
    /// A machine with room for `pages` frames in pool 0 (above the ISA DMA pool and the
    /// kernel image), its RAM populated.
    fn new(pages: usize) -> Result<Self, String> {
        let size = (pages * PAGE_SIZE) as u64 + (32 << 20);
        let machine =
            memkit_phys::Machine::parse(&format!("0x0 {size:#x} usable\n"), Some(memkit_phys::DEFAULT_KERNEL_IMAGE))
                .map_err(|e| e.to_string())?;
        let booted = memkit_host::HostedMachine::boot(&machine).map_err(|e| e.to_string())?;
        booted.ram().populate().map_err(|e| e.to_string())?;
        Ok(Stack { system: booted.system })
    }

    /// One round: a fresh space and anonymous dataspace of `pages` pages, one store per page,
    /// faults mapping `around` pages at once when they can.
    fn round(&self, pages: usize, around: usize) -> Result<f64, String> {
        use memkit_dataspace::{ClientId, DmFlags, FactoryId};
        self.system.set_fault_around(around).map_err(|e| e.to_string())?;
        let owner = ClientId::new(1, 0);
        let len = pages * PAGE_SIZE;
        let space = self.system.create_space(len + (1 << 21)).map_err(|e| e.to_string())?;
        let ds = self
            .system
            .lock(|s| s.manager.mem_open(FactoryId::ROOT, owner, len as u64, 12, DmFlags::empty(), "fault"))
            .map_err(|e| e.to_string())?;
        let start = self
            .system
            .lock(|s| {
                let hint = s.region_map(space).map(|m| m.window_start())?;
                s.attach(space, &memkit_region::AttachRequest::new(ds, len, Rights::RW).search(hint))
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        for i in 0..pages {
            // SAFETY: every page of the region is backed by the anonymous dataspace.
            unsafe { store_u8(VirtAddr::new(start.as_usize() + i * PAGE_SIZE), 1) };
        }
        let ns = t.elapsed().as_nanos() as f64 / pages as f64;
        self.system.destroy_space(space).map_err(|e| e.to_string())?;
        self.system.lock(|s| s.manager.close(owner, ds)).map_err(|e| e.to_string())?;
        Ok(ns)
    }
}

/// Runs the suite.
pub fn run(options: &Options) -> Report {
    let pages: usize = 100_000;
    let rounds: u32 = if options.quick { 3 } else { 7 };
    let mut report = Report::new("fault");
    let ram = Arc::new(HostRam::new((pages * PAGE_SIZE) as u64).expect("RAM"));
    ram.populate().expect("populate RAM");
    let (mut memkit, mut memkit_populate, mut linux) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let (mut stack_ns, mut around_ns) = (f64::INFINITY, f64::INFINITY);
    let stack = Stack::new(pages);
    let total = u64::from(rounds) * 5;
    for r in 0..rounds {
        let step = u64::from(r) * 5;
        if let Ok(stack) = &stack {
            options.progress("fault: memkit, region map + dataspace", step + 3, total);
            match stack.round(pages, 1) {
                Ok(ns) => stack_ns = stack_ns.min(ns),
                Err(e) => report.note(format!("full-stack round failed: {e}")),
            }
            options.progress("fault: memkit, region map + dataspace, fault-around", step + 4, total);
            match stack.round(pages, AROUND) {
                Ok(ns) => around_ns = around_ns.min(ns),
                Err(e) => report.note(format!("full-stack fault-around round failed: {e}")),
            }
        }
        options.progress("fault: memkit", step, total);
        memkit = memkit.min(memkit_round(&ram, pages, Populate::default()));
        options.progress("fault: memkit, MAP_POPULATE", step + 1, total);
        memkit_populate = memkit_populate.min(memkit_round(&ram, pages, Populate::Always));
        options.progress("fault: linux", step + 2, total);
        linux = linux.min(linux_round(pages));
    }
    options.progress("fault", total, total);
    report.push(CASE, MEMKIT, memkit);
    report.push(CASE, "linux anonymous", linux);
    report.push("first-touch fault with MAP_POPULATE, ns per page", MEMKIT, memkit_populate);
    if stack_ns.is_finite() {
        report.push(STACK_CASE, MEMKIT, stack_ns);
        report.push(STACK_CASE, "linux anonymous", linux);
    }
    if around_ns.is_finite() {
        report.push(STACK_AROUND_CASE, MEMKIT, around_ns);
        report.push(STACK_AROUND_CASE, "linux anonymous", linux);
    }
    if let Err(e) = &stack {
        report.note(format!("full stack not measured: {e}"));
    }
    report.note(format!(
        "{pages} pages per round, best of {rounds} rounds; memkit / linux = {:.2}, through region map + dataspace {:.2}, with fault-around {:.2} (target <= 3)",
        memkit / linux,
        stack_ns / linux,
        around_ns / linux
    ));
    report.note(format!(
        "fault-around maps a still-empty aligned block of {AROUND} pages on its first fault: one signal and one mmap per block, but up to {} frames committed before their pages are touched; strict one-page laziness is the row without it",
        AROUND - 1
    ));
    match software_resolution() {
        Some((case, ns)) => {
            report.note(format!("software-only resolution (suite region, {case}): {ns:.1} ns per fault"))
        }
        None => report.note("software-only resolution: the region suite has no fault case"),
    }
    report
}

/// memkit's software-only fault resolution: as the `region` suite last wrote it, or measured
/// now by a quick run of that suite.
fn software_resolution() -> Option<(String, f64)> {
    let from_json = std::fs::read_to_string(crate::output_dir().join("region.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| {
            json["results"].as_array()?.iter().find_map(|r| {
                let case = r["case"].as_str()?;
                let ns = r["ns_per_op"].as_f64()?;
                (is_resolution(case) && r["impl"] == MEMKIT).then(|| (case.to_string(), ns))
            })
        });
    from_json.or_else(|| {
        let report = crate::run("region", &Options::new(true))?;
        report
            .results
            .iter()
            .find(|r| is_resolution(&r.case) && r.implementation == MEMKIT)
            .map(|r| (r.case.clone(), r.ns_per_op))
    })
}

fn is_resolution(case: &str) -> bool {
    case.starts_with("fault resolve")
}
