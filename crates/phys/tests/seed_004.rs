//! Seed 004 (pmallocator), function by function, result code by result code.

use memkit_phys::{
    AllocateError, Allocator, AreaError, ErrorCode, FreeError, GetHeaderError, InitError, MemoryArea, get_header,
    header_size, header_words,
};
use memkit_types::{Frame, FrameCount, Order, PAGE_SIZE, PhysAddr};

const MIB: u64 = 1 << 20;

fn area(start: u64, size: u64) -> MemoryArea {
    MemoryArea::new(PhysAddr::new(start), size)
}

fn block(f: Frame, order: u8) -> MemoryArea {
    MemoryArea::from_frames(f, Order::new(order).frame_count())
}

/// `pmallocator_get_header_size(area)`: a 4 KiB multiple, a few bits per frame.
#[test]
fn header_size_is_small_and_page_granular() {
    let one_gib = header_size(area(0, 1 << 30)).unwrap();
    assert_eq!(one_gib % PAGE_SIZE as u64, 0);
    // At most 0.01 % of the managed RAM.
    assert!(one_gib * 10_000 <= 1 << 30, "{one_gib} bytes per GiB");
    assert!(header_size(area(0, PAGE_SIZE as u64)).unwrap() >= PAGE_SIZE as u64);
    assert_eq!(header_size(area(0x800, 0x1000)), Err(AreaError::Unaligned(area(0x800, 0x1000))));
    assert_eq!(header_size(area(0, 0)), Err(AreaError::Empty(area(0, 0))));
}

/// `pmallocator_get_header`: room inside the area that avoids the reserved regions;
/// `ERR_OUT_OF_MEMORY` when there is none.
#[test]
fn get_header_avoids_reserved_regions() {
    let a = area(16 * MIB, 64 * MIB);
    let size = header_size(a).unwrap();
    // No enumerator (the seed's nullptr): anywhere inside.
    let h = get_header(a, core::iter::empty()).unwrap();
    assert!(a.contains(h) && h.size == size && h.is_frame_aligned());
    // Reserved regions where it would go push it elsewhere.
    let reserved = [h, area(h.start.as_u64() - 0x3000, 0x1800)];
    let h2 = get_header(a, reserved.iter().copied()).unwrap();
    assert!(a.contains(h2) && reserved.iter().all(|r| !r.overlaps(h2)));
    // The whole area reserved: ERR_OUT_OF_MEMORY.
    let e = get_header(a, [a]).unwrap_err();
    assert_eq!(e, GetHeaderError::OutOfMemory { needed: size });
    assert_eq!(e.code(), ErrorCode::OutOfMemory);
    // Too small an area for any header besides reserved frames.
    let tiny = area(0, 2 * PAGE_SIZE as u64);
    assert_eq!(
        get_header(tiny, [area(0x1000, 0x1000), area(0, 0x10)]).map_err(GetHeaderError::code),
        Err(ErrorCode::OutOfMemory)
    );
    assert_eq!(get_header(area(0x10, 0x1000), []).map_err(GetHeaderError::code), Err(ErrorCode::NotValid));
}

/// `pmallocator_init_region`: the header region is marked used and never handed out; the
/// reserved regions neither.
#[test]
fn init_marks_header_and_reserved_used() {
    let a = area(0, 4 * MIB);
    let reserved = [area(0x10_0000, 0x8_0000), area(0x3000, 1)];
    let h = get_header(a, reserved.iter().copied()).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let mut al = Allocator::init(a, h, &mut words, reserved.iter().copied()).unwrap();
    al.check_invariants();
    let frames = a.size / PAGE_SIZE as u64;
    let header_frames = h.size / PAGE_SIZE as u64;
    assert_eq!(al.total_frames().get(), frames - header_frames - 0x80 - 1);
    let mut seen = 0;
    while let Ok(f) = al.allocate(Order::ZERO) {
        let one = block(f, 0);
        assert!(!one.overlaps(h), "handed out a header frame {f:?}");
        assert!(reserved.iter().all(|r| !r.overlaps(one)), "handed out a reserved frame {f:?}");
        seen += 1;
    }
    assert_eq!(seen, al.total_frames().get());
    al.check_invariants();
}

/// `init_region`'s preconditions, checked.
#[test]
fn init_rejects_bad_header_regions() {
    let a = area(0, 4 * MIB);
    let h = get_header(a, []).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let small = MemoryArea::new(h.start, h.size - PAGE_SIZE as u64);
    assert_eq!(Allocator::init(a, small, &mut words, []).unwrap_err(), InitError::BadHeaderRegion(small));
    let outside = MemoryArea::new(PhysAddr::new(a.end()), h.size);
    assert_eq!(Allocator::init(a, outside, &mut words, []).unwrap_err(), InitError::BadHeaderRegion(outside));
    let r = area(h.start.as_u64(), 1);
    assert_eq!(Allocator::init(a, h, &mut words, [r]).unwrap_err(), InitError::HeaderOverlapsReserved(r));
    let mut short = vec![0u64; 3];
    assert!(matches!(Allocator::init(a, h, &mut short, []), Err(InitError::MappingTooSmall { .. })));
    assert_eq!(InitError::BadHeaderRegion(small).code(), ErrorCode::NotValid);
    assert!(words.iter().all(|&w| w == 0), "a failed init writes nothing");
}

/// `pmallocator_allocate(order)`: 2^order frames aligned to their size; order 0 always
/// valid; an unsupported order `ERR_NOT_VALID`; nothing left `ERR_PHYSICAL_MEMORY_FULL`.
#[test]
fn allocate_orders_and_errors() {
    let a = area(0x4000_0000, 8 * MIB);
    let h = get_header(a, []).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let mut al = Allocator::init(a, h, &mut words, []).unwrap();
    for order in [10u8, 9, 7, 6, 5, 1, 0] {
        let f = al.allocate(Order::new(order)).unwrap();
        assert!(f.is_aligned_to(Order::new(order)), "order {order} at {f:?}");
        assert!(a.contains(block(f, order)));
        al.check_invariants();
    }
    // 8 MiB = 2^11 frames: order 11 is the largest supported, 12 is not.
    assert_eq!(al.max_order(), Order::new(11));
    let e = al.allocate(Order::new(12)).unwrap_err();
    assert_eq!(e, AllocateError::NotValid(Order::new(12)));
    assert_eq!(e.code(), ErrorCode::NotValid);
    // Order 11 is supported but the area is partly used: memory full for that order.
    let e = al.allocate(Order::new(11)).unwrap_err();
    assert_eq!(e, AllocateError::PhysicalMemoryFull(Order::new(11)));
    assert_eq!(e.code(), ErrorCode::PhysicalMemoryFull);
    while al.allocate(Order::ZERO).is_ok() {}
    assert_eq!(al.allocate(Order::ZERO).unwrap_err().code(), ErrorCode::PhysicalMemoryFull);
    assert_eq!(al.free_frames(), FrameCount::new(0));
    al.check_invariants();
}

/// Order 0 is valid even on a one-frame area... whose only frame holds the header.
#[test]
fn order_zero_always_valid() {
    let a = area(0x2000, 0x2000);
    let h = get_header(a, []).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let mut al = Allocator::init(a, h, &mut words, []).unwrap();
    let f = al.allocate(Order::ZERO).unwrap();
    assert_eq!(al.allocate(Order::ZERO), Err(AllocateError::PhysicalMemoryFull(Order::ZERO)));
    al.free(block(f, 0)).unwrap();
}

/// `pmallocator_free(area)`: `ERR_NOT_VALID` for an area already free, inside a free block,
/// unaligned, reserved or not the allocator's; nothing changes then.
#[test]
fn free_errors_change_nothing() {
    let a = area(0, 4 * MIB);
    let reserved = [area(0x20_0000, 0x1000)];
    let h = get_header(a, reserved).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let mut al = Allocator::init(a, h, &mut words, reserved).unwrap();
    let f = al.allocate(Order::new(3)).unwrap();
    let g = al.allocate(Order::ZERO).unwrap();
    assert_eq!(g.number(), f.number() + 8, "the lowest free frame after the order-3 block");
    let snapshot = |al: &Allocator<'_>| (al.free_frames(), al.stats());
    let before = snapshot(&al);
    let cases = [
        // already free: a never-allocated frame far from both blocks
        (block(Frame::from_number(0x300), 0), FreeError::AlreadyFree(Frame::from_number(0x300))),
        // inside a free block: an order-1 block next to g, in g's free buddy block
        (block(Frame::from_number(g.number() + 2), 1), FreeError::AlreadyFree(Frame::from_number(g.number() + 2))),
        // larger than the allocations: its tail (after g) is free
        (block(f, 4), FreeError::AlreadyFree(Frame::from_number(g.number() + 1))),
        // unaligned: not 4 KiB aligned, not a power of two, not aligned to its size
        (
            area(f.start_address().as_u64() + 8, 0x1000),
            FreeError::Unaligned(area(f.start_address().as_u64() + 8, 0x1000)),
        ),
        (area(f.start_address().as_u64(), 0x3000), FreeError::Unaligned(area(f.start_address().as_u64(), 0x3000))),
        (
            block(Frame::from_number(f.number() + 1), 1),
            FreeError::Unaligned(block(Frame::from_number(f.number() + 1), 1)),
        ),
        // not the allocator's
        (block(Frame::from_number(0x4000), 0), FreeError::OutsideArea(block(Frame::from_number(0x4000), 0))),
        // reserved, and the header
        (reserved[0], FreeError::Reserved(Frame::containing_address(reserved[0].start))),
        (block(Frame::containing_address(h.start), 0), FreeError::Reserved(Frame::containing_address(h.start))),
    ];
    for (area, want) in cases {
        assert_eq!(al.free(area), Err(want), "free({area:?})");
        assert_eq!(want.code(), ErrorCode::NotValid);
        assert_eq!(snapshot(&al), before, "a failed free changed something");
        al.check_invariants();
    }
    al.free(block(f, 3)).unwrap();
    assert_eq!(al.free(block(f, 3)), Err(FreeError::AlreadyFree(f)), "double free");
    al.free(block(g, 0)).unwrap();
    assert_eq!(al.free_frames(), al.total_frames());
    al.check_invariants();
}

/// Freed blocks merge back: after everything is freed the largest block is available again.
#[test]
fn blocks_coalesce() {
    let a = area(0, 2 * MIB);
    let h = get_header(a, []).unwrap();
    let mut words = vec![0u64; header_words(a).unwrap()];
    let mut al = Allocator::init(a, h, &mut words, []).unwrap();
    let largest = al.largest_free_order().unwrap();
    let blocks: Vec<Frame> = (0..200).map(|_| al.allocate(Order::ZERO).unwrap()).collect();
    assert!(al.largest_free_order() < Some(largest) || blocks.iter().all(|b| b.number() >= 256));
    for b in blocks.iter().rev() {
        al.free(block(*b, 0)).unwrap();
    }
    assert_eq!(al.largest_free_order(), Some(largest));
    assert_eq!(al.allocate(largest).map(|f| f.is_aligned_to(largest)), Ok(true));
}

/// The seed's codes, numbered.
#[test]
fn codes() {
    assert_eq!(ErrorCode::None as i32, 0);
    assert_eq!(ErrorCode::OutOfMemory as i32, 1);
    assert_eq!(ErrorCode::NotValid as i32, 2);
    assert_eq!(ErrorCode::PhysicalMemoryFull as i32, 3);
}
