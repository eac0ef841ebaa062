//! The hosted [`System`] against a [`SpaceSet`] of `memkit-spaces` over a software MMU and
//! model RAM: the same set code under another MMU (`mmap` windows, real loads and stores,
//! real faults, the signal handler) against the reference. The same random actions on both (dataspaces of odd sizes, attachments with every flag, the
//! same dataspace twice in one space, partial detaches, copy-on-write and eager copies,
//! resizes, closes, loads and stores), and every result and every readable byte must agree.

use std::sync::Arc;

use memkit_dataspace::{ClientId, Config, DataspaceId, DmFlags, FactoryId, Manager, PoolId};
use memkit_host::{HostRam, HostSpaceId, RamRef, System};
use memkit_region::{AttachRequest, DetachFlags, Flags, RegionMap, SoftMmu};
use memkit_spaces::SpaceSet;
use memkit_testkit::{ModelFrameSource, SparseRam};
use memkit_types::{Frame, FrameCount, PAGE_SIZE, Rights, VirtAddr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OWNER: ClientId = ClientId::new(1, 0);
const FRAMES: u64 = 4096;
/// Frames of the default pool in a run where they run out.
const FEW_FRAMES: u64 = 160;
const WINDOW: usize = 1 << 20;

type Set = SpaceSet<ModelFrameSource, SparseRam, SoftMmu>;

struct Pair {
    sys: System<ModelFrameSource>,
    set: Set,
    /// (hosted space, its window start, reference space, its window start)
    spaces: Vec<(HostSpaceId, VirtAddr, memkit_spaces::SpaceId, VirtAddr)>,
    /// (hosted id, reference id)
    dataspaces: Vec<(DataspaceId, DataspaceId)>,
    /// (space index, offset in the window, size)
    regions: Vec<(usize, usize, usize)>,
    /// Successful operations by kind, to show the driver reaches them.
    done: std::collections::BTreeMap<&'static str, usize>,
}

fn pair(frames: u64) -> Pair {
    let ram = Arc::new(HostRam::new(FRAMES * PAGE_SIZE as u64).unwrap());
    let mut manager = Manager::new(Config::new(FRAMES * PAGE_SIZE as u64), RamRef(Arc::clone(&ram)));
    manager.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0), FrameCount::new(frames)));
    let sys = System::new(ram, manager);
    let mut reference = Manager::new(Config::new(FRAMES * PAGE_SIZE as u64), SparseRam::new());
    reference.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0), FrameCount::new(frames)));
    let mut set = SpaceSet::new(reference);
    let mut spaces = Vec::new();
    for i in 0..2 {
        let h = sys.create_space(WINDOW).unwrap();
        let hs = sys.lock(|s| s.region_map(h).unwrap().window_start());
        let rs = VirtAddr::new(0x4000_0000 + i * 0x1000_0000);
        let r = set.add_space(RegionMap::new(rs, WINDOW), SoftMmu::new());
        spaces.push((h, hs, r, rs));
    }
    Pair { sys, set, spaces, dataspaces: Vec::new(), regions: Vec::new(), done: Default::default() }
}

fn at(a: VirtAddr, off: usize) -> VirtAddr {
    VirtAddr::new(a.as_usize() + off)
}

impl Pair {
    fn count(&mut self, kind: &'static str, ok: bool) {
        if ok {
            *self.done.entry(kind).or_insert(0) += 1;
        }
    }

    fn check(&self) {
        self.sys.check_invariants();
        self.set.check_invariants();
    }

    /// Loads through both and compares the outcome and the bytes.
    fn compare_load(&mut self, space: usize, offset: usize, len: usize, what: &str) {
        let (h, hs, r, rs) = self.spaces[space];
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        let got = self.sys.load(h, at(hs, offset), &mut a);
        let want = self.set.load(r, at(rs, offset), &mut b);
        assert_eq!(got.is_ok(), want.is_ok(), "{what}: load {space}+{offset:#x}: {got:?} vs {want:?}");
        self.count("load", want.is_ok());
        if want.is_ok()
            && let Some(i) = (0..len).find(|&i| a[i] != b[i])
        {
            panic!("{what}: byte at {space}+{:#x}: {:#04x}, the reference has {:#04x}", offset + i, a[i], b[i]);
        }
    }

    fn compare_everything(&mut self, what: &str) {
        for (space, offset, size) in self.regions.clone() {
            for page in (0..size).step_by(PAGE_SIZE) {
                self.compare_load(space, offset + page, PAGE_SIZE, what);
            }
        }
    }

    fn step(&mut self, rng: &mut SmallRng, n: usize) {
        let what = format!("action {n}");
        match rng.random_range(0..12) {
            0 | 1 if self.dataspaces.len() < 12 => {
                let size = rng.random_range(1..6 * PAGE_SIZE as u64);
                let h = self.sys.lock(|s| s.manager.mem_open(FactoryId::ROOT, OWNER, size, 12, DmFlags::empty(), "d"));
                let r = self.set.manager_mut().mem_open(FactoryId::ROOT, OWNER, size, 12, DmFlags::empty(), "d");
                self.dataspaces.push((h.unwrap(), r.unwrap()));
            }
            0..=3 if !self.dataspaces.is_empty() => {
                let (hd, rd) = self.dataspaces[rng.random_range(0..self.dataspaces.len())];
                let space = rng.random_range(0..self.spaces.len());
                let (h, hs, r, rs) = self.spaces[space];
                let size = rng.random_range(1..8) * PAGE_SIZE;
                let offset = rng.random_range(0..3) * PAGE_SIZE as u64;
                let rights = if rng.random_bool(0.8) { Rights::RW } else { Rights::READ };
                let mut flags = Flags::empty();
                if rng.random_bool(0.3) {
                    flags |= Flags::DETACH_FREE;
                }
                if rng.random_bool(0.2) {
                    flags |= Flags::EAGER_MAP;
                }
                let req = |ds, start| AttachRequest::new(ds, size, rights).offset(offset).flags(flags).search(start);
                let got = self.sys.lock(|s| s.attach(h, &req(hd, hs))).unwrap();
                let want = self.set.attach(r, &req(rd, rs));
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: attach {got:?} vs {want:?}");
                self.count("attach", want.is_ok());
                if let (Ok(g), Ok(w)) = (got, want) {
                    let (go, wo) = (g.as_usize() - hs.as_usize(), w.as_usize() - rs.as_usize());
                    assert_eq!(go, wo, "{what}: attached at different offsets");
                    self.regions.push((space, go, size));
                }
            }
            4 if !self.regions.is_empty() => {
                let i = rng.random_range(0..self.regions.len());
                let (space, offset, size) = self.regions[i];
                let (h, hs, r, rs) = self.spaces[space];
                let pages = size / PAGE_SIZE;
                let (cut, len, flags) = if pages > 1 && rng.random_bool(0.5) {
                    let first = rng.random_range(0..pages);
                    let n = rng.random_range(1..=pages - first);
                    (first * PAGE_SIZE, n * PAGE_SIZE, DetachFlags::EXACT)
                } else {
                    (0, size, DetachFlags::OVERLAP)
                };
                let flags = if rng.random_bool(0.3) { flags | DetachFlags::KEEP } else { flags };
                let got = self.sys.lock(|s| s.detach(h, at(hs, offset + cut), len, flags)).unwrap();
                let want = self.set.detach(r, at(rs, offset + cut), len, flags);
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: detach {got:?} vs {want:?}");
                self.count("detach", want.is_ok());
                self.regions.remove(i);
                // What is left of the region (the head and the tail of an exact cut).
                if flags.contains(DetachFlags::EXACT) {
                    if cut > 0 {
                        self.regions.push((space, offset, cut));
                    }
                    if cut + len < size {
                        self.regions.push((space, offset + cut + len, size - cut - len));
                    }
                }
            }
            5..=7 if !self.regions.is_empty() => {
                let (space, offset, size) = self.regions[rng.random_range(0..self.regions.len())];
                let (h, hs, r, rs) = self.spaces[space];
                let at_ = rng.random_range(0..size);
                let len = rng.random_range(1..=(size - at_).min(3 * PAGE_SIZE));
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let got = self.sys.store(h, at(hs, offset + at_), &bytes);
                let want = self.set.store(r, at(rs, offset + at_), &bytes);
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: store {got:?} vs {want:?}");
                self.count("store", want.is_ok());
            }
            8 if !self.dataspaces.is_empty() => {
                let (hd, rd) = self.dataspaces[rng.random_range(0..self.dataspaces.len())];
                let flags = if rng.random_bool(0.7) { DmFlags::COW } else { DmFlags::empty() };
                let got = self.sys.lock(|s| {
                    let (m, mut rv) = s.manager_and_revoker();
                    m.copy(OWNER, hd, flags, "c", &mut rv)
                });
                let want = {
                    let (m, mut rv) = self.set.manager_and_revoker();
                    m.copy(OWNER, rd, flags, "c", &mut rv)
                };
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: copy {got:?} vs {want:?}");
                self.count("copy", want.is_ok());
                if let (Ok(g), Ok(w)) = (got, want)
                    && self.dataspaces.len() < 16
                {
                    self.dataspaces.push((g, w));
                }
            }
            9 if !self.dataspaces.is_empty() => {
                let (hd, rd) = self.dataspaces[rng.random_range(0..self.dataspaces.len())];
                let size = rng.random_range(1..8 * PAGE_SIZE as u64);
                let got = self.sys.lock(|s| {
                    let (m, mut rv) = s.manager_and_revoker();
                    m.resize(OWNER, hd, size, &mut rv)
                });
                let want = {
                    let (m, mut rv) = self.set.manager_and_revoker();
                    m.resize(OWNER, rd, size, &mut rv)
                };
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: resize {got:?} vs {want:?}");
                self.count("resize", want.is_ok());
            }
            10 if !self.dataspaces.is_empty() => {
                let i = rng.random_range(0..self.dataspaces.len());
                let (hd, rd) = self.dataspaces.remove(i);
                let got = self.sys.lock(|s| s.manager.close(OWNER, hd));
                let want = self.set.manager_mut().close(OWNER, rd);
                assert_eq!(got.is_ok(), want.is_ok(), "{what}: close {got:?} vs {want:?}");
                self.count("close", want.is_ok());
            }
            _ if !self.regions.is_empty() => {
                let (space, offset, size) = self.regions[rng.random_range(0..self.regions.len())];
                let at_ = rng.random_range(0..size);
                let len = rng.random_range(1..=(size - at_).min(2 * PAGE_SIZE));
                self.compare_load(space, offset + at_, len, &what);
            }
            _ => {}
        }
    }
}

#[test]
fn the_system_agrees_with_the_space_set_over_random_actions() {
    const ACTIONS: usize = 10_000;
    for seed in 0..2u64 {
        let mut p = pair(FRAMES);
        let around = if seed == 0 { 1 } else { memkit_host::DEFAULT_FAULT_AROUND };
        p.sys.set_fault_around(around).unwrap();
        p.set.set_fault_around(around).unwrap();
        let mut rng = SmallRng::seed_from_u64(0x7365_7473 + seed);
        for n in 0..ACTIONS / 2 {
            p.step(&mut rng, n);
            if n % 64 == 0 {
                p.check();
                p.compare_everything(&format!("seed {seed}, after action {n}"));
            }
        }
        p.check();
        p.compare_everything(&format!("seed {seed}, at the end"));
        eprintln!("seed {seed}: {:?}", p.done);
        for kind in ["attach", "detach", "store", "copy", "resize", "close", "load"] {
            assert!(p.done.get(kind).copied().unwrap_or(0) > 50, "too few successful {kind}s: {:?}", p.done);
        }
    }
}

#[test]
fn the_system_agrees_with_the_space_set_when_frames_run_out() {
    // Without fault-around both take exactly the same frames, so they run out at the same
    // action: every out-of-memory error must agree too.
    const ACTIONS: usize = 5_000;
    let mut p = pair(FEW_FRAMES);
    p.sys.set_fault_around(1).unwrap();
    let mut rng = SmallRng::seed_from_u64(0x006f_6f6d);
    let mut refused = 0;
    for n in 0..ACTIONS {
        p.step(&mut rng, n);
        let free = p.sys.lock(|s| memkit_types::FrameSource::free_frames(s.manager.pool(PoolId::DEFAULT).unwrap()));
        let want = memkit_types::FrameSource::free_frames(p.set.manager().pool(PoolId::DEFAULT).unwrap());
        assert_eq!(free, want, "action {n}: free frames differ");
        if free.get() == 0 {
            refused += 1;
        }
        if n % 64 == 0 {
            p.check();
            p.compare_everything(&format!("after action {n}"));
        }
    }
    p.check();
    p.compare_everything("at the end");
    eprintln!("frames ran out: {:?}, pool empty after {refused} actions", p.done);
    assert!(refused > 100, "the pool never ran dry: {refused}");
}
