//! Every checked constructor and arithmetic helper of the vocabulary types, on edge values:
//! each gives a value or an error (`Err`/`None`), never a panic, and a value it gives keeps
//! the type's invariant.

use std::panic::catch_unwind;

use memkit_types::{Frame, FrameCount, Order, PAGE_SIZE, Page, PageCount, PhysAddr, VirtAddr};

/// Values at and around every limit the types know.
fn edges() -> Vec<u64> {
    let mut v = vec![0, 1, 0xfff, 0x1000, 0x1001, u64::MAX, u64::MAX - 1, 1 << 63];
    for bit in [12u32, 21, 30, 32, 39, 40, 47, 48, 52, 63] {
        let p = 1u64 << bit;
        v.extend([p - 1, p, p + 1, p.wrapping_neg()]);
    }
    v
}

#[test]
fn checked_constructors_and_arithmetic_never_panic() {
    let mut cases = 0usize;
    let edges = edges();
    for &a in &edges {
        for &b in &edges {
            cases += 1;
            let r = catch_unwind(|| {
                if let Ok(p) = PhysAddr::try_new(a) {
                    assert!(p.as_u64() < PhysAddr::LIMIT);
                    if let Some(q) = p.checked_add(b) {
                        assert!(q.as_u64() < PhysAddr::LIMIT && q >= p);
                    }
                    let _ = p.is_aligned(b);
                    if let Some(f) = Frame::from_start_address(p) {
                        assert_eq!(f.start_address(), p);
                        if let Some(g) = f.checked_add(FrameCount::new(b)) {
                            assert!(g.start_address().as_u64() < PhysAddr::LIMIT);
                            assert_eq!(g.checked_distance_from(f), Some(FrameCount::new(b)));
                        }
                    }
                    let _ = Frame::containing_address(p).start_address();
                }
                if let Ok(a) = usize::try_from(a)
                    && let Ok(v) = VirtAddr::try_new(a)
                {
                    let b = usize::try_from(b).unwrap_or(usize::MAX);
                    if let Some(w) = v.checked_add(b) {
                        assert_eq!(w.checked_offset_from(v), Some(b));
                    }
                    let _ = v.is_aligned(b);
                    if let Some(page) = Page::from_start_address(v) {
                        assert_eq!(page.start_address(), v);
                        if let Some(q) = page.checked_add(PageCount::new(b)) {
                            let _ = q.start_address();
                        }
                    }
                    let _ = Page::containing_address(v).start_address();
                }
                let _ = FrameCount::new(a).bytes();
                let _ = FrameCount::for_bytes(a);
                if let Ok(a) = usize::try_from(a) {
                    let _ = (PageCount::new(a).bytes(), PageCount::for_bytes(a));
                }
                if let Some(o) = Order::for_size(a) {
                    assert!(o <= Order::MAX && o.bytes() >= a);
                }
                if let Some(o) = Order::for_frames(FrameCount::new(a)) {
                    assert!(o.frame_count().get() >= a);
                }
                if let Ok(k) = u32::try_from(a)
                    && let Ok(o) = Order::try_new(k)
                {
                    assert!(o <= Order::MAX);
                    assert_eq!(o.bytes(), (PAGE_SIZE as u64) << o.get());
                }
            });
            assert!(r.is_ok(), "panicked on {a:#x}, {b:#x}");
        }
    }
    println!("{cases} argument pairs, no panic");
    assert!(cases >= 2000, "{cases}");
}
