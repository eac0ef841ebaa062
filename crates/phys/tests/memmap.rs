//! Memory maps: the text format, malformed lines, machines and their pools.

use memkit_phys::{
    DEFAULT_KERNEL_IMAGE, DEFAULT_MEMORY_MAP, DirectMap, ISA_DMA_LIMIT, MAX_MAP_ENTRIES, Machine, MachineOf,
    MemoryArea, MemoryMap, MemoryMapOf, ParseError, ParseErrorKind, PoolConfigError, Pools, RegionKind,
};
use memkit_types::{FrameCount, Order, PhysAddr, PhysPlacement};

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
    let many: String =
        (0..=MAX_MAP_ENTRIES).map(|i| format!("{} {} usable\n", i * 4096 * 2, i * 4096 * 2 + 4096)).collect();
    assert_eq!(
        err(&many),
        ParseError { line: MAX_MAP_ENTRIES + 1, kind: ParseErrorKind::TooManyEntries(MAX_MAP_ENTRIES) }
    );
    let shown = err("0x0 0x1000 usable\nfoo bar baz\n").to_string();
    assert!(shown.contains("line 2") && shown.contains("start"), "{shown}");
}

#[test]
fn machine_usable_ram_excludes_reserved_and_kernel() {
    let text = "0 0x2000000 usable\n0x800000 0x900000 reserved\n0x1000800 0x1001000 nvs\n";
    let m = Machine::parse(text, Some(DEFAULT_KERNEL_IMAGE)).unwrap();
    let u = m.usable();
    let want = [
        MemoryArea::from_bounds(PhysAddr::zero(), DEFAULT_KERNEL_IMAGE.start),
        MemoryArea::from_bounds(PhysAddr::new(DEFAULT_KERNEL_IMAGE.end()), PhysAddr::new(0x800000)),
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
    let f = pools.allocate(2, PhysPlacement::AnyAddr, FrameCount::new(10), Order::new(4)).unwrap();
    assert!(window.contains(MemoryArea::from_frames(f, FrameCount::new(10))));
    assert!(f.is_aligned_to(Order::new(4)));
    // Pool 0 no longer has the window.
    assert!(pools.allocate(0, PhysPlacement::Fixed(window.start), FrameCount::new(1), Order::ZERO).is_err());
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
    let m = Machine::parse(&text, Some(DEFAULT_KERNEL_IMAGE)).unwrap();
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

/// The usable frames of a machine below `end`, one flag per frame: the reference the
/// machine's ranges are compared with (usable entries shrunk, reserved ones and the image
/// grown to whole frames; reserved wins).
fn usable_frames(entries: &[(u64, u64, bool)], image: Option<(u64, u64)>, end: u64) -> Vec<bool> {
    let mut frames = vec![false; (end / 4096) as usize];
    for &(s, e, usable) in entries.iter().filter(|x| x.2) {
        debug_assert!(usable);
        for f in s.div_ceil(4096)..e / 4096 {
            frames[f as usize] = true;
        }
    }
    let reserved = entries.iter().filter(|x| !x.2).map(|x| (x.0, x.1)).chain(image);
    for (s, e) in reserved {
        for f in s / 4096..e.div_ceil(4096).min(end / 4096) {
            frames[f as usize] = false;
        }
    }
    frames
}

/// The flags of `ranges` as frames below `end`.
fn frames_of(ranges: &[MemoryArea], end: u64) -> Vec<bool> {
    let mut frames = vec![false; (end / 4096) as usize];
    for r in ranges {
        assert!(r.is_frame_aligned() && r.size > 0, "{r:?}");
        for f in r.start.as_u64() / 4096..r.end() / 4096 {
            assert!(!frames[f as usize], "ranges overlap at frame {f:#x}");
            frames[f as usize] = true;
        }
    }
    frames
}

fn map_text(entries: &[(u64, u64, bool)]) -> String {
    entries.iter().map(|&(s, e, u)| format!("{s:#x} {e:#x} {}\n", if u { "usable" } else { "reserved" })).collect()
}

#[test]
fn the_kernel_image_is_the_callers() {
    let text = "0x0 0x9fc00 usable\n0x100000 0x2000000 usable\n";
    // No image: all usable RAM is usable.
    let bare = Machine::parse(text, None).unwrap();
    assert_eq!(bare.kernel_image(), None);
    assert_eq!(
        bare.usable().as_slice(),
        &[
            MemoryArea::from_bounds(PhysAddr::zero(), PhysAddr::new(0x9f000)),
            MemoryArea::from_bounds(PhysAddr::new(0x10_0000), PhysAddr::new(0x200_0000)),
        ]
    );
    // An image at 16 MiB + 0x800 .. 18 MiB + 0x10: grown to whole frames and reserved, and
    // nothing else (1 MiB .. 5 MiB stays usable).
    let image = MemoryArea::from_bounds(PhysAddr::new(0x100_0800), PhysAddr::new(0x120_0010));
    let m = Machine::parse(text, Some(image)).unwrap();
    assert_eq!(m.kernel_image(), Some(image));
    assert_eq!(
        m.usable().as_slice(),
        &[
            MemoryArea::from_bounds(PhysAddr::zero(), PhysAddr::new(0x9f000)),
            MemoryArea::from_bounds(PhysAddr::new(0x10_0000), PhysAddr::new(0x100_0000)),
            MemoryArea::from_bounds(PhysAddr::new(0x120_1000), PhysAddr::new(0x200_0000)),
        ]
    );
    // The pools never hand the image out, and do hand out what the default image covers.
    let mut ram = vec![0u64; 0x200_0000 / 8];
    let pools: Pools<'_> = Pools::new(&m, &mut DirectMap::new(&mut ram, PhysAddr::zero())).unwrap();
    for at in [0x100_0000, 0x110_0000, 0x120_0000] {
        assert!(pools.allocate(0, PhysPlacement::Fixed(PhysAddr::new(at)), FrameCount::new(1), Order::ZERO).is_err());
    }
    let in_default_image = PhysAddr::new(0x20_0000);
    pools.allocate(7, PhysPlacement::Fixed(in_default_image), FrameCount::new(1), Order::ZERO).unwrap();
    // The same through a parsed map.
    let from_map = Machine::from_map(MemoryMap::parse(text).unwrap(), Some(image));
    assert_eq!(from_map, m);
}

#[test]
fn a_uefi_sized_map_of_600_entries_builds_pools() {
    // 600 entries as UEFI firmware reports them: runs of usable entries of several types
    // (conventional, boot services code and data) that touch, between small reserved ones
    // (runtime services, ACPI), some not frame aligned, in no particular order.
    let mut entries = Vec::new();
    let mut at = 0u64;
    let mut i = 0u64;
    while entries.len() < 600 {
        let size = 0x1000 * (1 + (i * 7919) % 23);
        let usable = i % 3 != 2;
        let (s, e) = if usable { (at, at + size) } else { (at + 0x800 * (i % 2), at + size - 0x10 * (i % 5)) };
        entries.push((s, e, usable));
        at += size;
        i += 1;
    }
    let end = at.next_multiple_of(4096);
    // Firmware order is not address order.
    let mut shuffled = entries.clone();
    for k in 0..shuffled.len() {
        shuffled.swap(k, (k * 37 + 11) % 600);
    }
    let image = (0x40_0000, 0x48_0000);
    let m = Machine::parse(
        &map_text(&shuffled),
        Some(MemoryArea::from_bounds(PhysAddr::new(image.0), PhysAddr::new(image.1))),
    )
    .unwrap();
    assert_eq!(m.memory_map().entries().len(), 600);
    let u = m.usable();
    assert!(u.as_slice().len() > 150, "{} ranges", u.as_slice().len());
    assert_eq!(frames_of(u.as_slice(), end), usable_frames(&entries, Some(image), end));
    // The pools over it: every frame handed out is usable, and every usable frame but the
    // headers' is handed out.
    let mut ram = vec![0u64; (end / 8) as usize];
    let pools: Pools<'_> = Pools::new(&m, &mut DirectMap::new(&mut ram, PhysAddr::zero())).unwrap();
    let usable = usable_frames(&entries, Some(image), end);
    let mut handed = 0u64;
    for pool in [0, 7] {
        while let Ok(f) = pools.allocate(pool, PhysPlacement::AnyAddr, FrameCount::new(1), Order::ZERO) {
            assert!(usable[f.number() as usize], "frame {:#x} is not usable", f.number());
            handed += 1;
        }
        pools.pool(pool).unwrap().allocator().lock().check_invariants();
    }
    let header_frames: u64 = pools.stats().map(|s| s.header.size / 4096).sum();
    assert_eq!(handed + header_frames, usable.iter().filter(|&&f| f).count() as u64);
}

#[test]
fn the_capacity_is_a_const_parameter() {
    // 3000 entries: too many for the default, fine for a machine that holds 4096.
    let entries: Vec<(u64, u64, bool)> = (0..3000u64).map(|i| (i * 0x3000, i * 0x3000 + 0x2000, i % 4 != 3)).collect();
    let text = map_text(&entries);
    assert_eq!(
        MemoryMap::parse(&text).unwrap_err(),
        ParseError { line: MAX_MAP_ENTRIES + 1, kind: ParseErrorKind::TooManyEntries(MAX_MAP_ENTRIES) }
    );
    let big = MachineOf::<4096>::parse(&text, None).unwrap();
    assert_eq!(big.memory_map().entries().len(), 3000);
    let end = 3000 * 0x3000;
    assert_eq!(frames_of(big.usable().as_slice(), end), usable_frames(&entries, None, end));
    // A small one refuses its 17th entry, naming its capacity.
    let small = MemoryMapOf::<16>::parse(&map_text(&entries[..17])).unwrap_err();
    assert_eq!(small, ParseError { line: 17, kind: ParseErrorKind::TooManyEntries(16) });
    assert!(small.to_string().contains("more than 16 entries"), "{small}");
    assert_eq!(MemoryMapOf::<16>::CAPACITY, 16);
}

#[test]
fn every_range_fits_when_each_reservation_splits_one() {
    // One usable entry and seven reserved holes in it: with the kernel image, eight
    // reservations and nine ranges in a machine of eight entries; the six configurable
    // pools' windows and the ISA DMA window then split pool 0's ranges further.
    let mut entries = vec![(0u64, 0x800_0000u64, true)];
    entries.extend((1..8u64).map(|i| (i * 0x80_0000, i * 0x80_0000 + 0x1000, false)));
    let image = (0x1000 * 5, 0x1000 * 9);
    let text = map_text(&entries);
    let mut m =
        MachineOf::<8>::parse(&text, Some(MemoryArea::from_bounds(PhysAddr::new(image.0), PhysAddr::new(image.1))))
            .unwrap();
    let end = 0x800_0000;
    assert_eq!(m.usable().as_slice().len(), 9);
    assert_eq!(frames_of(m.usable().as_slice(), end), usable_frames(&entries, Some(image), end));
    let mut windows = Vec::new();
    for pool in 1..7u64 {
        let w = MemoryArea::new(PhysAddr::new(0x200_0000 + pool * 0x80_0000 + 0x10_0000), 0x2000);
        m.configure_pool(pool as usize, w).unwrap();
        windows.push(w);
    }
    let pool0 = m.pool_ranges(0);
    // The three ranges below 16 MiB go to pool 7; each window splits one of the rest.
    assert_eq!(pool0.as_slice().len(), 9 - 3 + 6, "{pool0:?}");
    let mut want = usable_frames(&entries, Some(image), end);
    for w in windows.iter().chain([&MemoryArea::new(PhysAddr::zero(), ISA_DMA_LIMIT.as_u64())]) {
        for f in w.start.as_u64() / 4096..w.end() / 4096 {
            want[f as usize] = false;
        }
    }
    assert_eq!(frames_of(pool0.as_slice(), end), want);
}

#[test]
fn pools_are_built_in_place() {
    // A `static` of pools (behind a lock), built at run time where it lives.
    static POOLS: spin::Mutex<Pools<'static>> = spin::Mutex::new(Pools::empty());
    let m = Machine::parse("0x0 0x9fc00 usable\n0x100000 0x2000000 usable\n", Some(DEFAULT_KERNEL_IMAGE)).unwrap();
    let mut pools = POOLS.lock();
    assert_eq!(pools.iter().count(), 0);
    // A mapping that does not reach the headers: an error, and no pools.
    let e = pools.build(&m, &mut DirectMap::new(&mut [], PhysAddr::zero())).unwrap_err();
    assert!(matches!(e, memkit_phys::PoolsError::Unmapped(_)), "{e:?}");
    assert_eq!(pools.iter().count(), 0);
    let ram: &'static mut [u64] = vec![0u64; 0x200_0000 / 8].leak();
    pools.build(&m, &mut DirectMap::new(ram, PhysAddr::zero())).unwrap();
    let built: Vec<_> = pools.stats().collect();
    assert_eq!(built.iter().map(|s| s.id).collect::<Vec<_>>(), [0, 7]);
    // The same as built by value over the same map.
    let mut other = vec![0u64; 0x200_0000 / 8];
    let by_value: Pools<'_> = Pools::new(&m, &mut DirectMap::new(&mut other, PhysAddr::zero())).unwrap();
    assert_eq!(by_value.stats().collect::<Vec<_>>(), built);
    let f = pools.allocate(0, PhysPlacement::AnyAddr, FrameCount::new(8), Order::ZERO).unwrap();
    assert_eq!(pools.pool(0).unwrap().stats().free_frames.get() + 8, built[0].free_frames.get());
    pools.free(0, f, FrameCount::new(8)).unwrap();
    assert_eq!(pools.stats().collect::<Vec<_>>(), built);
    // Re-attaching through a mapping that does not reach the headers drops the views.
    let e = pools.reattach(&m, &mut DirectMap::new(&mut [], PhysAddr::zero())).unwrap_err();
    assert!(matches!(e, memkit_phys::PoolsError::Unmapped(_)), "{e:?}");
    assert_eq!(pools.iter().count(), 0);
}
