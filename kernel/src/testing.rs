//! The in-kernel test runner: runs named checks, prints one line per test and the verdict
//! `N passed, M failed`, then leaves QEMU with a status that says whether all passed.

use crate::serial::{ExitCode, exit, println};

/// Why a test failed: the condition and the line that checked it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    /// The failed condition, as written.
    pub(crate) what: &'static str,
    /// The line of the check.
    pub(crate) line: u32,
}

/// A test's outcome.
pub(crate) type TestResult = Result<(), Failure>;

/// Fails the enclosing test (returns `Err`) when the condition is false.
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::testing::Failure { what: stringify!($cond), line: line!() });
        }
    };
}

/// Fails the enclosing test when the two values differ, printing both.
macro_rules! check_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            $crate::serial::println!("    left:  {:?}\n    right: {:?}", left, right);
            return Err($crate::testing::Failure {
                what: concat!(stringify!($left), " == ", stringify!($right)),
                line: line!(),
            });
        }
    }};
}

pub(crate) use {check, check_eq};

/// Counts tests as they run.
#[derive(Debug, Default)]
pub(crate) struct Runner {
    passed: u32,
    failed: u32,
}

impl Runner {
    /// Runs one test and prints its outcome.
    pub(crate) fn run(&mut self, name: &str, test: impl FnOnce() -> TestResult) {
        match test() {
            Ok(()) => {
                self.passed += 1;
                println!("test {name} ... ok");
            }
            Err(failure) => {
                self.failed += 1;
                println!("test {name} ... FAILED: {} (line {})", failure.what, failure.line);
            }
        }
    }

    /// Prints the verdict and leaves QEMU.
    pub(crate) fn finish(self) -> ! {
        println!("{} passed, {} failed", self.passed, self.failed);
        exit(if self.failed == 0 { ExitCode::Success } else { ExitCode::Failure })
    }
}
