//! Memory maps: the text format, malformed lines, machines and their pools.

use memkit_phys::{
    DEFAULT_MEMORY_MAP, DirectMap, ISA_DMA_LIMIT, KERNEL_IMAGE, Machine, MemoryArea, MemoryMap, ParseError,
    ParseErrorKind, Placement, PoolConfigError, Pools, RegionKind,
};
use memkit_types::{FrameCount, Order, PhysAddr};

fn err(text: &str) -> ParseError {
    MemoryMap::parse(text).unwrap_err()
}

#[test]
fn parses_hex_decimal_comments_and_types() {
    let map = MemoryMap::parse(
        "# a comment\n\n0x0 0x9fc00 usable   # trailing comment\n654336 0xa0000 reserved\n0x100000 0x200000 acpi\n  \t\n0x200000 0X400000 Usable\n",
    )
    .unwrap();
    let e = map.entries();
    assert_eq!(e.len(), 4);
    assert_eq!(e[0].area, MemoryArea::new(PhysAddr::zero(), 0x9fc00));
    assert_eq!(e[0].kind, RegionKind::Usable);
    assert_eq!(e[1].area, MemoryArea::new(PhysAddr::new(0x9fc00), 0x400));
    assert_eq!(e[1].kind, RegionKind::Reserved);
    assert_eq!(e[2].kind, RegionKind::Reserved, "unknown types count as reserved");
    assert_eq!(e[3].kind, RegionKind::Usable);
    assert!(DEFAULT_MEMORY_MAP.lines().count() > 7);
    assert_eq!(MemoryMap::parse(DEFAULT_MEMORY_MAP).unwrap().entries().len(), 7);
}

#[test]
fn malformed_lines_name_their_line_and_fault() {
    assert_eq!(err("0x0 0x1000 usable\n0x1000\n"), ParseError { line: 2, kind: ParseErrorKind::MissingField("end") });
    assert_eq!(err("# c\n0x0 0x1000\n"), ParseError { line: 2, kind: ParseErrorKind::MissingField("type") });
    assert_eq!(err("0x0 0x1000 usable extra\n"), ParseError { line: 1, kind: ParseErrorKind::ExtraField });
    assert_eq!(err("\n\n0xzz 0x1000 usable"), ParseError { line: 3, kind: ParseErrorKind::BadNumber("start") });
    assert_eq!(err("0 -5 usable"), ParseError { line: 1, kind: ParseErrorKind::BadNumber("end") });
    assert_eq!(err("0x2000 0x1000 usable"), ParseError { line: 1, kind: ParseErrorKind::EmptyRange });
    assert_eq!(err("0x1000 0x1000 usable"), ParseError { line: 1, kind: ParseErrorKind::EmptyRange });
    assert_eq!(err("0 0x20000000000000 usable"), ParseError { line: 1, kind: ParseErrorKind::TooLarge });
    let many: String = (0..129).map(|i| format!("{} {} usable\n", i * 4096, i * 4096 + 4096)).collect();
    assert_eq!(err(&many), ParseError { line: 129, kind: ParseErrorKind::TooManyEntries });
    let shown = err("0x0 0x1000 usable\nfoo bar baz\n").to_string();
    assert!(shown.contains("line 2") && shown.contains("start"), "{shown}");
}

#[test]
fn machine_usable_ram_excludes_reserved_and_kernel() {
    let m = Machine::parse("0 0x2000000 usable\n0x800000 0x900000 reserved\n0x1000800 0x1001000 nvs\n").unwrap();
    let u = m.usable();
    let want = [
        MemoryArea::from_bounds(PhysAddr::zero(), KERNEL_IMAGE.start),
        MemoryArea::from_bounds(PhysAddr::new(KERNEL_IMAGE.end()), PhysAddr::new(0x800000)),
        MemoryArea::from_bounds(PhysAddr::new(0x900000), PhysAddr::new(0x1000000)),
        MemoryArea::from_bounds(PhysAddr::new(0x1001000), PhysAddr::new(0x2000000)),
    ];
    assert_eq!(u.as_slice(), &want);
    assert_eq!(m.pool_ranges(7).as_slice(), &want[..3]);
    assert_eq!(m.pool_ranges(0).as_slice(), &want[3..]);
}

#[test]
fn configured_pools_take_their_window_from_pool_zero() {
    let mut m = Machine::default_machine();
    let window = MemoryArea::new(PhysAddr::new(0x1000_0000), 0x100_0000);
    m.configure_pool(2, window).unwrap();
    assert_eq!(m.configure_pool(0, window), Err(PoolConfigError::NotConfigurable(0)));
    assert_eq!(m.configure_pool(7, window), Err(PoolConfigError::NotConfigurable(7)));
    assert_eq!(m.configure_pool(3, window), Err(PoolConfigError::Overlaps(2)));
    let odd = MemoryArea::new(PhysAddr::new(0x123), 0x1000);
    assert_eq!(m.configure_pool(3, odd), Err(PoolConfigError::BadWindow(odd)));
    let mut ram = vec![0u64; (512 << 20) / 8];
    let pools: Pools<'_> = Pools::new(&m, &mut DirectMap::new(&mut ram, PhysAddr::zero())).unwrap();
    let ids: Vec<usize> = pools.iter().map(|p| p.id()).collect();
    assert_eq!(ids, [0, 2, 7]);
    let s2 = pools.pool(2).unwrap().stats();
    assert_eq!(s2.span, window);
    assert!(window.contains(s2.header));
    let f = pools.allocate(2, Placement::AnyAddr, FrameCount::new(10), Order::new(4)).unwrap();
    assert!(window.contains(MemoryArea::from_frames(f, FrameCount::new(10))));
    assert!(f.is_aligned_to(Order::new(4)));
    // Pool 0 no longer has the window.
    assert!(pools.allocate(0, Placement::Fixed(window.start), FrameCount::new(1), Order::ZERO).is_err());
    for s in pools.stats() {
        assert!(s.free_frames <= s.total_frames);
        if s.id == 7 {
            assert!(s.span.end() <= ISA_DMA_LIMIT.as_u64());
        }
    }
}

#[test]
fn the_four_gib_machine_builds_pools() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../machines/qemu-pc-4g.memmap")).unwrap();
    let m = Machine::parse(&text).unwrap();
    // RAM above 4 GiB: reach the headers through a mapping that is only the header pages,
    // given in address order (as a kernel's page-granular direct map would).
    let mut regions = Vec::new();
    for id in 0..8 {
        let r = m.pool_ranges(id);
        if !r.as_slice().is_empty() {
            regions.push(memkit_phys::get_header(r.span(), r.gaps()).unwrap());
        }
    }
    regions.sort();
    struct Pieces(Vec<(MemoryArea, &'static mut [u64])>);
    impl<'h> memkit_phys::HeaderMapping<'h> for Pieces {
        fn map(&mut self, region: MemoryArea) -> Option<&'h mut [u64]> {
            let i = self.0.iter().position(|(r, _)| *r == region)?;
            Some(self.0.swap_remove(i).1)
        }
    }
    let mut pieces = Pieces(regions.iter().map(|r| (*r, vec![0u64; (r.size / 8) as usize].leak())).collect());
    let pools: Pools<'_> = Pools::new(&m, &mut pieces).unwrap();
    let s0 = pools.pool(0).unwrap().stats();
    assert!(s0.span.end() > 1 << 32, "pool 0 reaches RAM above 4 GiB: {:?}", s0.span);
    assert!(s0.total_frames.get() > (3u64 << 30) / 4096);
    pools.pool(0).unwrap().allocator().lock().check_invariants();
}
