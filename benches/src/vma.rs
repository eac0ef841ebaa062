//! `vma-replay`: real address-space traces (every mmap, munmap, mprotect, mremap and brk of
//! five programs, `benches/traces/vma-*.trace`) replayed into memkit's region map, a
//! `BTreeMap` of ranges implementing the same operations, and the `memory_set` crate,
//! interleaved over several rounds; each replay's final state is checked against the
//! reference. Then a scaled stress: the largest address space replicated at offsets until
//! about 100 000 regions are live.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use memkit_region::{
    AttachRequest, Attachment, Backing, BackingError, DetachFlags, MapError, Mmu, RegionMap, Remap, TlbFlush,
    Translation,
};
use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, Rights, VirtAddr};
use memory_set::{MappingBackend, MemoryArea, MemorySet};

use crate::{Options, Report};

const P: usize = PAGE_SIZE;
const MEMKIT: &str = "memkit";
const BTREE: &str = "BTreeMap";
const MEMORY_SET: &str = "memory_set";
/// The user half of an x86_64 address space, less its first and last page.
const WINDOW_START: usize = 0x1000;
const WINDOW_END: usize = 0x7fff_ffff_f000;

/// The traces, in the compact form `tools/vma-trace/compact.py` writes.
const TRACES: &[(&str, &str)] = &[
    ("python-sqlite-json", include_str!("../traces/vma-python-sqlite-json.trace")),
    ("gcc-compile", include_str!("../traces/vma-gcc-compile.trace")),
    ("git-log-gc", include_str!("../traces/vma-git-log-gc.trace")),
    ("xz-threads", include_str!("../traces/vma-xz-threads.trace")),
    ("shell-pipeline", include_str!("../traces/vma-shell-pipeline.trace")),
];

/// One operation of a trace (addresses and lengths in bytes; rights as r 1, w 2, x 4).
#[derive(Debug, Clone, Copy)]
enum Op {
    Mmap { addr: usize, len: usize, prot: u8, fixed: bool },
    Munmap { addr: usize, len: usize },
    Mprotect { addr: usize, len: usize, prot: u8 },
    Mremap { old: usize, old_len: usize, new_len: usize, new: usize },
    Brk { brk: usize },
}

const KINDS: [&str; 5] = ["mmap", "munmap", "mprotect", "mremap", "brk"];

impl Op {
    fn kind(&self) -> usize {
        match self {
            Op::Mmap { .. } => 0,
            Op::Munmap { .. } => 1,
            Op::Mprotect { .. } => 2,
            Op::Mremap { .. } => 3,
            Op::Brk { .. } => 4,
        }
    }
}

/// The address spaces of a trace: each one's operations in order.
fn parse(text: &str) -> Vec<Vec<Op>> {
    let mut spaces: Vec<Vec<Op>> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let w: Vec<&str> = line.split(' ').collect();
        let h = |i: usize| usize::from_str_radix(w[i], 16).expect("a hexadecimal number");
        let space: usize = w[1].parse().expect("a space number");
        if spaces.len() <= space {
            spaces.resize(space + 1, Vec::new());
        }
        let op = match w[0] {
            "s" => continue,
            "m" => Op::Mmap { addr: h(2), len: h(3), prot: w[4].parse().expect("rights"), fixed: w[5] == "1" },
            "u" => Op::Munmap { addr: h(2), len: h(3) },
            "p" => Op::Mprotect { addr: h(2), len: h(3), prot: w[4].parse().expect("rights") },
            "r" => Op::Mremap { old: h(2), old_len: h(3), new_len: h(4), new: h(5) },
            "b" => Op::Brk { brk: h(2) },
            other => panic!("unknown trace operation {other}"),
        };
        spaces[space].push(op);
    }
    spaces.retain(|s| !s.is_empty());
    spaces
}

fn round(len: usize) -> usize {
    len.next_multiple_of(P)
}

fn rights(prot: u8) -> Rights {
    Rights::from_bits_truncate(prot & 7)
}

/// What each implementation does with the operations of a trace. `brk` is a resize of the
/// heap region, done through `mremap`, `mmap` and `munmap` by [`replay`].
trait Vmas {
    fn mmap(&mut self, addr: usize, len: usize, prot: u8, fixed: bool) -> bool;
    fn munmap(&mut self, addr: usize, len: usize) -> bool;
    fn mprotect(&mut self, addr: usize, len: usize, prot: u8) -> bool;
    fn mremap(&mut self, old: usize, old_len: usize, new_len: usize, new: usize) -> bool;
    /// The final state: (start, end, dataspace, offset, rights) per region.
    fn regions(&self) -> Vec<(usize, usize, u32, u64, u8)>;
}

/// Replays `ops`; returns the number of operations that failed.
fn replay(v: &mut dyn Vmas, ops: &[Op], mut each: impl FnMut(usize, Instant)) -> usize {
    let mut failed = 0;
    let mut heap: Option<(usize, usize)> = None;
    for op in ops {
        let t = Instant::now();
        let ok = match *op {
            Op::Mmap { addr, len, prot, fixed } => v.mmap(addr, round(len), prot, fixed),
            Op::Munmap { addr, len } => v.munmap(addr, round(len)),
            Op::Mprotect { addr, len, prot } => v.mprotect(addr, round(len), prot),
            Op::Mremap { old, old_len, new_len, new } => v.mremap(old, round(old_len), round(new_len), new),
            Op::Brk { brk } => match heap {
                None => {
                    heap = Some((round(brk), round(brk)));
                    true
                }
                Some((start, cur)) => {
                    let to = round(brk).max(start);
                    heap = Some((start, to));
                    if to == cur {
                        true
                    } else if cur == start {
                        v.mmap(start, to - start, 3, false)
                    } else if to == start {
                        v.munmap(start, cur - start)
                    } else {
                        v.mremap(start, cur - start, to - start, start)
                    }
                }
            },
        };
        failed += usize::from(!ok);
        each(op.kind(), t);
    }
    failed
}

// ---------------------------------------------------------------- memkit

/// Dataspaces of any size whose frames are named after their offsets; nothing is stored.
struct TraceBacking;

impl Backing for TraceBacking {
    type Id = u32;
    fn rights(&self, _: u32) -> Option<Rights> {
        Some(Rights::RWX)
    }
    fn map(&mut self, id: u32, offset: u64, _: Access) -> Result<(Frame, Rights), BackingError> {
        Ok((Frame::from_number((u64::from(id) << 24) | (offset / P as u64)), Rights::RWX))
    }
    fn attached(&mut self, _: u32, _: Attachment) {}
    fn detached(&mut self, _: u32, _: Attachment) {}
    fn release(&mut self, _: u32, _: u64, _: u64) {}
}

/// An MMU with no translations: the region map's own work is what is measured.
struct NullMmu;

impl Mmu for NullMmu {
    fn map(&mut self, page: Page, _: Frame, count: PageCount, _: Rights, _: CacheMode) -> Result<TlbFlush, MapError> {
        Ok(TlbFlush::new(page, count))
    }
    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        Ok(TlbFlush::new(page, count))
    }
    fn protect(&mut self, page: Page, count: PageCount, _: Rights) -> Result<TlbFlush, MapError> {
        Ok(TlbFlush::new(page, count))
    }
    fn restrict(&mut self, page: Page, count: PageCount, _: Rights) -> Result<TlbFlush, MapError> {
        Ok(TlbFlush::new(page, count))
    }
    fn translate(&self, _: Page) -> Option<Translation> {
        None
    }
    fn flush(&self, _: Page, _: PageCount) {}
}

struct Memkit {
    map: RegionMap<u32>,
    next: u32,
}

impl Memkit {
    fn new() -> Self {
        Memkit { map: RegionMap::new(VirtAddr::new(WINDOW_START), WINDOW_END - WINDOW_START), next: 0 }
    }
}

fn va(a: usize) -> Option<VirtAddr> {
    VirtAddr::try_new(a).ok()
}

impl Vmas for Memkit {
    fn mmap(&mut self, addr: usize, len: usize, prot: u8, fixed: bool) -> bool {
        let Some(at) = va(addr) else { return false };
        self.next += 1;
        let mut req = AttachRequest::new(self.next, len, rights(prot)).at(at);
        if fixed {
            req = req.replacing();
        }
        self.map.attach(&mut TraceBacking, &mut NullMmu, &req).is_ok()
    }
    fn munmap(&mut self, addr: usize, len: usize) -> bool {
        let Some(at) = va(addr) else { return false };
        let _ = self.map.detach_range(&mut TraceBacking, &mut NullMmu, at, len, DetachFlags::EXACT, |_| {});
        true
    }
    fn mprotect(&mut self, addr: usize, len: usize, prot: u8) -> bool {
        let Some(at) = va(addr) else { return false };
        self.map.protect(&mut TraceBacking, &mut NullMmu, at, len, rights(prot)).map(TlbFlush::ignore).is_ok()
    }
    fn mremap(&mut self, old: usize, old_len: usize, new_len: usize, new: usize) -> bool {
        let (Some(from), Some(to)) = (va(old), va(new)) else { return false };
        let how = if old == new { Remap::InPlace } else { Remap::Fixed(to) };
        self.map.remap(&mut TraceBacking, &mut NullMmu, from, old_len, new_len, how).is_ok()
    }
    fn regions(&self) -> Vec<(usize, usize, u32, u64, u8)> {
        self.map
            .regions()
            .iter()
            .map(|r| (r.start.as_usize(), r.start.as_usize() + r.size, r.dataspace, r.offset, r.rights.bits()))
            .collect()
    }
}

// ---------------------------------------------------------------- the reference

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vma {
    end: usize,
    ds: u32,
    offset: u64,
    prot: u8,
}

/// The reference: start → region in a `BTreeMap`, every operation spelled out plainly,
/// with memkit's rules (a fixed attach replaces, protect splits and merges, a region grows
/// in place only into free bytes and moves only to a fixed place here).
struct Reference {
    map: BTreeMap<usize, Vma>,
    next: u32,
}

impl Reference {
    fn containing(&self, a: usize) -> Option<(usize, Vma)> {
        self.map.range(..=a).next_back().filter(|(_, v)| a < v.end).map(|(s, v)| (*s, *v))
    }
    fn overlaps(&self, s: usize, e: usize) -> bool {
        self.containing(s).is_some() || self.map.range(s..e).next().is_some()
    }
    fn split(&mut self, at: usize) {
        if let Some((s, v)) = self.containing(at)
            && s < at
        {
            self.map.insert(s, Vma { end: at, ..v });
            self.map.insert(at, Vma { offset: v.offset + (at - s) as u64, ..v });
        }
    }
    fn cut(&mut self, s: usize, e: usize) {
        self.split(s);
        self.split(e);
        let inside: Vec<usize> = self.map.range(s..e).map(|(k, _)| *k).collect();
        for k in inside {
            self.map.remove(&k);
        }
    }
    fn merge_at(&mut self, at: usize) {
        let Some((ls, l)) = at.checked_sub(1).and_then(|p| self.containing(p)) else { return };
        let Some(r) = self.map.get(&at).copied() else { return };
        if l.end == at && l.ds == r.ds && l.offset + (l.end - ls) as u64 == r.offset && l.prot == r.prot {
            self.map.remove(&at);
            self.map.insert(ls, Vma { end: r.end, ..l });
        }
    }
}

impl Vmas for Reference {
    fn mmap(&mut self, addr: usize, len: usize, prot: u8, fixed: bool) -> bool {
        let end = addr + len;
        if addr < WINDOW_START || end > WINDOW_END || (!fixed && self.overlaps(addr, end)) {
            self.next += 1;
            return false;
        }
        self.next += 1;
        self.cut(addr, end);
        self.map.insert(addr, Vma { end, ds: self.next, offset: 0, prot: prot & 7 });
        true
    }
    fn munmap(&mut self, addr: usize, len: usize) -> bool {
        self.cut(addr, addr + len);
        true
    }
    fn mprotect(&mut self, addr: usize, len: usize, prot: u8) -> bool {
        let (s, e, prot) = (addr, addr + len, prot & 7);
        let mut p = s;
        while p < e {
            match self.containing(p) {
                Some((_, v)) => p = v.end,
                None => return false,
            }
        }
        for edge in [s, e] {
            if self.containing(edge).is_some_and(|(_, v)| v.prot != prot) {
                self.split(edge);
            }
        }
        let inside: Vec<usize> = self.map.range(s..e).map(|(k, _)| *k).collect();
        for k in inside {
            self.map.get_mut(&k).expect("listed").prot = prot;
        }
        let bounds: Vec<usize> = self.map.range(s..=e).flat_map(|(k, v)| [*k, v.end]).collect();
        self.merge_at(s);
        for b in bounds {
            if b <= e {
                self.merge_at(b);
            }
        }
        true
    }
    fn mremap(&mut self, old: usize, old_len: usize, new_len: usize, new: usize) -> bool {
        let old_end = old + old_len;
        let Some((gs, g)) = self.containing(old).filter(|(_, g)| old_end <= g.end) else { return false };
        let offset = g.offset + (old - gs) as u64;
        if old == new {
            if new_len == old_len {
                return true;
            }
            if new_len < old_len {
                self.cut(old + new_len, old_end);
                return true;
            }
            let new_end = old + new_len;
            if old_end == g.end && new_end <= WINDOW_END && !self.overlaps(g.end, new_end) {
                self.map.insert(gs, Vma { end: new_end, ..g });
                self.merge_at(new_end);
                return true;
            }
            return false;
        }
        let t_end = new + new_len;
        if new < WINDOW_START || t_end > WINDOW_END || (new < old_end && old < t_end) {
            return false;
        }
        self.cut(new, t_end);
        self.cut(old, old_end);
        self.map.insert(new, Vma { end: t_end, offset, ..g });
        self.merge_at(new);
        self.merge_at(t_end);
        true
    }
    fn regions(&self) -> Vec<(usize, usize, u32, u64, u8)> {
        self.map.iter().map(|(s, v)| (*s, v.end, v.ds, v.offset, v.prot)).collect()
    }
}

// ---------------------------------------------------------------- memory_set

#[derive(Clone)]
struct NoBackend;

impl MappingBackend for NoBackend {
    type Addr = memory_addr::VirtAddr;
    type Flags = u8;
    type PageTable = ();
    fn map(&self, _: Self::Addr, _: usize, _: u8, _: &mut ()) -> bool {
        true
    }
    fn unmap(&self, _: Self::Addr, _: usize, _: &mut ()) -> bool {
        true
    }
    fn protect(&self, _: Self::Addr, _: usize, _: u8, _: &mut ()) -> bool {
        true
    }
}

/// `memory_set`: no dataspaces and no `mremap` (an unmap and a map of the new range).
struct MemSet(MemorySet<NoBackend>);

impl Vmas for MemSet {
    fn mmap(&mut self, addr: usize, len: usize, prot: u8, fixed: bool) -> bool {
        self.0.map(MemoryArea::new(addr.into(), len, prot & 7, NoBackend), &mut (), fixed).is_ok()
    }
    fn munmap(&mut self, addr: usize, len: usize) -> bool {
        self.0.unmap(addr.into(), len, &mut ()).is_ok()
    }
    fn mprotect(&mut self, addr: usize, len: usize, prot: u8) -> bool {
        self.0.protect(addr.into(), len, |_| Some(prot & 7), &mut ()).is_ok()
    }
    fn mremap(&mut self, old: usize, old_len: usize, new_len: usize, new: usize) -> bool {
        let Some(flags) = self.0.find(old.into()).map(|a| a.flags()) else { return false };
        self.0.unmap(old.into(), old_len, &mut ()).is_ok()
            && self.0.map(MemoryArea::new(new.into(), new_len, flags, NoBackend), &mut (), true).is_ok()
    }
    fn regions(&self) -> Vec<(usize, usize, u32, u64, u8)> {
        self.0.iter().map(|a| (a.start().as_usize(), a.end().as_usize(), 0, 0, a.flags())).collect()
    }
}

/// The pages covered and their rights, adjacent runs of equal rights joined: what
/// `memory_set` (which never merges) and the reference must agree on.
fn coverage(regions: &[(usize, usize, u32, u64, u8)]) -> Vec<(usize, usize, u8)> {
    let mut out: Vec<(usize, usize, u8)> = Vec::new();
    for &(s, e, _, _, prot) in regions {
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == prot => last.1 = e,
            _ => out.push((s, e, prot)),
        }
    }
    out
}

// ---------------------------------------------------------------- the suite

/// Moves every address of `ops` into copy `copy` of `chunks` 1 GiB chunks (each distinct
/// chunk the space uses gets a dense index, neighbours staying neighbours).
fn relocate(ops: &[Op], chunks: &BTreeMap<usize, usize>, per_copy: usize, copy: usize) -> Vec<Op> {
    let at = |a: usize| {
        let c = a >> 30;
        ((copy * per_copy + chunks[&c] + 1) << 30) | (a & ((1 << 30) - 1))
    };
    ops.iter()
        .map(|op| match *op {
            Op::Mmap { addr, len, prot, fixed } => Op::Mmap { addr: at(addr), len, prot, fixed },
            Op::Munmap { addr, len } => Op::Munmap { addr: at(addr), len },
            Op::Mprotect { addr, len, prot } => Op::Mprotect { addr: at(addr), len, prot },
            Op::Mremap { old, old_len, new_len, new } => Op::Mremap { old: at(old), old_len, new_len, new: at(new) },
            Op::Brk { brk } => Op::Brk { brk: at(brk) },
        })
        .collect()
}

/// The distinct 1 GiB chunks the operations touch, with dense indexes (one left free between
/// chunks that are not neighbours), and the number of indexes.
fn chunks_of(ops: &[Op]) -> (BTreeMap<usize, usize>, usize) {
    let mut used = std::collections::BTreeSet::new();
    let mut add = |a: usize, len: usize| {
        for c in (a >> 30)..=((a + len.max(1) - 1) >> 30) {
            used.insert(c);
        }
    };
    for op in ops {
        match *op {
            Op::Mmap { addr, len, .. } | Op::Munmap { addr, len } | Op::Mprotect { addr, len, .. } => add(addr, len),
            Op::Mremap { old, old_len, new_len, new } => {
                add(old, old_len.max(new_len));
                add(new, new_len);
            }
            Op::Brk { brk } => add(brk, P),
        }
    }
    let mut map = BTreeMap::new();
    let mut next = 0;
    let mut prev: Option<usize> = None;
    for c in used {
        if prev.is_some_and(|p| p + 1 != c) {
            next += 1;
        }
        map.insert(c, next);
        next += 1;
        prev = Some(c);
    }
    (map, next + 1)
}

/// Runs the suite.
#[must_use]
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("vma-replay");
    let rounds = if options.quick { 3 } else { 9 };
    let mut totals = [(0f64, 0usize); 3];
    let mut per_kind = [[(0f64, 0usize); 5]; 2];
    let mut largest: Option<Vec<Op>> = None;
    // The cost of reading the clock around an operation, taken off the per-kind times: the
    // least of many batches, since a batch the scheduler interrupted reads high, and a high
    // figure taken off every operation would hide the operations' own cost.
    let clock = (0..64)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..256 {
                black_box(Instant::now());
            }
            t.elapsed().as_nanos() as f64 / 256.0
        })
        .fold(f64::INFINITY, f64::min);
    for (name, text) in TRACES {
        let spaces = parse(text);
        let ops: usize = spaces.iter().map(Vec::len).sum();
        // Checked once: every replay ends as the reference does.
        for ops in &spaces {
            let (mut m, mut r, mut s) =
                (Memkit::new(), Reference { map: BTreeMap::new(), next: 0 }, MemSet(MemorySet::new()));
            let fm = replay(&mut m, ops, |_, _| {});
            let fr = replay(&mut r, ops, |_, _| {});
            let _ = replay(&mut s, ops, |_, _| {});
            assert_eq!(fm, fr, "{name}: memkit and the reference refused different operations");
            assert_eq!(m.regions(), r.regions(), "{name}: memkit's final state differs from the reference");
            assert_eq!(coverage(&s.regions()), coverage(&r.regions()), "{name}: memory_set differs from the reference");
            if largest.as_ref().is_none_or(|l| m.map.region_count() > 0 && l.len() < ops.len()) {
                largest = Some(ops.clone());
            }
        }
        let mut best = [f64::INFINITY; 3];
        for _ in 0..rounds {
            let t = Instant::now();
            for ops in &spaces {
                replay(&mut Memkit::new(), ops, |_, _| {});
            }
            best[0] = best[0].min(t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            for ops in &spaces {
                replay(&mut Reference { map: BTreeMap::new(), next: 0 }, ops, |_, _| {});
            }
            best[1] = best[1].min(t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            for ops in &spaces {
                replay(&mut MemSet(MemorySet::new()), ops, |_, _| {});
            }
            best[2] = best[2].min(t.elapsed().as_nanos() as f64);
        }
        for (i, imp) in [MEMKIT, BTREE, MEMORY_SET].iter().enumerate() {
            report.push(&format!("{name} ({ops} ops)"), imp, best[i] / ops as f64);
            totals[i].0 += best[i];
            totals[i].1 += ops;
        }
        // Per kind: each operation timed on its own (the clock's cost taken off), memkit and
        // the reference taking turns round by round.
        let mut sums = [[(f64::INFINITY, 0usize); 5]; 2];
        for _ in 0..rounds {
            for (i, imp) in [MEMKIT, BTREE].iter().enumerate() {
                let mut round = [(0f64, 0usize); 5];
                for ops in &spaces {
                    let mut m = Memkit::new();
                    let mut r = Reference { map: BTreeMap::new(), next: 0 };
                    let v: &mut dyn Vmas = if *imp == MEMKIT { &mut m } else { &mut r };
                    replay(v, ops, |k, t| {
                        round[k].0 += t.elapsed().as_nanos() as f64 - clock;
                        round[k].1 += 1;
                    });
                }
                for k in 0..5 {
                    if round[k].1 > 0 {
                        sums[i][k] = (sums[i][k].0.min(round[k].0), round[k].1);
                    }
                }
            }
        }
        for i in 0..2 {
            for k in 0..5 {
                if sums[i][k].1 > 0 {
                    per_kind[i][k].0 += sums[i][k].0;
                    per_kind[i][k].1 += sums[i][k].1;
                }
            }
        }
        options.progress("vma-replay", 1, TRACES.len() as u64);
    }
    for (i, imp) in [MEMKIT, BTREE, MEMORY_SET].iter().enumerate() {
        report.push("all traces, op-weighted", imp, totals[i].0 / totals[i].1 as f64);
    }
    for k in 0..5 {
        for (i, imp) in [MEMKIT, BTREE].iter().enumerate() {
            let (ns, n) = per_kind[i][k];
            if n > 0 {
                report.push(&format!("{} ({n} ops, timed one by one)", KINDS[k]), imp, (ns / n as f64).max(0.0));
            }
        }
    }
    // The stress: the largest address space, replicated until about 100 000 regions live.
    if let Some(ops) = largest {
        let (chunks, per_copy) = chunks_of(&ops);
        let mut one = Memkit::new();
        replay(&mut one, &relocate(&ops, &chunks, per_copy, 0), |_, _| {});
        let live = one.map.region_count().max(1);
        let max_copies = (WINDOW_END >> 30) / per_copy - 1;
        let copies = 100_000usize.div_ceil(live).min(max_copies);
        let all: Vec<Op> = (0..copies).flat_map(|c| relocate(&ops, &chunks, per_copy, c)).collect();
        let (mut m, mut r) = (Memkit::new(), Reference { map: BTreeMap::new(), next: 0 });
        let fm = replay(&mut m, &all, |_, _| {});
        let fr = replay(&mut r, &all, |_, _| {});
        assert_eq!(fm, fr, "stress: memkit and the reference refused different operations");
        assert_eq!(m.regions(), r.regions(), "stress: memkit's final state differs from the reference");
        let regions = m.map.region_count();
        let mut best = [f64::INFINITY; 3];
        for _ in 0..rounds.min(3) {
            let t = Instant::now();
            black_box(replay(&mut Memkit::new(), &all, |_, _| {}));
            best[0] = best[0].min(t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            black_box(replay(&mut Reference { map: BTreeMap::new(), next: 0 }, &all, |_, _| {}));
            best[1] = best[1].min(t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            black_box(replay(&mut MemSet(MemorySet::new()), &all, |_, _| {}));
            best[2] = best[2].min(t.elapsed().as_nanos() as f64);
        }
        let case = format!("stress: {copies} copies, {regions} live regions ({} ops)", all.len());
        for (i, imp) in [MEMKIT, BTREE, MEMORY_SET].iter().enumerate() {
            report.push(&case, imp, best[i] / all.len() as f64);
        }
    }
    report.note("every replay's final regions equal the reference's (memory_set: the same pages and rights)");
    report.note(format!("per-kind times: each operation timed alone, {clock:.0} ns of clock reading taken off"));
    report
}

/// Replays every trace `rounds` times into one implementation (`memkit`, `BTreeMap` or
/// `memory_set`), for profiles and instruction counts; returns the operations replayed, or
/// `None` for an unknown name.
#[must_use]
pub fn replay_one(who: &str, rounds: usize) -> Option<usize> {
    let all: Vec<Vec<Vec<Op>>> = TRACES.iter().map(|(_, text)| parse(text)).collect();
    let mut ops = 0;
    for _ in 0..rounds {
        for spaces in &all {
            for space in spaces {
                let mut m = Memkit::new();
                let mut r = Reference { map: BTreeMap::new(), next: 0 };
                let mut s = MemSet(MemorySet::new());
                let v: &mut dyn Vmas = match who {
                    MEMKIT => &mut m,
                    BTREE => &mut r,
                    MEMORY_SET => &mut s,
                    _ => return None,
                };
                black_box(replay(v, space, |_, _| {}));
                ops += space.len();
            }
        }
    }
    Some(ops)
}
