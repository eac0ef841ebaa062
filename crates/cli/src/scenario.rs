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

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::ptr::NonNull;

use memkit_dataspace::{ClientId, CopyLength, DataspaceId, DmFlags, FactoryId, Placement};
use memkit_heap::HeapId;
use memkit_host::SpaceId;
use memkit_region::{AttachRequest, DetachFlags, Flags};
use memkit_types::{Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, Rights, VirtAddr};

use crate::hosted::{self, Hosted};
use crate::input::{self, LineRead, MAX_LINE_BYTES, MAX_SCRIPT_BYTES};

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

/// The rights named by an option value.
fn rights_of(v: &str) -> Res<Rights> {
    match v {
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
            ALIGN,
            ("rights", "r|rw|rx", Kind::Choice(RIGHTS)),
        ],
        flags: &["eager"],
        summary: "attach a dataspace (at= and in= exclude each other; default: search the window)",
        run: |s, a| s.op_attach(a),
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

/// A parsed operation: every word checked against its kind, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    op: &'static Operation,
    /// The words of the line, as written.
    words: Vec<String>,
    /// The positional words, parsed.
    args: Vec<Value>,
    /// The positional words as written (for messages that echo them).
    raw: Vec<String>,
    options: BTreeMap<&'static str, Value>,
    flags: Vec<&'static str>,
}

impl Command {
    /// The operation's name (`expect` operations are two words).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.op.name
    }

    /// The line's words, as written (a string keeps its opening quote).
    #[must_use]
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Positional word `i` as written.
    fn raw(&self, i: usize) -> &str {
        self.raw.get(i).map_or("", String::as_str)
    }

    fn text(&self, i: usize) -> Res<&str> {
        match self.args.get(i) {
            Some(Value::Text(t)) => Ok(t),
            _ => Err(format!("{}: word {} is not a name", self.op.name, i + 1)),
        }
    }

    fn number(&self, i: usize) -> Res<u64> {
        match self.args.get(i) {
            Some(Value::Number(n)) => Ok(*n),
            _ => Err(format!("{}: word {} is not a number", self.op.name, i + 1)),
        }
    }

    fn bytes(&self, i: usize) -> Res<&[u8]> {
        match self.args.get(i) {
            Some(Value::Bytes(b)) => Ok(b),
            _ => Err(format!("{}: word {} is not data", self.op.name, i + 1)),
        }
    }

    fn option_number(&self, key: &str) -> Res<Option<u64>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(*n)),
            Some(_) => Err(format!("{}: {key}= is not a number", self.op.name)),
        }
    }

    fn option_text(&self, key: &str) -> Res<Option<&str>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(format!("{}: {key}= is not a word", self.op.name)),
        }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    fn owner(&self) -> Res<ClientId> {
        Ok(ClientId::new(narrow(self.option_number("owner")?.unwrap_or(1), "TASK")?, 0))
    }

    fn align(&self, default: u8) -> Res<u8> {
        self.option_number("align")?.map_or(Ok(default), |v| narrow(v, "LOG2"))
    }
}

/// A number into its target type; the parser checked the range, so this fails only when the
/// table and a handler disagree.
fn narrow<T: TryFrom<u64>>(v: u64, what: &str) -> Res<T> {
    T::try_from(v).map_err(|_| format!("{what} {v:#x} is out of range"))
}

fn number(s: &str) -> Res<u64> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if !hex.starts_with('+') => u64::from_str_radix(hex, 16),
        None if !digits.starts_with('+') => digits.parse::<u64>(),
        _ => return Err(format!("'{s}' is not a number")),
    };
    match v {
        Ok(v) => v.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large (above 2^64)")),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(format!("'{s}' is too large (above 2^64)")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// Splits a line into words; a double-quoted string is one word (quotes kept, escapes
/// resolved: `\n`, `\"`, `\\`); `#` at the start of a word begins a comment.
fn words(line: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => w.push('\n'),
                        Some(o) => w.push(o),
                        None => return Err("unfinished string".into()),
                    },
                    Some(o) => w.push(o),
                    None => return Err("unfinished string".into()),
                }
            }
            out.push(w);
        } else if c == '#' {
            break;
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn data(words: &[String]) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    for w in words {
        if let Some(s) = w.strip_prefix('"') {
            out.extend_from_slice(s.as_bytes());
        } else {
            let v = number(w)?;
            out.push(u8::try_from(v).map_err(|_| format!("byte {w} is above 255"))?);
        }
    }
    if out.is_empty() {
        return Err("no data".into());
    }
    Ok(out)
}

/// Parses `word` as `what` of kind `kind` (not `Data` nor `Operation`).
fn value(kind: Kind, what: &str, word: &str) -> Res<Value> {
    if word.starts_with('"') {
        return Err(format!("{what}: a string where a word is expected"));
    }
    match kind {
        Kind::Name => {
            let mut chars = word.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                return Err(format!("{what}: '{word}' is not a name (a letter or _, then letters, digits, _ - .)"));
            }
            if word.len() > MAX_NAME_BYTES {
                return Err(format!("{what}: a name longer than {MAX_NAME_BYTES} bytes"));
            }
            Ok(Value::Text(word.to_string()))
        }
        Kind::Number(max) => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            if v > max {
                return Err(format!("{what}: {word} is out of range (at most {max:#x})"));
            }
            Ok(Value::Number(v))
        }
        Kind::PhysAddr => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            PhysAddr::try_new(v).map_err(|e| format!("{what}: {e}"))?;
            Ok(Value::Number(v))
        }
        Kind::VirtAddr => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            let a = usize::try_from(v).map_err(|_| format!("{what}: {word} does not fit an address"))?;
            VirtAddr::try_new(a).map_err(|e| format!("{what}: {e}"))?;
            Ok(Value::Number(v))
        }
        Kind::Choice(words) => match words.iter().find(|w| **w == word) {
            Some(w) => Ok(Value::Text((*w).to_string())),
            None => Err(format!("{what}: '{word}' (want {})", words.join(", "))),
        },
        Kind::Data | Kind::Operation => Err(format!("{what}: the language table is inconsistent")),
    }
}

/// Parses one line against `OPERATIONS`: `None` for a blank line or a comment.
///
/// # Errors
/// What is wrong: an unknown operation, option, flag or extra word (named), a missing word,
/// a number out of its range, a malformed name, string or datum. The message ends with the
/// operation's usage where that helps.
pub fn parse_line(line: &str) -> Result<Option<Command>, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
    }
    let w = words(line)?;
    if w.is_empty() {
        return Ok(None);
    }
    parse_words(&w, false).map(Some)
}

fn parse_words(w: &[String], nested: bool) -> Res<Command> {
    let (name, rest) = match w.first().map(String::as_str) {
        None => return Err("no operation".into()),
        Some("expect") => match w.get(1) {
            Some(what) => (format!("expect {what}"), &w[2..]),
            None => return Err("usage: expect load|size|owner|free|fail ...".into()),
        },
        Some(op) => (op.to_string(), &w[1..]),
    };
    let Some(op) = OPERATIONS.iter().find(|o| o.name == name) else {
        return Err(if let Some(what) = name.strip_prefix("expect ") {
            format!("expect {what}: unknown (want load, size, owner, free or fail)")
        } else {
            format!("unknown operation '{name}' (try: help)")
        });
    };
    if nested && op.name == "expect fail" {
        return Err("the operation cannot itself be expect fail".into());
    }
    let usage = || format!("usage: {}", op.usage());
    let mut cmd = Command {
        op,
        words: w.to_vec(),
        args: Vec::new(),
        raw: Vec::new(),
        options: BTreeMap::new(),
        flags: Vec::new(),
    };
    let mut k = 0;
    while k < rest.len() {
        let word = rest[k].as_str();
        match op.args.get(cmd.args.len()) {
            Some((_, Kind::Data)) => {
                cmd.args.push(Value::Bytes(data(&rest[k..]).map_err(|e| format!("{}: {e}", op.name))?));
                break;
            }
            Some((_, Kind::Operation)) => {
                let inner = parse_words(&rest[k..], true).map_err(|e| format!("expect fail: {e}"))?;
                cmd.args.push(Value::Operation(Box::new(inner)));
                break;
            }
            _ => {}
        }
        // `key=value` with a word for a key; `=`, `<=` and `>=` are comparisons, not options.
        if let Some((key, v)) = word.split_once('=')
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            let Some(&(key, _, kind)) = op.options.iter().find(|(k, _, _)| *k == key) else {
                return Err(format!("{}: unknown option '{key}=' ({})", op.name, usage()));
            };
            let v = value(kind, &format!("{key}="), v).map_err(|e| format!("{}: {e}", op.name))?;
            if cmd.options.insert(key, v).is_some() {
                return Err(format!("{}: option '{key}=' given twice", op.name));
            }
        } else if let Some(&flag) = op.flags.iter().find(|f| **f == word) {
            if cmd.flags.contains(&flag) {
                return Err(format!("{}: flag '{flag}' given twice", op.name));
            }
            cmd.flags.push(flag);
        } else if let Some(&(what, kind)) = op.args.get(cmd.args.len()) {
            cmd.args.push(value(kind, what, word).map_err(|e| format!("{}: {e}", op.name))?);
            cmd.raw.push(word.to_string());
        } else {
            return Err(format!("{}: unexpected word '{word}' ({})", op.name, usage()));
        }
        k += 1;
    }
    if let Some((what, _)) = op.args.get(cmd.args.len()) {
        return Err(format!("{}: missing {what} ({})", op.name, usage()));
    }
    Ok(cmd)
}

fn heap_of(name: Option<&str>) -> Res<HeapId> {
    Ok(match name.unwrap_or("kernel") {
        "kernel" => HeapId::Kernel,
        "pinned" => HeapId::Pinned,
        "kernel4k" => HeapId::Kernel4K64K,
        "kernel16m" => HeapId::Kernel16M,
        "pinned4k" => HeapId::Pinned4K64K,
        "pinned16m" => HeapId::Pinned16M,
        other => return Err(format!("no heap '{other}'")),
    })
}

/// Frames a scenario holds: the pool, the first frame, the count, and whether they were
/// given back (a second `free_frames` is then refused here: the frames may belong to
/// someone else by then).
type Frames = (usize, Frame, FrameCount, bool);

/// The named things a scenario made.
#[derive(Debug, Default)]
struct Names {
    spaces: BTreeMap<String, SpaceId>,
    dataspaces: BTreeMap<String, DataspaceId>,
    regions: BTreeMap<String, (SpaceId, VirtAddr, usize)>,
    areas: BTreeMap<String, (SpaceId, VirtAddr, usize)>,
    frames: BTreeMap<String, Frames>,
    /// Heap blocks, and whether they were freed (as for frames).
    blocks: BTreeMap<String, (NonNull<u8>, HeapId, bool)>,
}

/// A booted machine the scenario language runs on: the hosted stack over the machine's
/// RAM.
///
/// The RAM and the pools live as long as the process (the fault handler may reach them at
/// any time), so a process boots one runtime and runs many sessions on it, each releasing
/// what it made ([`Session::release_all`]).
#[derive(Debug)]
pub struct Runtime {
    hosted: Hosted,
}

impl Runtime {
    /// Brings `machine` up.
    ///
    /// # Errors
    /// A message when its RAM or its pools cannot be made.
    pub fn boot(machine: memkit_phys::Machine) -> Result<Self, String> {
        hosted::boot(machine).map(|hosted| Runtime { hosted })
    }

    /// A new session: no names yet.
    pub fn session(&mut self) -> Session<'_> {
        Session::new(&mut self.hosted)
    }

    /// The free frames of every pool, in pool order (a session that released all it made
    /// leaves them as it found them).
    #[must_use]
    pub fn free_frames(&self) -> Vec<u64> {
        self.hosted.pools.stats().map(|s| s.free_frames.get()).collect()
    }
}

/// A scenario being run: the stack and the names.
pub struct Session<'h> {
    h: &'h mut Hosted,
    names: Names,
    out: Vec<String>,
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("names", &self.names).finish_non_exhaustive()
    }
}

impl<'h> Session<'h> {
    pub(crate) fn new(h: &'h mut Hosted) -> Self {
        Session { h, names: Names::default(), out: Vec::new() }
    }

    /// Output lines produced since the last call.
    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    /// Parses and runs one line; `Ok` for a blank line or a comment.
    ///
    /// # Errors
    /// The parser's or the operation's error (without the line number).
    pub fn line(&mut self, line: &str) -> Res {
        match parse_line(line)? {
            Some(cmd) => self.run(&cmd),
            None => Ok(()),
        }
    }

    /// Runs a parsed command.
    ///
    /// # Errors
    /// The operation's error.
    pub fn run(&mut self, cmd: &Command) -> Res {
        (cmd.op.run)(self, cmd)
    }

    /// Releases everything the session made and still holds: destroys its spaces (which
    /// detaches their regions), closes its dataspaces, gives back its frames and frees its
    /// heap blocks. Errors are ignored (a dataspace may already be closed); the names are
    /// forgotten.
    pub fn release_all(&mut self) {
        let names = std::mem::take(&mut self.names);
        for id in names.spaces.values() {
            let _ = self.h.system.destroy_space(*id);
        }
        for id in names.dataspaces.values() {
            let _ = self.h.system.lock(|s| {
                let owner = s.manager.info(*id).map(|i| i.owner).map_err(|e| e.to_string())?;
                s.manager.close(owner, *id).map_err(|e| e.to_string())
            });
        }
        for &(pool, frame, count, freed) in names.frames.values() {
            if !freed && let Some(p) = self.h.pools.pool(pool) {
                let _ = FrameSource::free(p.allocator(), frame, count);
            }
        }
        for &(ptr, heap, freed) in names.blocks.values() {
            if !freed {
                let _ = self.h.heaps().xmfree(ptr, heap);
            }
        }
    }

    fn space(&self, n: &str) -> Res<SpaceId> {
        self.names.spaces.get(n).copied().ok_or_else(|| format!("no space '{n}'"))
    }

    fn ds(&self, n: &str) -> Res<DataspaceId> {
        self.names.dataspaces.get(n).copied().ok_or_else(|| format!("no dataspace '{n}'"))
    }

    fn region(&self, n: &str) -> Res<(SpaceId, VirtAddr, usize)> {
        self.names.regions.get(n).copied().ok_or_else(|| format!("no region '{n}'"))
    }

    fn fresh(&self, n: &str) -> Res {
        let taken = self.names.spaces.contains_key(n)
            || self.names.dataspaces.contains_key(n)
            || self.names.regions.contains_key(n)
            || self.names.areas.contains_key(n)
            || self.names.frames.contains_key(n)
            || self.names.blocks.contains_key(n);
        if taken { Err(format!("the name '{n}' is taken")) } else { Ok(()) }
    }

    fn op_help(&mut self, _: &Command) -> Res {
        self.out.push(help());
        Ok(())
    }

    fn op_space(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size = narrow(a.option_number("size")?.unwrap_or(DEFAULT_SPACE_SIZE), "SIZE")?;
        let id = self.h.system.create_space(size).map_err(|e| e.to_string())?;
        self.names.spaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_ds(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size = a.number(1)?;
        let mut flags = DmFlags::empty();
        for (word, f) in
            [("contiguous", DmFlags::CONTIGUOUS), ("pinned", DmFlags::PINNED), ("superpages", DmFlags::SUPERPAGES)]
        {
            if a.has(word) {
                flags |= f;
            }
        }
        let pool: u32 = narrow(a.option_number("pool")?.unwrap_or(0), "pool")?;
        let placement = match a.option_number("at")? {
            Some(p) => Placement::Fixed(PhysAddr::try_new(p).map_err(|e| e.to_string())?),
            None => Placement::AnyAddr,
        };
        let align = u32::from(a.align(12)?);
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| s.manager.memphys_open(FactoryId::ROOT, owner, pool, placement, size, align, flags, name))
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_share(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let ds = self.ds(a.text(1)?)?;
        let rights = rights_of(a.option_text("rights")?.unwrap_or("r"))?;
        let id = self.h.system.lock(|s| s.manager.share(ds, rights)).map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_copy(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let src = self.ds(a.text(1)?)?;
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy(owner, src, flags, name, &mut r)
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_copy_long(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let src = self.ds(a.text(1)?)?;
        let (so, dof, len) = (a.number(2)?, a.number(3)?, a.number(4)?);
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy_long(owner, src, so, dof, CopyLength::Bytes(len), flags, name, &mut r)
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_resize(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let size = a.number(1)?;
        let owner = a.owner()?;
        self.h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.resize(owner, ds, size, &mut r)
            })
            .map_err(|e| e.to_string())
    }

    fn op_close(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let owner = a.owner()?;
        // The name stays: it now names a closed dataspace, so that later operations on it
        // reach the manager and fail there (a dataspace id is never reused).
        self.h.system.lock(|s| s.manager.close(owner, ds)).map_err(|e| e.to_string())
    }

    fn op_close_all(&mut self, a: &Command) -> Res {
        let task: u32 = narrow(a.number(0)?, "TASK")?;
        let client = ClientId::new(task, 0);
        let n =
            self.h.system.lock(|s| s.manager.close_all(client, client, DmFlags::empty())).map_err(|e| e.to_string())?;
        self.out.push(format!("closed {n} dataspaces of task {task}"));
        Ok(())
    }

    fn op_area(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let space = self.space(a.text(1)?)?;
        let size: usize = narrow(a.number(2)?, "SIZE")?;
        let align = a.align(12)?;
        let at = match a.option_number("at")? {
            Some(v) => Some(VirtAddr::try_new(narrow(v, "VADDR")?).map_err(|e| e.to_string())?),
            None => None,
        };
        let start = self.h.system.lock(|s| {
            let map = s.region_map_mut(space).map_err(|e| e.to_string())?;
            let (start, flags) = match at {
                Some(v) => (v, Flags::empty()),
                None => (map.window_start(), Flags::SEARCH_ADDR),
            };
            map.reserve_area(start, size, flags, align).map_err(|e| e.to_string())
        })?;
        self.names.areas.insert(name.to_string(), (space, start, size));
        self.out.push(format!("area {name} at {start}"));
        Ok(())
    }

    fn op_attach(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let space = self.space(a.text(1)?)?;
        let ds = self.ds(a.text(2)?)?;
        let ds_size = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
        let offset = a.option_number("offset")?.unwrap_or(0);
        let size: usize = match a.option_number("size")? {
            Some(v) => narrow(v, "SIZE")?,
            None => narrow(ds_size.saturating_sub(offset), "the dataspace's size")?,
        };
        let rights = rights_of(a.option_text("rights")?.unwrap_or("rw"))?;
        let align = a.align(12)?;
        let mut req = AttachRequest::new(ds, size, rights).offset(offset).align(align);
        req = match (a.option_number("at")?, a.option_text("in")?) {
            (Some(_), Some(_)) => return Err("attach: at= and in= exclude each other".into()),
            (Some(v), None) => req.at(VirtAddr::try_new(narrow(v, "VADDR")?).map_err(|e| e.to_string())?),
            (None, Some(area)) => {
                let &(asp, start, _) = self.names.areas.get(area).ok_or_else(|| format!("no area '{area}'"))?;
                if asp != space {
                    return Err(format!("area '{area}' is in another space"));
                }
                let mut r = req.flags(Flags::IN_AREA);
                r.start = start;
                r
            }
            (None, None) => {
                let start =
                    self.h.system.lock(|s| s.region_map(space).map(|m| m.window_start())).map_err(|e| e.to_string())?;
                req.search(start)
            }
        };
        if a.has("eager") {
            req = req.flags(Flags::EAGER_MAP);
        }
        let addr =
            self.h.system.lock(|s| s.attach(space, &req)).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let size = size.next_multiple_of(PAGE_SIZE);
        self.names.regions.insert(name.to_string(), (space, addr, size));
        self.out.push(format!("region {name} at {addr}, {size} bytes"));
        Ok(())
    }

    fn op_detach(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let (space, addr, size) = self.region(name)?;
        self.h
            .system
            .lock(|s| s.detach(space, addr, size, DetachFlags::OVERLAP))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.names.regions.remove(name);
        Ok(())
    }

    /// Checks that `offset .. offset + len` lies inside region `name`, and returns the space
    /// and the first address. Whether each page can be served is `System::load`'s and
    /// `System::store`'s to say: they resolve every page first and report a refused or
    /// unservable access (rights, the dataspace's size, no frame left) as an error.
    fn reach(&self, name: &str, off: u64, len: usize) -> Res<(SpaceId, VirtAddr)> {
        let (space, start, size) = self.region(name)?;
        let off: usize = narrow(off, "OFFSET")?;
        if off.checked_add(len).is_none_or(|e| e > size) {
            return Err(format!("{name}+{off:#x}..+{len}: outside the region ({size:#x} bytes)"));
        }
        Ok((space, VirtAddr::try_new(start.as_usize() + off).map_err(|e| e.to_string())?))
    }

    fn load(&self, name: &str, offset: u64, len: usize) -> Res<Vec<u8>> {
        let (space, addr) = self.reach(name, offset, len)?;
        let mut buf = vec![0u8; len];
        self.h.system.load(space, addr, &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    fn op_load(&mut self, a: &Command) -> Res {
        let (name, offset) = (a.text(0)?, a.number(1)?);
        let bytes = self.load(name, offset, narrow(a.number(2)?, "LEN")?)?;
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.out.push(format!("{name}+{}: {}", a.raw(1), hex.join(" ")));
        Ok(())
    }

    fn op_store(&mut self, a: &Command) -> Res {
        let bytes = a.bytes(2)?;
        let (space, addr) = self.reach(a.text(0)?, a.number(1)?, bytes.len())?;
        self.h.system.store(space, addr, bytes).map_err(|e| e.to_string())
    }

    fn op_frames(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let pool_id: usize = narrow(a.number(1)?, "POOL")?;
        let pool = self.h.pools.pool(pool_id).ok_or_else(|| format!("pool {pool_id} has no memory"))?;
        let count = FrameCount::new(a.number(2)?);
        let below = match a.option_number("below")? {
            Some(v) => Some(PhysAddr::try_new(v).map_err(|e| e.to_string())?),
            None => None,
        };
        let frame = FrameSource::allocate(pool.allocator(), count, Order::ZERO, below).map_err(|e| e.to_string())?;
        self.out.push(format!("frames {name} at {:#x}", frame.start_address().as_u64()));
        self.names.frames.insert(name.to_string(), (pool_id, frame, count, false));
        Ok(())
    }

    fn op_free_frames(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let entry = self.names.frames.get_mut(name).ok_or_else(|| format!("no frames '{name}'"))?;
        let (pool, frame, count, freed) = *entry;
        if freed {
            // The name stays so that this is an error; the frames may be someone else's now.
            return Err(format!("frames '{name}' were given back already"));
        }
        let p = self.h.pools.pool(pool).ok_or("no pool")?;
        FrameSource::free(p.allocator(), frame, count).map_err(|e| e.to_string())?;
        entry.3 = true;
        Ok(())
    }

    fn op_xmalloc(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size: usize = narrow(a.number(1)?, "SIZE")?;
        let align = u32::from(a.align(3)?);
        let heap = heap_of(a.option_text("heap")?)?;
        let ptr = self.h.heaps().try_xmalloc(size, align, heap).map_err(|e| e.to_string())?;
        self.names.blocks.insert(name.to_string(), (ptr, heap, false));
        Ok(())
    }

    fn op_xmfree(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let &(ptr, heap, freed) = self.names.blocks.get(name).ok_or_else(|| format!("no block '{name}'"))?;
        if freed {
            // The name stays so that this is an error; the block may be someone else's now.
            return Err(format!("block '{name}' was freed already"));
        }
        self.h.heaps().xmfree(ptr, heap).map_err(|e| e.to_string())?;
        if let Some(entry) = self.names.blocks.get_mut(name) {
            entry.2 = true;
        }
        Ok(())
    }

    fn op_pools(&mut self, _: &Command) -> Res {
        self.out.push(hosted::pool_table(self.h.pools.stats()));
        Ok(())
    }

    fn op_heaps(&mut self, _: &Command) -> Res {
        let report = self.h.heap_report();
        self.out.push(report);
        Ok(())
    }

    fn op_regions(&mut self, a: &Command) -> Res {
        let space = self.space(a.text(0)?)?;
        let regions = self.h.system.lock(|s| s.region_map(space).map(|m| m.regions())).map_err(|e| e.to_string())?;
        for r in regions {
            self.out.push(format!(
                "{}..{:#x} {:?} offset {:#x} dataspace {}",
                r.start,
                r.start.as_usize() + r.size,
                r.rights,
                r.offset,
                r.dataspace
            ));
        }
        Ok(())
    }

    fn op_info(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let line = self
            .h
            .system
            .lock(|s| {
                s.manager.info(ds).map(|i| {
                    format!(
                        "{}: {} bytes, owner {}, {:?}, pool {}, refs {}",
                        i.name, i.size, i.owner, i.kind, i.pool, i.refs
                    )
                })
            })
            .map_err(|e| e.to_string())?;
        self.out.push(line);
        Ok(())
    }

    fn op_expect_fail(&mut self, a: &Command) -> Res {
        let Some(Value::Operation(inner)) = a.args.first() else {
            return Err("usage: expect fail OPERATION...".into());
        };
        match self.run(inner) {
            Ok(()) => Err(format!("expected '{}' to fail, it succeeded", inner.words.join(" "))),
            Err(e) => {
                self.out.push(format!("failed as expected: {e}"));
                Ok(())
            }
        }
    }

    fn op_expect_load(&mut self, a: &Command) -> Res {
        let (name, offset, want) = (a.text(0)?, a.number(1)?, a.bytes(2)?);
        let got = self.load(name, offset, want.len())?;
        if got == want {
            Ok(())
        } else {
            Err(format!("expected {want:02x?} at {name}+{}, loaded {got:02x?}", a.raw(1)))
        }
    }

    fn op_expect_size(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let ds = self.ds(name)?;
        let want = a.number(1)?;
        let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
        if got == want { Ok(()) } else { Err(format!("expected size {want} of {name}, it is {got}")) }
    }

    fn op_expect_owner(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let ds = self.ds(name)?;
        let want = ClientId::new(narrow(a.number(1)?, "TASK")?, 0);
        let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.owner)).map_err(|e| e.to_string())?;
        if got == want { Ok(()) } else { Err(format!("expected owner {want} of {name}, it is {got}")) }
    }

    fn op_expect_free(&mut self, a: &Command) -> Res {
        let pool: usize = narrow(a.number(0)?, "POOL")?;
        let op = a.text(1)?;
        let n = a.number(2)?;
        let free = self
            .h
            .pools
            .pool(pool)
            .ok_or_else(|| format!("pool {pool} has no memory"))?
            .allocator()
            .free_frames()
            .get();
        let ok = match op {
            "=" | "==" => free == n,
            "<" => free < n,
            ">" => free > n,
            "<=" => free <= n,
            ">=" => free >= n,
            other => return Err(format!("comparison '{other}' (want = < > <= >=)")),
        };
        if ok { Ok(()) } else { Err(format!("expected pool {pool} free frames {op} {n}, it has {free}")) }
    }
}

/// Runs every line of `text`; the number of lines run, or the first error with its line
/// number.
///
/// # Errors
/// `line N: what is wrong` and the line.
pub fn run_text(session: &mut Session<'_>, text: &str, mut echo: impl FnMut(Vec<String>)) -> Result<usize, String> {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        session.line(line).map_err(|e| format!("line {}: {e}\n  {}", i + 1, line.trim()))?;
        echo(session.take_output());
        n += 1;
    }
    Ok(n)
}

/// Runs the bytes of a scenario: checked as text first (see [`input::text`]), then line by
/// line.
///
/// # Errors
/// What is wrong with the text, or the first failing line, each naming the line.
pub fn run_bytes(session: &mut Session<'_>, bytes: &[u8], echo: impl FnMut(Vec<String>)) -> Result<usize, String> {
    let text = input::text(bytes, MAX_SCRIPT_BYTES)?;
    run_text(session, text, echo)
}

/// Runs the scenario `file` on an already booted stack.
///
/// # Errors
/// The exit code after printing the error.
pub(crate) fn run_into(h: &mut Hosted, file: &Path) -> Result<(), ExitCode> {
    let text = input::read_text_file(file, MAX_SCRIPT_BYTES).map_err(|e| {
        eprintln!("memkit: {e}");
        ExitCode::from(2)
    })?;
    let mut session = Session::new(h);
    run_text(&mut session, &text, |lines| lines.iter().for_each(|l| println!("{l}"))).map_err(|e| {
        eprintln!("memkit: {}: {e}", file.display());
        ExitCode::from(1)
    })?;
    Ok(())
}

/// `memkit run FILE`.
pub(crate) fn run_file(map: Option<&Path>, file: &Path) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    match run_into(&mut h, file) {
        Ok(()) => {
            println!("{}: ok ({} faults resolved)", file.display(), memkit_host::faults_resolved());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `memkit shell`: a line that is not text or too long is reported and skipped; the shell
/// ends at the end of its input, `quit` or `exit`.
pub(crate) fn shell(map: Option<&Path>) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let mut session = Session::new(&mut h);
    println!("memkit shell: the scenario language, one operation per line; 'help' lists them, 'quit' ends.");
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        print!("memkit> ");
        let _ = std::io::stdout().flush();
        number += 1;
        let line = match input::read_line(&mut reader, &mut buf) {
            Ok(LineRead::End) => break,
            Ok(LineRead::Line) => match input::line_text(&buf) {
                Ok(t) => t,
                Err(e) => {
                    println!("error: line {number}: {e}");
                    continue;
                }
            },
            Ok(LineRead::TooLong) => {
                println!("error: line {number}: longer than {MAX_LINE_BYTES} bytes");
                continue;
            }
            Err(e) => {
                eprintln!("memkit: reading the input: {e}");
                return ExitCode::from(2);
            }
        };
        let t = line.trim();
        if t == "quit" || t == "exit" {
            break;
        }
        match session.line(line) {
            Ok(()) => session.take_output().iter().for_each(|l| println!("{l}")),
            Err(e) => {
                session.take_output().iter().for_each(|l| println!("{l}"));
                println!("error: {e}");
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_line(line).unwrap_err()
    }

    #[test]
    fn every_operation_has_a_distinct_name_and_a_line_in_help() {
        let h = help();
        for (i, op) in OPERATIONS.iter().enumerate() {
            assert!(h.contains(&op.usage()), "{}", op.name);
            assert!(OPERATIONS[i + 1..].iter().all(|o| o.name != op.name), "{}", op.name);
            for (k, (_, kind)) in op.args.iter().enumerate() {
                if matches!(kind, Kind::Data | Kind::Operation) {
                    assert_eq!(k + 1, op.args.len(), "{}: rest-of-line words come last", op.name);
                }
            }
        }
    }

    #[test]
    fn the_ranges_match_the_types() {
        assert_eq!(usize::try_from(MAX_POOL + 1), Ok(memkit_phys::POOL_COUNT));
        assert_eq!(u32::try_from(MAX_TASK), Ok(u32::MAX));
    }

    #[test]
    fn numbers_are_never_truncated() {
        assert!(err("ds d 4K pool=0x100000007").contains("pool=: 0x100000007 is out of range"));
        assert!(err("ds d 4K pool=8").contains("out of range"));
        assert!(err("close_all 0x100000001").contains("TASK: 0x100000001 is out of range"));
        assert!(err("attach r a d align=256").contains("align=: 256 is out of range"));
        assert!(err("area x a 4K align=64").contains("out of range"));
        assert!(err("xmalloc b 8 align=0x100000003").contains("out of range"));
        assert!(err("ds d 4K owner=0x100000001").contains("owner=: 0x100000001 is out of range"));
        assert!(err("expect owner d 0x100000001").contains("out of range"));
        assert!(err("frames f 0x100000000 1").contains("POOL: 0x100000000 is out of range"));
        assert!(err("ds d 18446744073709551616").contains("too large"));
        assert!(err("ds d 0xffffffffffffffffK").contains("too large"));
        assert!(err("ds d 16777216T").contains("not a number"));
        assert!(err("ds d -1").contains("not a number"));
        assert!(err("ds d +1").contains("not a number"));
        assert!(err("ds d 4K at=0x10000000000000").contains("exceeds 52 bits"));
        assert!(err("attach r a d at=0x800000000000").contains("not canonical"));
        assert!(err("store r 0 256").contains("above 255"));
        assert!(parse_line("ds d 0xffffffffffffffff pool=7 align=63 owner=0xffffffff").unwrap().is_some());
    }

    #[test]
    fn sizes_beyond_the_documented_limits_are_refused() {
        assert!(
            err("space s size=0xc0000000000").contains("size=: 0xc0000000000 is out of range (at most 0x100000000)")
        );
        assert!(parse_line("space s size=4G").is_ok());
        assert!(err("load r 0 0x10001").contains("LEN: 0x10001 is out of range"));
        assert!(err("area x a 5G").contains("out of range"));
        assert!(err("attach r a d size=5G").contains("out of range"));
    }

    #[test]
    fn unknown_options_flags_and_extra_words_are_named() {
        assert!(err("space s sise=4K").contains("unknown option 'sise='"));
        assert!(err("space s extra").contains("unexpected word 'extra'"));
        assert!(err("ds d 4K contigous").contains("unexpected word 'contigous'"));
        assert!(err("ds d 4K cow").contains("unexpected word 'cow'"));
        assert!(err("detach r r2").contains("unexpected word 'r2'"));
        assert!(err("pools now").contains("unexpected word 'now'"));
        assert!(err("close_all 1 2").contains("unexpected word '2'"));
        assert!(err("ds d 4K pool=1 pool=2").contains("given twice"));
        assert!(err("ds d 4K pinned pinned").contains("given twice"));
        assert!(err("ds d").contains("missing SIZE (usage: ds NAME SIZE"));
        assert!(err("expect size d").contains("missing N"));
        assert!(err("expect frobnicate d").contains("expect frobnicate: unknown"));
        assert!(err("expect").contains("usage: expect"));
        for op in ["=", "==", "<=", ">=", "<", ">"] {
            assert!(parse_line(&format!("expect free 0 {op} 5")).unwrap().is_some(), "{op}");
        }
        assert!(err("expect free 0 => 5").contains("'=>'"));
        assert!(err("space =4K").contains("'=4K' is not a name"));
        assert!(err("space s =4K").contains("unexpected word '=4K'"));
        assert!(err("ds 4K 4K").contains("is not a name"));
        assert!(err("ds \"d\" 4K").contains("a string where a word is expected"));
        assert!(err("store r 0 \"unfinished").contains("unfinished string"));
        assert!(err("store r 0").contains("missing DATA"));
        assert!(err("store r 0 1 x=2").contains("not a number"));
        assert!(err(&format!("space {}", "n".repeat(MAX_NAME_BYTES + 1))).contains("longer than"));
    }

    #[test]
    fn expect_fail_requires_a_well_formed_operation_and_does_not_nest() {
        assert!(err("expect fail stroe r 0 1").contains("expect fail: unknown operation 'stroe'"));
        assert!(err("expect fail store r 0").contains("expect fail: store: missing DATA"));
        assert!(err("expect fail space s size=0x1000000000000").contains("out of range"));
        assert!(err("expect fail").contains("missing OPERATION"));
        assert!(err("expect fail expect fail space s").contains("cannot itself be expect fail"));
        let deep = "expect fail ".repeat(20_000) + "space s";
        let e = err(&deep);
        assert!(e.contains("longer than") || e.contains("cannot itself"), "{}", &e[..e.len().min(200)]);
        let c = parse_line("expect fail expect load r 0 1").unwrap().unwrap();
        assert_eq!(c.name(), "expect fail");
        assert!(parse_line("expect fail store r 64K 1").unwrap().is_some());
    }

    #[test]
    fn comments_blank_lines_and_strings() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   # just a comment"), Ok(None));
        let c = parse_line("store r 0x10 \"a b#c\" 0xff 7 # the rest").unwrap().unwrap();
        assert_eq!(c.args[2], Value::Bytes(b"a b#c\xff\x07".to_vec()));
        let c = parse_line("store r 0 \"x=1\"").unwrap().unwrap();
        assert_eq!(c.args[2], Value::Bytes(b"x=1".to_vec()));
        assert!(err(&"a".repeat(MAX_LINE_BYTES + 1)).contains("longer than"));
    }

    /// A word of `kind`: in range when `good`, out of range (or malformed) otherwise.
    fn word(kind: Kind, good: bool, r: u64) -> String {
        match (kind, good) {
            (Kind::Name, true) => format!("n{r}"),
            (Kind::Name, false) => format!("{}x", r % 10),
            (Kind::Number(max), true) => match r % 4 {
                0 => format!("{max:#x}"),
                1 => "0".to_string(),
                2 => format!("{}", r % max.saturating_add(1).max(1)),
                _ if max >= 1 << 10 => format!("{}K", (max >> 10).min(r)),
                _ => format!("{}", max / 2),
            },
            (Kind::Number(max), false) => match max.checked_add(1) {
                Some(v) if r.is_multiple_of(2) => format!("{v:#x}"),
                Some(v) => format!("{v}"),
                None => "18446744073709551616".to_string(),
            },
            (Kind::PhysAddr, true) => format!("{:#x}", (PhysAddr::LIMIT - 1) & r),
            (Kind::PhysAddr, false) => format!("{:#x}", PhysAddr::LIMIT | r),
            (Kind::VirtAddr, true) => format!("{:#x}", r & 0x7fff_ffff_ffff),
            (Kind::VirtAddr, false) => format!("{:#x}", 0x8000_0000_0000u64 | (r & 0xffff)),
            (Kind::Choice(words), true) => words[usize::try_from(r).unwrap_or(0) % words.len()].to_string(),
            (Kind::Choice(_), false) => "bogus".to_string(),
            (Kind::Data, true) => format!("{} \"x y\" 0xff", r % 256),
            (Kind::Data, false) => format!("1 {}", 256 + r % 1000),
            (Kind::Operation, true) => "store r 0 1".to_string(),
            (Kind::Operation, false) => "stroe r 0 1".to_string(),
        }
    }

    /// Lines generated from the table itself, each word valid or not, options and flags in
    /// any order: a line parses exactly when every word is valid, into the words it holds.
    #[test]
    fn the_parser_accepts_exactly_the_lines_the_table_describes() {
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 11
        };
        let (mut accepted, mut refused) = (0, 0);
        for op in OPERATIONS {
            for _ in 0..300 {
                let mut valid = true;
                let good = |next: &mut dyn FnMut() -> u64, valid: &mut bool| {
                    let g = !next().is_multiple_of(8);
                    *valid &= g;
                    g
                };
                let mut positional = Vec::new();
                let mut rest = None;
                for &(_, kind) in op.args {
                    let g = good(&mut next, &mut valid);
                    let w = word(kind, g, next());
                    if matches!(kind, Kind::Data | Kind::Operation) {
                        rest = Some(w);
                    } else {
                        positional.push(w);
                    }
                }
                let mut extras = Vec::new();
                let (mut n_options, mut n_flags) = (0, 0);
                for &(key, _, kind) in op.options {
                    if next().is_multiple_of(2) {
                        let g = good(&mut next, &mut valid);
                        extras.push(format!("{key}={}", word(kind, g, next())));
                        n_options += 1;
                    }
                }
                for &flag in op.flags {
                    if next().is_multiple_of(2) {
                        extras.push(flag.to_string());
                        n_flags += 1;
                    }
                }
                if next().is_multiple_of(16) {
                    extras.push("bogus=1".to_string());
                    valid = false;
                }
                let dropped = rest.is_none() && !positional.is_empty() && next().is_multiple_of(16);
                if dropped {
                    positional.pop();
                    valid = false;
                }
                let extra = !dropped && rest.is_none() && next().is_multiple_of(16);
                if extra {
                    positional.push("extra".to_string());
                    valid = false;
                }
                // Options and flags go anywhere among the positional words.
                let mut words = positional;
                for e in extras {
                    let at = usize::try_from(next()).unwrap_or(0) % (words.len() + 1);
                    words.insert(at, e);
                }
                let mut line = format!("{} {}", op.name, words.join(" "));
                if let Some(r) = rest {
                    line.push(' ');
                    line.push_str(&r);
                }
                let parsed = parse_line(&line);
                assert_eq!(parsed.is_ok(), valid, "{line}: {parsed:?}");
                match parsed {
                    Ok(Some(c)) => {
                        assert_eq!(c.op, op, "{line}");
                        assert_eq!(c.args.len(), op.args.len(), "{line}");
                        assert_eq!((c.options.len(), c.flags.len()), (n_options, n_flags), "{line}");
                        accepted += 1;
                    }
                    Ok(None) => panic!("{line}: parsed as blank"),
                    Err(e) => {
                        assert!(e.starts_with(op.name) || e.starts_with("expect fail"), "{line}: {e}");
                        refused += 1;
                    }
                }
            }
        }
        println!("{} lines: {accepted} accepted, {refused} refused", accepted + refused);
        assert!(accepted > 1000 && refused > 1000, "{accepted} accepted, {refused} refused");
    }

    #[test]
    fn the_readme_lists_every_operation() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        for op in OPERATIONS {
            assert!(
                readme.contains(&format!("`{} ", op.name)) || readme.contains(&format!("`{}`", op.name)),
                "{}",
                op.name
            );
        }
    }
}
