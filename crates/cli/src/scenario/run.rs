//! Running scenarios: text and bytes on a session, a file (`memkit run`), and the
//! interactive shell (`memkit shell`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::Session;
use crate::hosted::{self, Hosted};
use crate::input::{self, LineRead, MAX_LINE_BYTES, MAX_SCRIPT_BYTES};

/// Runs every line of `text`; the number of lines run, or the first error with its line
/// number.
///
/// # Errors
/// `line N: what is wrong` and the line.
pub fn run_text(session: &mut Session<'_>, text: &str, mut echo: impl FnMut(Vec<String>)) -> Result<usize, String> {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        session.line(line).map_err(|e| format!("line {}: {e}\n  {}", i + 1, line.trim()))?;
        echo(session.take_output());
        n += 1;
    }
    Ok(n)
}

/// Runs the bytes of a scenario: checked as text first (see [`input::text`]), then line by
/// line.
///
/// # Errors
/// What is wrong with the text, or the first failing line, each naming the line.
pub fn run_bytes(session: &mut Session<'_>, bytes: &[u8], echo: impl FnMut(Vec<String>)) -> Result<usize, String> {
    let text = input::text(bytes, MAX_SCRIPT_BYTES)?;
    run_text(session, text, echo)
}

/// Runs the scenario `file` on an already booted stack.
///
/// # Errors
/// The exit code after printing the error.
pub(crate) fn run_into(h: &mut Hosted, file: &Path) -> Result<(), ExitCode> {
    let text = input::read_text_file(file, MAX_SCRIPT_BYTES).map_err(|e| {
        eprintln!("memkit: {e}");
        ExitCode::from(2)
    })?;
    let mut session = Session::new(h);
    run_text(&mut session, &text, |lines| lines.iter().for_each(|l| println!("{l}"))).map_err(|e| {
        eprintln!("memkit: {}: {e}", file.display());
        ExitCode::from(1)
    })?;
    Ok(())
}

/// `memkit run FILE`.
pub(crate) fn run_file(map: Option<&Path>, file: &Path) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    match run_into(&mut h, file) {
        Ok(()) => {
            println!("{}: ok ({} faults resolved)", file.display(), memkit_host::faults_resolved());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `memkit shell`: a line that is not text or too long is reported and skipped; the shell
/// ends at the end of its input, `quit` or `exit`.
pub(crate) fn shell(map: Option<&Path>) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let mut session = Session::new(&mut h);
    println!("memkit shell: the scenario language, one operation per line; 'help' lists them, 'quit' ends.");
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        print!("memkit> ");
        let _ = std::io::stdout().flush();
        number += 1;
        let line = match input::read_line(&mut reader, &mut buf) {
            Ok(LineRead::End) => break,
            Ok(LineRead::Line) => match input::line_text(&buf) {
                Ok(t) => t,
                Err(e) => {
                    println!("error: line {number}: {e}");
                    continue;
                }
            },
            Ok(LineRead::TooLong) => {
                println!("error: line {number}: longer than {MAX_LINE_BYTES} bytes");
                continue;
            }
            Err(e) => {
                eprintln!("memkit: reading the input: {e}");
                return ExitCode::from(2);
            }
        };
        let t = line.trim();
        if t == "quit" || t == "exit" {
            break;
        }
        match session.line(line) {
            Ok(()) => session.take_output().iter().for_each(|l| println!("{l}")),
            Err(e) => {
                session.take_output().iter().for_each(|l| println!("{l}"));
                println!("error: {e}");
            }
        }
    }
    ExitCode::SUCCESS
}
