//! The README's example, as written there (the test checks that the README still shows it).

#[test]
fn the_readme_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    use memkit_phys::{DEFAULT_POOL, DirectMap, Machine, MemoryArea, Pools};
    use memkit_types::{FrameCount, Order, PhysAddr, PhysPlacement};

    let image = MemoryArea::from_bounds(PhysAddr::new(0x10_0000), PhysAddr::new(0x50_0000));
    let machine = Machine::parse("0x0 0x9fc00 usable\n0x100000 0x4000000 usable\n", Some(image))?;
    let mut ram = vec![0u64; (64 << 20) / 8]; // physical memory as the caller reaches it
    let pools: Pools<'_> = Pools::new(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero()))?;
    let frames = pools.allocate(DEFAULT_POOL, PhysPlacement::AnyAddr, FrameCount::new(4), Order::ZERO)?;
    pools.free(DEFAULT_POOL, frames, FrameCount::new(4))?;
    let readme = include_str!("../README.md");
    for line in [
        "let machine = Machine::parse(\"0x0 0x9fc00 usable\\n0x100000 0x4000000 usable\\n\", Some(image))?;",
        "let pools: Pools<'_> = Pools::new(&machine, &mut DirectMap::new(&mut ram, PhysAddr::zero()))?;",
    ] {
        assert!(readme.contains(line), "the README no longer shows: {line}");
    }
    Ok(())
}
