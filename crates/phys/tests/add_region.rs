//! Memory that joins after init (`Allocator::add_region`): an area reserved but for its
//! first chunk grows chunk by chunk, its blocks merge across chunk boundaries, and every
//! refusal changes nothing. The random actions of `model.rs` try it against the model too.

use memkit_phys::{AddRegionError, Allocator, FreeError, LockedAllocator, MemoryArea, get_header, header_words};
use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr};

const FRAMES: u64 = 8192;
const CHUNK: u64 = 1024;

fn chunk(k: u64) -> MemoryArea {
    MemoryArea::from_frames(Frame::from_number(k * CHUNK), FrameCount::new(CHUNK))
}

#[test]
fn an_area_grows_chunk_by_chunk_and_merges_across_chunks() {
    let area = MemoryArea::from_frames(Frame::from_number(0), FrameCount::new(FRAMES));
    // Everything past the first chunk is not there yet.
    let absent = MemoryArea::from_frames(Frame::from_number(CHUNK), FrameCount::new(FRAMES - CHUNK));
    let header_region = get_header(area, [absent]).unwrap();
    let mut words = vec![0u64; header_words(area).unwrap()];
    let mut a = Allocator::init(area, header_region, &mut words, [absent]).unwrap();
    let first = a.total_frames().get();
    assert!(first < CHUNK);
    a.check_invariants();

    // The first chunk holds no block of two chunks' size; the area does once two more join.
    assert!(a.allocate_run(FrameCount::new(CHUNK * 2), Order::ZERO, None).is_err());
    for k in 1..3 {
        a.add_region(chunk(k)).unwrap();
        a.check_invariants();
    }
    assert_eq!(a.total_frames().get(), first + 2 * CHUNK);
    assert_eq!(a.free_frames().get(), first + 2 * CHUNK);
    // Chunks 1 and 2 merged into one free run of 2048 frames (an order-10 block at 1024 and
    // its neighbour).
    let f = a.allocate_run(FrameCount::new(CHUNK * 2), Order::ZERO, None).unwrap();
    assert_eq!(f.number(), CHUNK);
    a.check_invariants();
    a.free_run(f, FrameCount::new(CHUNK * 2)).unwrap();

    // A chunk joins once: the second time its frames are managed already.
    assert_eq!(a.add_region(chunk(1)), Err(AddRegionError::NotReserved(Frame::from_number(CHUNK))));
    // A region overlapping the managed part is refused whole, naming the first managed frame.
    let straddle = MemoryArea::from_frames(Frame::from_number(3 * CHUNK - 4), FrameCount::new(8));
    assert_eq!(a.add_region(straddle), Err(AddRegionError::NotReserved(Frame::from_number(3 * CHUNK - 4))));
    assert!(a.is_reserved(Frame::from_number(3 * CHUNK)), "a refused region changes nothing");
    // The header never joins.
    assert_eq!(
        a.add_region(header_region),
        Err(AddRegionError::Header(Frame::containing_address(header_region.start)))
    );
    // Empty, outside, unaligned.
    let empty = MemoryArea::new(PhysAddr::new(3 * CHUNK * PAGE_SIZE as u64), 0);
    assert_eq!(a.add_region(empty), Err(AddRegionError::OutsideArea(empty)));
    let past = MemoryArea::from_frames(Frame::from_number(FRAMES - 1), FrameCount::new(2));
    assert_eq!(a.add_region(past), Err(AddRegionError::OutsideArea(past)));
    let odd = MemoryArea::new(PhysAddr::new(3 * CHUNK * PAGE_SIZE as u64 + 8), PAGE_SIZE as u64);
    assert_eq!(a.add_region(odd), Err(AddRegionError::Unaligned(odd)));
    let huge = MemoryArea::new(PhysAddr::new(3 * CHUNK * PAGE_SIZE as u64), !(PAGE_SIZE as u64 - 1));
    assert_eq!(a.add_region(huge), Err(AddRegionError::OutsideArea(huge)));
    a.check_invariants();

    // A frame that joined is freed like any other: a double free is refused.
    let f = a.allocate(Order::ZERO).unwrap();
    a.free(MemoryArea::from_frames(f, FrameCount::new(1))).unwrap();
    assert!(matches!(a.free(MemoryArea::from_frames(f, FrameCount::new(1))), Err(FreeError::AlreadyFree(_))));

    // Every remaining chunk joins; the whole area but the header is then one allocation.
    for k in 3..FRAMES / CHUNK {
        a.add_region(chunk(k)).unwrap();
    }
    a.check_invariants();
    let all = a.total_frames();
    assert_eq!(all.get(), FRAMES - header_region.size / PAGE_SIZE as u64);
    assert_eq!(a.free_frames(), all);
}

#[test]
fn a_locked_allocator_grows_under_its_lock() {
    let area = MemoryArea::from_frames(Frame::from_number(0), FrameCount::new(FRAMES));
    let absent = MemoryArea::from_frames(Frame::from_number(CHUNK), FrameCount::new(FRAMES - CHUNK));
    let header_region = get_header(area, [absent]).unwrap();
    let words: &'static mut [u64] = vec![0u64; header_words(area).unwrap()].leak();
    let a: LockedAllocator<'static> =
        LockedAllocator::new(Allocator::init(area, header_region, words, [absent]).unwrap());
    let before = FrameSource::total_frames(&a).get();
    assert!(FrameSource::allocate(&a, FrameCount::new(CHUNK), Order::ZERO, None).is_err());
    a.add_region(chunk(1)).unwrap();
    assert_eq!(FrameSource::total_frames(&a).get(), before + CHUNK);
    let f = FrameSource::allocate(&a, FrameCount::new(CHUNK), Order::ZERO, None).unwrap();
    assert_eq!(f.number(), CHUNK);
    a.lock().check_invariants();
}
