//! Machines: a physical memory map (as firmware reports it) plus the kernel image.
//!
//! A memory map is text, one entry per line:
//!
//! ```text
//! # comment                       blank lines and everything after '#' are ignored
//! 0x0000100000 0x001ffe0000 usable    start end type: hex (0x..) or decimal, end exclusive
//! 0x001ffe0000 0x0020000000 reserved  types: usable, reserved; any other type is reserved
//! ```
//!
//! Where usable and reserved entries overlap, reserved wins. Usable ranges are shrunk to
//! whole frames, reserved ones grown to whole frames. The kernel image is the caller's: a
//! kernel passes the range it was loaded at (from its linker symbols), and the range is
//! reserved like a reserved entry; [`DEFAULT_KERNEL_IMAGE`] is the one the embedded default
//! machine and the hosted runtime reserve.
//!
//! A map holds at most `N` entries, a const parameter: [`MemoryMap`] and [`Machine`] hold
//! [`MAX_MAP_ENTRIES`] (enough for the several hundred entries of a UEFI memory map);
//! [`MemoryMapOf`] and [`MachineOf`] take any other capacity. No allocation either way: a
//! map is an array, and the usable ranges derived from it ([`Ranges`]) have room for every
//! range `N` entries and a kernel image can leave.

use core::fmt;

use memkit_types::{PAGE_SIZE, PhysAddr};

use crate::area::MemoryArea;

/// Pools per machine.
pub const POOL_COUNT: usize = 8;
/// The default pool (`L4DM_MEMPHYS_DEFAULT`).
pub const DEFAULT_POOL: usize = 0;
/// The ISA DMA pool (`L4DM_MEMPHYS_ISA_DMA`): usable RAM below [`ISA_DMA_LIMIT`].
pub const ISA_DMA_POOL: usize = 7;
/// The end of ISA DMA memory: 16 MiB.
pub const ISA_DMA_LIMIT: PhysAddr = PhysAddr::new(16 << 20);
/// Entries a [`MemoryMap`] (and a [`Machine`]) holds.
pub const MAX_MAP_ENTRIES: usize = 1024;
/// The kernel image the embedded default machine reserves, and the hosted runtime with it:
/// 1 MiB .. 5 MiB (a kernel loaded at 1 MiB whose image and boot page tables stay below
/// 5 MiB).
pub const DEFAULT_KERNEL_IMAGE: MemoryArea = MemoryArea::new(PhysAddr::new(0x10_0000), 0x40_0000);

/// The embedded default machine's memory map: a 512 MiB QEMU PC as its firmware reports it.
pub const DEFAULT_MEMORY_MAP: &str = include_str!("../machines/qemu-pc-512m.memmap");

/// What a memory-map entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM the allocator may hand out.
    Usable,
    /// Anything else: firmware, ROM, holes, device memory, ACPI tables.
    Reserved,
}

/// One entry of a memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// The bytes it covers.
    pub area: MemoryArea,
    /// What they are.
    pub kind: RegionKind,
}

/// What is wrong with a memory-map line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The line has fewer than three fields; names the first one missing.
    MissingField(&'static str),
    /// The line has more than three fields.
    ExtraField,
    /// A field is not a decimal or `0x` hexadecimal number; names the field.
    BadNumber(&'static str),
    /// The end is not above the start.
    EmptyRange,
    /// The end is not a physical address: at or past the limit (2^52). The end is exclusive,
    /// so the last byte a map can describe is `2^52 - 2`.
    TooLarge,
    /// The map has more entries than it holds (its capacity, [`MAX_MAP_ENTRIES`] for a
    /// [`MemoryMap`]).
    TooManyEntries(usize),
}

/// A malformed memory map: the line (counted from 1) and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory map line {}: ", self.line)?;
        match self.kind {
            ParseErrorKind::MissingField(field) => write!(f, "missing the {field} field (want: start end type)"),
            ParseErrorKind::ExtraField => f.write_str("more than three fields (want: start end type)"),
            ParseErrorKind::BadNumber(field) => write!(f, "the {field} is not a decimal or 0x-hex number"),
            ParseErrorKind::EmptyRange => f.write_str("the end is not above the start"),
            ParseErrorKind::TooLarge => f.write_str("the end is at or past the physical address limit (2^52)"),
            ParseErrorKind::TooManyEntries(capacity) => write!(f, "more than {capacity} entries"),
        }
    }
}

impl core::error::Error for ParseError {}

/// A memory map of up to `N` entries in the order given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapOf<const N: usize> {
    entries: [MapEntry; N],
    len: usize,
}

/// A memory map of up to [`MAX_MAP_ENTRIES`] entries.
pub type MemoryMap = MemoryMapOf<MAX_MAP_ENTRIES>;

impl<const N: usize> fmt::Debug for MemoryMapOf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

impl<const N: usize> Default for MemoryMapOf<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_number(s: &str, field: &'static str) -> Result<u64, ParseErrorKind> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    r.map_err(|_| ParseErrorKind::BadNumber(field))
}

impl<const N: usize> MemoryMapOf<N> {
    /// The entries the map holds at most.
    pub const CAPACITY: usize = N;

    /// An empty map.
    #[must_use]
    pub const fn new() -> Self {
        MemoryMapOf {
            entries: [MapEntry { area: MemoryArea::new(PhysAddr::zero(), 0), kind: RegionKind::Reserved }; N],
            len: 0,
        }
    }

    /// Parses the `start end type` text format (see the module documentation).
    ///
    /// # Errors
    /// [`ParseError`] naming the first malformed line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut map = Self::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |kind| ParseError { line, kind };
            let content = raw.split('#').next().unwrap_or("");
            let mut fields = content.split_whitespace();
            let Some(start) = fields.next() else { continue };
            let end = fields.next().ok_or(err(ParseErrorKind::MissingField("end")))?;
            let kind = fields.next().ok_or(err(ParseErrorKind::MissingField("type")))?;
            if fields.next().is_some() {
                return Err(err(ParseErrorKind::ExtraField));
            }
            let start = parse_number(start, "start").map_err(err)?;
            let end = parse_number(end, "end").map_err(err)?;
            if end <= start {
                return Err(err(ParseErrorKind::EmptyRange));
            }
            // The exclusive end must itself be an address: the ranges a machine derives from
            // the map are built from their ends.
            PhysAddr::try_new(end).map_err(|_| err(ParseErrorKind::TooLarge))?;
            let start = PhysAddr::try_new(start).map_err(|_| err(ParseErrorKind::TooLarge))?;
            let kind = if kind.eq_ignore_ascii_case("usable") { RegionKind::Usable } else { RegionKind::Reserved };
            let entry = MapEntry { area: MemoryArea::new(start, end - start.as_u64()), kind };
            map.push(entry).map_err(|_| err(ParseErrorKind::TooManyEntries(N)))?;
        }
        Ok(map)
    }

    /// Adds an entry.
    ///
    /// # Errors
    /// Gives the entry back when the map is full.
    pub fn push(&mut self, entry: MapEntry) -> Result<(), MapEntry> {
        if self.len == N {
            return Err(entry);
        }
        self.entries[self.len] = entry;
        self.len += 1;
        Ok(())
    }

    /// The entries, in the order given.
    #[must_use]
    pub fn entries(&self) -> &[MapEntry] {
        &self.entries[..self.len]
    }
}

/// A sorted list of disjoint, frame-aligned ranges: what a machine of up to `N` map entries
/// derives from its map. It has room for `2 * N` ranges: each reserved range, the kernel
/// image and each of the seven pool windows splits at most one range in two, so a machine
/// (whose `N` is at least 8) leaves at most `N + 8`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ranges<const N: usize = MAX_MAP_ENTRIES> {
    items: [[MemoryArea; N]; 2],
    len: usize,
}

impl<const N: usize> fmt::Debug for Ranges<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<const N: usize> Ranges<N> {
    const EMPTY: Ranges<N> = Ranges { items: [[MemoryArea::new(PhysAddr::zero(), 0); N]; 2], len: 0 };

    /// The ranges, sorted by address.
    #[must_use]
    pub fn as_slice(&self) -> &[MemoryArea] {
        &self.items.as_flattened()[..self.len]
    }

    /// Total bytes.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.as_slice().iter().map(|r| r.size).sum()
    }

    /// The range from the first start to the last end (empty when there are no ranges).
    #[must_use]
    pub fn span(&self) -> MemoryArea {
        match (self.as_slice().first(), self.as_slice().last()) {
            (Some(a), Some(b)) => MemoryArea::from_bounds(a.start, PhysAddr::new(b.end())),
            _ => MemoryArea::default(),
        }
    }

    /// The holes between consecutive ranges: what the span holds that the ranges do not.
    #[must_use]
    pub fn gaps(&self) -> Gaps<'_> {
        Gaps { ranges: self.as_slice(), i: 0 }
    }

    /// The union of `areas` (at most `N`), sorted and merged: ranges that overlap or touch
    /// become one.
    fn union(areas: impl Iterator<Item = MemoryArea>) -> Self {
        let mut r = Ranges::EMPTY;
        for a in areas.filter(|a| a.size > 0) {
            if r.len < 2 * N {
                r.items.as_flattened_mut()[r.len] = a;
                r.len += 1;
            }
        }
        let len = r.len;
        let items = &mut r.items.as_flattened_mut()[..len];
        items.sort_unstable_by_key(|a| a.start);
        let mut out = 0;
        for i in 0..len {
            let a = items[i];
            if out > 0 && items[out - 1].end() >= a.start.as_u64() {
                let merged_end = items[out - 1].end().max(a.end());
                items[out - 1] = MemoryArea::from_bounds(items[out - 1].start, PhysAddr::new(merged_end));
            } else {
                items[out] = a;
                out += 1;
            }
        }
        r.len = out;
        r
    }

    /// Removes `[s, e)` from every range, in place: the ranges it covers go, the ones it
    /// cuts are trimmed, one it falls inside is split in two.
    fn subtract(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        let len = self.len;
        let items = self.items.as_flattened_mut();
        // Ranges `first..last` overlap `[s, e)`.
        let first = items[..len].partition_point(|x| x.end() <= s);
        let last = items[..len].partition_point(|x| x.start.as_u64() < e);
        if first >= last {
            return;
        }
        let mut pieces = [MemoryArea::default(); 2];
        let mut n = 0;
        if items[first].start.as_u64() < s {
            pieces[n] = MemoryArea::from_bounds(items[first].start, PhysAddr::new(s));
            n += 1;
        }
        if items[last - 1].end() > e {
            pieces[n] = MemoryArea::from_bounds(PhysAddr::new(e), PhysAddr::new(items[last - 1].end()));
            n += 1;
        }
        // At most one more range than before: `n` is 2 only when one range is split.
        let new_len = len - (last - first) + n;
        debug_assert!(new_len <= items.len());
        items.copy_within(last..len, first + n);
        items[first..first + n].copy_from_slice(&pieces[..n]);
        self.len = new_len;
    }

    /// Keeps only what lies inside `[s, e)`.
    fn clip(&mut self, s: u64, e: u64) {
        if s > 0 {
            self.subtract(0, s);
        }
        if e < u64::MAX {
            self.subtract(e, u64::MAX);
        }
    }
}

/// The holes between consecutive ranges of a [`Ranges`], in address order: the reserved
/// regions a pool's allocator is given (an enumerator, as the seed asks).
#[derive(Debug, Clone)]
pub struct Gaps<'a> {
    ranges: &'a [MemoryArea],
    i: usize,
}

impl Iterator for Gaps<'_> {
    type Item = MemoryArea;

    fn next(&mut self) -> Option<MemoryArea> {
        while self.i + 1 < self.ranges.len() {
            let (a, b) = (self.ranges[self.i], self.ranges[self.i + 1]);
            self.i += 1;
            if a.end() < b.start.as_u64() {
                return Some(MemoryArea::from_bounds(PhysAddr::new(a.end()), b.start));
            }
        }
        None
    }
}

/// A machine: its memory map of up to `N` entries, the kernel image, and the windows of the
/// configured pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineOf<const N: usize> {
    map: MemoryMapOf<N>,
    kernel_image: Option<MemoryArea>,
    windows: [Option<MemoryArea>; POOL_COUNT],
}

/// A machine whose memory map holds up to [`MAX_MAP_ENTRIES`] entries.
pub type Machine = MachineOf<MAX_MAP_ENTRIES>;

/// Why a pool window cannot be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolConfigError {
    /// Only pools 1 to 6 take a window (pool 0 is the rest, pool 7 is ISA DMA memory).
    NotConfigurable(usize),
    /// The window is empty or not 4 KiB aligned.
    BadWindow(MemoryArea),
    /// The window overlaps the window of this pool.
    Overlaps(usize),
}

impl fmt::Display for PoolConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolConfigError::NotConfigurable(p) => write!(f, "pool {p} cannot be configured (pools 1-6 can)"),
            PoolConfigError::BadWindow(w) => write!(f, "pool window {w} is empty or not 4 KiB aligned"),
            PoolConfigError::Overlaps(p) => write!(f, "pool window overlaps pool {p}'s window"),
        }
    }
}

impl core::error::Error for PoolConfigError {}

impl Machine {
    /// The embedded default machine: a 512 MiB QEMU PC ([`DEFAULT_MEMORY_MAP`]) with
    /// [`DEFAULT_KERNEL_IMAGE`] reserved.
    ///
    /// # Panics
    /// Never: the embedded map is parsed by the tests.
    #[must_use]
    pub fn default_machine() -> Self {
        match Self::parse(DEFAULT_MEMORY_MAP, Some(DEFAULT_KERNEL_IMAGE)) {
            Ok(m) => m,
            Err(_) => panic!("the embedded memory map is malformed"),
        }
    }
}

impl<const N: usize> MachineOf<N> {
    /// Checked (at compile time) when a machine is made: with at least 8 entries, `2 * N`
    /// has room for every range the machine derives (see [`Ranges`]).
    const ROOM: () = assert!(N >= 8, "a machine's memory map holds at least 8 entries");

    /// A machine from a memory map in text form, with `kernel_image` (where the kernel is
    /// loaded: its code, data and boot page tables) reserved; `None` reserves nothing.
    ///
    /// # Errors
    /// [`ParseError`] naming the first malformed line.
    pub fn parse(text: &str, kernel_image: Option<MemoryArea>) -> Result<Self, ParseError> {
        Ok(Self::from_map(MemoryMapOf::parse(text)?, kernel_image))
    }

    /// A machine from a parsed memory map, with `kernel_image` reserved (`None`: nothing).
    #[must_use]
    pub fn from_map(map: MemoryMapOf<N>, kernel_image: Option<MemoryArea>) -> Self {
        let () = Self::ROOM;
        let mut windows = [None; POOL_COUNT];
        windows[ISA_DMA_POOL] = Some(MemoryArea::new(PhysAddr::zero(), ISA_DMA_LIMIT.as_u64()));
        MachineOf { map, kernel_image, windows }
    }

    /// The memory map.
    #[must_use]
    pub fn memory_map(&self) -> &MemoryMapOf<N> {
        &self.map
    }

    /// The reserved kernel image, if any.
    #[must_use]
    pub fn kernel_image(&self) -> Option<MemoryArea> {
        self.kernel_image
    }

    /// Gives pool `pool` (1 to 6) the usable RAM inside `window`, taken from pool 0.
    ///
    /// # Errors
    /// [`PoolConfigError`] for pools 0 and 7, an empty or unaligned window, or one that
    /// overlaps another pool's window.
    pub fn configure_pool(&mut self, pool: usize, window: MemoryArea) -> Result<(), PoolConfigError> {
        if pool == DEFAULT_POOL || pool >= ISA_DMA_POOL {
            return Err(PoolConfigError::NotConfigurable(pool));
        }
        if window.size == 0 || !window.is_frame_aligned() {
            return Err(PoolConfigError::BadWindow(window));
        }
        for (p, w) in self.windows.iter().enumerate() {
            if p != pool
                && let Some(w) = w
                && w.overlaps(window)
            {
                return Err(PoolConfigError::Overlaps(p));
            }
        }
        self.windows[pool] = Some(window);
        Ok(())
    }

    /// The window of pool `pool`: ISA DMA memory for pool 7, the configured window for
    /// pools 1 to 6, `None` for pool 0 (it takes what no other pool does) and unconfigured
    /// pools.
    #[must_use]
    pub fn pool_window(&self, pool: usize) -> Option<MemoryArea> {
        self.windows.get(pool).copied().flatten()
    }

    /// The usable RAM: usable entries shrunk to whole frames, minus reserved entries and the
    /// kernel image grown to whole frames.
    #[must_use]
    pub fn usable(&self) -> Ranges<N> {
        let page = PAGE_SIZE as u64;
        let usable = self.map.entries().iter().filter(|e| e.kind == RegionKind::Usable).filter_map(|e| {
            let s = e.area.start.as_u64().next_multiple_of(page);
            let end = e.area.end() & !(page - 1);
            (s < end).then(|| MemoryArea::from_bounds(PhysAddr::new(s), PhysAddr::new(end)))
        });
        let mut r = Ranges::union(usable);
        let reserved = self.map.entries().iter().filter(|e| e.kind == RegionKind::Reserved).map(|e| e.area);
        for a in reserved.chain(self.kernel_image) {
            let (s, e) = a.frames_outward();
            r.subtract(s * page, e.saturating_mul(page));
        }
        r
    }

    /// The usable RAM of pool `pool`, sorted; empty for pools without memory.
    #[must_use]
    pub fn pool_ranges(&self, pool: usize) -> Ranges<N> {
        let mut r = self.usable();
        if pool >= POOL_COUNT {
            return Ranges::EMPTY;
        }
        if pool == DEFAULT_POOL {
            for w in self.windows.iter().flatten() {
                r.subtract(w.start.as_u64(), w.end());
            }
        } else {
            match self.windows[pool] {
                Some(w) => r.clip(w.start.as_u64(), w.end()),
                None => return Ranges::EMPTY,
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_machine_usable() {
        let m = Machine::default_machine();
        assert_eq!(m.memory_map().entries().len(), 7);
        let u = m.usable();
        assert_eq!(
            u.as_slice(),
            &[
                MemoryArea::from_bounds(PhysAddr::new(0), PhysAddr::new(0x9f000)),
                MemoryArea::from_bounds(PhysAddr::new(0x50_0000), PhysAddr::new(0x1ffe_0000)),
            ]
        );
        let p7 = m.pool_ranges(7);
        assert_eq!(p7.span(), MemoryArea::from_bounds(PhysAddr::new(0), PhysAddr::new(0x100_0000)));
        assert_eq!(
            p7.gaps().collect::<std::vec::Vec<_>>(),
            [MemoryArea::from_bounds(PhysAddr::new(0x9f000), PhysAddr::new(0x50_0000))]
        );
        let p0 = m.pool_ranges(0);
        assert_eq!(p0.as_slice(), &[MemoryArea::from_bounds(PhysAddr::new(0x100_0000), PhysAddr::new(0x1ffe_0000))]);
        assert_eq!(m.pool_ranges(3).as_slice(), &[]);
    }

    /// Exercises everything a machine derives from its map.
    fn derive_all(m: &Machine) {
        let u = m.usable();
        let _ = (u.span(), u.bytes(), u.gaps().count());
        for w in u.as_slice().windows(2) {
            assert!(w[0].end() < w[1].start.as_u64(), "{u:?}");
        }
        for r in u.as_slice() {
            assert!(r.is_frame_aligned() && r.size > 0 && r.end() < PhysAddr::LIMIT, "{u:?}");
        }
        for pool in 0..=POOL_COUNT {
            let p = m.pool_ranges(pool);
            let _ = (p.span(), p.bytes(), p.gaps().count());
        }
    }

    #[test]
    fn a_map_ending_at_the_address_limit_is_an_error_naming_its_line() {
        // The end is exclusive; 2^52 is not an address, and a machine derived from such a
        // map panicked building its usable ranges.
        let e = MemoryMap::parse("0x0 0x9fc00 usable\n0x100000 0x10000000000000 usable\n").unwrap_err();
        assert_eq!(e, ParseError { line: 2, kind: ParseErrorKind::TooLarge });
        assert!(std::string::ToString::to_string(&e).contains("line 2"), "{e}");
        for end in [PhysAddr::LIMIT, PhysAddr::LIMIT + 1, u64::MAX] {
            let text = std::format!("0x100000 {end:#x} reserved");
            assert_eq!(MemoryMap::parse(&text).unwrap_err().kind, ParseErrorKind::TooLarge, "{text}");
        }
        for text in [
            "0x0 0xfffffffffffff usable",
            "0xffffffffff000 0xfffffffffffff usable",
            "0x0 0xfffffffffffff reserved\n0x0 0x100000000 usable",
            "0x1 0xfffffffffffff usable\n0xffffffffffff0 0xfffffffffffff reserved",
        ] {
            let m = Machine::parse(text, Some(DEFAULT_KERNEL_IMAGE)).unwrap();
            derive_all(&m);
        }
    }

    #[test]
    fn malformed_map_lines_are_errors() {
        for (text, kind) in [
            ("0x0", ParseErrorKind::MissingField("end")),
            ("0x0 0x1000", ParseErrorKind::MissingField("type")),
            ("0x0 0x1000 usable extra", ParseErrorKind::ExtraField),
            ("0x 0x1000 usable", ParseErrorKind::BadNumber("start")),
            ("0 -1 usable", ParseErrorKind::BadNumber("end")),
            ("0 0x10000000000000000 usable", ParseErrorKind::BadNumber("end")),
            ("0x2000 0x1000 usable", ParseErrorKind::EmptyRange),
            ("0x1000 0x1000 usable", ParseErrorKind::EmptyRange),
        ] {
            assert_eq!(MemoryMap::parse(text), Err(ParseError { line: 1, kind }), "{text}");
        }
        let many: std::string::String = (0..=MAX_MAP_ENTRIES as u64)
            .map(|i| std::format!("{:#x} {:#x} usable\n", i << 20, (i << 20) + 4096))
            .collect();
        assert_eq!(MemoryMap::parse(&many).unwrap_err().kind, ParseErrorKind::TooManyEntries(MAX_MAP_ENTRIES));
    }
}
