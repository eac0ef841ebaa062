//! Random bad input, in-process: mutated scenario lines and memory maps, generated from the
//! valid examples, each run through the library under `catch_unwind`. Every case must give a
//! result or an error within a bounded time; none may panic. The counts per class are printed
//! (`cargo test -p memkit --test bad_input -- --nocapture`); `docs/RELIABILITY.md` quotes them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memkit_cli::input;
use memkit_cli::scenario::{self, Runtime};
use memkit_phys::{DEFAULT_MEMORY_MAP, Machine};

/// The longest any one case may take.
const CASE_LIMIT: Duration = Duration::from_secs(2);

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers at and around every limit, in every spelling, and things that are not numbers.
const EDGES: &[&str] = &[
    "0",
    "1",
    "-1",
    "4095",
    "4096",
    "0x7",
    "8",
    "63",
    "64",
    "255",
    "256",
    "4294967295",
    "4294967296",
    "0x100000000",
    "0x100000007",
    "0xc0000000000",
    "4503599627370495",
    "4503599627370496",
    "0x10000000000000",
    "0xfffffffffffff",
    "0x800000000000",
    "0xffff800000000000",
    "9223372036854775808",
    "18446744073709551615",
    "0xffffffffffffffff",
    "18446744073709551616",
    "0x10000000000000000",
    "16777216G",
    "0xffffffffffffffffK",
    "4G",
    "5G",
    "1K",
    "0x",
    "0x-1",
    "+1",
    "1.5",
    "1e3",
    "0b101",
    "K",
    "٣",
    "garbage",
    "\"text\"",
    "\"",
    "x=1",
    "=",
    "#",
    "",
];

/// The mutation classes of a line of words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    DropWord,
    DuplicateWord,
    SwapWords,
    EdgeNumber,
    EdgeOption,
    Repetition,
    NotUtf8,
    RandomBytes,
    SpliceLines,
}

const CLASSES: [Class; 9] = [
    Class::DropWord,
    Class::DuplicateWord,
    Class::SwapWords,
    Class::EdgeNumber,
    Class::EdgeOption,
    Class::Repetition,
    Class::NotUtf8,
    Class::RandomBytes,
    Class::SpliceLines,
];

/// `line` mutated by `class`, as bytes.
fn mutate(rng: &mut Rng, class: Class, line: &str, other: &str) -> Vec<u8> {
    let mut w: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    if w.is_empty() {
        w.push("pools".into());
    }
    match class {
        Class::DropWord => {
            let i = rng.below(w.len());
            w.remove(i);
        }
        Class::DuplicateWord => {
            let i = rng.below(w.len());
            let word = w[i].clone();
            w.insert(rng.below(w.len() + 1), word);
        }
        Class::SwapWords => {
            let (i, j) = (rng.below(w.len()), rng.below(w.len()));
            w.swap(i, j);
        }
        Class::EdgeNumber => {
            let numeric: Vec<usize> =
                (0..w.len()).filter(|&i| w[i].starts_with(|c: char| c.is_ascii_digit())).collect();
            let i = if numeric.is_empty() { rng.below(w.len()) } else { *rng.pick(&numeric) };
            w[i] = (*rng.pick(EDGES)).to_string();
        }
        Class::EdgeOption => {
            let options: Vec<usize> = (0..w.len()).filter(|&i| w[i].contains('=')).collect();
            if options.is_empty() {
                let key = *rng.pick(&["size", "pool", "align", "owner", "at", "in", "rights", "below", "heap", "nope"]);
                w.push(format!("{key}={}", rng.pick(EDGES)));
            } else {
                let i = *rng.pick(&options);
                let key = w[i].split('=').next().unwrap_or("").to_string();
                w[i] = format!("{key}={}", rng.pick(EDGES));
            }
        }
        Class::Repetition => {
            let i = rng.below(w.len());
            let times = *rng.pick(&[2usize, 10, 100, 1000, 5000]);
            let word = w[i].clone();
            for _ in 0..times {
                w.insert(i, word.clone());
            }
            if rng.below(4) == 0 {
                return format!("{}{}", "expect fail ".repeat(times), w.join(" ")).into_bytes();
            }
        }
        Class::NotUtf8 => {
            let mut bytes = w.join(" ").into_bytes();
            let at = rng.below(bytes.len() + 1);
            const BAD: [&[u8]; 7] = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\0", b"\x1b[2J", b"\x7f"];
            let bad = *rng.pick(&BAD);
            bytes.splice(at..at, bad.iter().copied());
            return bytes;
        }
        Class::RandomBytes => {
            let n = rng.below(80);
            return (0..n).map(|_| rng.next().to_le_bytes()[0]).collect();
        }
        Class::SpliceLines => {
            let o: Vec<&str> = other.split_whitespace().collect();
            let cut = rng.below(w.len() + 1);
            w.truncate(cut);
            w.extend(o.iter().skip(rng.below(o.len() + 1)).map(|s| (*s).to_owned()));
        }
    }
    w.join(" ").into_bytes()
}

fn examples() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "memkit"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    ok: usize,
    errors: usize,
    panics: usize,
    slowest: Duration,
}

impl Tally {
    fn record(&mut self, what: &str, outcome: std::thread::Result<Result<(), String>>, took: Duration) {
        self.cases += 1;
        self.slowest = self.slowest.max(took);
        match outcome {
            Ok(Ok(())) => self.ok += 1,
            Ok(Err(e)) => {
                assert!(!e.is_empty(), "{what}: an empty error");
                self.errors += 1;
            }
            Err(_) => {
                eprintln!("PANIC on {what}");
                self.panics += 1;
            }
        }
        assert!(took < CASE_LIMIT, "{what}: took {took:?}");
    }
}

fn report(title: &str, tallies: &std::collections::BTreeMap<String, Tally>) {
    println!("{title}");
    println!("| class | cases | ok | errors | panics | slowest |");
    println!("|---|---|---|---|---|---|");
    for (class, t) in tallies {
        println!(
            "| {class} | {} | {} | {} | {} | {:.1} ms |",
            t.cases,
            t.ok,
            t.errors,
            t.panics,
            t.slowest.as_secs_f64() * 1e3
        );
    }
    for (class, t) in tallies {
        assert_eq!(t.panics, 0, "{class}: {} panics", t.panics);
    }
}

/// Every line of every example, mutated each way many times, run in its place: the lines
/// before it ran as written, so the mutated line meets the names and state it expects.
#[test]
fn random_bad_scenario_lines_give_results_or_errors() {
    let mut rt = Runtime::boot(Machine::default_machine()).unwrap();
    let free_at_start = rt.free_frames();
    let mut rng = Rng(0x6d65_6d6b_6974);
    let mut tallies = std::collections::BTreeMap::<String, Tally>::new();
    let files = examples();
    let all_lines: Vec<&str> = files.iter().flat_map(|(_, t)| t.lines()).collect();
    let rounds = 6;
    for round in 0..rounds {
        for (path, text) in &files {
            let mut session = rt.session();
            for (i, line) in text.lines().enumerate() {
                for class in CLASSES {
                    let other = *rng.pick(&all_lines);
                    let bytes = mutate(&mut rng, class, line, other);
                    let what = format!(
                        "{}:{} round {round} {class:?}: {:?}",
                        path.display(),
                        i + 1,
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    );
                    let start = Instant::now();
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let r = scenario::run_bytes(&mut session, &bytes, drop).map(drop);
                        session.take_output();
                        r
                    }));
                    tallies.entry(format!("scenario line: {class:?}")).or_default().record(
                        &what,
                        outcome,
                        start.elapsed(),
                    );
                }
                // The line as written, so that the next one meets the state it expects.
                let _ = session.line(line);
                session.take_output();
            }
            session.release_all();
        }
    }
    report("scenario lines (mutated from examples/*.memkit, run in place)", &tallies);
    // What the sessions made was given back (anything else would be a leak in release_all or
    // in the layers below). Pool 0 also feeds the kernel heaps, which keep pages they took.
    assert_eq!(rt.free_frames()[1..], free_at_start[1..]);
}

/// Whole scripts through `run_bytes` (text checks, then line by line, stopping at the first
/// error): an example with each line mutated, dropped or followed by another example's line
/// (one in forty each).
#[test]
fn random_bad_scripts_give_results_or_errors() {
    let mut rt = Runtime::boot(Machine::default_machine()).unwrap();
    let mut rng = Rng(0x7363_7269_7074);
    let files = examples();
    let lines: Vec<&str> = files.iter().flat_map(|(_, t)| t.lines()).collect();
    let mut tally = Tally::default();
    let mut lines_run = 0;
    for case in 0..400 {
        let (_, text) = rng.pick(&files);
        let mut script = Vec::new();
        for line in text.lines() {
            match rng.below(40) {
                0 => {
                    let class = *rng.pick(&CLASSES);
                    let other = *rng.pick(&lines);
                    script.extend(mutate(&mut rng, class, line, other));
                    script.push(b'\n');
                }
                1 => {}
                2 => {
                    script.extend_from_slice(line.as_bytes());
                    script.push(b'\n');
                    script.extend_from_slice(rng.pick(&lines).as_bytes());
                    script.push(b'\n');
                }
                _ => {
                    script.extend_from_slice(line.as_bytes());
                    script.push(b'\n');
                }
            }
        }
        let mut session = rt.session();
        let start = Instant::now();
        let outcome =
            catch_unwind(AssertUnwindSafe(|| scenario::run_bytes(&mut session, &script, |_| lines_run += 1).map(drop)));
        tally.record(&format!("script {case}: {:?}", String::from_utf8_lossy(&script)), outcome, start.elapsed());
        session.release_all();
    }
    println!("{lines_run} lines run before the first error of each script");
    let mut tallies = std::collections::BTreeMap::new();
    tallies.insert("scenario script (examples with mutated, dropped and inserted lines)".to_string(), tally);
    report("scenario scripts", &tallies);
}

#[test]
fn random_bad_memory_maps_give_machines_or_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../machines");
    let mut maps = vec![DEFAULT_MEMORY_MAP.to_string()];
    for e in std::fs::read_dir(dir).unwrap() {
        maps.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    let mut rng = Rng(0x6d65_6d6d_6170);
    let mut tallies = std::collections::BTreeMap::<String, Tally>::new();
    let run = |name: String, bytes: Vec<u8>, tallies: &mut std::collections::BTreeMap<String, Tally>| {
        let start = Instant::now();
        let outcome = catch_unwind(|| input::machine_from_bytes(&bytes).map(|m| input::check_machine(&m).unwrap()));
        let what = format!("{name}: {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]));
        tallies.entry(format!("memory map: {name}")).or_default().record(&what, outcome, start.elapsed());
    };
    for _ in 0..400 {
        let map = rng.pick(&maps).clone();
        let lines: Vec<&str> = map.lines().collect();
        // One line mutated each way.
        for class in CLASSES {
            let i = rng.below(lines.len());
            let other = *rng.pick(&lines);
            let mut out: Vec<u8> = Vec::new();
            for (k, l) in lines.iter().enumerate() {
                if k == i {
                    out.extend(mutate(&mut rng, class, l, other));
                } else {
                    out.extend_from_slice(l.as_bytes());
                }
                out.push(b'\n');
            }
            run(format!("{class:?}"), out, &mut tallies);
        }
        // Entries with random edge bounds.
        let mut out = String::new();
        for _ in 0..rng.below(8) + 1 {
            let kind = *rng.pick(&["usable", "reserved", "acpi", "USABLE", ""]);
            out.push_str(&format!("{} {} {kind}\n", rng.pick(EDGES), rng.pick(EDGES)));
        }
        run("EdgeEntries".into(), out.into_bytes(), &mut tallies);
        // Lines repeated past the entry limit, and one line past the length limit.
        let line = *rng.pick(&lines);
        let times = *rng.pick(&[127usize, 128, 129, 1000, 3000]);
        run("RepeatedLines".into(), format!("{line}\n").repeat(times).into_bytes(), &mut tallies);
        let long = *rng.pick(&[input::MAX_LINE_BYTES - 1, input::MAX_LINE_BYTES, input::MAX_LINE_BYTES + 1, 100_000]);
        run("LongLine".into(), format!("0x0 0x1000 usable #{}", "x".repeat(long)).into_bytes(), &mut tallies);
    }
    report("memory maps (mutated from machines/*.memmap and the embedded map)", &tallies);
}
