//! The region tree under the shapes a random driver rarely builds: long runs of small
//! regions with gaps, detached in ascending, descending and random order, so that leaves and
//! internal nodes split, merge and even out at every level. Overflow checks are on in the
//! test profiles, so a row computed from a stale neighbour panics here.

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{AttachRequest, DetachFlags, RegionMap, SoftMmu};
use memkit_testkit::region::run_order;
use memkit_types::{Frame, PAGE_SIZE, Rights, VirtAddr};

const BASE: usize = 0x1000_0000;
const P: usize = PAGE_SIZE;

struct World {
    map: RegionMap<MockId>,
    mmu: SoftMmu,
    backing: MockBacking,
    ds: MockId,
}

impl World {
    fn new(window: usize) -> Self {
        let mut backing = MockBacking::new(Frame::from_number(0x1000));
        let ds = backing.create(1, Rights::RW);
        World { map: RegionMap::new(VirtAddr::new(BASE), window), mmu: SoftMmu::new(), backing, ds }
    }

    fn attach(&mut self, at: usize) {
        let req = AttachRequest::new(self.ds, P, Rights::RW).at(VirtAddr::new(at));
        let got = self.map.attach(&mut self.backing, &mut self.mmu, &req).unwrap();
        assert_eq!(got.as_usize(), at);
        self.map.check_invariants();
    }

    fn detach(&mut self, at: usize) {
        self.map.detach(&mut self.backing, &mut self.mmu, VirtAddr::new(at), P, DetachFlags::EXACT).unwrap();
        self.map.check_invariants();
    }
}

/// Sixty one-page regions with one-page gaps, detached in ascending order: evening out two
/// leaves updated the left one's row in their parent while the right one's row still held
/// its old start, and the gap between them was computed as a negative number (the 26th
/// detach panicked with "attempt to subtract with overflow").
#[test]
fn ascending_detach_of_regions_with_gaps() {
    let mut w = World::new(1 << 24);
    let at = |i: usize| BASE + 2 * i * P;
    for i in 0..60 {
        w.attach(at(i));
    }
    for i in 0..60 {
        w.detach(at(i));
        assert_eq!(w.map.region_count(), 59 - i);
    }
}

/// Runs of one-page regions with gaps of 0, 1, 3 and irregular sizes, attached in one
/// order and detached (`EXACT`, one page each) in every order, up to thousands of regions
/// (three levels of the tree), with every invariant checked after each call. Searched
/// attaches then find the gaps the detaches left.
#[test]
fn every_detach_order_over_runs_with_gaps() {
    let sizes: &[usize] = if cfg!(miri) { &[30] } else { &[60, 1500] };
    let gaps: [fn(usize) -> usize; 4] = [|_| 0, |_| 1, |_| 3, |i| (i * 7) % 5];
    let mut deepest = memkit_region::TreeStats::NONE;
    for &n in sizes {
        for (g, gap) in gaps.iter().enumerate() {
            let mut starts = Vec::with_capacity(n);
            let mut at = BASE;
            for i in 0..n {
                starts.push(at);
                at += (1 + gap(i)) * P;
            }
            for attach_order in [0, 1, 2] {
                for detach_order in [0, 1, 2, 3] {
                    // The large runs (and every run under Miri) for one attach order each.
                    if (n > 100 || cfg!(miri)) && attach_order != g % 3 || cfg!(miri) && g != 1 {
                        continue;
                    }
                    let mut w = World::new(1 << 26);
                    for i in run_order(n, attach_order as u8, 11) {
                        w.attach(starts[i]);
                    }
                    for (k, i) in run_order(n, detach_order as u8, 5).into_iter().enumerate() {
                        w.detach(starts[i]);
                        assert_eq!(w.map.region_count(), n - 1 - k);
                        // Now and then a searched attach takes the lowest free page back.
                        if k % 97 == 0 {
                            let req = AttachRequest::new(w.ds, P, Rights::RW).search(VirtAddr::new(BASE));
                            let got = w.map.attach(&mut w.backing, &mut w.mmu, &req).unwrap();
                            let lowest = (0..)
                                .map(|p| BASE + p * P)
                                .find(|&a| a == got.as_usize() || w.map.region_at(VirtAddr::new(a)).is_none())
                                .unwrap();
                            assert_eq!(got.as_usize(), lowest, "first fit missed a lower gap");
                            w.detach(got.as_usize());
                        }
                    }
                    assert_eq!(w.map.region_count(), 0);
                    deepest = deepest.plus(&w.map.tree_stats());
                }
            }
        }
    }
    if !cfg!(miri) {
        assert!(deepest.grows[2] > 0 && deepest.shrinks[2] > 0, "never three levels: {deepest:?}");
        assert!(deepest.evens[0] > 0 && deepest.merges[1] > 0, "{deepest:?}");
    }
}
