//! Hostile arguments to every public entry of the frame allocator: extreme frame numbers,
//! counts, orders, limits and areas, unaligned and overlapping regions, short and corrupt
//! header mappings. Every call returns (no panic, whatever the build's overflow checks), an
//! error changes no header word, and the invariants hold after every call.

use memkit_phys::{Allocator, MemoryArea, get_header, header_size, header_words};
use memkit_types::{Frame, FrameCount, Order, PAGE_SIZE, PhysAddr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The largest frame number there is.
const MAX_FRAME: u64 = (PhysAddr::LIMIT >> 12) - 1;

/// A number near one of the edges that matter for an area of frames `[s, e)`.
fn edgy(rng: &mut SmallRng, s: u64, e: u64) -> u64 {
    let base = match rng.random_range(0..8) {
        0 => 0,
        1 => s,
        2 => e,
        3 => (s + e) / 2,
        4 => MAX_FRAME,
        5 => u64::MAX,
        6 => 1 << rng.random_range(0..64),
        _ => rng.random(),
    };
    let delta = rng.random_range(0..70u64);
    if rng.random() { base.wrapping_add(delta) } else { base.wrapping_sub(delta) }
}

fn frame(n: u64) -> Frame {
    Frame::from_number(n.min(MAX_FRAME))
}

fn phys(n: u64) -> PhysAddr {
    PhysAddr::new(n % PhysAddr::LIMIT)
}

fn order(rng: &mut SmallRng) -> Order {
    Order::new(rng.random_range(0..=Order::MAX.get()))
}

#[test]
fn hostile_arguments_are_refused_and_change_nothing() {
    for seed in 0..8 {
        hostile_arguments(seed, if cfg!(miri) { 40 } else { 20_000 });
    }
}

fn hostile_arguments(seed: u64, steps: u64) {
    let mut rng = SmallRng::seed_from_u64(0xbad1 + seed);
    let (s, n) = (0x3f1u64, 5000u64);
    let area = MemoryArea::from_frames(Frame::from_number(s), FrameCount::new(n));
    let reserved = [MemoryArea::new(PhysAddr::new((s + 700) * 4096 + 5), 3 * 4096)];
    let header = get_header(area, reserved).expect("room for the header");
    let mut words = vec![0u64; header_words(area).expect("a valid area")];
    let mut a = Allocator::init(area, header, &mut words, reserved).expect("init");
    let e = s + n;
    let mut held: Vec<(u64, u64)> = Vec::new();
    for step in 0..steps {
        let before = a.free_frames();
        let snapshot: Vec<u64> = {
            // The header words, read through a second view of a copy.
            let mut copy = Vec::new();
            let st = a.stats();
            copy.push(st.free_frames.get());
            copy.extend(st.free_blocks.iter().copied());
            copy
        };
        let x = edgy(&mut rng, s, e);
        let c = edgy(&mut rng, 0, n);
        let ok = match rng.random_range(0..8) {
            0 => a.allocate(order(&mut rng)).map(|f| held.push((f.number(), 0))).is_ok(),
            1 => {
                let o = order(&mut rng);
                a.allocate_below(o, Some(phys(x << 12))).map(|f| held.push((f.number(), 1 << o.get()))).is_ok()
            }
            2 => {
                let limit = rng.random::<bool>().then(|| phys(x << 12));
                a.allocate_run(FrameCount::new(c), order(&mut rng), limit).map(|f| held.push((f.number(), c))).is_ok()
            }
            3 => a.allocate_at(frame(x), FrameCount::new(c)).map(|()| held.push((x, c))).is_ok(),
            4 => a.free_run(frame(x), FrameCount::new(c)).is_ok(),
            5 => a.free(MemoryArea::new(phys(x << 12), c.wrapping_mul(PAGE_SIZE as u64))).is_ok(),
            6 => a.free(MemoryArea::new(phys(x.wrapping_mul(4093)), c)).is_ok(),
            _ => {
                let _ = (a.is_free(frame(x)), a.is_reserved(frame(x)));
                false
            }
        };
        if !ok {
            assert_eq!(a.free_frames(), before, "step {step}: a refused call changed the free count");
            let st = a.stats();
            assert_eq!(st.free_frames.get(), snapshot[0]);
            assert_eq!(&st.free_blocks[..], &snapshot[1..], "step {step}: a refused call changed the free blocks");
        }
        if step % 64 == 0 {
            a.check_invariants();
        }
        // Give everything back now and then (frees of what an allocation returned).
        if held.len() > 40 {
            for (f, k) in held.drain(..) {
                let k = if k == 0 { 1 } else { k };
                let _ = a.free_run(Frame::from_number(f), FrameCount::new(k));
            }
        }
    }
    a.check_invariants();
}

#[test]
fn hostile_areas_and_mappings_are_refused() {
    let mut rng = SmallRng::seed_from_u64(0xbad2);
    for _ in 0..if cfg!(miri) { 100 } else { 20_000 } {
        let start = phys(edgy(&mut rng, 0, 1 << 20) << rng.random_range(0..13));
        let size = edgy(&mut rng, 0, 1 << 20) << rng.random_range(0..13);
        let area = MemoryArea::new(start, size);
        let r = MemoryArea::new(phys(edgy(&mut rng, 0, 1 << 32)), edgy(&mut rng, 0, 1 << 20));
        let _ = header_size(area);
        let _ = get_header(area, [r]);
        let Ok(words) = header_words(area) else { continue };
        if words > 1 << 16 {
            continue;
        }
        // A header region anywhere, a mapping of any length: refused, or a working allocator.
        let region = MemoryArea::new(phys(edgy(&mut rng, 0, 1 << 32) << 12), edgy(&mut rng, 0, 1 << 20));
        let mut buf = vec![0u64; words.saturating_sub(rng.random_range(0..2))];
        if let Ok(mut a) = Allocator::init(area, region, &mut buf, [r]) {
            a.check_invariants();
            let _ = a.allocate(Order::ZERO);
            a.check_invariants();
        }
        // Corrupt or truncated headers are refused by attach (or attach to a consistent view).
        let len = buf.len();
        if len > 0 {
            let i = rng.random_range(0..len.min(24));
            buf[i] = if rng.random() { rng.random() } else { buf[i] ^ (1 << rng.random_range(0..64)) };
        }
        let cut = rng.random_range(0..=len);
        let _ = Allocator::attach(&mut buf[..cut]);
    }
}

/// `MemoryArea::from_frames` of a count whose bytes overflow saturates (it overflowed).
#[test]
fn an_area_of_too_many_frames_saturates() {
    let a = MemoryArea::from_frames(Frame::from_number(1), FrameCount::new(u64::MAX));
    assert_eq!(a.size, u64::MAX);
    assert_eq!(a.end(), u64::MAX);
    assert!(header_size(a).is_err());
}
