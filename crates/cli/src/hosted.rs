//! A machine brought up hosted: its RAM as a memfd, its pools, the dataspace manager over
//! them and address spaces with real page faults.

use std::path::Path;
use std::sync::Arc;

use memkit_heap::{AddressHeaps, DirectMapPageSource, HeapId, KernelHeaps, SingleCpu};
use memkit_host::{HostRam, HostedMachine, PoolSource, System};
use memkit_phys::{Machine, PoolStats, Pools};

/// A pool's allocator as the dataspace manager uses it.
pub(crate) type Source = PoolSource;

/// The kernel heaps' page source: pool 0's frames through the RAM's direct map.
pub(crate) type HeapPages = DirectMapPageSource<Source>;

/// The kernel heaps of the hosted machine: their blocks are addresses only, so that a
/// scenario frees them safely.
pub(crate) type Heaps = AddressHeaps<'static, HeapPages, SingleCpu>;

/// The machine, its RAM, its pools, the stack over them and the kernel heaps.
pub(crate) struct Hosted {
    pub(crate) machine: Machine,
    pub(crate) pools: &'static Pools<'static>,
    pub(crate) system: System<Source>,
    heaps: Option<&'static Heaps>,
    /// The RAM, alive for the rest of the process (the pools' headers live in it).
    ram: &'static Arc<HostRam>,
}

impl Hosted {
    /// The kernel heaps, set up on first use (they take their page maps from pool 0).
    pub(crate) fn heaps(&mut self) -> &'static Heaps {
        if let Some(h) = self.heaps {
            return h;
        }
        let pool = self.pools.pool(memkit_phys::DEFAULT_POOL).expect("pool 0 exists on every machine with RAM");
        let source: &'static HeapPages =
            Box::leak(Box::new(self.ram.heap_page_source(pool.allocator()).expect("pool 0 lies in the RAM")));
        let heaps: &'static Heaps = Box::leak(Box::new(AddressHeaps::new(KernelHeaps::new(source, source, SingleCpu))));
        let _ = heaps.init(true);
        self.heaps = Some(heaps);
        heaps
    }

    /// Statistics of every backing heap, one line each.
    pub(crate) fn heap_report(&mut self) -> String {
        use std::fmt::Write as _;
        let heaps = self.heaps();
        let mut out = String::from(
            "| heap               | spans | small blocks | large blocks | pages | metadata pages |\n|--------------------|-------|--------------|--------------|-------|----------------|\n",
        );
        for (name, id) in [("kernel_heap_4K_64K", HeapId::Kernel4K64K), ("pinned_heap_4K_64K", HeapId::Pinned4K64K)] {
            let s = heaps.regular_stats(id);
            let _ = writeln!(
                out,
                "| {name:<18} | {:>5} | {:>12} | {:>12} | {:>5} | {:>14} |",
                s.spans, s.small_blocks, s.large_blocks, s.pages, s.metadata_pages
            );
        }
        for (name, id) in [("kernel_heap_16M", HeapId::Kernel16M), ("pinned_heap_16M", HeapId::Pinned16M)] {
            let s = heaps.large_stats(id);
            let _ = writeln!(
                out,
                "| {name:<18} | {:>5} | {:>12} | {:>12} | {:>5} | {:>14} |",
                s.spans, s.small_blocks, s.large_blocks, s.pages, s.metadata_pages
            );
        }
        let _ = writeln!(out, "large pages enabled: {}", heaps.large_pages_enabled());
        out
    }
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("pools", &self.pools).finish_non_exhaustive()
    }
}

/// The embedded default machine, or the one `path`'s memory map describes (read through
/// the limits of [`crate::input`]).
///
/// # Errors
/// The file's I/O error, or what is wrong with its text or its map, naming the line.
pub(crate) fn load_machine(path: Option<&Path>) -> Result<Machine, String> {
    crate::input::load_machine(path)
}

/// Brings `machine` up ([`HostedMachine::boot`]: RAM up to its last usable byte, the eight
/// pools with their headers in that RAM, and a dataspace manager whose root factory may use
/// every frame the pools hold), for the life of the process.
///
/// # Errors
/// A message when the RAM cannot be made or the pools cannot be built.
pub(crate) fn boot(machine: Machine) -> Result<Hosted, String> {
    let booted = HostedMachine::boot(&machine).map_err(|e| e.to_string())?;
    let ram = booted.ram();
    let HostedMachine { pools, system, .. } = booted;
    Ok(Hosted { machine, pools, system, heaps: None, ram })
}

/// Bytes in a human unit.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) || (unit != "B" && bytes >= size * 10) {
            let v = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// The table of the pools: range, frames, free frames, largest free block.
pub(crate) fn pool_table(stats: impl Iterator<Item = PoolStats>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| pool      | range                                | frames  | free    | used  | largest free block | header |"
    );
    let _ = writeln!(
        out,
        "|-----------|--------------------------------------|---------|---------|-------|--------------------|--------|"
    );
    for s in stats {
        let total = s.total_frames.get();
        let free = s.free_frames.get();
        let used = if total == 0 { 0.0 } else { 100.0 * (total - free) as f64 / total as f64 };
        let name = match s.id {
            0 => "0 default".to_string(),
            7 => "7 ISA DMA".to_string(),
            n => n.to_string(),
        };
        let _ = writeln!(
            out,
            "| {name:<9} | {:#012x}..{:#012x} {:>10} | {total:>7} | {free:>7} | {used:>4.1}% | {:>18} | {:>6} |",
            s.span.start.as_u64(),
            s.span.end(),
            human(s.span.size),
            human(s.largest_free_bytes()),
            human(s.header.size),
        );
    }
    out
}
