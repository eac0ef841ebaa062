//! Unmodified programs with memkit, glibc and mimalloc as their malloc: wall time and peak
//! resident memory of each program under each allocator, side by side.
//!
//! The programs are those of memkit-malloc's program tests (`crates/malloc/tests/programs/`):
//! Python (sqlite in memory with an index, a JSON dump and load of a large dict, many small
//! objects), git (commits, `log --stat`, `gc`), gcc compiling a C file, a shell pipeline
//! (`sort | uniq -c | sort`) and a C program whose threads malloc and free across each
//! other. memkit is `libmemkit_malloc.so` (this suite runs `cargo build --release -p
//! memkit-malloc` first, so that it measures the code as it is), mimalloc the system's `libmimalloc.so.2` (Debian's
//! `libmimalloc2.0`), glibc the plain run; each goes in as `LD_PRELOAD`.
//!
//! Each program runs several rounds; in each round every allocator runs it once, in turn
//! (interleaved). The figures are medians: milliseconds of wall time, and the peak resident
//! set in KiB of the largest process of the run (`wait4`'s `ru_maxrss`, which covers the
//! children it waited for). The speedup column is `peer / memkit` for both: above 1, memkit
//! took less time or memory.
//!
//! # Unsafe
//!
//! Two calls into libc to measure a child: a zeroed `rusage` (plain integers, for which all
//! zeros is a valid value) and `wait4` on the pid of a child this suite spawned, writing
//! into locals that outlive the call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{MEMKIT, Options, Report};

/// Where the programs' sources and scripts are.
fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/malloc/tests/programs")
}

/// `libmemkit_malloc.so` of the release profile in this binary's target directory, built
/// (or found up to date by cargo) first every time: a library left from an earlier build
/// would measure old code.
fn memkit_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let target = dir.parent()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "-p", "memkit-malloc", "--lib"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .is_ok_and(|s| s.success());
    let release = target.join("release/libmemkit_malloc.so");
    (ok && release.exists()).then_some(release)
}

/// The system's mimalloc, if installed.
fn mimalloc_library() -> Option<PathBuf> {
    ["/usr/lib/x86_64-linux-gnu/libmimalloc.so.2", "/usr/lib/libmimalloc.so.2", "/usr/local/lib/libmimalloc.so"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// One run: wall time in ms and peak RSS in KiB, or why it failed.
fn measure(cmd: &mut Command) -> Result<(f64, f64), String> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and writes into the two locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{cmd:?} failed (status {status:#x})"));
    }
    Ok((ms, usage.ru_maxrss as f64))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A program: its name and how to start it in a scratch directory.
type Program = (&'static str, Box<dyn Fn(&Path) -> Command>);

fn sh(script: &'static str, args: &'static [&'static str]) -> Box<dyn Fn(&Path) -> Command> {
    Box::new(move |d: &Path| {
        let mut c = Command::new("sh");
        c.arg(programs().join(script)).args(args.iter().map(|a| a.replace("{dir}", &d.to_string_lossy())));
        c
    })
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// Runs the suite.
#[must_use]
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("programs");
    let scratch = std::env::temp_dir().join(format!("memkit-bench-programs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    let mut allocators: Vec<(&str, Option<PathBuf>)> = Vec::new();
    match memkit_library() {
        Some(lib) => allocators.push((MEMKIT, Some(lib))),
        None => report.note("libmemkit_malloc.so could not be built: memkit not measured"),
    }
    allocators.push(("glibc", None));
    match mimalloc_library() {
        Some(lib) => allocators.push(("mimalloc", Some(lib))),
        None => report.note("mimalloc not installed (Debian: apt-get install libmimalloc2.0): not measured"),
    }

    let mut list: Vec<Program> = Vec::new();
    if have("python3") {
        list.push((
            "python",
            Box::new(|_: &Path| {
                let mut c = Command::new("python3");
                c.arg(programs().join("workload.py"));
                c
            }),
        ));
    }
    if have("git") {
        list.push(("git", sh("git_session.sh", &["{dir}/repo", "40"])));
    }
    let threads = scratch.join("threads");
    let have_gcc = have("gcc");
    if have_gcc {
        let src = programs().join("compile_me.c");
        list.push((
            "gcc",
            Box::new(move |d: &Path| {
                let mut c = Command::new("gcc");
                c.args(["-O2", "-o"]).arg(d.join("prog")).arg(&src);
                c
            }),
        ));
    }
    list.push(("pipeline", sh("pipeline.sh", &["300000"])));
    if have_gcc
        && Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&threads)
            .arg(programs().join("threads.c"))
            .status()
            .is_ok_and(|s| s.success())
    {
        list.push(("threads", Box::new(move |_: &Path| Command::new(&threads))));
    }

    let rounds = if options.quick { 3 } else { 7 };
    let steps = (list.len() * rounds) as u64;
    let mut done = 0;
    for (name, make) in &list {
        let mut wall = vec![Vec::new(); allocators.len()];
        let mut rss = vec![Vec::new(); allocators.len()];
        let mut failed = vec![None; allocators.len()];
        for _ in 0..rounds {
            for (i, (_, lib)) in allocators.iter().enumerate() {
                let mut cmd = make(&scratch);
                match lib {
                    Some(l) => cmd.env("LD_PRELOAD", l),
                    None => cmd.env_remove("LD_PRELOAD"),
                };
                match measure(&mut cmd) {
                    Ok((ms, kib)) => {
                        wall[i].push(ms);
                        rss[i].push(kib);
                    }
                    Err(e) => failed[i] = Some(e),
                }
            }
            done += 1;
            options.progress(name, done, steps);
        }
        for (i, (alloc, _)) in allocators.iter().enumerate() {
            if let Some(e) = &failed[i] {
                report.note(format!("{name} under {alloc}: {e}"));
                continue;
            }
            report.push(&format!("{name} wall ms"), alloc, median(&mut wall[i]));
            report.push(&format!("{name} peak RSS KiB"), alloc, median(&mut rss[i]));
        }
    }
    report.note(format!(
        "medians of {rounds} interleaved runs; speedup = peer / memkit (above 1: memkit took less time or memory)"
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    report
}
