use super::levels::{aligned_runs, range_mask};
use super::*;
use std::vec;

fn area(start: u64, frames: u64) -> MemoryArea {
    MemoryArea::new(PhysAddr::new(start << PAGE_SHIFT), frames << PAGE_SHIFT)
}

#[test]
fn masks_and_runs() {
    assert_eq!(range_mask(0, 64), !0);
    assert_eq!(range_mask(3, 5), 0b11000);
    assert_eq!(range_mask(7, 7), 0);
    assert_eq!(aligned_runs(0b1110, 1), 0b0100);
    assert_eq!(aligned_runs(0xff00, 3), 0x0100);
    assert_eq!(aligned_runs(0x0ff0, 3), 0);
    assert_eq!(aligned_runs(!0, 5), 0x0000_0001_0000_0001);
    let mut w = 0x9e37_79b9_7f4a_7c15u64;
    // A few words under Miri, where the naive loop is slow.
    for _ in 0..if cfg!(miri) { 8 } else { 200 } {
        w = w.rotate_left(13) ^ (w >> 7) ^ (w << 3);
        for v in [w, w | w >> 1, w | w >> 3 | w << 5, !w, !0, 0] {
            for r in 0..6 {
                let len = 1u32 << r;
                let naive = (0..64)
                    .step_by(len as usize)
                    .filter(|&i| (i..i + len).all(|b| v & (1 << b) != 0))
                    .fold(0u64, |m, i| m | 1 << i);
                assert_eq!(aligned_runs(v, r), naive, "r {r} word {v:#x}");
            }
        }
    }
}

#[test]
fn geometry_levels() {
    let g = Geometry::new(0, 1 << 18);
    assert_eq!(g.levels, 4);
    assert_eq!(g.max_order, 18);
    let g = Geometry::new(5, 6);
    assert_eq!(g.levels, 1);
    assert_eq!(g.max_order, 0);
    let g = Geometry::new(63, 64 * 64 + 1);
    assert_eq!(g.level[0].bits.words, 65);
}

#[test]
fn allocate_all_then_free_all() {
    let a = area(100, 5000);
    let mut words = vec![0u64; header_words(a).unwrap()];
    let h = get_header(a, core::iter::empty()).unwrap();
    let mut al = Allocator::init(a, h, &mut words, core::iter::empty()).unwrap();
    al.check_invariants();
    let total = al.total_frames().get();
    let mut got = vec![];
    while let Ok(f) = al.allocate(Order::ZERO) {
        got.push(f);
    }
    assert_eq!(got.len() as u64, total);
    al.check_invariants();
    for f in got {
        al.free(MemoryArea::from_frames(f, FrameCount::new(1))).unwrap();
    }
    al.check_invariants();
    assert_eq!(al.free_frames().get(), total);
    // Frames 100..5100 minus the header at the top: the largest aligned block is 2048..4096.
    assert_eq!(al.largest_free_order(), Some(Order::new(11)));
    assert_eq!(al.stats().largest_free_order, Some(Order::new(11)));
}

#[test]
fn single_frame_paths_at_the_edge_words() {
    // Frames 100..300: the first and last frame words hold frames outside the area.
    let a = area(100, 200);
    let reserved = [area(130, 2)];
    let mut words = vec![0u64; header_words(a).unwrap()];
    let h = get_header(a, reserved).unwrap();
    let mut al = Allocator::init(a, h, &mut words, reserved).unwrap();
    let one = FrameCount::new(1);
    let before = al.stats();
    for n in [0, 63, 99, 300, 319, 320, 1 << 30] {
        let f = Frame::from_number(n);
        assert!(matches!(al.free_run(f, one), Err(FreeError::OutsideArea(_))), "free of frame {n}");
        assert!(matches!(al.allocate_at(f, one), Err(AllocateAtError::OutsideArea(_))), "take of frame {n}");
    }
    let r = Frame::from_number(130);
    assert_eq!(al.free_run(r, one), Err(FreeError::Reserved(r)));
    assert_eq!(al.allocate_at(r, one), Err(AllocateAtError::Reserved(r)));
    assert_eq!(al.stats(), before);
    // Take every frame of the first word one by one at fixed addresses, free them again.
    let first: std::vec::Vec<u64> = (100..128).filter(|&n| !(130..132).contains(&n)).collect();
    for &n in &first {
        al.allocate_at(Frame::from_number(n), one).unwrap();
        al.check_invariants();
    }
    let f = Frame::from_number(100);
    assert_eq!(al.allocate_at(f, one), Err(AllocateAtError::InUse(f)));
    assert_eq!(al.allocate(Order::ZERO).unwrap().number(), 128, "the first word is empty");
    for &n in &first {
        al.free_run(Frame::from_number(n), one).unwrap();
        al.check_invariants();
    }
    assert_eq!(al.free_run(f, one), Err(FreeError::AlreadyFree(f)));
    al.free_run(Frame::from_number(128), one).unwrap();
    al.check_invariants();
    assert_eq!(al.stats(), before);
}

#[test]
fn whole_word_frees_check_every_frame() {
    // Frames 0..8192 with frames 4200..4210 reserved.
    let a = area(0, 8192);
    let reserved = [area(4200, 10)];
    let mut words = vec![0u64; header_words(a).unwrap()];
    let h = get_header(a, reserved).unwrap();
    let mut al = Allocator::init(a, h, &mut words, reserved).unwrap();
    let f = al.allocate(Order::new(9)).unwrap();
    let g = al.allocate(Order::new(6)).unwrap();
    al.check_invariants();
    let before = (al.free_frames(), al.stats());
    // A block that overlaps a free block, a freed one again, one over reserved frames.
    let err = al.free_run(f, FrameCount::new(1024)).unwrap_err();
    assert_eq!(g.number(), f.number() + 512, "the lowest blocks");
    assert_eq!(err, FreeError::AlreadyFree(Frame::from_number(f.number() + 576)));
    al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap();
    let err = al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap_err();
    assert_eq!(err, FreeError::AlreadyFree(g));
    al.allocate_at(g, FrameCount::new(64)).unwrap();
    al.allocate_at(Frame::from_number(4096), FrameCount::new(104)).unwrap();
    al.allocate_at(Frame::from_number(4210), FrameCount::new(78)).unwrap();
    let err = al.free_run(Frame::from_number(4096), FrameCount::new(192)).unwrap_err();
    assert_eq!(err, FreeError::Reserved(Frame::from_number(4200)));
    al.free_run(Frame::from_number(4096), FrameCount::new(104)).unwrap();
    al.free_run(Frame::from_number(4210), FrameCount::new(78)).unwrap();
    al.check_invariants();
    assert_eq!((al.free_frames(), al.stats()), before);
    // The last word under a summary word, and a run across two summary words.
    for (s, n) in [(4032, 64), (4032, 128), (3968, 128)] {
        al.allocate_at(Frame::from_number(s), FrameCount::new(n)).unwrap();
        al.check_invariants();
        al.free_run(Frame::from_number(s), FrameCount::new(n)).unwrap();
        al.check_invariants();
    }
    // Whole-word frees merge up to the largest block again.
    al.free(MemoryArea::from_frames(g, FrameCount::new(64))).unwrap();
    al.free(MemoryArea::from_frames(f, FrameCount::new(512))).unwrap();
    al.check_invariants();
    assert_eq!(al.largest_free_order(), Some(Order::new(12)));
    assert_eq!(al.stats().largest_free_order, Some(Order::new(12)));
}
