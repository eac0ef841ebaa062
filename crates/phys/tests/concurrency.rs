//! Several threads allocate and free through the locked allocator and the per-CPU caches; a
//! shared bitmap proves no frame is handed out twice, and none is lost at the end.

use std::sync::atomic::{AtomicU64, Ordering};

use memkit_phys::{Allocator, FrameCache, LockedAllocator, MemoryArea, get_header, header_words};
use memkit_types::{Frame, FrameCount, FrameSource, Order, PhysAddr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const FRAMES: u64 = 1 << 14;
const THREADS: usize = 4;

/// One bit per frame: set while some thread owns the frame.
struct Owned(Vec<AtomicU64>);

impl Owned {
    fn new() -> Self {
        Owned((0..FRAMES / 64).map(|_| AtomicU64::new(0)).collect())
    }
    fn take(&self, start: Frame, count: u64) {
        for f in start.number()..start.number() + count {
            let old = self.0[(f / 64) as usize].fetch_or(1 << (f % 64), Ordering::SeqCst);
            assert_eq!(old & (1 << (f % 64)), 0, "frame {f:#x} handed out twice");
        }
    }
    fn give(&self, start: Frame, count: u64) {
        for f in start.number()..start.number() + count {
            let old = self.0[(f / 64) as usize].fetch_and(!(1 << (f % 64)), Ordering::SeqCst);
            assert_ne!(old & (1 << (f % 64)), 0, "frame {f:#x} given back but not owned");
        }
    }
}

thread_local! {
    static CPU: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn current_cpu() -> usize {
    CPU.with(std::cell::Cell::get)
}

/// A random workload on one thread: single frames (through `source`), runs, fixed ranges.
fn work(source: &dyn FrameSource, owned: &Owned, seed: u64, steps: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut mine: Vec<(Frame, u64)> = Vec::new();
    for _ in 0..steps {
        match rng.random_range(0..10) {
            0..=3 => {
                if let Ok(f) = source.allocate(FrameCount::new(1), Order::ZERO, None) {
                    owned.take(f, 1);
                    mine.push((f, 1));
                }
            }
            4 => {
                let n = rng.random_range(1..40);
                let limit = Some(PhysAddr::new(rng.random_range(1..=FRAMES) << 12));
                if let Ok(f) = source.allocate(FrameCount::new(n), Order::new(rng.random_range(0..4)), limit) {
                    owned.take(f, n);
                    mine.push((f, n));
                }
            }
            5 => {
                let f = Frame::from_number(rng.random_range(0..FRAMES - 8));
                let n = rng.random_range(1..8);
                if source.allocate_at(f, FrameCount::new(n)).is_ok() {
                    owned.take(f, n);
                    mine.push((f, n));
                }
            }
            _ => {
                if !mine.is_empty() {
                    let (f, n) = mine.swap_remove(rng.random_range(0..mine.len()));
                    owned.give(f, n);
                    source.free(f, FrameCount::new(n)).unwrap();
                }
            }
        }
    }
    for (f, n) in mine {
        owned.give(f, n);
        source.free(f, FrameCount::new(n)).unwrap();
    }
}

fn locked(words: &mut [u64]) -> LockedAllocator<'_> {
    let area = MemoryArea::new(PhysAddr::zero(), FRAMES << 12);
    let h = get_header(area, core::iter::empty()).unwrap();
    LockedAllocator::new(Allocator::init(area, h, words, core::iter::empty()).unwrap())
}

#[test]
fn threads_share_the_locked_allocator() {
    let mut words = vec![0u64; header_words(MemoryArea::new(PhysAddr::zero(), FRAMES << 12)).unwrap()];
    let a = locked(&mut words);
    let owned = Owned::new();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (a, owned) = (&a, &owned);
            s.spawn(move || work(a, owned, t as u64, 20_000));
        }
    });
    assert_eq!(a.free_frames(), a.total_frames(), "frames lost");
    a.lock().check_invariants();
}

#[test]
fn threads_share_the_per_cpu_caches() {
    let mut words = vec![0u64; header_words(MemoryArea::new(PhysAddr::zero(), FRAMES << 12)).unwrap()];
    let a = locked(&mut words);
    let cache: FrameCache<'_, '_, _, 4> = FrameCache::new(&a, current_cpu);
    let owned = Owned::new();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (cache, owned) = (&cache, &owned);
            s.spawn(move || {
                CPU.with(|c| c.set(t));
                work(cache, owned, 100 + t as u64, 20_000);
            });
        }
    });
    assert_eq!(cache.free_frames(), cache.total_frames(), "frames lost (cached ones count as free)");
    cache.drain();
    assert_eq!(cache.cached_frames().get(), 0);
    assert_eq!(a.free_frames(), a.total_frames(), "frames lost after draining");
    a.lock().check_invariants();
}

#[test]
fn cache_batches_and_rejects_what_it_can() {
    let mut words = vec![0u64; header_words(MemoryArea::new(PhysAddr::zero(), FRAMES << 12)).unwrap()];
    let a = locked(&mut words);
    let cache: FrameCache<'_, '_, _, 2> = FrameCache::new(&a, || 1usize);
    let total = a.free_frames().get();
    let f = cache.allocate_frame().unwrap();
    // One refill took a batch from the allocator.
    assert_eq!(a.free_frames().get(), total - memkit_phys::BATCH as u64);
    cache.free_frame(f).unwrap();
    assert_eq!(cache.free_frame(f), Err(memkit_types::FrameSourceError::NotAllocated(f)), "double free in the slot");
    assert_eq!(cache.free_frame(Frame::from_number(FRAMES + 5)), Err(memkit_types::FrameSourceError::Invalid));
    // Frees beyond the capacity drain a batch back.
    let frames: Vec<Frame> = (0..200).map(|_| cache.allocate_frame().unwrap()).collect();
    for f in &frames {
        cache.free_frame(*f).unwrap();
    }
    assert!(cache.cached_frames().get() <= memkit_phys::CACHE_CAPACITY as u64);
    assert_eq!(cache.free_frames().get(), total);
    cache.drain();
    assert_eq!(a.free_frames().get(), total);
}

/// When the allocator runs dry, frames parked in another CPU's slot are drained and served:
/// single frames and runs alike, each frame once, and nothing is lost.
#[test]
fn caches_drain_when_the_allocator_runs_short() {
    let mut words = vec![0u64; header_words(MemoryArea::new(PhysAddr::zero(), FRAMES << 12)).unwrap()];
    let a = locked(&mut words);
    let cpu = std::cell::Cell::new(0usize);
    let cache: FrameCache<'_, '_, _, 2> = FrameCache::new(&a, || cpu.get());
    let total = a.free_frames().get();
    let owned = Owned::new();
    // CPU 0 takes every frame, then frees them all: up to a slot's capacity stays parked in
    // its cache, the rest goes back to the allocator.
    let mut all = Vec::new();
    while let Ok(f) = cache.allocate_frame() {
        owned.take(f, 1);
        all.push(f);
    }
    assert_eq!(all.len() as u64, total, "every frame is served");
    for f in all.drain(..) {
        owned.give(f, 1);
        cache.free_frame(f).unwrap();
    }
    assert!(cache.cached_frames().get() > 0, "frames are parked in CPU 0's slot");
    // CPU 1 takes everything again: the parked frames too.
    cpu.set(1);
    while let Ok(f) = cache.allocate_frame() {
        owned.take(f, 1);
        all.push(f);
    }
    assert_eq!(all.len() as u64, total, "frames parked in another CPU's slot are served");
    // With every frame parked in CPU 1's slot or free, a run still finds them.
    let keep = all.split_off(memkit_phys::CACHE_CAPACITY);
    for f in keep {
        owned.give(f, 1);
        cache.free_frame(f).unwrap();
    }
    cpu.set(0);
    for f in all.drain(..) {
        owned.give(f, 1);
        cache.free_frame(f).unwrap();
    }
    assert!(cache.cached_frames().get() >= memkit_phys::BATCH as u64);
    let run = FrameSource::allocate(&cache, FrameCount::new(total), Order::ZERO, None)
        .expect("a run of every frame, once the caches are drained");
    owned.take(run, total);
    assert_eq!(cache.cached_frames().get(), 0);
    owned.give(run, total);
    FrameSource::free(&cache, run, FrameCount::new(total)).unwrap();
    assert_eq!(cache.free_frames().get(), total);
    a.lock().check_invariants();
}
