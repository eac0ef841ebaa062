//! Parsing: a line into words, the words against `OPERATIONS` into a [`Command`].

use std::collections::BTreeMap;

use memkit_dataspace::ClientId;
use memkit_types::{PhysAddr, VirtAddr};

use super::{Kind, MAX_NAME_BYTES, OPERATIONS, Operation, Res, Value};
use crate::input::MAX_LINE_BYTES;

/// A parsed operation: every word checked against its kind, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub(super) op: &'static Operation,
    /// The words of the line, as written.
    pub(super) words: Vec<String>,
    /// The positional words, parsed.
    pub(super) args: Vec<Value>,
    /// The positional words as written (for messages that echo them).
    pub(super) raw: Vec<String>,
    pub(super) options: BTreeMap<&'static str, Value>,
    pub(super) flags: Vec<&'static str>,
}

impl Command {
    /// The operation's name (`expect` operations are two words).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.op.name
    }

    /// The line's words, as written (a string keeps its opening quote).
    #[must_use]
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Positional word `i` as written.
    pub(super) fn raw(&self, i: usize) -> &str {
        self.raw.get(i).map_or("", String::as_str)
    }

    pub(super) fn text(&self, i: usize) -> Res<&str> {
        match self.args.get(i) {
            Some(Value::Text(t)) => Ok(t),
            _ => Err(format!("{}: word {} is not a name", self.op.name, i + 1)),
        }
    }

    pub(super) fn number(&self, i: usize) -> Res<u64> {
        match self.args.get(i) {
            Some(Value::Number(n)) => Ok(*n),
            _ => Err(format!("{}: word {} is not a number", self.op.name, i + 1)),
        }
    }

    pub(super) fn bytes(&self, i: usize) -> Res<&[u8]> {
        match self.args.get(i) {
            Some(Value::Bytes(b)) => Ok(b),
            _ => Err(format!("{}: word {} is not data", self.op.name, i + 1)),
        }
    }

    pub(super) fn option_number(&self, key: &str) -> Res<Option<u64>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(*n)),
            Some(_) => Err(format!("{}: {key}= is not a number", self.op.name)),
        }
    }

    pub(super) fn option_text(&self, key: &str) -> Res<Option<&str>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(format!("{}: {key}= is not a word", self.op.name)),
        }
    }

    pub(super) fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    pub(super) fn owner(&self) -> Res<ClientId> {
        Ok(ClientId::new(narrow(self.option_number("owner")?.unwrap_or(1), "TASK")?, 0))
    }

    pub(super) fn align(&self, default: u8) -> Res<u8> {
        self.option_number("align")?.map_or(Ok(default), |v| narrow(v, "LOG2"))
    }
}

/// A number into its target type; the parser checked the range, so this fails only when the
/// table and a handler disagree.
pub(super) fn narrow<T: TryFrom<u64>>(v: u64, what: &str) -> Res<T> {
    T::try_from(v).map_err(|_| format!("{what} {v:#x} is out of range"))
}

fn number(s: &str) -> Res<u64> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if !hex.starts_with('+') => u64::from_str_radix(hex, 16),
        None if !digits.starts_with('+') => digits.parse::<u64>(),
        _ => return Err(format!("'{s}' is not a number")),
    };
    match v {
        Ok(v) => v.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large (above 2^64)")),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(format!("'{s}' is too large (above 2^64)")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// Splits a line into words; a double-quoted string is one word (quotes kept, escapes
/// resolved: `\n`, `\"`, `\\`); `#` at the start of a word begins a comment.
fn words(line: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => w.push('\n'),
                        Some(o) => w.push(o),
                        None => return Err("unfinished string".into()),
                    },
                    Some(o) => w.push(o),
                    None => return Err("unfinished string".into()),
                }
            }
            out.push(w);
        } else if c == '#' {
            break;
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn data(words: &[String]) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    for w in words {
        if let Some(s) = w.strip_prefix('"') {
            out.extend_from_slice(s.as_bytes());
        } else {
            let v = number(w)?;
            out.push(u8::try_from(v).map_err(|_| format!("byte {w} is above 255"))?);
        }
    }
    if out.is_empty() {
        return Err("no data".into());
    }
    Ok(out)
}

/// Parses `word` as `what` of kind `kind` (not `Data` nor `Operation`).
fn value(kind: Kind, what: &str, word: &str) -> Res<Value> {
    if word.starts_with('"') {
        return Err(format!("{what}: a string where a word is expected"));
    }
    match kind {
        Kind::Name => {
            let mut chars = word.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                return Err(format!("{what}: '{word}' is not a name (a letter or _, then letters, digits, _ - .)"));
            }
            if word.len() > MAX_NAME_BYTES {
                return Err(format!("{what}: a name longer than {MAX_NAME_BYTES} bytes"));
            }
            Ok(Value::Text(word.to_string()))
        }
        Kind::Number(max) => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            if v > max {
                return Err(format!("{what}: {word} is out of range (at most {max:#x})"));
            }
            Ok(Value::Number(v))
        }
        Kind::PhysAddr => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            PhysAddr::try_new(v).map_err(|e| format!("{what}: {e}"))?;
            Ok(Value::Number(v))
        }
        Kind::VirtAddr => {
            let v = number(word).map_err(|e| format!("{what}: {e}"))?;
            let a = usize::try_from(v).map_err(|_| format!("{what}: {word} does not fit an address"))?;
            VirtAddr::try_new(a).map_err(|e| format!("{what}: {e}"))?;
            Ok(Value::Number(v))
        }
        Kind::Choice(words) => match words.iter().find(|w| **w == word) {
            Some(w) => Ok(Value::Text((*w).to_string())),
            None => Err(format!("{what}: '{word}' (want {})", words.join(", "))),
        },
        Kind::Data | Kind::Operation => Err(format!("{what}: the language table is inconsistent")),
    }
}

/// Parses one line against `OPERATIONS`: `None` for a blank line or a comment.
///
/// # Errors
/// What is wrong: an unknown operation, option, flag or extra word (named), a missing word,
/// a number out of its range, a malformed name, string or datum. The message ends with the
/// operation's usage where that helps.
pub fn parse_line(line: &str) -> Result<Option<Command>, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
    }
    let w = words(line)?;
    if w.is_empty() {
        return Ok(None);
    }
    parse_words(&w, false).map(Some)
}

fn parse_words(w: &[String], nested: bool) -> Res<Command> {
    let (name, rest) = match w.first().map(String::as_str) {
        None => return Err("no operation".into()),
        Some("expect") => match w.get(1) {
            Some(what) => (format!("expect {what}"), &w[2..]),
            None => return Err("usage: expect load|size|owner|free|fail ...".into()),
        },
        Some(op) => (op.to_string(), &w[1..]),
    };
    let Some(op) = OPERATIONS.iter().find(|o| o.name == name) else {
        return Err(if let Some(what) = name.strip_prefix("expect ") {
            format!("expect {what}: unknown (want load, size, owner, free or fail)")
        } else {
            format!("unknown operation '{name}' (try: help)")
        });
    };
    if nested && op.name == "expect fail" {
        return Err("the operation cannot itself be expect fail".into());
    }
    let usage = || format!("usage: {}", op.usage());
    let mut cmd = Command {
        op,
        words: w.to_vec(),
        args: Vec::new(),
        raw: Vec::new(),
        options: BTreeMap::new(),
        flags: Vec::new(),
    };
    let mut k = 0;
    while k < rest.len() {
        let word = rest[k].as_str();
        match op.args.get(cmd.args.len()) {
            Some((_, Kind::Data)) => {
                cmd.args.push(Value::Bytes(data(&rest[k..]).map_err(|e| format!("{}: {e}", op.name))?));
                break;
            }
            Some((_, Kind::Operation)) => {
                let inner = parse_words(&rest[k..], true).map_err(|e| format!("expect fail: {e}"))?;
                cmd.args.push(Value::Operation(Box::new(inner)));
                break;
            }
            _ => {}
        }
        // `key=value` with a word for a key; `=`, `<=` and `>=` are comparisons, not options.
        if let Some((key, v)) = word.split_once('=')
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            let Some(&(key, _, kind)) = op.options.iter().find(|(k, _, _)| *k == key) else {
                return Err(format!("{}: unknown option '{key}=' ({})", op.name, usage()));
            };
            let v = value(kind, &format!("{key}="), v).map_err(|e| format!("{}: {e}", op.name))?;
            if cmd.options.insert(key, v).is_some() {
                return Err(format!("{}: option '{key}=' given twice", op.name));
            }
        } else if let Some(&flag) = op.flags.iter().find(|f| **f == word) {
            if cmd.flags.contains(&flag) {
                return Err(format!("{}: flag '{flag}' given twice", op.name));
            }
            cmd.flags.push(flag);
        } else if let Some(&(what, kind)) = op.args.get(cmd.args.len()) {
            cmd.args.push(value(kind, what, word).map_err(|e| format!("{}: {e}", op.name))?);
            cmd.raw.push(word.to_string());
        } else {
            return Err(format!("{}: unexpected word '{word}' ({})", op.name, usage()));
        }
        k += 1;
    }
    if let Some((what, _)) = op.args.get(cmd.args.len()) {
        return Err(format!("{}: missing {what} ({})", op.name, usage()));
    }
    Ok(cmd)
}
