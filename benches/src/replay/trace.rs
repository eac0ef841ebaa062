//! The trace format of the `replay` suite: decoding a recorded trace (`MKTRACE1`, as
//! `tools/malloc-trace` writes it, zlib-compressed in `benches/traces/`) into operations on
//! slots, and finding the traces that come with the benchmarks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The first bytes of a trace file (after zlib decompression).
pub const MAGIC: &[u8; 8] = b"MKTRACE1";
/// The alignment glibc's `malloc` guarantees, and so the one a C program relies on.
const MALLOC_ALIGN: usize = 16;

/// One operation of a decoded trace, on a slot (a block of the program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Allocate `size` bytes aligned to 2^`align_log2` into the empty `slot`, zeroed for
    /// `calloc`.
    Alloc {
        /// The slot the block goes into.
        slot: u32,
        /// Bytes requested (at least 1).
        size: usize,
        /// Alignment (log2).
        align_log2: u32,
        /// Asked for zeroed memory (`calloc`).
        zeroed: bool,
    },
    /// Free the block of `slot`.
    Free {
        /// The slot emptied.
        slot: u32,
    },
    /// Resize the block of `slot` to `size` bytes (at least 1).
    Realloc {
        /// The slot resized.
        slot: u32,
        /// The new size.
        size: usize,
    },
}

/// A decoded trace.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Its name (the file name without `.mkt.z`).
    pub name: String,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Slots used (the most blocks live at once).
    pub slots: usize,
    /// The most bytes the program had live at once (as requested).
    pub peak_live: usize,
    /// Threads that made calls.
    pub threads: usize,
    /// Calls by kind: malloc, free, realloc, calloc, memalign.
    pub calls: [usize; 5],
    /// Calls left out: frees and reallocations of pointers the trace never handed out,
    /// failed calls.
    pub skipped: usize,
}

/// Why a trace cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The data does not start with [`MAGIC`].
    NotATrace,
    /// The data ends inside a record.
    Truncated(usize),
    /// A record's tag names no operation.
    BadTag(u8, usize),
    /// A size does not fit the machine's `usize`, or a varint is longer than 64 bits.
    BadNumber(usize),
    /// The zlib stream is corrupt.
    Compression(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotATrace => write!(f, "not a malloc trace (no MKTRACE1 header)"),
            DecodeError::Truncated(at) => write!(f, "trace truncated in the record at byte {at}"),
            DecodeError::BadTag(t, at) => write!(f, "unknown record tag {t} at byte {at}"),
            DecodeError::BadNumber(at) => write!(f, "number out of range at byte {at}"),
            DecodeError::Compression(e) => write!(f, "corrupt zlib stream: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    record: usize,
    last_ptr: u64,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.data.get(self.at).ok_or(DecodeError::Truncated(self.record))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::BadNumber(self.record));
            }
            v |= bits << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadNumber(self.record))
    }

    fn size(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.varint()?).map_err(|_| DecodeError::BadNumber(self.record))
    }

    fn ptr(&mut self) -> Result<u64, DecodeError> {
        let z = self.varint()?;
        let delta = (z >> 1) as i64 ^ -((z & 1) as i64);
        self.last_ptr = self.last_ptr.wrapping_add(delta as u64);
        Ok(self.last_ptr)
    }
}

/// Slots for pointers: each live pointer of the program names a slot; freed slots are
/// reused, lowest first in order of freeing.
#[derive(Default)]
struct SlotMap {
    live: HashMap<u64, (u32, usize)>,
    free: Vec<u32>,
    slots: usize,
    bytes: usize,
    peak: usize,
}

impl SlotMap {
    fn insert(&mut self, ptr: u64, size: usize, ops: &mut Vec<Op>) -> u32 {
        if let Some((slot, old)) = self.live.remove(&ptr) {
            // The program's record of this block's free was lost: free it here.
            self.bytes -= old;
            self.free.push(slot);
            ops.push(Op::Free { slot });
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots += 1;
            (self.slots - 1) as u32
        });
        self.live.insert(ptr, (slot, size));
        self.bytes += size;
        self.peak = self.peak.max(self.bytes);
        slot
    }

    fn remove(&mut self, ptr: u64) -> Option<u32> {
        let (slot, size) = self.live.remove(&ptr)?;
        self.bytes -= size;
        self.free.push(slot);
        Some(slot)
    }
}

/// Decodes a trace (the recorder's format, uncompressed); see `tools/malloc-trace/`.
///
/// # Errors
/// [`DecodeError`] for data that is not a whole trace.
pub fn decode(name: &str, data: &[u8]) -> Result<Trace, DecodeError> {
    let body = data.strip_prefix(MAGIC.as_slice()).ok_or(DecodeError::NotATrace)?;
    let mut r = Reader { data: body, at: 0, record: MAGIC.len(), last_ptr: 0 };
    let mut t = Trace { name: name.to_string(), ..Trace::default() };
    let mut map = SlotMap::default();
    let mut threads = std::collections::HashSet::new();
    while r.at < body.len() {
        r.record = r.at + MAGIC.len();
        let tag = r.byte()?;
        let (op, align_log2) = (tag & 7, u32::from(tag >> 3));
        match op {
            0 | 3 | 4 => {
                let size = r.size()?;
                let ptr = r.ptr()?;
                t.calls[if op == 0 {
                    0
                } else if op == 3 {
                    3
                } else {
                    4
                }] += 1;
                if ptr == 0 {
                    t.skipped += 1;
                    continue;
                }
                let align_log2 = if op == 4 { align_log2.max(MALLOC_ALIGN.trailing_zeros()) } else { 4 };
                let slot = map.insert(ptr, size, &mut t.ops);
                t.ops.push(Op::Alloc { slot, size: size.max(1), align_log2, zeroed: op == 3 });
            }
            1 => {
                let ptr = r.ptr()?;
                t.calls[1] += 1;
                match map.remove(ptr) {
                    Some(slot) => t.ops.push(Op::Free { slot }),
                    None => t.skipped += 1,
                }
            }
            2 => {
                let old = r.ptr()?;
                let size = r.size()?;
                let new = r.ptr()?;
                t.calls[2] += 1;
                let known = if old == 0 { None } else { map.live.get(&old).map(|&(slot, _)| slot) };
                match (known, new) {
                    (Some(slot), 0) if size == 0 => {
                        map.remove(old);
                        t.ops.push(Op::Free { slot });
                    }
                    (_, 0) => t.skipped += 1,
                    (Some(slot), new) => {
                        let (_, old_size) = map.live.remove(&old).unwrap_or((slot, 0));
                        map.bytes -= old_size;
                        if let Some((other, sz)) = map.live.remove(&new) {
                            map.bytes -= sz;
                            map.free.push(other);
                            t.ops.push(Op::Free { slot: other });
                        }
                        map.live.insert(new, (slot, size));
                        map.bytes += size;
                        map.peak = map.peak.max(map.bytes);
                        t.ops.push(Op::Realloc { slot, size: size.max(1) });
                    }
                    (None, new) => {
                        if old != 0 {
                            t.skipped += 1;
                        }
                        let slot = map.insert(new, size, &mut t.ops);
                        t.ops.push(Op::Alloc { slot, size: size.max(1), align_log2: 4, zeroed: false });
                    }
                }
            }
            5 => {
                threads.insert(r.varint()?);
            }
            _ => return Err(DecodeError::BadTag(tag, r.record)),
        }
    }
    t.slots = map.slots;
    t.peak_live = map.peak;
    t.threads = threads.len().max(1);
    Ok(t)
}

/// Reads, decompresses (zlib) and decodes a trace file (`*.mkt.z`; any other name is
/// read uncompressed).
///
/// # Errors
/// The I/O error or the [`DecodeError`], as text naming the file.
pub fn load(path: &Path) -> Result<Trace, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("trace");
    let (name, data) = match file.strip_suffix(".mkt.z") {
        Some(name) => (
            name,
            miniz_oxide::inflate::decompress_to_vec_zlib(&bytes)
                .map_err(|e| format!("{}: {}", path.display(), DecodeError::Compression(format!("{e:?}"))))?,
        ),
        None => (file.strip_suffix(".mkt").unwrap_or(file), bytes),
    };
    decode(name, &data).map_err(|e| format!("{}: {e}", path.display()))
}

/// The traces that come with the benchmarks (`benches/traces/*.mkt.z`), by name.
#[must_use]
pub fn default_traces() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".mkt.z")).collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    struct Enc {
        out: Vec<u8>,
        last: u64,
    }

    impl Enc {
        fn new() -> Self {
            Enc { out: MAGIC.to_vec(), last: 0 }
        }
        fn ptr(&mut self, p: u64) {
            let d = p.wrapping_sub(self.last) as i64;
            self.last = p;
            varint(&mut self.out, ((d << 1) ^ (d >> 63)) as u64);
        }
        fn malloc(&mut self, size: u64, p: u64) {
            self.out.push(0);
            varint(&mut self.out, size);
            self.ptr(p);
        }
        fn free(&mut self, p: u64) {
            self.out.push(1);
            self.ptr(p);
        }
        fn realloc(&mut self, old: u64, size: u64, new: u64) {
            self.out.push(2);
            self.ptr(old);
            varint(&mut self.out, size);
            self.ptr(new);
        }
    }

    #[test]
    fn decodes_slots_and_peak() {
        let mut e = Enc::new();
        e.out.extend([5, 42]);
        e.malloc(100, 0x1000);
        e.malloc(0, 0x2000);
        e.free(0x1000);
        e.malloc(50, 0x900);
        e.realloc(0x900, 300, 0x3000);
        e.realloc(0, 10, 0x4000);
        e.free(0x7777); // never handed out
        e.realloc(0x2000, 0, 0);
        e.out.push(4 | (6 << 3));
        varint(&mut e.out, 64);
        e.ptr(0x5000);
        let t = decode("t", &e.out).unwrap();
        assert_eq!(
            t.ops,
            vec![
                Op::Alloc { slot: 0, size: 100, align_log2: 4, zeroed: false },
                Op::Alloc { slot: 1, size: 1, align_log2: 4, zeroed: false },
                Op::Free { slot: 0 },
                Op::Alloc { slot: 0, size: 50, align_log2: 4, zeroed: false },
                Op::Realloc { slot: 0, size: 300 },
                Op::Alloc { slot: 2, size: 10, align_log2: 4, zeroed: false },
                Op::Free { slot: 1 },
                Op::Alloc { slot: 1, size: 64, align_log2: 6, zeroed: false },
            ]
        );
        assert_eq!((t.slots, t.peak_live, t.threads, t.skipped), (3, 374, 1, 1));
        assert_eq!(t.calls, [3, 2, 3, 0, 1]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(decode("t", b"nope").unwrap_err(), DecodeError::NotATrace);
        let mut e = Enc::new();
        e.out.push(0);
        e.out.push(0x80);
        assert!(matches!(decode("t", &e.out), Err(DecodeError::Truncated(_))));
        let mut e = Enc::new();
        e.out.push(7);
        assert!(matches!(decode("t", &e.out), Err(DecodeError::BadTag(7, _))));
        let mut e = Enc::new();
        e.out.push(0);
        e.out.extend([0xff; 10]);
        e.out.push(0);
        assert!(matches!(decode("t", &e.out), Err(DecodeError::BadNumber(_))));
    }
}
