//! The C tests: each `tests/c/seedNNN_*.c` is compiled against `include/memkit.h` with the
//! system's C compiler, linked with `libmemkit.so` from this build, run, and must print
//! `ok` and exit 0. They call every seed's entries through the header, load and store
//! through attached regions, and check the error paths' codes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of this build's `libmemkit.so` (`target/<profile>/deps`, beside the test).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let deps = exe.parent().expect("the test lives in a directory").to_path_buf();
    for dir in [deps.clone(), deps.parent().map(Path::to_path_buf).unwrap_or_default()] {
        if dir.join("libmemkit.so").exists() {
            return dir;
        }
    }
    panic!("libmemkit.so is not built beside {}", deps.display());
}

fn run_c(name: &str) {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = crate_dir.join("tests/c").join(format!("{name}.c"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib = lib_dir();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let compiled = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lmemkit")
        .output()
        .unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(
        compiled.status.success(),
        "{name}.c does not compile:\n{}{}",
        String::from_utf8_lossy(&compiled.stdout),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&out).output().expect("the C test runs");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success() && stdout.trim_end().ends_with("ok"),
        "{name}: {:?}\n{stdout}{}",
        ran.status,
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[test]
fn seed000_l4re_mem_alloc() {
    run_c("seed000_l4re_mem_alloc");
}

#[test]
fn seed001_l4re_rm() {
    run_c("seed001_l4re_rm");
}

#[test]
fn seed002_xmalloc() {
    run_c("seed002_xmalloc");
}

#[test]
fn seed003_l4dm() {
    run_c("seed003_l4dm");
}

#[test]
fn seed004_pmallocator() {
    run_c("seed004_pmallocator");
}

#[test]
fn seed000_factory() {
    run_c("seed000_factory");
}

#[test]
fn seed001_rm_lists() {
    run_c("seed001_rm_lists");
}

#[test]
fn seed003_l4rm_areas() {
    run_c("seed003_l4rm_areas");
}
