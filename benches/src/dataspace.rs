//! The dataspace suite: memkit's dataspace manager over memkit's frame allocator (one pool
//! of 2.5 GiB) and a flat RAM model (a `Vec<u8>` standing for physical memory, so frame
//! copies really copy bytes).
//!
//! Cases:
//! - `copy 1 GiB`: a copy-on-write copy of a fully populated 1 GiB dataspace (memkit's row)
//!   against an eager copy of the same dataspace (every frame allocated and its 4 KiB
//!   copied), measured in the same run, interleaved; ns per copy. Target speedup >= 50.
//! - `map first touch`: `map` of a never-touched page of an anonymous dataspace (allocate a
//!   frame and zero it); ns per page.
//! - `map resident`: `map` of a page that already has its frame; ns per page.
//! - `map cow break`: a write `map` of a page shared copy-on-write (allocate, copy 4 KiB);
//!   ns per page.
//! - `create+close 16 KiB` (anonymous) and `create+close 64 KiB pinned`: ns per pair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use memkit_dataspace::{ClientId, DmFlags, FactoryId, Manager, NoRevoker, PoolId};
use memkit_phys::{Allocator, LockedAllocator, MemoryArea, get_header, header_words};
use memkit_types::{Access, Frame, FrameCount, PAGE_SIZE, PhysAddr, PhysMemory};

use crate::{MEMKIT, Options, Report, time_per_op};

/// Frames in the pool: 2.5 GiB (a 1 GiB source, its eager copy, and room for the rest).
const FRAMES: u64 = 5 << 17;
const GIB: u64 = 1 << 30;
const PAGE: u64 = PAGE_SIZE as u64;
const OWNER: ClientId = ClientId::new(1, 0);
const EAGER: &str = "eager copy";

/// Physical memory as one flat byte vector, frame `n` at byte `n * 4096`.
pub(crate) struct FlatRam {
    bytes: spin::Mutex<Vec<u8>>,
    copies: AtomicU64,
}

impl FlatRam {
    pub(crate) fn new(frames: u64) -> Self {
        // Touch every page once so the host's first-touch faults are not measured.
        FlatRam { bytes: spin::Mutex::new(vec![1u8; (frames * PAGE) as usize]), copies: AtomicU64::new(0) }
    }

    fn span(frame: Frame, count: FrameCount) -> std::ops::Range<usize> {
        let start = (frame.number() * PAGE) as usize;
        start..start + (count.get() * PAGE) as usize
    }
}

impl PhysMemory for FlatRam {
    fn zero(&self, frame: Frame, count: FrameCount) {
        self.bytes.lock()[Self::span(frame, count)].fill(0);
    }
    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        let from = Self::span(src, count);
        self.bytes.lock().copy_within(from, Self::span(dst, count).start);
        self.copies.fetch_add(count.get(), Ordering::Relaxed);
    }
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        let at = addr.as_u64() as usize;
        buf.copy_from_slice(&self.bytes.lock()[at..at + buf.len()]);
    }
    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        let at = addr.as_u64() as usize;
        self.bytes.lock()[at..at + buf.len()].copy_from_slice(buf);
    }
}

type Dsm<'h> = Manager<LockedAllocator<'h>, FlatRam>;

/// Runs the suite.
#[must_use]
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("dataspace");
    let area = MemoryArea::new(PhysAddr::zero(), FRAMES * PAGE);
    let mut header = vec![0u64; header_words(area).expect("a valid area")];
    let region = get_header(area, core::iter::empty()).expect("room for the header");
    let allocator = Allocator::init(area, region, &mut header, core::iter::empty()).expect("init");
    options.progress("RAM", 0, 1);
    let mut m: Dsm<'_> = Manager::new(memkit_dataspace::Config::new(FRAMES * PAGE), FlatRam::new(FRAMES));
    m.set_pool(PoolId::DEFAULT, LockedAllocator::new(allocator));
    options.progress("RAM", 1, 1);

    copy_gib(&mut m, options, &mut report);
    maps(&mut m, options, &mut report);
    create_close(&mut m, options, &mut report);
    report
}

fn copy_gib(m: &mut Dsm<'_>, options: &Options, report: &mut Report) {
    let rounds = if options.quick { 3 } else { 7 };
    let src = m.mem_open(FactoryId::ROOT, OWNER, GIB, 0, DmFlags::empty(), "source").expect("1 GiB");
    m.allocate(OWNER, src, 0, GIB, &mut NoRevoker).expect("populate 1 GiB");
    m.write(src, 12345, b"payload", &mut NoRevoker).expect("write");
    let (mut cow_best, mut eager_best) = (f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        options.progress("copy 1 GiB", round, rounds);
        let t = Instant::now();
        let cow = m.copy(OWNER, src, DmFlags::COW, "cow", &mut NoRevoker).expect("COW copy");
        cow_best = cow_best.min(t.elapsed().as_nanos() as f64);
        m.close(OWNER, cow).expect("close");

        let copies = m.memory().copies.load(Ordering::Relaxed);
        let t = Instant::now();
        let eager = m.copy(OWNER, src, DmFlags::empty(), "eager", &mut NoRevoker).expect("eager copy");
        eager_best = eager_best.min(t.elapsed().as_nanos() as f64);
        let copied = m.memory().copies.load(Ordering::Relaxed) - copies;
        assert_eq!(copied, GIB / PAGE, "the eager copy copies every frame");
        let mut b = [0u8; 7];
        m.read(eager, 12345, &mut b).expect("read");
        assert_eq!(&b, b"payload");
        m.close(OWNER, eager).expect("close");
    }
    options.progress("copy 1 GiB", rounds, rounds);
    m.close(OWNER, src).expect("close");
    report.push("copy 1 GiB", MEMKIT, cow_best);
    report.push("copy 1 GiB", EAGER, eager_best);
    report.note(format!(
        "copy 1 GiB: copy-on-write {:.2} ms, eager {:.1} ms: {:.0}x (target >= 50x)",
        cow_best / 1e6,
        eager_best / 1e6,
        eager_best / cow_best
    ));
}

fn maps(m: &mut Dsm<'_>, options: &Options, report: &mut Report) {
    let pages: u64 = if options.quick { 1 << 14 } else { 1 << 16 };
    let rounds = if options.quick { 2 } else { 5 };
    let (mut first, mut resident, mut broken) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        options.progress("map", round, rounds);
        let ds = m.mem_open(FactoryId::ROOT, OWNER, pages * PAGE, 0, DmFlags::empty(), "m").expect("open");
        first = first.min(time_per_op(pages, |i| {
            let r = m.map(ds, i * PAGE, Access::Write).expect("first touch");
            let _ = std::hint::black_box(r);
        }));
        resident = resident.min(time_per_op(pages, |i| {
            let r = m.map(ds, i * PAGE, Access::Write).expect("resident");
            let _ = std::hint::black_box(r);
        }));
        let copy = m.copy(OWNER, ds, DmFlags::COW, "c", &mut NoRevoker).expect("COW copy");
        broken = broken.min(time_per_op(pages, |i| {
            let r = m.map(copy, i * PAGE, Access::Write).expect("COW break");
            let _ = std::hint::black_box(r);
        }));
        m.close(OWNER, copy).expect("close");
        m.close(OWNER, ds).expect("close");
    }
    options.progress("map", rounds, rounds);
    report.push("map first touch (per page)", MEMKIT, first);
    report.push("map resident (per page)", MEMKIT, resident);
    report.push("map cow break (per page)", MEMKIT, broken);
}

fn create_close(m: &mut Dsm<'_>, options: &Options, report: &mut Report) {
    let n: u64 = if options.quick { 20_000 } else { 200_000 };
    options.progress("create+close", 0, 2);
    let anon = time_per_op(n, |_| {
        let ds = m.mem_open(FactoryId::ROOT, OWNER, 4 * PAGE, 0, DmFlags::empty(), "a").expect("open");
        m.close(OWNER, ds).expect("close");
    });
    options.progress("create+close", 1, 2);
    let pinned = time_per_op(n / 4, |_| {
        let ds = m.mem_open(FactoryId::ROOT, OWNER, 16 * PAGE, 0, DmFlags::PINNED, "p").expect("open");
        m.close(OWNER, ds).expect("close");
    });
    options.progress("create+close", 2, 2);
    report.push("create+close 16 KiB anonymous", MEMKIT, anon);
    report.push("create+close 64 KiB pinned", MEMKIT, pinned);
    report.note(format!(
        "create+close: {:.0} anonymous dataspaces/s, {:.0} pinned dataspaces/s",
        1e9 / anon,
        1e9 / pinned
    ));
}
