//! Real programs with memkit as their malloc (`LD_PRELOAD=libmemkit_malloc.so`), each run once
//! plainly and once preloaded, with their output compared: Python (sqlite, JSON, small
//! objects), git (commits, `log --stat`, `gc`), gcc (compiling and running a C file), a
//! shell pipeline, and a C program whose threads malloc and free across each other while
//! it forks and a signal handler allocates inside malloc.
//!
//! The library is the cdylib cargo builds next to this test's profile directory; when it is
//! not there (a test run that did not build it), the test builds it first.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// `libmemkit_malloc.so` of this test's profile, built when absent.
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's path");
        // target/<profile>/deps/programs-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let lib = profile_dir.join("libmemkit_malloc.so");
        if !lib.exists() {
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(p) => p,
            };
            let target = profile_dir.parent().expect("the target directory");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "memkit-malloc", "--lib", "--profile", profile])
                .env("CARGO_TARGET_DIR", target)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building libmemkit_malloc.so");
        }
        assert!(lib.exists(), "{} exists", lib.display());
        lib
    })
}

/// A scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memkit-programs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch directory");
    d
}

fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{tool} is not installed: this program is not run");
    }
    found
}

/// How long a program may run: a hang (a deadlock in the preloaded malloc) fails the test
/// instead of stopping the test run.
const LIMIT: Duration = Duration::from_secs(600);

/// The program's output; it is killed, and the test fails, when it runs longer than `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the program starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the program") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {limit:?}: killed (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().expect("reader"), stderr: err.join().expect("reader") }
}

fn run(mut cmd: Command, preload: bool) -> Output {
    if preload {
        cmd.env("LD_PRELOAD", library());
    } else {
        cmd.env_remove("LD_PRELOAD");
    }
    let out = output_within(&mut cmd, LIMIT);
    assert!(
        out.status.success(),
        "{:?} (preloaded: {preload}) failed: {}\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the command plainly and preloaded; their standard outputs are the same.
fn same_output(make: impl Fn() -> Command) -> String {
    let plain = run(make(), false);
    let memkit = run(make(), true);
    let (a, b) = (String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&memkit.stdout));
    assert_eq!(a, b, "the outputs differ");
    assert!(!a.is_empty(), "the program printed something");
    b.into_owned()
}

fn gcc(src: &str, out: &Path, extra: &[&str]) {
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(out)
        .arg(programs().join(src))
        .args(extra)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {src}");
}

#[test]
fn memkit_serves_the_preloaded_process() {
    if !have("gcc") {
        return;
    }
    let d = scratch("usable");
    let exe = d.join("usable");
    gcc("usable.c", &exe, &[]);
    let ours = run(Command::new(&exe), true);
    // memkit's smallest block is 16 bytes (glibc's 24).
    assert_eq!(String::from_utf8_lossy(&ours.stdout).trim(), "16");
    let theirs = run(Command::new(&exe), false);
    assert_ne!(String::from_utf8_lossy(&theirs.stdout).trim(), "16");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn python_sqlite_json_and_small_objects() {
    if !have("python3") {
        return;
    }
    let out = same_output(|| {
        let mut c = Command::new("python3");
        c.arg(programs().join("workload.py"));
        c
    });
    assert!(out.contains("json") && out.contains("True"), "{out}");
}

#[test]
fn git_commits_log_and_gc() {
    if !have("git") {
        return;
    }
    let d = scratch("git");
    let out = same_output(|| {
        let mut c = Command::new("sh");
        c.arg(programs().join("git_session.sh")).arg(d.join("repo")).arg("40");
        c
    });
    assert!(out.contains("packs: 1"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn gcc_compiles_and_the_program_runs() {
    if !have("gcc") {
        return;
    }
    let d = scratch("gcc");
    let src = programs().join("compile_me.c");
    let out = same_output(|| {
        let mut c = Command::new("sh");
        c.arg("-c").arg("gcc -O2 -Wall -o \"$1/prog\" \"$2\" && \"$1/prog\"").arg("sh").arg(&d).arg(&src);
        c
    });
    assert!(out.starts_with("distinct "), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_shell_pipeline() {
    let out = same_output(|| {
        let mut c = Command::new("sh");
        c.arg(programs().join("pipeline.sh")).arg("300000");
        c
    });
    assert_eq!(out.lines().count(), 21, "{out}");
}

#[test]
fn threads_fork_and_a_signal_handler_that_allocates() {
    if !have("gcc") {
        return;
    }
    let d = scratch("threads");
    let exe = d.join("threads");
    gcc("threads.c", &exe, &["-pthread"]);
    // glibc's malloc may deadlock when a signal handler allocates inside it: the plain run
    // goes without the handler, the preloaded one with it, and their sums are the same.
    let plain = run(Command::new(&exe), false);
    let mut with_signals = Command::new(&exe);
    with_signals.arg("signals");
    let memkit = run(with_signals, true);
    let out = String::from_utf8_lossy(&memkit.stdout);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), out);
    assert!(out.contains("forks 5"), "every forked child allocated in a whole heap: {out}");
    let err = String::from_utf8_lossy(&memkit.stderr);
    assert!(err.contains("signals seen"), "the handler allocated: {err}");
    let _ = std::fs::remove_dir_all(d);
}
