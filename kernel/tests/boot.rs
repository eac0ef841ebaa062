//! Boots the kernel under QEMU (TCG, four CPUs) and checks the verdict of its in-kernel test suite: the
//! serial output must end in `N passed, 0 failed` and QEMU must leave through
//! `isa-debug-exit` with the success status.
//!
//! Without QEMU the test fails when the environment variable `CI` is set and is skipped
//! (with a message) otherwise.
//!
//! The image is the package's own binary, which cargo builds for this test.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `isa-debug-exit` ends QEMU with `(value << 1) | 1`; the kernel writes 0x10 on success.
const SUCCESS_STATUS: i32 = (0x10 << 1) | 1;
const TIMEOUT: Duration = Duration::from_secs(300);
const QEMU: &str = "qemu-system-x86_64";
/// The most CPUs QEMU gives the kernel; every one must come online. TCG runs them on host
/// threads of their own (`thread=multi`), so they really run at the same time.
const CPUS: usize = 4;

/// Boots the kernel with `command_line`; its serial output and QEMU's exit status, or
/// `None` when QEMU is missing outside CI.
fn boot(cpus: usize, command_line: &str) -> Option<(String, std::process::ExitStatus)> {
    if Command::new(QEMU).arg("--version").stdout(Stdio::null()).status().is_err() {
        assert!(std::env::var_os("CI").is_none(), "{QEMU} is missing: install qemu-system-x86");
        eprintln!("skipped: {QEMU} is missing (install qemu-system-x86 to boot the kernel)");
        return None;
    }
    let kernel = env!("CARGO_BIN_EXE_memkit-kernel");
    let mut child = Command::new(QEMU)
        .args(["-machine", "q35", "-accel", "tcg,thread=multi", "-m", "512M", "-smp", &cpus.to_string()])
        .args(["-display", "none", "-serial", "stdio"])
        .args(["-monitor", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", command_line])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("QEMU starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        stdout.read_to_string(&mut output).expect("QEMU's serial output is text");
        output
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("QEMU can be waited for") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            child.kill().expect("QEMU can be killed");
            child.wait().expect("QEMU can be reaped");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().expect("the reader thread finishes");
    println!("{output}");
    let status = status.unwrap_or_else(|| panic!("the kernel did not finish within {TIMEOUT:?}"));
    Some((output, status))
}

/// Boots the kernel on `cpus` CPUs and checks its verdict: every CPU online, every in-kernel
/// test passed.
fn boots_and_passes_on(cpus: usize) {
    let Some((output, status)) = boot(cpus, "") else { return };
    let verdict = output
        .lines()
        .rev()
        .find_map(|line| {
            let line = line.trim_end_matches('\r');
            let (passed, rest) = line.split_once(" passed, ")?;
            let failed = rest.strip_suffix(" failed")?;
            Some((passed.parse::<u32>().ok()?, failed.parse::<u32>().ok()?))
        })
        .expect("the kernel prints `N passed, M failed`");
    let (passed, failed) = verdict;
    assert_eq!(failed, 0, "in-kernel tests failed on {cpus} CPUs");
    assert!(passed >= 40, "too few in-kernel tests ran on {cpus} CPUs: {passed}");
    assert!(output.contains("counts: "), "the kernel reports its counts");
    assert!(output.contains(&format!("memkit kernel: {cpus} CPUs online")), "every CPU came online");
    assert!(!output.contains("PANIC") && !output.contains("FATAL"), "the kernel reported a fatal error");
    assert_eq!(status.code(), Some(SUCCESS_STATUS), "QEMU's exit status says the kernel failed on {cpus} CPUs");
}

/// Every in-kernel test passes on one CPU and on each count up to [`CPUS`] (one boot each,
/// one after the other).
#[test]
fn kernel_boots_and_passes_its_tests_on_1_to_4_cpus() {
    for cpus in 1..=CPUS {
        boots_and_passes_on(cpus);
    }
}

/// The `bench` boot mode runs on every CPU and prints its tables: one round of IPIs per
/// detach and per operation across 8 regions, to every other CPU, frame throughput for 1 to
/// 4 CPUs without a failed allocation, and the faults per MiB touched with 2 MiB and 4 KiB
/// entries.
#[test]
fn kernel_bench_mode_prints_its_figures() {
    let Some((output, status)) = boot(CPUS, "bench") else { return };
    assert!(output.contains(&format!("bench: {CPUS} CPUs")), "the bench ran on every CPU");
    let others = CPUS - 1;
    for pages in [1, 32, 1024] {
        let row = format!("| {pages} pages | 1 | {others} |");
        assert!(output.contains(&row), "one round of {others} IPIs for a detach of {pages} pages");
    }
    for op in ["copy-on-write copy", "protect to read-only", "shrink to one page"] {
        let row = format!("| {op} | 1 | {others} |");
        assert!(output.contains(&row), "one round of {others} IPIs for a {op} across 8 regions");
    }
    for cpus in [1, 2, 4] {
        assert!(output.contains(&format!("| per-CPU caches | {cpus} |")), "frame throughput on {cpus} CPUs");
    }
    assert!(output.contains("bench: 0 failed allocations"));
    // 8 MiB touched page by page: one fault per 2 MiB entry, one per 4 KiB page.
    assert!(output.contains("| 2 MiB | 8 | 4 | 0.5 |"), "one fault per 2 MiB block");
    assert!(output.contains("| 4 KiB | 8 | 2048 | 256 |"), "one fault per 4 KiB page");
    assert!(!output.contains("PANIC") && !output.contains("FATAL"), "the kernel reported a fatal error");
    assert_eq!(status.code(), Some(SUCCESS_STATUS), "QEMU's exit status says the bench failed");
}
