//! The spaces suite: revocation through `memkit-spaces`' reverse index against the walk of
//! every region it replaced, in a space of 10 and of 100 000 regions.
//!
//! One space ([`SoftMmu`], model RAM) holds `n - 1` one-page regions of 1 000 other
//! dataspaces and, in their middle, one region of the measured dataspace (16 pages, every
//! page mapped once at the start). Cases (n = regions in the space):
//! - `cow copy n=N`: a copy-on-write copy of the dataspace (the manager write-protects its
//!   pages in every space first) and the close of the copy; ns per copy + close.
//! - `shrink n=N`: a resize of the dataspace to 8 pages (the manager unmaps pages 8..16
//!   everywhere first) and back to 16; ns per shrink + grow.
//!
//! Rows: `memkit` revokes through [`Spaces::revoker`] (the index names the one region of
//! the dataspace); `full scan` is the revoker before the index, which asked every space's
//! region map to walk all its regions ([`RegionMap::revoke`](memkit_region::RegionMap::revoke)).
//! Both run on the same spaces and manager, interleaved, each timed round after a quarter
//! round untimed (the walk evicts the caches). Target: memkit's cost at 100 000
//! regions the same as at 10 (within noise).

use memkit_dataspace::{
    ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PageRange, PoolId, RevokeKind, Revoker,
};
use memkit_phys::{Allocator, LockedAllocator, MemoryArea, get_header, header_words};
use memkit_region::{AddressSpace, AttachRequest, RegionMap, SoftMmu};
use memkit_spaces::{SpaceId, Spaces};
use memkit_types::{Access, PAGE_SIZE, PhysAddr, Rights, VirtAddr};

use crate::dataspace::FlatRam;
use crate::{MEMKIT, Options, Report, interleaved_warm};

const OWNER: ClientId = ClientId::new(1, 0);
const P: usize = PAGE_SIZE;
/// Pages of the measured dataspace.
const PAGES: usize = 16;
/// The other dataspaces the other regions show.
const OTHERS: usize = 1_000;
/// The row of the revoker that walks every region.
const SCAN: &str = "full scan";

/// Frames of the RAM behind the manager: 64 MiB, more than the touched pages need.
const FRAMES: u64 = 1 << 14;

type Mgr = Manager<LockedAllocator<'static>, FlatRam>;

/// A frame pool over `FRAMES` frames of a flat RAM; its header is leaked (a few per run).
fn pool() -> LockedAllocator<'static> {
    let area = MemoryArea::new(PhysAddr::zero(), FRAMES * P as u64);
    let header: &'static mut [u64] = vec![0u64; header_words(area).expect("a valid area")].leak();
    let region = get_header(area, core::iter::empty()).expect("room for the header");
    LockedAllocator::new(Allocator::init(area, region, header, core::iter::empty()).expect("init"))
}

/// The revoker before the reverse index: every region of every space is visited.
struct ScanRevoker<'a> {
    space: &'a mut AddressSpace<DataspaceId, SoftMmu>,
}

impl Revoker for ScanRevoker<'_> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let offset = pages.start.saturating_mul(P as u64);
        let size = pages.end.saturating_sub(pages.start).saturating_mul(P as u64);
        let s = &mut *self.space;
        if s.map.revoke(&mut s.mmu, ds, offset, size, keep).is_err() {
            let _ = s.map.revoke(&mut s.mmu, ds, offset, size, Rights::empty());
        }
    }
}

/// A space of `n` regions, the measured dataspace's among them.
struct Setup {
    manager: Mgr,
    spaces: Spaces<SoftMmu>,
    space: SpaceId,
    ds: DataspaceId,
}

fn setup(n: usize) -> Setup {
    let mut manager = Manager::new(Config::new(FRAMES * P as u64), FlatRam::new(FRAMES));
    manager.set_pool(PoolId::DEFAULT, pool());
    let mut spaces = Spaces::new();
    let window = VirtAddr::new(0x10_0000_0000);
    let space = spaces.add(RegionMap::new(window, 1 << 36), SoftMmu::new());
    let others: Vec<DataspaceId> = (0..OTHERS.min(n))
        .map(|_| manager.mem_open(FactoryId::ROOT, OWNER, P as u64, 0, DmFlags::empty(), "other").expect("open"))
        .collect();
    let ds = manager.mem_open(FactoryId::ROOT, OWNER, (PAGES * P) as u64, 0, DmFlags::empty(), "ds").expect("open");
    for i in 0..n - 1 {
        if i == (n - 1) / 2 {
            let req = AttachRequest::new(ds, PAGES * P, Rights::RW).search(window);
            let at = spaces.attach(&mut manager, space, &req).expect("attach");
            for p in 0..PAGES {
                let a = VirtAddr::new(at.as_usize() + p * P);
                spaces.resolve(&mut manager, space, a, Access::Write).expect("touch");
            }
        }
        let req = AttachRequest::new(others[i % others.len()], P, Rights::RW).search(window);
        spaces.attach(&mut manager, space, &req).expect("attach");
    }
    if n == 1 {
        let req = AttachRequest::new(ds, PAGES * P, Rights::RW).search(window);
        spaces.attach(&mut manager, space, &req).expect("attach");
    }
    Setup { manager, spaces, space, ds }
}

impl Setup {
    /// One operation (a copy and its close, or a shrink and the grow back) with the index's
    /// revoker or the walk of every region.
    fn op(&mut self, shrink: bool, scan: bool) {
        let Setup { manager, spaces, space, ds } = self;
        let mut walk;
        let mut index;
        let revoker: &mut dyn Revoker = if scan {
            walk = ScanRevoker { space: spaces.get_mut(*space).expect("the space") };
            &mut walk
        } else {
            index = spaces.revoker();
            &mut index
        };
        if shrink {
            manager.resize(OWNER, *ds, (PAGES / 2 * P) as u64, revoker).expect("shrink");
            manager.resize(OWNER, *ds, (PAGES * P) as u64, revoker).expect("grow");
        } else {
            let c = manager.copy(OWNER, *ds, DmFlags::COW, "c", revoker).expect("copy");
            manager.close(OWNER, c).expect("close");
        }
    }
}

/// Runs the suite.
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("spaces");
    let sizes = [10usize, 100_000];
    let rounds = if options.quick { 3 } else { 7 };
    let mut ours = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        options.progress("spaces", k as u64, sizes.len() as u64);
        let mut s = setup(n);
        s.spaces.check_invariants();
        for (case, shrink) in [("cow copy", false), ("shrink", true)] {
            // The walk costs about 2 ns per region: fewer of its operations at 100 000.
            let iterations = if options.quick { 2_000 } else { 10_000 };
            let iterations = if n > 1_000 { iterations / 10 } else { iterations };
            let cell = core::cell::RefCell::new(&mut s);
            let mut indexed = |_: u64| cell.borrow_mut().op(shrink, false);
            let mut scanned = |_: u64| cell.borrow_mut().op(shrink, true);
            // A quarter round untimed before each round: the walk of 100 000 regions evicts the
            // caches, and the indexed round would otherwise pay for refilling them.
            let impls: &mut [(&str, &mut dyn FnMut(u64))] = &mut [(MEMKIT, &mut indexed), (SCAN, &mut scanned)];
            let rows = interleaved_warm(rounds, iterations / 4, iterations, impls);
            for (name, ns) in rows {
                if name == MEMKIT {
                    ours.push((case, n, ns));
                }
                report.push(&format!("{case} n={n}"), &name, ns);
            }
        }
        s.spaces.check_invariants();
    }
    for case in ["cow copy", "shrink"] {
        let ns = |n: usize| ours.iter().find(|&&(c, m, _)| c == case && m == n).map_or(f64::NAN, |r| r.2);
        report.note(format!(
            "{case}: memkit at 100 000 regions / at 10 = {:.2} (target: 1 within noise)",
            ns(100_000) / ns(10)
        ));
    }
    report
}
