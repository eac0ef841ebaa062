use super::*;
use crate::flags::DmFlags;
use crate::ids::PoolId;

#[test]
fn entries_pack_frame_pool_and_mark() {
    let f = Frame::from_number((1 << 40) - 1);
    let e = Entry::new(f, PoolId::ISA_DMA);
    assert_eq!(
        (e.frame(), e.frame_number(), e.pool(), e.is_cow()),
        (Some(f), Some(f.number()), PoolId::ISA_DMA, false)
    );
    let c = e.with_cow(true);
    assert!(c.is_cow() && c.frame() == Some(f) && c.pool() == PoolId::ISA_DMA);
    assert_eq!(c.with_cow(false), e);
    assert_eq!(Entry::EMPTY.frame(), None);
}

#[test]
fn backing_is_page_or_superpage_granular() {
    assert_eq!(backing_pages(1, 1), Some(1));
    assert_eq!(backing_pages(PAGE, 1), Some(1));
    assert_eq!(backing_pages(PAGE + 1, 1), Some(2));
    assert_eq!(backing_pages(1, SUPERPAGE_FRAMES), Some(SUPERPAGE_FRAMES));
    assert_eq!(backing_pages(MAX_SIZE, 1), Some(MAX_SIZE / PAGE));
    assert_eq!(backing_pages(MAX_SIZE + 1, 1), None);
    assert_eq!(order_for_align(12), Order::ZERO);
    assert_eq!(order_for_align(21), SUPERPAGE_ORDER);
    assert_eq!(order_for_align(MAX_ALIGN_SHIFT), Order::MAX);
}

#[test]
fn a_slot_whose_generation_would_wrap_is_retired() {
    use memkit_testkit::{ModelFrameSource, SparseRam};
    let mut m = Manager::new(Config::new(1 << 30), SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(0x100), FrameCount::new(16)));
    let me = ClientId::new(1, 0);
    let first = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "a").unwrap();
    m.close(me, first).unwrap();
    m.slots[first.index()].generation = DataspaceId::MAX_GENERATION;
    let last = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "b").unwrap();
    assert_eq!((last.index(), last.generation()), (first.index(), DataspaceId::MAX_GENERATION));
    m.close(me, last).unwrap();
    m.check_invariants();
    let next = m.mem_open(FactoryId::ROOT, me, PAGE, 0, DmFlags::empty(), "c").unwrap();
    assert_ne!(next.index(), first.index(), "a retired slot is never reused");
    assert!(m.info(last).is_err() && m.info(DataspaceId::new(first.index() as u32, 0)).is_err());
    m.check_invariants();
}

#[test]
fn kinds() {
    assert!(!Kind::empty().is_bound());
    assert!(Kind::PINNED.is_bound() && !Kind::PINNED.is_one_run());
    assert!(Kind::FIXED.is_one_run() && Kind::CONTIGUOUS.is_one_run());
    assert_eq!(Kind::SUPERPAGES.granule(), 512);
}
