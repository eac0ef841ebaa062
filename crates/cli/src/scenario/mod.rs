//! The scenario language: one operation per line, over every layer of the hosted stack.
//!
//! ```text
//!   # a comment; blank lines are skipped
//!   space   NAME [size=SIZE]                      an address space (a window, default 64M)
//!   ds      NAME SIZE [contiguous] [pinned] [superpages] [pool=N] [at=PADDR] [align=LOG2] [owner=TASK]
//!   share   NAME DS [rights=r|rw|rx]              a handle of DS with fewer rights (default r)
//!   copy    NAME SRC [cow] [owner=TASK]           l4dm_copy (copy-on-write with `cow`)
//!   copy_long NAME SRC SRC_OFF DST_OFF LEN [cow]  l4dm_copy_long, byte offsets
//!   resize  DS SIZE [owner=TASK]                  grow or shrink (0 closes)
//!   close   DS [owner=TASK]      close_all TASK   closing, by the owner only
//!   area    NAME SPACE SIZE [at=VADDR] [align=LOG2]
//!   attach  NAME SPACE DS [size=SIZE] [offset=OFF] [at=VADDR|in=AREA] [align=LOG2] [rights=r|rw|rx] [eager]
//!   detach  REGION
//!   store   REGION OFFSET DATA                    real stores: "text" or bytes (0xab 12 ...)
//!   load    REGION OFFSET LEN                     real loads, printed
//!   frames  NAME POOL COUNT [below=PADDR]  free_frames NAME          the frame allocator
//!   xmalloc NAME SIZE [align=LOG2] [heap=HEAP]    xmfree NAME        the kernel heaps
//!   pools | regions SPACE | info DS | heaps       print state
//!   expect load REGION OFFSET DATA   expect size DS N   expect free POOL OP N
//!   expect owner DS TASK   expect fail OPERATION...   (OP is = < > <= >=)
//! ```
//!
//! One table, `OPERATIONS`, drives everything: each entry names an operation, its
//! positional words and their kinds, its `key=value` options and its flag words, a summary
//! and its handler. A line is first *parsed* against the table ([`parse_line`]) and only
//! then *run*: parsing checks the exact number of words, rejects unknown options, flags and
//! extra words, and parses every number into its target type with a range check (no number
//! is ever truncated). `expect fail OPERATION` requires a well-formed operation (a typo is
//! an error, not an expected failure) and does not nest. `help` and every usage message come
//! from the same table.
//!
//! Numbers are decimal or `0x` hex, with an optional `K`, `M` or `G` suffix. An error names
//! its line; `memkit run` stops at the first, `memkit shell` reports it and goes on. Input
//! is bounded: see [`crate::input`] for files and lines, [`MAX_SPACE_SIZE`] and
//! [`MAX_LOAD_BYTES`] for what one operation may ask.
//!
//! This file holds the language's limits, the kinds of words, the `OPERATIONS` table and
//! `help`; the rest lives one part per file: `parse` (splitting a line into words and parsing
//! them against the table into a [`Command`]), `session` (the [`Runtime`], the [`Session`] and
//! its names), the handlers by what they act on (`spaces`: spaces, areas and regions, loads
//! and stores; `dataspaces`; `frames`: frames and pools; `heaps`; `expect`), and `run`
//! (scenario text and files, and the interactive shell).

use std::fmt;

use memkit_types::Rights;

mod dataspaces;
mod expect;
mod frames;
mod heaps;
mod parse;
mod run;
mod session;
mod spaces;
#[cfg(test)]
mod tests;

pub use parse::{Command, parse_line};
pub use run::{run_bytes, run_text};
pub(crate) use run::{run_file, run_into, shell};
pub use session::{Runtime, Session};

/// The largest address-space window (`space NAME size=SIZE`), area or region a scenario may
/// ask for: 4 GiB.
pub const MAX_SPACE_SIZE: u64 = 4 << 30;
/// The most bytes one `load` reads and prints: 64 KiB.
pub const MAX_LOAD_BYTES: u64 = 64 << 10;
/// The longest name: 64 bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The largest log2 alignment.
const MAX_LOG2: u64 = 63;
/// The largest pool number (there are `memkit_phys::POOL_COUNT` pools).
const MAX_POOL: u64 = 7;
/// The largest task number (a client id's task is a `u32`).
const MAX_TASK: u64 = 0xffff_ffff;
/// The window of a space without `size=`.
const DEFAULT_SPACE_SIZE: u64 = 64 << 20;

type Res<T = ()> = Result<T, String>;

/// What a word of an operation must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A name: a letter or `_`, then letters, digits, `_`, `-` or `.`.
    Name,
    /// A number of at most `max`.
    Number(u64),
    /// A physical address (below 2^52).
    PhysAddr,
    /// A canonical virtual address.
    VirtAddr,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// The rest of the line as bytes: `"text"` or numbers up to 255; at least one byte.
    Data,
    /// The rest of the line as an operation (for `expect fail`; it cannot nest).
    Operation,
}

/// A parsed word.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    Number(u64),
    Bytes(Vec<u8>),
    Operation(Box<Command>),
}

/// An operation of the language: its words, its options, its handler.
struct Operation {
    /// The name; `expect` operations are two words (`expect load`).
    name: &'static str,
    /// Positional words: a placeholder and the kind. `Data` and `Operation` come last and
    /// take the rest of the line.
    args: &'static [(&'static str, Kind)],
    /// `key=value` options: the key, a placeholder for the usage, the kind.
    options: &'static [(&'static str, &'static str, Kind)],
    /// Flag words.
    flags: &'static [&'static str],
    /// What it does, for `help`.
    summary: &'static str,
    /// Runs a parsed command.
    run: fn(&mut Session<'_>, &Command) -> Res,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Operation {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Operation {}

impl Operation {
    /// The usage: the name, the positional words, the flags and the options.
    fn usage(&self) -> String {
        let mut u = self.name.to_string();
        for (p, _) in self.args {
            u.push(' ');
            u.push_str(p);
        }
        for f in self.flags {
            u.push_str(&format!(" [{f}]"));
        }
        for (k, p, _) in self.options {
            u.push_str(&format!(" [{k}={p}]"));
        }
        u
    }
}

const HEAPS: &[&str] = &["kernel", "pinned", "kernel4k", "kernel16m", "pinned4k", "pinned16m"];
const RIGHTS: &[&str] = &["r", "rw", "rx"];
const PROTECT_RIGHTS: &[&str] = &["none", "r", "rw", "rx"];

/// The rights named by an option value.
fn rights_of(v: &str) -> Res<Rights> {
    match v {
        "none" => Ok(Rights::empty()),
        "r" => Ok(Rights::READ),
        "rw" => Ok(Rights::RW),
        "rx" => Ok(Rights::READ | Rights::EXECUTE),
        other => Err(format!("rights '{other}' (want r, rw or rx)")),
    }
}
const COMPARISONS: &[&str] = &["=", "==", "<", ">", "<=", ">="];
const OWNER: (&str, &str, Kind) = ("owner", "TASK", Kind::Number(MAX_TASK));
const ALIGN: (&str, &str, Kind) = ("align", "LOG2", Kind::Number(MAX_LOG2));

/// Every operation of the language, in the order `help` lists them.
static OPERATIONS: &[Operation] = &[
    Operation {
        name: "space",
        args: &[("NAME", Kind::Name)],
        options: &[("size", "SIZE", Kind::Number(MAX_SPACE_SIZE))],
        flags: &[],
        summary: "create an address space (default 64M window, at most 4G)",
        run: |s, a| s.op_space(a),
    },
    Operation {
        name: "ds",
        args: &[("NAME", Kind::Name), ("SIZE", Kind::Number(u64::MAX))],
        options: &[("pool", "N", Kind::Number(MAX_POOL)), ("at", "PADDR", Kind::PhysAddr), ALIGN, OWNER],
        flags: &["contiguous", "pinned", "superpages"],
        summary: "open a dataspace (memphys_open)",
        run: |s, a| s.op_ds(a),
    },
    Operation {
        name: "share",
        args: &[("NAME", Kind::Name), ("DS", Kind::Name)],
        options: &[("rights", "r|rw|rx", Kind::Choice(RIGHTS))],
        flags: &[],
        summary: "a handle of DS with fewer rights (l4dm_share, default r)",
        run: |s, a| s.op_share(a),
    },
    Operation {
        name: "copy",
        args: &[("NAME", Kind::Name), ("SRC", Kind::Name)],
        options: &[OWNER],
        flags: &["cow"],
        summary: "copy a dataspace (copy-on-write with cow)",
        run: |s, a| s.op_copy(a),
    },
    Operation {
        name: "copy_long",
        args: &[
            ("NAME", Kind::Name),
            ("SRC", Kind::Name),
            ("SRC_OFF", Kind::Number(u64::MAX)),
            ("DST_OFF", Kind::Number(u64::MAX)),
            ("LEN", Kind::Number(u64::MAX)),
        ],
        options: &[OWNER],
        flags: &["cow"],
        summary: "copy bytes into a new dataspace",
        run: |s, a| s.op_copy_long(a),
    },
    Operation {
        name: "resize",
        args: &[("DS", Kind::Name), ("SIZE", Kind::Number(u64::MAX))],
        options: &[OWNER],
        flags: &[],
        summary: "grow or shrink a dataspace (0 closes it)",
        run: |s, a| s.op_resize(a),
    },
    Operation {
        name: "close",
        args: &[("DS", Kind::Name)],
        options: &[OWNER],
        flags: &[],
        summary: "close a dataspace (by its owner, default task 1)",
        run: |s, a| s.op_close(a),
    },
    Operation {
        name: "close_all",
        args: &[("TASK", Kind::Number(MAX_TASK))],
        options: &[],
        flags: &[],
        summary: "close every dataspace of a task",
        run: |s, a| s.op_close_all(a),
    },
    Operation {
        name: "area",
        args: &[("NAME", Kind::Name), ("SPACE", Kind::Name), ("SIZE", Kind::Number(MAX_SPACE_SIZE))],
        options: &[("at", "VADDR", Kind::VirtAddr), ALIGN],
        flags: &[],
        summary: "reserve an area in a space",
        run: |s, a| s.op_area(a),
    },
    Operation {
        name: "attach",
        args: &[("NAME", Kind::Name), ("SPACE", Kind::Name), ("DS", Kind::Name)],
        options: &[
            ("size", "SIZE", Kind::Number(MAX_SPACE_SIZE)),
            ("offset", "OFF", Kind::Number(u64::MAX)),
            ("at", "VADDR", Kind::VirtAddr),
            ("in", "AREA", Kind::Name),
            ("over", "REGION", Kind::Name),
            ALIGN,
            ("rights", "r|rw|rx", Kind::Choice(RIGHTS)),
        ],
        flags: &["eager", "replace"],
        summary: "attach a dataspace (at=, in= and over= exclude each other; default: search the window; \
                  over=: at that region's start; replace: detach what is in the range first)",
        run: |s, a| s.op_attach(a),
    },
    Operation {
        name: "protect",
        args: &[("REGION", Kind::Name), ("RIGHTS", Kind::Choice(PROTECT_RIGHTS))],
        options: &[("offset", "OFF", Kind::Number(MAX_SPACE_SIZE)), ("size", "SIZE", Kind::Number(MAX_SPACE_SIZE))],
        flags: &[],
        summary: "new rights for a region's pages (mprotect; default: all of them)",
        run: |s, a| s.op_protect(a),
    },
    Operation {
        name: "remap",
        args: &[("REGION", Kind::Name), ("SIZE", Kind::Number(MAX_SPACE_SIZE))],
        options: &[("at", "VADDR", Kind::VirtAddr), ("over", "REGION", Kind::Name)],
        flags: &["move"],
        summary: "resize a region in place, or move it (move: where there is room; at= or over=REGION: \
                  there, replacing what is there)",
        run: |s, a| s.op_remap(a),
    },
    Operation {
        name: "detach",
        args: &[("REGION", Kind::Name)],
        options: &[],
        flags: &[],
        summary: "detach a region",
        run: |s, a| s.op_detach(a),
    },
    Operation {
        name: "store",
        args: &[("REGION", Kind::Name), ("OFFSET", Kind::Number(MAX_SPACE_SIZE)), ("DATA", Kind::Data)],
        options: &[],
        flags: &[],
        summary: "real stores: \"text\" or bytes (0xab 12 ...)",
        run: |s, a| s.op_store(a),
    },
    Operation {
        name: "load",
        args: &[
            ("REGION", Kind::Name),
            ("OFFSET", Kind::Number(MAX_SPACE_SIZE)),
            ("LEN", Kind::Number(MAX_LOAD_BYTES)),
        ],
        options: &[],
        flags: &[],
        summary: "real loads, printed in hex (at most 64K)",
        run: |s, a| s.op_load(a),
    },
    Operation {
        name: "frames",
        args: &[("NAME", Kind::Name), ("POOL", Kind::Number(MAX_POOL)), ("COUNT", Kind::Number(u64::MAX))],
        options: &[("below", "PADDR", Kind::PhysAddr)],
        flags: &[],
        summary: "allocate contiguous frames from a pool",
        run: |s, a| s.op_frames(a),
    },
    Operation {
        name: "free_frames",
        args: &[("NAME", Kind::Name)],
        options: &[],
        flags: &[],
        summary: "give them back",
        run: |s, a| s.op_free_frames(a),
    },
    Operation {
        name: "xmalloc",
        args: &[("NAME", Kind::Name), ("SIZE", Kind::Number(u64::MAX))],
        options: &[ALIGN, ("heap", "kernel|pinned|kernel4k|kernel16m|pinned4k|pinned16m", Kind::Choice(HEAPS))],
        flags: &[],
        summary: "allocate a kernel heap block",
        run: |s, a| s.op_xmalloc(a),
    },
    Operation {
        name: "xmfree",
        args: &[("NAME", Kind::Name)],
        options: &[],
        flags: &[],
        summary: "free a heap block",
        run: |s, a| s.op_xmfree(a),
    },
    Operation {
        name: "pools",
        args: &[],
        options: &[],
        flags: &[],
        summary: "print the pools",
        run: |s, a| s.op_pools(a),
    },
    Operation {
        name: "regions",
        args: &[("SPACE", Kind::Name)],
        options: &[],
        flags: &[],
        summary: "print a space's regions",
        run: |s, a| s.op_regions(a),
    },
    Operation {
        name: "info",
        args: &[("DS", Kind::Name)],
        options: &[],
        flags: &[],
        summary: "print a dataspace",
        run: |s, a| s.op_info(a),
    },
    Operation {
        name: "heaps",
        args: &[],
        options: &[],
        flags: &[],
        summary: "print the kernel heaps",
        run: |s, a| s.op_heaps(a),
    },
    Operation {
        name: "expect load",
        args: &[("REGION", Kind::Name), ("OFFSET", Kind::Number(MAX_SPACE_SIZE)), ("DATA", Kind::Data)],
        options: &[],
        flags: &[],
        summary: "the bytes loaded must be DATA",
        run: |s, a| s.op_expect_load(a),
    },
    Operation {
        name: "expect size",
        args: &[("DS", Kind::Name), ("N", Kind::Number(u64::MAX))],
        options: &[],
        flags: &[],
        summary: "the dataspace's size must be N",
        run: |s, a| s.op_expect_size(a),
    },
    Operation {
        name: "expect owner",
        args: &[("DS", Kind::Name), ("TASK", Kind::Number(MAX_TASK))],
        options: &[],
        flags: &[],
        summary: "the dataspace's owner must be TASK",
        run: |s, a| s.op_expect_owner(a),
    },
    Operation {
        name: "expect free",
        args: &[("POOL", Kind::Number(MAX_POOL)), ("OP", Kind::Choice(COMPARISONS)), ("N", Kind::Number(u64::MAX))],
        options: &[],
        flags: &[],
        summary: "free frames of a pool (OP: = < > <= >=)",
        run: |s, a| s.op_expect_free(a),
    },
    Operation {
        name: "expect fail",
        args: &[("OPERATION...", Kind::Operation)],
        options: &[],
        flags: &[],
        summary: "the operation (well-formed, not itself expect fail) must fail when run",
        run: |s, a| s.op_expect_fail(a),
    },
    Operation { name: "help", args: &[], options: &[], flags: &[], summary: "this text", run: |s, a| s.op_help(a) },
];

/// The help text: every operation's usage and summary, from `OPERATIONS`.
#[must_use]
pub fn help() -> String {
    let mut out = String::from("operations (one per line; numbers: 42, 0x2a, 4K, 2M, 1G):\n");
    for op in OPERATIONS {
        let usage = op.usage();
        if usage.len() <= 44 {
            out.push_str(&format!("  {usage:<44}  {}\n", op.summary));
        } else {
            out.push_str(&format!("  {usage}\n  {:<44}  {}\n", "", op.summary));
        }
    }
    out.pop();
    out
}
