//! Random actions on a region map and a reference model to check them against, shared by
//! the property test, the long random-action test, the benchmarks and the fuzz target.
//!
//! ```text
//!   Action ──▶ Harness::apply ──▶ AddressSpace<MockId, SoftMmu> + MockBacking + SparseRam
//!                    │                                   │ results, loads
//!                    └──▶ Model (BTreeMaps of ranges, a Vec<u8> per dataspace) ◀── compared
//! ```
//!
//! The window has two parts: the single actions (attach, detach, reserve, access, ...) land
//! in its top [`SINGLE_PAGES`] pages, where they meet each other often; below them lie
//! [`LANES`] lanes, where [`Action::Run`] attaches runs of up to [`RUN_MAX`] one-page
//! regions at once (in ascending, descending, shuffled or outside-in order, a page or two
//! apart, a second run in the gaps of a first) and [`Action::DetachRun`] detaches them one
//! by one in such an order. The runs grow the region tree to three levels and shrink it
//! back through every split, merge and evening-out (counted by
//! [`RegionMap::tree_stats`]).
//!
//! The model is deliberately naive: first fit over a `BTreeMap` of ranges (each place in
//! turn, skipping past what is in the way), the
//! seed's detach algorithm spelled out, and dataspace contents as plain byte vectors. After
//! every action the harness compares results, checks every invariant and checks that each
//! MMU translation belongs to a region, stays within its rights and shows the dataspace's
//! frame.

use std::collections::BTreeMap;

use memkit_region::mock::{MockBacking, MockId};
use memkit_region::{
    AddressSpace, AreaInfo, AttachRequest, Backing, DetachFlags, DetachResult, Flags, Found, Mmu, RegionInfo,
    RegionMap, SoftMmu,
};
use memkit_types::l4::{L4_EADDRNOTAVAIL, L4_ENOENT};
use memkit_types::{Access, Frame, PAGE_SIZE, Page, Rights, VirtAddr};

use crate::SparseRam;

mod harness;
mod model;

pub use harness::{Harness, Stats};
pub use model::Model;
use model::ModelRegion;

/// An attach in the harness's units, as an [`Action::Attach`] gives it: pages of the window
/// and of the dataspace, a dataspace index, and the alignment above a page (log2).
#[derive(Debug, Clone, Copy)]
struct PageAttach {
    /// Start page, search hint or page in the area.
    page: usize,
    /// Pages to attach.
    pages: usize,
    /// The dataspace's index.
    ds: usize,
    /// The page of the dataspace the region starts at.
    offset: usize,
    /// The region's rights.
    rights: Rights,
    /// `SEARCH_ADDR`, `IN_AREA`, `EAGER_MAP`, `DETACH_FREE`.
    flags: Flags,
    /// Log2 alignment above a page.
    align: u8,
}

impl PageAttach {
    /// `pages` pages of dataspace `ds` from its first page at `page`, no flags, page aligned.
    fn new(page: usize, pages: usize, ds: usize, rights: Rights) -> Self {
        PageAttach { page, pages, ds, offset: 0, rights, flags: Flags::empty(), align: 0 }
    }
}

/// Lanes for runs of many small regions ([`Action::Run`]), at the bottom of the window.
pub const LANES: usize = 2;
/// Pages per lane: a run of 2048 regions with a page between each fits.
pub const LANE_PAGES: usize = 4096;
/// The first of the pages where the single actions land, above the lanes: searches
/// start there and go up, so that they never reach the lanes.
pub const SINGLE_START: usize = LANES * LANE_PAGES;
/// Pages where the single actions land (their `page` is a byte): they meet each other
/// often there.
pub const SINGLE_PAGES: usize = 256;
/// Pages in the model's address window: the lanes and the single actions' pages.
pub const WINDOW_PAGES: usize = SINGLE_START + SINGLE_PAGES;
/// The most regions one [`Action::Run`] attaches.
pub const RUN_MAX: usize = 2048;
/// The window's first byte.
pub const WINDOW_START: usize = 0x1000_0000;
/// Dataspaces in the model.
pub const DATASPACES: usize = 4;
/// Pages per dataspace.
pub const DATASPACE_PAGES: usize = 24;

/// One step of a random test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// `reserve_area`.
    Reserve {
        /// Start page (or search hint).
        page: u8,
        /// Pages.
        pages: u8,
        /// `SEARCH_ADDR`.
        search: bool,
        /// `RESERVED`.
        reserved: bool,
        /// Extra alignment bits over a page (0..=3).
        align: u8,
    },
    /// `free_area`.
    FreeArea {
        /// A page in the area.
        page: u8,
    },
    /// `attach`.
    Attach {
        /// Start page, search hint or area selector.
        page: u8,
        /// Pages.
        pages: u8,
        /// Dataspace number.
        ds: u8,
        /// Offset into the dataspace in pages.
        offset: u8,
        /// Rights bits (read 1, write 2, execute 4).
        rights: u8,
        /// `SEARCH_ADDR`.
        search: bool,
        /// `IN_AREA`.
        in_area: bool,
        /// `EAGER_MAP`.
        eager: bool,
        /// `DETACH_FREE`.
        detach_free: bool,
        /// Extra alignment bits over a page (0..=3).
        align: u8,
    },
    /// `detach(start, size, flags)`.
    Detach {
        /// Start page.
        page: u8,
        /// Pages.
        pages: u8,
        /// `OVERLAP` (else `EXACT`).
        overlap: bool,
        /// `KEEP`.
        keep: bool,
    },
    /// Detach a whole range in one call.
    DetachAll {
        /// Start page.
        page: u8,
        /// Pages.
        pages: u8,
        /// `OVERLAP` (else `EXACT`).
        overlap: bool,
    },
    /// `find`.
    Find {
        /// Start page.
        page: u8,
        /// Pages.
        pages: u8,
    },
    /// A page fault.
    Fault {
        /// The page.
        page: u8,
        /// 0 read, 1 write, 2 execute.
        access: u8,
    },
    /// A simulated load.
    Load {
        /// The page.
        page: u8,
        /// Byte offset in the page.
        within: u16,
        /// Bytes.
        len: u16,
    },
    /// A simulated store.
    Store {
        /// The page.
        page: u8,
        /// Byte offset in the page.
        within: u16,
        /// Bytes.
        len: u16,
        /// The byte value stored (plus the byte's index).
        value: u8,
    },
    /// `get_regions` or `get_areas` paging.
    List {
        /// Start page.
        page: u8,
        /// Batch size.
        batch: u8,
        /// Areas instead of regions.
        areas: bool,
    },
    /// A run of one-page regions attached one by one at fixed places in a lane, `stride`
    /// pages apart: the dense shapes (thousands of small regions with gaps, a second run
    /// in the gaps of a first) that split, merge and even out the trees' nodes at every
    /// level.
    Run {
        /// The lane (modulo [`LANES`]).
        lane: u8,
        /// Start one page into the lane (in the gaps of a run that starts at its start).
        shifted: bool,
        /// Regions (modulo [`RUN_MAX`], plus one; as many as fit in the lane).
        count: u16,
        /// Pages from one region's start to the next, minus one (modulo 3).
        stride: u8,
        /// The order of the attaches: ascending, descending, shuffled, from both ends in.
        order: u8,
    },
    /// `protect`: new rights for a range of pages.
    Protect {
        /// Start page.
        page: u8,
        /// Pages (modulo 16, plus one).
        pages: u8,
        /// Rights bits (read 1, write 2, execute 4).
        rights: u8,
    },
    /// `remap`: resize or move part of a region.
    Remap {
        /// Start page of the old range.
        page: u8,
        /// Old pages (modulo 8, plus one).
        old: u8,
        /// New pages (modulo 16, plus one).
        new: u8,
        /// 0 in place, 1 may move, 2 fixed at `to` (modulo 3).
        how: u8,
        /// The fixed destination page.
        to: u8,
    },
    /// A fixed attach that replaces the regions in its range (`MAP_FIXED`).
    AttachReplace {
        /// Start page.
        page: u8,
        /// Pages (modulo 16, plus one).
        pages: u8,
        /// Dataspace number.
        ds: u8,
        /// Offset into the dataspace in pages (modulo 32).
        offset: u8,
        /// Rights bits.
        rights: u8,
        /// `IN_AREA`.
        in_area: bool,
        /// `DETACH_FREE`.
        detach_free: bool,
    },
    /// `merge` over a range of pages.
    Merge {
        /// Start page.
        page: u8,
        /// Pages (modulo 32, plus one).
        pages: u8,
    },
    /// `regions_in` over a range of pages.
    RegionsIn {
        /// Start page.
        page: u8,
        /// Pages (modulo 64, plus one).
        pages: u8,
    },
    /// Detaches the regions of a lane one by one (`EXACT`, each whole), in an order.
    DetachRun {
        /// The lane (modulo [`LANES`]).
        lane: u8,
        /// Every region (0), or every second or third one (1, 2; modulo 3).
        every: u8,
        /// The order: ascending, descending, shuffled, from both ends in.
        order: u8,
    },
}

/// `0..n` in the order of [`Action::Run`] and [`Action::DetachRun`] (`order` modulo 4):
/// ascending, descending, shuffled from `seed`, or from both ends in.
#[must_use]
pub fn run_order(n: usize, order: u8, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    match order % 4 {
        0 => {}
        1 => v.reverse(),
        2 => {
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        _ => v = (0..n).map(|k| if k % 2 == 0 { k / 2 } else { n - 1 - k / 2 }).collect(),
    }
    v
}

fn rights_of(bits: u8) -> Rights {
    Rights::from_bits_truncate(bits & 7)
}

/// The rights each model dataspace's handle allows: RWX, RW, R, RX.
pub fn dataspace_rights(ds: usize) -> Rights {
    [Rights::RWX, Rights::RW, Rights::READ, Rights::READ | Rights::EXECUTE][ds % 4]
}

/// A small deterministic generator for the long random-action run (no dependency).
#[derive(Debug, Clone)]
pub struct ActionSource {
    state: u64,
    /// One action in this many is an [`Action::Run`], and as many an
    /// [`Action::DetachRun`] (none when 0).
    runs_one_in: u64,
}

impl ActionSource {
    /// A source seeded with `seed`, of single actions in the low pages.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        ActionSource { state: seed | 1, runs_one_in: 0 }
    }

    /// A source seeded with `seed` that also attaches and detaches runs of many small
    /// regions ([`Action::Run`], [`Action::DetachRun`]), each one action in `one_in` (at
    /// least 2).
    #[must_use]
    pub fn with_runs(seed: u64, one_in: u64) -> Self {
        ActionSource { state: seed | 1, runs_one_in: one_in.max(2) }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The next action, weighted towards attach, detach and memory access.
    pub fn action(&mut self) -> Action {
        let x = self.next();
        let b = |k: u32| (x >> (8 * k)) as u8;
        // Half the actions land in the first 32 pages, so that they meet each other often.
        let dense = (x >> 63) == 1;
        let page = if dense { b(0) % 32 } else { b(0) };
        let bit = |k: u32| (x >> (48 + k)) & 1 == 1;
        let y = self.next();
        // Now and then a run of many small regions, or the detaching of one, one after the
        // other in a lane, so that the trees grow to three levels and shrink back through
        // every structural path (splits, merges, evening out, root changes at each level).
        // Half the runs are short and fill the gaps of a longer one.
        match y.checked_rem(self.runs_one_in).unwrap_or(2) {
            0 => {
                let count = (y >> 16) as u16 % if bit(0) { 96 } else { RUN_MAX as u16 };
                return Action::Run {
                    lane: b(1),
                    shifted: bit(1),
                    count,
                    stride: b(2) % 2 + u8::from(bit(2)),
                    order: b(3),
                };
            }
            1 => return Action::DetachRun { lane: b(1), every: if bit(0) { 0 } else { b(2) }, order: b(3) },
            _ => {}
        }
        match y % 40 {
            0 => Action::Reserve { page, pages: b(1), search: bit(0), reserved: bit(1) && bit(2), align: b(2) },
            1 => Action::FreeArea { page },
            2..=9 => Action::Attach {
                page,
                pages: b(1),
                ds: b(2),
                offset: b(3) % 8,
                rights: b(4) | 1,
                search: bit(0),
                in_area: bit(1),
                eager: bit(3) && bit(4),
                detach_free: bit(5),
                align: if bit(6) { b(5) } else { 0 },
            },
            10..=11 => Action::Detach { page, pages: b(1), overlap: bit(0), keep: bit(1) },
            12 => Action::DetachAll { page, pages: b(1), overlap: bit(0) },
            13..=14 => Action::Find { page, pages: b(1) },
            15..=18 => Action::Fault { page, access: b(1) },
            19..=24 => Action::Load { page, within: (y >> 8) as u16, len: (y >> 24) as u16 % 64 },
            25..=29 => Action::Store { page, within: (y >> 8) as u16, len: (y >> 24) as u16 % 64, value: b(2) },
            30..=31 => Action::List { page, batch: b(1), areas: bit(0) },
            32..=34 => Action::Protect { page, pages: b(1), rights: b(2) },
            35..=36 => Action::Remap { page, old: b(1), new: b(2), how: b(3), to: b(4) },
            37 => Action::AttachReplace {
                page,
                pages: b(1),
                ds: b(2),
                offset: b(3) % 8,
                rights: b(4) | 1,
                in_area: bit(1),
                detach_free: bit(5),
            },
            38 => Action::Merge { page, pages: b(1) },
            _ => Action::RegionsIn { page, pages: b(1) },
        }
    }
}
