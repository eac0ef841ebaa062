//! The memkit command end to end: the demo, every example scenario, errors that name their
//! line, the shell surviving errors, pictures, and `--help` everywhere.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn memkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memkit"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkit-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "memkit"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_demo_passes_every_check_and_draws_a_picture() {
    let svg = scratch("demo.svg");
    let out = memkit().args(["demo", "--svg"]).arg(&svg).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("| 7 ISA DMA |"), "{stdout}");
    assert!(stdout.contains("first-touch latency: p50"), "{stdout}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("pool 7 (ISA)"), "{}", &picture[..200.min(picture.len())]);
}

#[test]
fn the_demo_runs_on_another_machine() {
    let map = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../machines/qemu-pc-4g.memmap");
    let svg = scratch("demo-4g.svg");
    let out = memkit().arg("--memory-map").arg(&map).args(["demo", "--svg"]).arg(&svg).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("0x0140000000"), "{stdout}");
}

#[test]
fn a_malformed_memory_map_names_its_line() {
    let map = scratch("bad.memmap");
    std::fs::write(&map, "0x0 0x9fc00 usable\n# fine\n0x100000 0x2000000 usable extra\n").unwrap();
    for cmd in [&["demo"][..], &["map"], &["run", "whatever.memkit"]] {
        let out = memkit().arg("--memory-map").arg(&map).args(cmd).output().unwrap();
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains("line 3"), "{cmd:?}: {stderr}");
    }
}

#[test]
fn every_example_scenario_runs() {
    let files = examples();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let out = memkit().arg("run").arg(&file).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}:\n{stdout}\n{stderr}", file.display());
        assert!(stdout.contains(": ok ("), "{stdout}");
    }
}

#[test]
fn a_failing_expectation_names_its_line_and_fails_the_run() {
    let file = scratch("failing.memkit");
    std::fs::write(&file, "space a\nds d 4K\nattach r a d\n\nstore r 0 1 2\nexpect load r 0 1 3\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 6:") && stderr.contains("expect load r 0 1 3"), "{stderr}");

    std::fs::write(&file, "space a\nfrobnicate 3\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(stderr.contains("line 2: unknown operation 'frobnicate'"), "{stderr}");

    std::fs::write(&file, "space a\nexpect fail space b\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(stderr.contains("line 2: expected 'space b' to fail"), "{stderr}");
}

#[test]
fn the_shell_reports_errors_and_goes_on() {
    let mut child = memkit().arg("shell").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"help\nspace a\nds d 4K\nattach r a d\nstore r 0x9999 1\nfrobnicate\nstore r 0 \"hi\"\nload r 0 2\nquit\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("operations (one per line"), "{stdout}");
    assert!(stdout.contains("error: r+0x9999"), "{stdout}");
    assert!(stdout.contains("error: unknown operation 'frobnicate'"), "{stdout}");
    assert!(stdout.contains("r+0: 68 69"), "{stdout}");
}

#[test]
fn map_draws_the_machine_and_a_scenarios_end_state() {
    let svg = scratch("map.svg");
    let out = memkit().args(["map", "--svg"]).arg(&svg).output().unwrap();
    assert!(out.status.success());
    assert!(std::fs::read_to_string(&svg).unwrap().contains("physical memory as booted"));
    let kinds = examples().into_iter().find(|p| p.ends_with("kinds.memkit")).unwrap();
    let out = memkit().args(["map", "--scenario"]).arg(&kinds).arg("--svg").arg(&svg).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("physical memory after"));
}

#[test]
fn every_command_has_help() {
    for cmd in [&[][..], &["demo"], &["run"], &["shell"], &["map"], &["bench"]] {
        let out = memkit().args(cmd).arg("--help").output().unwrap();
        let (stdout, _) = text(&out);
        assert!(out.status.success(), "{cmd:?}");
        assert!(stdout.contains("Usage:"), "{cmd:?}: {stdout}");
        assert!(stdout.contains("--memory-map"), "{cmd:?}: {stdout}");
    }
    let out = memkit().args(["bench", "--help"]).output().unwrap();
    assert!(text(&out).0.contains("fault"));
    let out = memkit().args(["bench", "nosuchsuite"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A second `free_frames` of a name once gave back whatever the frames had become since:
/// here a page of the kernel heaps, which `frames g` then handed out again while the heap
/// still used it.
#[test]
fn freed_frames_cannot_be_freed_again_under_their_new_owner() {
    let file = scratch("refree.memkit");
    std::fs::write(
        &file,
        "frames f 0 1\nfree_frames f\nxmalloc b 100\nexpect fail free_frames f\nframes g 0 1\nxmfree b\n",
    )
    .unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let at = |name: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("frames {name} at ")).map(str::to_owned));
    assert_ne!(at("f"), at("g"), "{stdout}");
}
