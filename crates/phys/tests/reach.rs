//! The random drivers reach every structural path of the frame allocator, its pools and its
//! per-CPU caches (`memkit_phys::reach` counts them).
//!
//! One test alone in its binary, so the process-wide counters see only its workload. The
//! allocator is driven through the reference-model harness (the same `Action`s as the
//! property test, the 10^6-action driver and the fuzz target) on a small area and on one
//! large enough for three summary layers; the caches and pools by random workloads checked
//! against a set of owned frames. Set `MEMKIT_REACH_PRINT=1` to print the figures.

use std::cell::Cell;
use std::collections::HashSet;

use arbitrary::{Arbitrary, Unstructured};
use memkit_phys::reach::{Path, Snapshot};
use memkit_phys::{
    Allocator, DEFAULT_KERNEL_IMAGE, DEFAULT_POOL, DirectMap, FrameCache, LockedAllocator, Machine, MemoryArea, Pools,
    get_header, header_words,
};
use memkit_testkit::phys::{Action, Harness};
use memkit_types::{Frame, FrameCount, Order, PhysAddr, PhysPlacement};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Random actions through the harness: `steps` of them, the model compared every `every`
/// actions, everything freed every `reset` actions.
fn drive(h: &mut Harness, rng: &mut SmallRng, steps: u64, every: u64, reset: u64) {
    let mut buf = vec![0u8; 4096];
    let mut done = 0;
    while done < steps {
        rng.fill(&mut buf[..]);
        let mut u = Unstructured::new(&buf);
        while let Ok(a) = Action::arbitrary(&mut u) {
            h.apply(a);
            done += 1;
            if done.is_multiple_of(every) {
                h.check();
            }
            if done.is_multiple_of(reset) {
                h.free_all();
            }
            if u.is_empty() || done >= steps {
                break;
            }
        }
    }
    h.check();
    h.free_all();
}

/// Random single-frame traffic through two CPUs' caches in front of a small allocator: no
/// frame is handed out twice, and every frame is back after the final drain.
fn drive_cache(rng: &mut SmallRng, steps: usize) {
    const FRAMES: u64 = 700;
    let area = MemoryArea::from_frames(Frame::from_number(0x100), FrameCount::new(FRAMES));
    let header = get_header(area, []).expect("room for the header");
    let mut words = vec![0u64; header_words(area).expect("a valid area")];
    let locked = LockedAllocator::<spin::Mutex<()>>::new(Allocator::init(area, header, &mut words, []).expect("init"));
    let total = locked.lock().total_frames();
    let cpu = Cell::new(0usize);
    let cache: FrameCache<'_, '_, _, 2> = FrameCache::new(&locked, || cpu.get());
    let mut held: Vec<Frame> = Vec::new();
    let mut owned = HashSet::new();
    for step in 0..steps {
        cpu.set(rng.random_range(0..3));
        // Phases that fill the allocator up and drain it again, so both refills that run dry
        // and full slots that drain happen.
        let alloc_bias = if (step / 2000) % 2 == 0 { 7 } else { 3 };
        if rng.random_range(0..10) < alloc_bias {
            if let Ok(f) = cache.allocate_frame() {
                assert!(owned.insert(f.number()), "frame {f:?} handed out twice");
                held.push(f);
            }
        } else if !held.is_empty() {
            let f = held.swap_remove(rng.random_range(0..held.len()));
            assert!(owned.remove(&f.number()));
            cache.free_frame(f).expect("a held frame goes back");
            // Freeing it again on the same CPU is caught by the slot.
            assert!(cache.free_frame(f).is_err(), "a double free on one CPU is refused");
        }
        if step % 5000 == 4999 {
            cache.drain();
            assert_eq!(cache.cached_frames().get(), 0);
            locked.lock().check_invariants();
        }
    }
    for f in held.drain(..) {
        cache.free_frame(f).expect("a held frame goes back");
    }
    cache.drain();
    let a = locked.lock();
    a.check_invariants();
    assert_eq!(a.free_frames(), total, "every frame is back");
}

/// Random runs from the pools of a small machine until they run dry, then back.
fn drive_pools(rng: &mut SmallRng, rounds: usize) {
    let machine = Machine::parse("0x0 0x1000000 usable\n0x1000000 0x1800000 usable\n", Some(DEFAULT_KERNEL_IMAGE))
        .expect("a valid map");
    let mut ram = vec![0u64; 0x1800000 / 8];
    let pools: Pools<'_> = Pools::new(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero())).expect("pools");
    for _ in 0..rounds {
        let mut held = Vec::new();
        loop {
            let n = rng.random_range(1..300u64);
            let align = Order::new(rng.random_range(0..4));
            match pools.allocate(DEFAULT_POOL, PhysPlacement::AnyAddr, FrameCount::new(n), align) {
                Ok(f) => held.push((f, n)),
                Err(_) => break,
            }
        }
        assert!(!held.is_empty());
        for (f, n) in held {
            pools.free(DEFAULT_POOL, f, FrameCount::new(n)).expect("a held run goes back");
        }
        for p in pools.iter() {
            let s = p.stats();
            assert_eq!(s.free_frames, s.total_frames);
            p.allocator().lock().check_invariants();
        }
    }
}

#[test]
fn random_drivers_reach_every_path() {
    let before = Snapshot::now();
    // The upper summary layers of the large area change only on rare sequences of actions:
    // some seeds reach them, some do not. The seed is one that does with the current set of
    // actions (it changed when `AddRegion` joined them, which reinterprets every input).
    let mut rng = SmallRng::seed_from_u64(4);
    // The 10^6-action driver's area: 4096 frames, two levels, one summary layer.
    let mut small = Harness::new(0x1f3, 4096, &[(0, 3), (700, 40), (2048, 1), (3000, 200)]);
    drive(&mut small, &mut rng, 100_000, 5000, 50_000);
    // 300 000 frames: three levels and three summary layers over the frame words.
    let mut large = Harness::new(0x4_0123, 300_000, &[(5, 70), (150_000, 4096), (299_000, 10)]);
    drive(&mut large, &mut rng, 40_000, 10_000, 2_000);
    drive_cache(&mut rng, 40_000);
    drive_pools(&mut rng, 20);
    let reached = Snapshot::now().since(&before);
    if std::env::var_os("MEMKIT_REACH_PRINT").is_some() {
        print!("{reached}");
    }
    let missed: Vec<Path> = reached.missed().collect();
    assert!(missed.is_empty(), "paths the random drivers never reach: {missed:?}\n{reached}");
}
