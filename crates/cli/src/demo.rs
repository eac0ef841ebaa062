//! `memkit demo`: the main job. Every layer of the stack on one machine, with real loads and
//! stores, checked as it goes; a report and an SVG picture at the end.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use memkit_dataspace::{ClientId, CopyLength, CopyRequest, DataspaceId, DmFlags, FactoryId, MemphysOpenRequest};
use memkit_heap::HeapId;
use memkit_host::HostSpaceId;
use memkit_region::{AttachRequest, Flags};
use memkit_types::{Access, FrameSource, PAGE_SIZE, PhysAddr, PhysPlacement, Rights, SUPERPAGE_SIZE, VirtAddr};

use crate::hosted::{self, Hosted, human};

/// The checks the demo made: (what, passed).
#[derive(Debug, Default)]
struct Checks(Vec<(String, bool)>);

impl Checks {
    fn check(&mut self, what: impl Into<String>, ok: bool) -> bool {
        self.0.push((what.into(), ok));
        ok
    }

    fn failed(&self) -> usize {
        self.0.iter().filter(|(_, ok)| !ok).count()
    }
}

const OWNER: ClientId = ClientId::new(1, 0);
const OTHER_TASK: ClientId = ClientId::new(7, 0);

/// Runs the demo on the machine of `map` (the embedded default without one).
pub(crate) fn run(map: Option<&Path>, svg: &Path) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    println!("memkit demo: {}", describe(&h));
    println!();
    println!("pools after boot:");
    print!("{}", hosted::pool_table(h.pools.stats()));
    println!();
    let mut checks = Checks::default();
    let mut latencies = Vec::new();
    if let Err(e) = exercise(&mut h, &mut checks, &mut latencies, svg) {
        checks.check(format!("the demo ran to its end ({e})"), false);
    }
    report(&mut h, &checks, &mut latencies);
    if checks.failed() == 0 {
        println!("all {} checks passed", checks.0.len());
        ExitCode::SUCCESS
    } else {
        println!("{} of {} checks FAILED", checks.failed(), checks.0.len());
        ExitCode::from(1)
    }
}

fn describe(h: &Hosted) -> String {
    let usable = h.machine.usable();
    let image = match h.machine.kernel_image() {
        Some(k) => format!("kernel image at {:#x}..{:#x}", k.start.as_u64(), k.end()),
        None => "no kernel image".to_string(),
    };
    format!("{} of usable RAM in {} ranges, {image}", human(usable.bytes()), usable.as_slice().len())
}

fn open(
    h: &Hosted,
    name: &str,
    pool: u32,
    placement: PhysPlacement,
    size: u64,
    align: u32,
    flags: DmFlags,
) -> Result<DataspaceId, String> {
    h.system
        .lock(|s| {
            s.manager.memphys_open(
                FactoryId::ROOT,
                OWNER,
                MemphysOpenRequest::new(pool, size).placed(placement).align(align).flags(flags).name(name),
            )
        })
        .map_err(|e| format!("{name}: {e}"))
}

fn attach(h: &Hosted, space: HostSpaceId, req: AttachRequest<DataspaceId>) -> Result<VirtAddr, String> {
    h.system.lock(|s| s.attach(space, &req)).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

fn window_start(h: &Hosted, space: HostSpaceId) -> Result<VirtAddr, String> {
    h.system.lock(|s| s.region_map(space).map(|m| m.window_start())).map_err(|e| e.to_string())
}

fn at(a: VirtAddr, off: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + off)
}

fn pattern(i: usize, salt: u8) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(salt)
}

/// Stores one byte per page with real stores, timing each (the first touch of each page is a
/// real fault resolved by memkit).
fn touch_pages(
    h: &Hosted,
    space: HostSpaceId,
    start: VirtAddr,
    pages: usize,
    salt: u8,
    lat: &mut Vec<Duration>,
) -> Result<(), String> {
    for p in 0..pages {
        let t = Instant::now();
        h.system.store(space, at(start, p * PAGE_SIZE + 8), &[pattern(p, salt)]).map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
    }
    Ok(())
}

fn pages_hold(h: &Hosted, space: HostSpaceId, start: VirtAddr, pages: usize, salt: u8) -> Result<bool, String> {
    for p in 0..pages {
        let mut b = [0u8];
        h.system.load(space, at(start, p * PAGE_SIZE + 8), &mut b).map_err(|e| e.to_string())?;
        if b[0] != pattern(p, salt) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn byte(h: &Hosted, space: HostSpaceId, addr: VirtAddr) -> Result<u8, String> {
    let mut b = [0u8];
    h.system.load(space, addr, &mut b).map_err(|e| e.to_string())?;
    Ok(b[0])
}

fn exercise(h: &mut Hosted, c: &mut Checks, lat: &mut Vec<Duration>, svg: &Path) -> Result<(), String> {
    let a = h.system.create_space(1 << 30).map_err(|e| e.to_string())?;
    let b = h.system.create_space(1 << 30).map_err(|e| e.to_string())?;
    let (a0, b0) = (window_start(h, a)?, window_start(h, b)?);
    println!("address spaces: A at {a0} and B at {b0}, 1 GiB windows reserved PROT_NONE");

    // Dataspaces of every kind.
    let anon_size = 4 << 20;
    let anon = open(h, "anonymous", 0, PhysPlacement::AnyAddr, anon_size, 12, DmFlags::empty())?;
    let contig = open(h, "contiguous", 0, PhysPlacement::AnyAddr, 256 << 10, 16, DmFlags::CONTIGUOUS)?;
    let pinned = open(h, "pinned", 0, PhysPlacement::AnyAddr, 64 << 10, 12, DmFlags::PINNED)?;
    let superp = open(h, "superpages", 0, PhysPlacement::AnyAddr, 4 << 20, 21, DmFlags::SUPERPAGES)?;
    let fixed_at = PhysAddr::new(0x0800_0000);
    let fixed = open(h, "fixed", 0, PhysPlacement::Fixed(fixed_at), 64 << 10, 12, DmFlags::empty())?;
    let isa = open(h, "isa-dma", 7, PhysPlacement::AnyAddr, 128 << 10, 12, DmFlags::CONTIGUOUS)?;
    println!(
        "dataspaces: anonymous 4 MiB, contiguous 256 KiB, pinned 64 KiB, superpages 4 MiB, fixed 64 KiB at {fixed_at}, ISA DMA 128 KiB"
    );

    let (contig_pa, contig_run) = h.system.lock(|s| s.manager.phys_addr(contig, 0)).map_err(|e| e.to_string())?;
    c.check(format!("contiguous dataspace is one run: {contig_pa}+{}", human(contig_run)), contig_run >= 256 << 10);
    c.check("contiguous dataspace is aligned to 64 KiB", contig_pa.is_aligned(64 << 10));
    let (fixed_pa, _) = h.system.lock(|s| s.manager.phys_addr(fixed, 0)).map_err(|e| e.to_string())?;
    c.check(format!("fixed dataspace is at {fixed_at}"), fixed_pa == fixed_at);
    let (isa_pa, isa_run) = h.system.lock(|s| s.manager.phys_addr(isa, 0)).map_err(|e| e.to_string())?;
    c.check(
        format!("ISA DMA dataspace lies below 16 MiB ({isa_pa})"),
        isa_pa.as_u64() + isa_run <= 16 << 20 && isa_run >= 128 << 10,
    );
    let (super_pa, _) = h.system.lock(|s| s.manager.phys_addr(superp, 0)).map_err(|e| e.to_string())?;
    c.check("superpage dataspace is backed by 2 MiB frames", super_pa.is_aligned(SUPERPAGE_SIZE as u64));

    // Attach: search, alignment, in an area.
    let ra = attach(h, a, AttachRequest::new(anon, anon_size as usize, Rights::RW).search(a0))?;
    let rs = attach(h, a, AttachRequest::new(superp, 4 << 20, Rights::RW).search(a0).align(21))?;
    c.check(format!("superpage region attached 2 MiB aligned at {rs}"), rs.is_aligned(SUPERPAGE_SIZE));
    let area = h
        .system
        .lock(|s| s.reserve_area(a, at(a0, 512 << 20), 1 << 20, Flags::SEARCH_ADDR, 20, None))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut in_area = AttachRequest::new(contig, 256 << 10, Rights::RW).flags(Flags::IN_AREA);
    in_area.start = area;
    let rc = attach(h, a, in_area)?;
    c.check(
        format!("contiguous region attached inside the area at {area}"),
        rc >= area && rc.as_usize() + (256 << 10) <= area.as_usize() + (1 << 20),
    );
    let rp = attach(h, a, AttachRequest::new(pinned, 64 << 10, Rights::RW).search(a0))?;
    let rf = attach(h, a, AttachRequest::new(fixed, 64 << 10, Rights::RW).search(a0))?;
    let ri = attach(h, a, AttachRequest::new(isa, 128 << 10, Rights::RW).search(a0))?;
    println!(
        "regions in A: anonymous {ra}, superpages {rs}, contiguous {rc} (in area {area}), pinned {rp}, fixed {rf}, ISA {ri}"
    );

    // Real stores and loads: every page of every region.
    let faults_before = memkit_host::faults_resolved();
    touch_pages(h, a, ra, anon_size as usize / PAGE_SIZE, 1, lat)?;
    for (r, size, salt) in
        [(rs, 4 << 20, 2), (rc, 256 << 10, 3), (rp, 64 << 10, 4), (rf, 64 << 10, 5), (ri, 128 << 10, 6)]
    {
        touch_pages(h, a, r, size / PAGE_SIZE, salt, lat)?;
    }
    let faults = memkit_host::faults_resolved() - faults_before;
    c.check(format!("first touches were real faults resolved by memkit ({faults})"), faults > 0);
    c.check("anonymous pages hold their stores", pages_hold(h, a, ra, anon_size as usize / PAGE_SIZE, 1)?);
    for (name, r, size, salt) in [
        ("superpage", rs, 4 << 20, 2),
        ("contiguous", rc, 256 << 10, 3),
        ("pinned", rp, 64 << 10, 4),
        ("fixed", rf, 64 << 10, 5),
        ("ISA DMA", ri, 128 << 10, 6),
    ] {
        c.check(format!("{name} pages hold their stores"), pages_hold(h, a, r, size / PAGE_SIZE, salt)?);
    }
    let mut through = [0u8];
    h.system.lock(|s| s.manager.read(fixed, 8, &mut through)).map_err(|e| e.to_string())?;
    c.check("a store through the window is in the dataspace (read by the manager)", through[0] == pattern(0, 5));
    let mut phys = [0u8];
    memkit_types::PhysMemory::read(
        &**h.system.ram(),
        fixed_at.checked_add(PAGE_SIZE as u64 + 8).unwrap_or(fixed_at),
        &mut phys,
    );
    c.check("... and at its physical address in RAM", phys[0] == pattern(1, 5));

    // Copy-on-write: a copy attached in B, both sides writing.
    let cow = h
        .system
        .lock(|s| {
            let (m, mut r) = s.manager_and_revoker();
            m.copy(OWNER, anon, DmFlags::COW, "cow copy", &mut r)
        })
        .map_err(|e| e.to_string())?;
    let rb = attach(h, b, AttachRequest::new(cow, anon_size as usize, Rights::RW).search(b0))?;
    c.check("the COW copy reads the original's data in B", pages_hold(h, b, rb, 16, 1)?);
    h.system.store(a, at(ra, 8), &[0xa1]).map_err(|e| e.to_string())?;
    h.system.store(b, at(rb, 8), &[0xb1]).map_err(|e| e.to_string())?;
    h.system.store(b, at(rb, PAGE_SIZE + 8), &[0xb2]).map_err(|e| e.to_string())?;
    h.system.store(a, at(ra, PAGE_SIZE + 8), &[0xa2]).map_err(|e| e.to_string())?;
    let isolated = byte(h, a, at(ra, 8))? == 0xa1
        && byte(h, b, at(rb, 8))? == 0xb1
        && byte(h, a, at(ra, PAGE_SIZE + 8))? == 0xa2
        && byte(h, b, at(rb, PAGE_SIZE + 8))? == 0xb2
        && byte(h, b, at(rb, 2 * PAGE_SIZE + 8))? == pattern(2, 1);
    c.check("the COW copy and the original stay isolated while both write", isolated);
    println!("copy-on-write: copy attached in B at {rb}; A and B wrote the same pages, each sees its own");

    // Sharing: the original attached in B too.
    let rsh = attach(h, b, AttachRequest::new(anon, anon_size as usize, Rights::READ).search(b0))?;
    h.system.store(a, at(ra, 3 * PAGE_SIZE + 8), &[0x5a]).map_err(|e| e.to_string())?;
    c.check("a dataspace attached in two spaces shows A's store in B", byte(h, b, at(rsh, 3 * PAGE_SIZE + 8))? == 0x5a);
    c.check("a read-only attachment refuses a store", !h.system.would_resolve(b, rsh, Access::Write));

    // Resize: shrink takes the tail away, grow brings zeros.
    let shrink = h.system.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.resize(OWNER, anon, 1 << 20, &mut r)
    });
    c.check("resize shrinks the anonymous dataspace to 1 MiB", shrink.is_ok());
    c.check(
        "a page past the new end is no longer reachable",
        !h.system.would_resolve(a, at(ra, 2 << 20), Access::Read),
    );
    let grow = h.system.lock(|s| {
        let (m, mut r) = s.manager_and_revoker();
        m.resize(OWNER, anon, anon_size, &mut r)
    });
    c.check("resize grows it back to 4 MiB", grow.is_ok());
    c.check("the grown pages read as zeros", byte(h, a, at(ra, (2 << 20) + 8))? == 0);
    c.check("the kept pages kept their data", byte(h, a, at(ra, 5 * PAGE_SIZE + 8))? == pattern(5, 1));

    // copy_long at unaligned offsets.
    let (src_off, dst_off, len) = (PAGE_SIZE as u64 * 4 + 3, 1000u64, 3 * PAGE_SIZE as u64 + 17);
    let long = h
        .system
        .lock(|s| {
            let (m, mut r) = s.manager_and_revoker();
            m.copy_long(
                OWNER,
                anon,
                CopyRequest::new(src_off, dst_off, CopyLength::Bytes(len)).name("copy_long"),
                &mut r,
            )
        })
        .map_err(|e| e.to_string())?;
    let rl = attach(h, b, AttachRequest::new(long, (dst_off + len) as usize, Rights::READ).search(b0))?;
    let mut same = true;
    for i in [0u64, 5, PAGE_SIZE as u64 - 3, 2 * PAGE_SIZE as u64, len - 1] {
        same &= byte(h, b, at(rl, (dst_off + i) as usize))? == byte(h, a, at(ra, (src_off + i) as usize))?;
    }
    same &= byte(h, b, at(rl, 10))? == 0;
    c.check("copy_long copied bytes at unaligned offsets (zeros before the destination offset)", same);

    // close_all of a client.
    let free_before = h.pools.pool(0).map(|p| p.allocator().free_frames().get()).unwrap_or(0);
    for i in 0..3 {
        h.system
            .lock(|s| {
                s.manager.mem_open(FactoryId::ROOT, OTHER_TASK, 64 << 10, 12, DmFlags::PINNED, &format!("task7-{i}"))
            })
            .map_err(|e| e.to_string())?;
    }
    let closed =
        h.system.lock(|s| s.manager.close_all(OTHER_TASK, OTHER_TASK, DmFlags::empty())).map_err(|e| e.to_string())?;
    let free_after = h.pools.pool(0).map(|p| p.allocator().free_frames().get()).unwrap_or(0);
    c.check(
        format!("close_all closed the client's {closed} dataspaces and gave their frames back"),
        closed == 3 && free_after == free_before,
    );
    let denied = h.system.lock(|s| s.manager.close(OTHER_TASK, anon));
    c.check("closing another client's dataspace is refused", denied.is_err());

    // Kernel heaps: every xmalloc heap.
    let heaps = h.heaps();
    let mut all = true;
    let mut blocks = Vec::new();
    for heap in
        [HeapId::Kernel, HeapId::Pinned, HeapId::Kernel4K64K, HeapId::Kernel16M, HeapId::Pinned4K64K, HeapId::Pinned16M]
    {
        for (size, align) in [(24usize, 3u32), (1000, 6), (30_000, 12), (200_000, 12)] {
            match heaps.try_xmalloc(size, align, heap) {
                Ok(p) => {
                    all &= (p.as_ptr() as usize).is_multiple_of(1 << align);
                    blocks.push((p, heap));
                }
                Err(_) => all = false,
            }
        }
    }
    c.check(format!("xmalloc served {} blocks from all six heaps, aligned", blocks.len()), all);
    println!("kernel heaps while {} blocks are live:", blocks.len());
    print!("{}", h.heap_report());
    let heaps = h.heaps();
    let freed = blocks.iter().all(|&(p, heap)| heaps.xmfree(p, heap).is_ok());
    c.check("xmfree gave every block back", freed);
    if let Some(&(p, heap)) = blocks.first() {
        c.check("a double xmfree is an error, not corruption", heaps.xmfree(p, heap).is_err());
    }

    println!();
    println!("pools while the demo's dataspaces are live:");
    print!("{}", hosted::pool_table(h.pools.stats()));
    match crate::picture::write(h, "memkit demo: physical memory while the demo's dataspaces are live", svg) {
        Ok(()) => println!("picture of physical memory written to {}", svg.display()),
        Err(e) => {
            c.check(format!("write the picture to {} ({e})", svg.display()), false);
        }
    }
    for space in [a, b] {
        h.system.destroy_space(space).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(h: &mut Hosted, c: &Checks, lat: &mut [Duration]) {
    lat.sort();
    println!();
    println!("faults resolved by memkit: {} (first touches timed: {})", memkit_host::faults_resolved(), lat.len());
    println!(
        "first-touch latency: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
        percentile(lat, 0.5).as_secs_f64() * 1e6,
        percentile(lat, 0.9).as_secs_f64() * 1e6,
        percentile(lat, 0.99).as_secs_f64() * 1e6,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e6
    );
    println!();
    println!("pools at the end (the demo's dataspaces are still open; its address spaces are gone):");
    print!("{}", hosted::pool_table(h.pools.stats()));
    println!();
    println!("kernel heaps at the end:");
    print!("{}", h.heap_report());
    println!();
    println!("checks:");
    for (what, ok) in &c.0 {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
}
