//! The region tree under the shapes a random driver rarely builds: long runs of small
//! regions with gaps, detached in ascending, descending and random order, so that leaves and
//! internal nodes split, merge and even out at every level. Overflow checks are on in the
//! test profiles, so a row computed from a stale neighbour panics here.

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{AttachRequest, DetachFlags, RegionMap, SoftMmu};
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
