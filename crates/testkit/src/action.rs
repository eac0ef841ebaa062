//! The actions of the whole-system driver, and how random ones are drawn.
//!
//! Every field is a small number that the driver resolves against what exists when the
//! action runs (an index modulo the live dataspaces, a size from a table of awkward sizes),
//! so that any sequence is meaningful: the fuzzer's bytes, a random run and a shortened
//! sequence from the minimiser all replay.

use rand::Rng;

/// Sizes that sit on or next to page boundaries, and a few beyond a page.
pub const SIZES: [u64; 16] = [
    1,
    200,
    4095,
    4096,
    4097,
    6000,
    8191,
    8192,
    8193,
    3 * 4096 + 77,
    4 * 4096,
    5 * 4096 - 1,
    2 * 4096 + 2048,
    100,
    4096 + 200,
    6 * 4096 + 1,
];

/// Byte offsets for copies: page aligned, odd and just below a page.
pub const OFFSETS: [u64; 8] = [0, 0, 1, 200, 4095, 4096, 4096 + 200, 8192];

/// How a dataspace is backed, as the driver asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Backing {
    /// Anonymous: frames on first touch.
    Anonymous,
    /// One physically contiguous run.
    Contiguous,
    /// Allocated at creation.
    Pinned,
    /// 2 MiB frames.
    Superpages,
    /// At a fixed physical address (`memphys_open` with an address; `k` picks the page).
    Fixed(u8),
}

/// How a detach cuts a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Cut {
    /// The whole region (`EXACT` over its range).
    Whole,
    /// Its first pages.
    Head,
    /// Its last pages.
    Tail,
    /// Pages in the middle (splits it).
    Middle,
    /// `OVERLAP` over one byte inside it.
    Overlap,
}

/// One step of the whole-system driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// Creates a dataspace (`mem_open`, `memphys_open` or `alloc`).
    Open {
        /// How it is backed.
        backing: Backing,
        /// Index into [`SIZES`], or (at 16 and above) `n * 97` bytes.
        size: u8,
        /// The pool (modulo the pools the machine has).
        pool: u8,
        /// The owner (a client index).
        owner: u8,
    },
    /// `resize`.
    Resize {
        /// A dataspace index.
        ds: u8,
        /// As in [`Action::Open`]; 255 is 0 (which closes).
        size: u8,
        /// The caller (a client index).
        caller: u8,
    },
    /// `copy_long` (or `memphys_copy` into another pool, or `copy` of the whole dataspace).
    Copy {
        /// A dataspace index.
        ds: u8,
        /// Index into [`OFFSETS`] for the source offset.
        src: u8,
        /// Index into [`OFFSETS`] for the destination offset.
        dst: u8,
        /// The length: 0 is `WHOLE_DS`, 1 is zero bytes, else a size as in [`Action::Open`].
        len: u8,
        /// Bits: `COW`, `CONTIGUOUS`, `PINNED`, `SUPERPAGES`, into another pool (bit 4).
        flags: u8,
        /// The caller (a client index).
        caller: u8,
    },
    /// `close`.
    Close {
        /// A dataspace index.
        ds: u8,
        /// The caller (a client index).
        caller: u8,
    },
    /// `close_all`.
    CloseAll {
        /// The caller (a client index).
        caller: u8,
        /// The client whose dataspaces close.
        client: u8,
        /// `SAME_TASK`.
        same_task: bool,
    },
    /// Attaches a dataspace (searching from the window's start).
    Attach {
        /// A space index.
        space: u8,
        /// A dataspace index (open ones).
        ds: u8,
        /// The dataspace offset in pages.
        page: u8,
        /// The region's size in pages (1 to 8).
        pages: u8,
        /// Bits: write (0), execute (1), `DETACH_FREE` (2), `EAGER_MAP` (3).
        flags: u8,
    },
    /// One detach step.
    Detach {
        /// A space index.
        space: u8,
        /// A region index in that space.
        region: u8,
        /// How the region is cut.
        cut: Cut,
        /// `KEEP`.
        keep: bool,
    },
    /// A store through a space (faults resolved as a CPU's would be).
    Store {
        /// A space index.
        space: u8,
        /// A region index.
        region: u8,
        /// The byte offset in the region.
        at: u16,
        /// Bytes (1 to 256 ... clipped to the dataspace's end).
        len: u8,
        /// The value of the first byte (the next ones count up).
        value: u8,
    },
    /// A load through a space.
    Load {
        /// A space index.
        space: u8,
        /// A region index.
        region: u8,
        /// The byte offset in the region.
        at: u16,
        /// Bytes.
        len: u16,
    },
    /// Loads one byte of every page of every region of a space (maps everything that can be).
    Touch {
        /// A space index.
        space: u8,
    },
    /// The manager's `write`.
    Write {
        /// A dataspace index (any live one).
        ds: u8,
        /// The byte offset.
        at: u16,
        /// Bytes.
        len: u8,
        /// The first byte.
        value: u8,
    },
    /// Takes frames out of a pool, leaving `leave` free (0 to 3), so that the next
    /// allocations fail.
    Hog {
        /// The pool.
        pool: u8,
        /// Frames to leave free.
        leave: u8,
    },
    /// Gives hogged frames back (every `k`-th, or all).
    Unhog {
        /// 0 gives everything back, else every k-th frame.
        every: u8,
    },
    /// `mprotect` of pages of one region: regions split where the rights change and merge
    /// where they match again.
    Protect {
        /// A space index.
        space: u8,
        /// A region index in that space.
        region: u8,
        /// The first page (modulo the region's pages).
        from: u8,
        /// Pages (1 up to the region's end).
        pages: u8,
        /// The new rights: read, read-write, read-execute, all three (modulo 4).
        rights: u8,
    },
    /// `mremap` of a whole region in place: it grows into free bytes after it (merging with
    /// the next region when they match) or gives its tail back.
    Remap {
        /// A space index.
        space: u8,
        /// A region index in that space.
        region: u8,
        /// Pages: grown by 1 to 4, or shrunk to 1 up to the region's pages less one.
        pages: u8,
        /// Grow (else shrink).
        grow: bool,
    },
}

impl Action {
    /// A random action, weighted towards the operations that build state to check.
    pub fn random(rng: &mut impl Rng) -> Action {
        let b = |rng: &mut dyn rand::RngCore| rng.next_u32() as u8;
        match rng.random_range(0..100u32) {
            0..7 => Action::Open {
                backing: match rng.random_range(0..20u32) {
                    0..14 => Backing::Anonymous,
                    14..16 => Backing::Contiguous,
                    16..17 => Backing::Pinned,
                    17..18 => Backing::Superpages,
                    _ => Backing::Fixed(b(rng)),
                },
                size: b(rng) % 24,
                pool: if rng.random_bool(0.7) { 0 } else { b(rng) },
                owner: b(rng) % 3,
            },
            7..16 => Action::Resize {
                ds: b(rng),
                size: if rng.random_bool(0.05) { 255 } else { b(rng) % 24 },
                caller: b(rng) % 3,
            },
            16..26 => {
                let src = b(rng);
                Action::Copy {
                    ds: b(rng),
                    src,
                    // Half the time at the same offset, where copy-on-write shares pages.
                    dst: if rng.random_bool(0.5) { src } else { b(rng) },
                    len: if rng.random_bool(0.08) { 1 } else { b(rng) % 26 },
                    flags: if rng.random_bool(0.6) {
                        1
                    } else {
                        b(rng) & 0x1f & !if rng.random_bool(0.8) { 8 } else { 0 }
                    },
                    caller: if rng.random_bool(0.8) { 0 } else { b(rng) % 3 },
                }
            }
            26..30 => Action::Close { ds: b(rng), caller: if rng.random_bool(0.8) { 0 } else { b(rng) % 3 } },
            30..31 => Action::CloseAll { caller: b(rng) % 3, client: b(rng) % 3, same_task: rng.random_bool(0.5) },
            31..43 => Action::Attach {
                space: b(rng),
                ds: b(rng),
                page: if rng.random_bool(0.6) { 0 } else { b(rng) % 6 },
                pages: 1 + b(rng) % 6,
                flags: b(rng),
            },
            43..50 => Action::Detach {
                space: b(rng),
                region: b(rng),
                cut: match rng.random_range(0..5u32) {
                    0 => Cut::Whole,
                    1 => Cut::Head,
                    2 => Cut::Tail,
                    3 => Cut::Middle,
                    _ => Cut::Overlap,
                },
                keep: rng.random_bool(0.3),
            },
            50..68 => Action::Store {
                space: b(rng),
                region: b(rng),
                at: rng.random_range(0..0x1_0000u32) as u16,
                len: b(rng),
                value: b(rng),
            },
            68..72 => Action::Remap { space: b(rng), region: b(rng), pages: b(rng), grow: rng.random_bool(0.6) },
            72..76 => Action::Load {
                space: b(rng),
                region: b(rng),
                at: rng.random_range(0..8 * 4096u32) as u16,
                len: rng.random_range(1..9000u32) as u16,
            },
            76..80 => Action::Touch { space: b(rng) },
            80..84 => Action::Protect {
                space: b(rng),
                region: b(rng),
                from: if rng.random_bool(0.5) { 0 } else { b(rng) },
                pages: if rng.random_bool(0.3) { 255 } else { b(rng) },
                rights: b(rng),
            },
            84..92 => {
                Action::Write { ds: b(rng), at: rng.random_range(0..7 * 4096u32) as u16, len: b(rng), value: b(rng) }
            }
            92..94 => Action::Hog { pool: if rng.random_bool(0.8) { 0 } else { b(rng) }, leave: b(rng) % 4 },
            _ => Action::Unhog { every: b(rng) % 4 },
        }
    }
}

/// The size a size code stands for ([`Action::Open`]).
#[must_use]
pub fn size_of_code(code: u8) -> u64 {
    match code {
        255 => 0,
        c if (c as usize) < SIZES.len() => SIZES[c as usize],
        c => u64::from(c) * 97,
    }
}

/// A random action stream: single actions, and now and then a short scenario with random
/// parameters that puts the newest dataspaces through a copy-on-write fork (write, copy,
/// attach both sides, the same one twice in a space, touch, store), so that sharing and its
/// breaks are common rather than rare coincidences.
#[derive(Debug)]
pub struct Generator<R> {
    rng: R,
    pending: std::collections::VecDeque<Action>,
}

impl<R: Rng> Generator<R> {
    /// A stream drawing from `rng`.
    pub fn new(rng: R) -> Self {
        Generator { rng, pending: std::collections::VecDeque::new() }
    }

    /// The next action.
    pub fn next_action(&mut self) -> Action {
        if let Some(a) = self.pending.pop_front() {
            return a;
        }
        if self.rng.random_bool(0.03) {
            self.fork();
            if let Some(a) = self.pending.pop_front() {
                return a;
            }
        }
        Action::random(&mut self.rng)
    }

    fn fork(&mut self) {
        let r = &mut self.rng;
        let b = |r: &mut R| r.next_u32() as u8;
        let (sa, sb) = (b(r), b(r));
        let offs = b(r);
        let mut v = vec![
            Action::Write { ds: 0, at: r.random_range(0..8192u32) as u16, len: b(r), value: b(r) },
            Action::Copy {
                ds: 0,
                src: offs,
                dst: offs,
                len: if r.random_bool(0.5) { 0 } else { b(r) % 26 },
                flags: 1,
                caller: 0,
            },
            Action::Attach { space: sa, ds: 0, page: 0, pages: 7, flags: 1 },
            Action::Attach { space: sb, ds: 2, page: 0, pages: 7, flags: 1 },
            Action::Attach { space: sb, ds: 2, page: 0, pages: 7, flags: 1 },
            Action::Touch { space: sa },
            Action::Touch { space: sb },
        ];
        for _ in 0..4 {
            let space = if r.random_bool(0.5) { sa } else { sb };
            v.push(Action::Store {
                space,
                region: b(r),
                at: r.random_range(0..0x8000u32) as u16,
                len: b(r),
                value: b(r),
            });
            if r.random_bool(0.3) {
                v.push(Action::Touch { space });
            }
        }
        self.pending.extend(v);
    }
}
