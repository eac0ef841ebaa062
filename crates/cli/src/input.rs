//! The text memkit reads, bounded: scenario files, memory maps and shell lines.
//!
//! Every input is read through a limit before it is looked at, so that `/dev/zero` or an
//! endless pipe gives an error instead of filling memory. Text must be UTF-8 without control
//! characters (tab, carriage return and newline excepted) and no line may be longer than
//! [`MAX_LINE_BYTES`]; an error names the first line that breaks a rule.
//!
//! ```text
//!   file ──take(limit + 1)──▶ bytes ──text()──▶ &str ──parser──▶ Machine / scenario lines
//!          "larger than"             "line N: not UTF-8" / "control character" / "longer than"
//! ```

use std::io::{BufRead, ErrorKind, Read as _};
use std::path::Path;

use memkit_phys::{DEFAULT_KERNEL_IMAGE, Machine};

/// The largest scenario file `memkit run` and `memkit map --scenario` read: 1 MiB.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// The largest memory-map file `--memory-map` reads: 64 KiB (a map holds at most
/// [`memkit_phys::MAX_MAP_ENTRIES`] entries).
pub const MAX_MAP_BYTES: usize = 64 << 10;
/// The longest line of a scenario or a memory map: 4 KiB.
pub const MAX_LINE_BYTES: usize = 4096;

/// Checks that `bytes` are text memkit reads: at most `limit` bytes, UTF-8, no control
/// characters but tab, carriage return and newline, no line longer than [`MAX_LINE_BYTES`].
///
/// # Errors
/// A message naming the first offending line (counted from 1).
pub fn text(bytes: &[u8], limit: usize) -> Result<&str, String> {
    if bytes.len() > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        line_text(line).map_err(|e| format!("line {}: {e}", i + 1))?;
    }
    // Every line is UTF-8 and the separators are ASCII, so the whole is UTF-8.
    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))
}

/// Checks one line (without its newline) as [`text`] does.
///
/// # Errors
/// What is wrong with the line.
pub fn line_text(line: &[u8]) -> Result<&str, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
    }
    let s = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to() + 1))?;
    if let Some(c) = s.chars().find(|&c| c.is_control() && !matches!(c, '\t' | '\r')) {
        return Err(format!("control character {:#04x} (not text)", u32::from(c)));
    }
    Ok(s)
}

/// Reads at most `limit` bytes of `path` and checks them with [`text`].
///
/// # Errors
/// The I/O error, or what is wrong with the text; both name the file.
pub fn read_text_file(path: &Path, limit: usize) -> Result<String, String> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).map_or(u64::MAX, |l| l.saturating_add(1));
    file.take(cap).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
    text(&bytes, limit).map(str::to_owned).map_err(|e| format!("{name}: {e}"))
}

/// A machine from the bytes of a memory map (see [`memkit_phys::MemoryMapOf::parse`]), with
/// the kernel image the hosted runtime reserves ([`memkit_phys::DEFAULT_KERNEL_IMAGE`], as on
/// the embedded default machine).
///
/// # Errors
/// What is wrong with the text or with the map, naming the line.
pub fn machine_from_bytes(bytes: &[u8]) -> Result<Machine, String> {
    let text = text(bytes, MAX_MAP_BYTES)?;
    Machine::parse(text, Some(DEFAULT_KERNEL_IMAGE)).map_err(|e| e.to_string())
}

/// Checks what a machine derives from its map: its usable ranges are sorted, disjoint,
/// frame-aligned, non-empty, below the physical address limit and inside usable entries of
/// the map; each pool's ranges lie inside them, and the pools do not overlap.
///
/// # Errors
/// The first broken rule.
pub fn check_machine(m: &Machine) -> Result<(), String> {
    use memkit_phys::{POOL_COUNT, RegionKind};
    use memkit_types::PhysAddr;
    let usable = m.usable();
    let ranges = usable.as_slice();
    for w in ranges.windows(2) {
        if w[0].end() >= w[1].start.as_u64() {
            return Err(format!("usable ranges {:?} and {:?} are not sorted and apart", w[0], w[1]));
        }
    }
    let entries = m.memory_map().entries();
    for r in ranges {
        if r.size == 0 || !r.is_frame_aligned() || r.end() >= PhysAddr::LIMIT {
            return Err(format!("usable range {r:?} is empty, unaligned or past the limit"));
        }
        // Covered by usable entries (adjacent ones merge into one range) ...
        let mut at = r.start.as_u64();
        while at < r.end() {
            let next = entries
                .iter()
                .filter(|x| x.kind == RegionKind::Usable && x.area.start.as_u64() <= at && at < x.area.end())
                .map(|x| x.area.end())
                .max();
            at = next.ok_or_else(|| format!("usable range {r:?} is not usable in the map at {at:#x}"))?;
        }
        // ... and by no reserved entry nor the kernel image.
        let reserved = entries.iter().filter(|x| x.kind == RegionKind::Reserved).map(|x| x.area);
        if let Some(x) = reserved.chain(m.kernel_image()).find(|x| x.overlaps(*r)) {
            return Err(format!("usable range {r:?} overlaps reserved {x:?}"));
        }
    }
    let _ = (usable.span(), usable.bytes(), usable.gaps().count());
    let mut pools: Vec<(u64, u64, usize)> = Vec::new();
    for pool in 0..POOL_COUNT {
        let p = m.pool_ranges(pool);
        let _ = (p.span(), p.bytes(), p.gaps().count());
        for r in p.as_slice() {
            if !ranges.iter().any(|u| u.start <= r.start && r.end() <= u.end()) {
                return Err(format!("pool {pool} range {r:?} is not usable RAM"));
            }
            pools.push((r.start.as_u64(), r.end(), pool));
        }
    }
    pools.sort_unstable();
    for w in pools.windows(2) {
        if w[0].1 > w[1].0 {
            return Err(format!("pools {} and {} overlap at {:#x}", w[0].2, w[1].2, w[1].0));
        }
    }
    Ok(())
}

/// The embedded default machine, or the one `path`'s memory map describes (with the kernel
/// image the default machine reserves).
///
/// # Errors
/// The file's I/O error, or what is wrong with its text or its map, naming the file and line.
pub fn load_machine(path: Option<&Path>) -> Result<Machine, String> {
    match path {
        None => Ok(Machine::default_machine()),
        Some(p) => {
            let text = read_text_file(p, MAX_MAP_BYTES)?;
            Machine::parse(&text, Some(DEFAULT_KERNEL_IMAGE)).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

/// What [`read_line`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// The input ended before a line began.
    End,
    /// A line, now in the buffer (without its newline).
    Line,
    /// A line longer than [`MAX_LINE_BYTES`]; it was read to its end and dropped.
    TooLong,
}

/// Reads one line of at most [`MAX_LINE_BYTES`] into `line`, in bounded memory: the rest
/// of a longer line is read and dropped.
///
/// # Errors
/// The reader's I/O error.
pub fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<LineRead> {
    line.clear();
    let (mut started, mut too_long) = (false, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (started, too_long) {
                (false, _) => LineRead::End,
                (true, false) => LineRead::Line,
                (true, true) => LineRead::TooLong,
            });
        }
        started = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_offending_line() {
        assert_eq!(text(b"a\nb\n", 10), Ok("a\nb\n"));
        assert_eq!(text(b"a\r\n\tb", 10), Ok("a\r\n\tb"));
        assert!(text(b"0123456789x", 10).unwrap_err().contains("larger than 10"));
        let e = text(b"ok\nfine\n\xff\xfe\n", 100).unwrap_err();
        assert!(e.starts_with("line 3: not UTF-8"), "{e}");
        let e = text(b"ok\n\0\0", 100).unwrap_err();
        assert!(e.starts_with("line 2: control character 0x00"), "{e}");
        let long = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(text(&long, usize::MAX).unwrap_err().starts_with("line 1: longer than"));
        assert!(text(&long[1..], usize::MAX).is_ok());
    }

    #[test]
    fn read_line_is_bounded() {
        let mut input: Vec<u8> = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE_BYTES));
        input.extend_from_slice(b"\nlast");
        let mut r = std::io::BufReader::with_capacity(64, &input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut r, &mut line).unwrap(), LineRead::Line);
        assert_eq!(line, b"first");
        assert_eq!(read_line(&mut r, &mut line).unwrap(), LineRead::TooLong);
        assert!(line.is_empty());
        assert_eq!(read_line(&mut r, &mut line).unwrap(), LineRead::Line);
        assert_eq!(line, b"last");
        assert_eq!(read_line(&mut r, &mut line).unwrap(), LineRead::End);
    }

    #[test]
    fn the_machines_shipped_pass_their_checks() {
        check_machine(&Machine::default_machine()).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../machines/qemu-pc-4g.memmap");
        let four_gib = std::fs::read_to_string(path).unwrap();
        for text in [four_gib.as_str(), "0x0 0xfffffffffffff usable"] {
            check_machine(&Machine::parse(text, Some(DEFAULT_KERNEL_IMAGE)).unwrap()).unwrap();
        }
    }

    #[test]
    fn a_map_file_is_read_through_a_limit() {
        let e = load_machine(Some(Path::new("/dev/zero"))).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert!(load_machine(None).is_ok());
    }
}
