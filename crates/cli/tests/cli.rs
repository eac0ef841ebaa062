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

/// Runs `cmd` with `stdin` as its input; `None` if it has not ended within `secs` seconds
/// (it is killed then).
fn output_within(mut cmd: Command, stdin: &[u8], secs: u64) -> Option<Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = writer.join();
    Some(child.wait_with_output().unwrap())
}

/// Runs `script` (bytes) with `memkit run`: the exit code and stderr, within 20 seconds.
fn run_script(name: &str, script: &[u8]) -> (Option<i32>, String) {
    let file = scratch(name);
    std::fs::write(&file, script).unwrap();
    let mut cmd = memkit();
    cmd.arg("run").arg(&file);
    let out = output_within(cmd, b"", 20).unwrap_or_else(|| panic!("{name}: memkit run did not end within 20 s"));
    (out.status.code(), text(&out).1)
}

#[test]
fn a_huge_space_is_refused_naming_the_line() {
    let (code, stderr) = run_script("huge-space.memkit", b"space ok\nspace s size=0xc0000000000\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 2: space: size=: 0xc0000000000 is out of range (at most 0x100000000)"), "{stderr}");
}

#[test]
fn deeply_nested_expect_fail_is_bounded() {
    let mut script = "expect fail ".repeat(20_000);
    script.push_str("space s\n");
    let (code, stderr) = run_script("nested.memkit", script.as_bytes());
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(300)]);
    assert!(stderr.contains("line 1: longer than 4096 bytes"), "{}", &stderr[..stderr.len().min(300)]);
    let mut script = "space a\n".to_string() + &"expect fail ".repeat(300);
    script.push_str("space a\n");
    let (code, stderr) = run_script("nested2.memkit", script.as_bytes());
    assert_eq!(code, Some(1), "{}", &stderr[..stderr.len().min(300)]);
    assert!(stderr.contains("line 2: expect fail: the operation cannot itself be expect fail"), "{}", &stderr[..300]);
}

#[test]
fn endless_or_binary_input_files_are_refused_quickly() {
    for args in [&["--memory-map", "/dev/zero", "run", "x.memkit"][..], &["--memory-map", "/dev/urandom", "demo"]] {
        let mut cmd = memkit();
        cmd.args(args);
        let out = output_within(cmd, b"", 20).unwrap_or_else(|| panic!("{args:?} did not end within 20 s"));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("larger than 65536 bytes"), "{args:?}: {stderr}");
    }
    for file in ["/dev/zero", "/dev/urandom"] {
        let mut cmd = memkit();
        cmd.args(["run", file]);
        let out = output_within(cmd, b"", 20).unwrap_or_else(|| panic!("run {file} did not end within 20 s"));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains("larger than 1048576 bytes"), "{file}: {stderr}");
    }
}

#[test]
fn a_memory_map_ending_at_the_address_limit_is_an_error() {
    let map = scratch("limit.memmap");
    std::fs::write(&map, "0x0 0x9fc00 usable\n0x100000 0x10000000000000 usable\n").unwrap();
    let mut cmd = memkit();
    cmd.arg("--memory-map").arg(&map).args(["run", "/dev/null"]);
    let out = output_within(cmd, b"", 20).unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("memory map line 2: the end is at or past the physical address limit"), "{stderr}");
}

#[test]
fn numbers_are_not_truncated() {
    for (script, want) in [
        (&b"ds d 4K pool=0x100000007\n"[..], "line 1: ds: pool=: 0x100000007 is out of range (at most 0x7)"),
        (b"ds d 4K\nclose_all 0x100000001\n", "line 2: close_all: TASK: 0x100000001 is out of range"),
        (b"space a\nds d 4K\nattach r a d align=256\n", "line 3: attach: align=: 256 is out of range"),
        (b"space a\narea x a 1M align=256\n", "line 2: area: align=: 256 is out of range"),
        (b"ds d 4K owner=0x100000001\n", "line 1: ds: owner=: 0x100000001 is out of range"),
    ] {
        let (code, stderr) = run_script("numbers.memkit", script);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn expect_fail_does_not_pass_on_a_typo() {
    let (code, stderr) = run_script("typo.memkit", b"space a\nds d 4K\nattach r a d\nexpect fail stroe r 0 1\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 4: expect fail: unknown operation 'stroe'"), "{stderr}");
    let (code, stderr) = run_script("typo2.memkit", b"space a\nds d 4K\nattach r a d\nexpect fail store r 0 1 x=2\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 4: expect fail: store: 'x=2' is not a number"), "{stderr}");
}

#[test]
fn unknown_options_and_extra_words_are_named() {
    for (script, want) in [
        (&b"space a sise=1M\n"[..], "line 1: space: unknown option 'sise=' (usage: space NAME [size=SIZE])"),
        (b"space a extra\n", "line 1: space: unexpected word 'extra'"),
        (b"space a\nds d 4K contigous\n", "line 2: ds: unexpected word 'contigous'"),
        (b"space a\nds d 4K\nattach r a d\ndetach r now\n", "line 4: detach: unexpected word 'now'"),
        (b"pools all\n", "line 1: pools: unexpected word 'all'"),
        (b"space a\nds d 4K\nattach r a d\nexpect load r 0 0 extra\n", "line 4: expect load: 'extra' is not a number"),
    ] {
        let (code, stderr) = run_script("extra.memkit", script);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn a_line_that_is_not_text_is_an_error_naming_it() {
    let (code, stderr) = run_script("binary.memkit", b"space a\nds d \xff\xfe 4K\nds e 4K\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 2: not UTF-8"), "{stderr}");
    let (code, stderr) = run_script("nul.memkit", b"space a\n\0\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 2: control character 0x00"), "{stderr}");
}

#[test]
fn the_shell_reports_a_line_that_is_not_text_and_goes_on() {
    let mut input = b"space a\nds d \xff\xfe 4K\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100_000));
    input.extend_from_slice(b"\nds d 4K\ninfo d\n");
    let mut cmd = memkit();
    cmd.arg("shell");
    let out = output_within(cmd, &input, 20).expect("the shell ends at the end of its input");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("error: line 2: not UTF-8"), "{stdout}");
    assert!(stdout.contains("error: line 3: longer than 4096 bytes"), "{stdout}");
    assert!(stdout.contains("d: 4096 bytes"), "{stdout}");
}

#[test]
fn a_second_free_does_not_free_what_was_allocated_since() {
    let script = b"frames f 0 1\nfree_frames f\nframes g 0 1\nexpect fail free_frames f\nfree_frames g\n\
        xmalloc a 64\nxmfree a\nxmalloc b 64\nexpect fail xmfree a\nxmfree b\n";
    let (code, stderr) = run_script("double-free.memkit", script);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_copy_on_write_break_is_seen_through_a_second_region_of_the_same_space() {
    let file = scratch("cow-same-space.memkit");
    std::fs::write(
        &file,
        "space a\nds o 4K\nattach r1 a o\nattach r2 a o\nstore r1 0 \"old\"\ncopy c o cow\nstore r1 0 \"new\"\nexpect load r2 0 \"new\"\nattach rc a c\nexpect load rc 0 \"old\"\n",
    )
    .unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_store_with_no_frame_left_is_an_error_not_a_crash() {
    let file = scratch("no-frame-left.memkit");
    std::fs::write(&file, "frames all 0 126936\nspace a\nds d 4K\nattach r a d\nstore r 0 1\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{:?} {stderr}", out.status);
    assert!(stderr.contains("line 5:") && stderr.contains("no memory"), "{stderr}");
}

#[test]
fn a_dataspace_larger_than_its_pool_is_refused() {
    // Pool 0 of the default machine holds 496 MiB; the quota spans every pool.
    let file = scratch("larger-than-pool.memkit");
    std::fs::write(
        &file,
        "expect fail ds big 505M\nds fits 400M\nexpect fail resize fits 505M\nexpect size fits 400M\n",
    )
    .unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_closed_dataspace_is_still_reached_through_its_region_and_a_huge_space_is_refused() {
    let file = scratch("closed-still-attached.memkit");
    std::fs::write(
        &file,
        "space a\nds o 8K\nattach r a o\nstore r 0 \"x\"\nclose o\nexpect load r 0 \"x\"\nstore r 0x1000 1\n",
    )
    .unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");

    std::fs::write(&file, "space s size=0xc0000000000\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{:?} {stderr}", out.status);
    assert!(stderr.contains("line 1:") && stderr.contains("at most"), "{stderr}");
}

#[test]
fn a_read_only_share_is_attached_and_faulted_read_only() {
    let file = scratch("rights.memkit");
    let scenario = "space a\nspace b\nds d 8K\nshare ro d\nattach w a d\n\
        expect fail attach x b ro rights=rw\nattach r b ro rights=r\nstore w 4096 \"owner\"\n\
        expect load r 4096 \"owner\"\nexpect fail store r 0 \"no\"\nexpect fail share rw2 ro rights=rw\n\
        share ro2 ro rights=r\nattach r2 b ro2 rights=r\nexpect load r2 4096 \"owner\"\n";
    std::fs::write(&file, scenario).unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Without `expect fail`, the refusals name their line and the seed's code.
    std::fs::write(&file, "space a\nds d 4K\nshare ro d\nattach r a ro rights=rw\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("line 4"), "{stderr}");
    std::fs::write(&file, "space a\nds d 4K\nshare ro d\nattach r a ro rights=r\nstore r 0 1\n").unwrap();
    let out = memkit().arg("run").arg(&file).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("line 5"), "{stderr}");
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
