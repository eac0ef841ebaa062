use memkit_types::PhysAddr;

use super::*;
use crate::input::MAX_LINE_BYTES;

fn err(line: &str) -> String {
    parse_line(line).unwrap_err()
}

#[test]
fn every_operation_has_a_distinct_name_and_a_line_in_help() {
    let h = help();
    for (i, op) in OPERATIONS.iter().enumerate() {
        assert!(h.contains(&op.usage()), "{}", op.name);
        assert!(OPERATIONS[i + 1..].iter().all(|o| o.name != op.name), "{}", op.name);
        for (k, (_, kind)) in op.args.iter().enumerate() {
            if matches!(kind, Kind::Data | Kind::Operation) {
                assert_eq!(k + 1, op.args.len(), "{}: rest-of-line words come last", op.name);
            }
        }
    }
}

#[test]
fn the_ranges_match_the_types() {
    assert_eq!(usize::try_from(MAX_POOL + 1), Ok(memkit_phys::POOL_COUNT));
    assert_eq!(u32::try_from(MAX_TASK), Ok(u32::MAX));
}

#[test]
fn numbers_are_never_truncated() {
    assert!(err("ds d 4K pool=0x100000007").contains("pool=: 0x100000007 is out of range"));
    assert!(err("ds d 4K pool=8").contains("out of range"));
    assert!(err("close_all 0x100000001").contains("TASK: 0x100000001 is out of range"));
    assert!(err("attach r a d align=256").contains("align=: 256 is out of range"));
    assert!(err("area x a 4K align=64").contains("out of range"));
    assert!(err("xmalloc b 8 align=0x100000003").contains("out of range"));
    assert!(err("ds d 4K owner=0x100000001").contains("owner=: 0x100000001 is out of range"));
    assert!(err("expect owner d 0x100000001").contains("out of range"));
    assert!(err("frames f 0x100000000 1").contains("POOL: 0x100000000 is out of range"));
    assert!(err("ds d 18446744073709551616").contains("too large"));
    assert!(err("ds d 0xffffffffffffffffK").contains("too large"));
    assert!(err("ds d 16777216T").contains("not a number"));
    assert!(err("ds d -1").contains("not a number"));
    assert!(err("ds d +1").contains("not a number"));
    assert!(err("ds d 4K at=0x10000000000000").contains("exceeds 52 bits"));
    assert!(err("attach r a d at=0x800000000000").contains("not canonical"));
    assert!(err("store r 0 256").contains("above 255"));
    assert!(parse_line("ds d 0xffffffffffffffff pool=7 align=63 owner=0xffffffff").unwrap().is_some());
}

#[test]
fn sizes_beyond_the_documented_limits_are_refused() {
    assert!(err("space s size=0xc0000000000").contains("size=: 0xc0000000000 is out of range (at most 0x100000000)"));
    assert!(parse_line("space s size=4G").is_ok());
    assert!(err("load r 0 0x10001").contains("LEN: 0x10001 is out of range"));
    assert!(err("area x a 5G").contains("out of range"));
    assert!(err("attach r a d size=5G").contains("out of range"));
}

#[test]
fn unknown_options_flags_and_extra_words_are_named() {
    assert!(err("space s sise=4K").contains("unknown option 'sise='"));
    assert!(err("space s extra").contains("unexpected word 'extra'"));
    assert!(err("ds d 4K contigous").contains("unexpected word 'contigous'"));
    assert!(err("ds d 4K cow").contains("unexpected word 'cow'"));
    assert!(err("detach r r2").contains("unexpected word 'r2'"));
    assert!(err("pools now").contains("unexpected word 'now'"));
    assert!(err("close_all 1 2").contains("unexpected word '2'"));
    assert!(err("ds d 4K pool=1 pool=2").contains("given twice"));
    assert!(err("ds d 4K pinned pinned").contains("given twice"));
    assert!(err("ds d").contains("missing SIZE (usage: ds NAME SIZE"));
    assert!(err("expect size d").contains("missing N"));
    assert!(err("expect frobnicate d").contains("expect frobnicate: unknown"));
    assert!(err("expect").contains("usage: expect"));
    for op in ["=", "==", "<=", ">=", "<", ">"] {
        assert!(parse_line(&format!("expect free 0 {op} 5")).unwrap().is_some(), "{op}");
    }
    assert!(err("expect free 0 => 5").contains("'=>'"));
    assert!(err("space =4K").contains("'=4K' is not a name"));
    assert!(err("space s =4K").contains("unexpected word '=4K'"));
    assert!(err("ds 4K 4K").contains("is not a name"));
    assert!(err("ds \"d\" 4K").contains("a string where a word is expected"));
    assert!(err("store r 0 \"unfinished").contains("unfinished string"));
    assert!(err("store r 0").contains("missing DATA"));
    assert!(err("store r 0 1 x=2").contains("not a number"));
    assert!(err(&format!("space {}", "n".repeat(MAX_NAME_BYTES + 1))).contains("longer than"));
}

#[test]
fn expect_fail_requires_a_well_formed_operation_and_does_not_nest() {
    assert!(err("expect fail stroe r 0 1").contains("expect fail: unknown operation 'stroe'"));
    assert!(err("expect fail store r 0").contains("expect fail: store: missing DATA"));
    assert!(err("expect fail space s size=0x1000000000000").contains("out of range"));
    assert!(err("expect fail").contains("missing OPERATION"));
    assert!(err("expect fail expect fail space s").contains("cannot itself be expect fail"));
    let deep = "expect fail ".repeat(20_000) + "space s";
    let e = err(&deep);
    assert!(e.contains("longer than") || e.contains("cannot itself"), "{}", &e[..e.len().min(200)]);
    let c = parse_line("expect fail expect load r 0 1").unwrap().unwrap();
    assert_eq!(c.name(), "expect fail");
    assert!(parse_line("expect fail store r 64K 1").unwrap().is_some());
}

#[test]
fn comments_blank_lines_and_strings() {
    assert_eq!(parse_line(""), Ok(None));
    assert_eq!(parse_line("   # just a comment"), Ok(None));
    let c = parse_line("store r 0x10 \"a b#c\" 0xff 7 # the rest").unwrap().unwrap();
    assert_eq!(c.args[2], Value::Bytes(b"a b#c\xff\x07".to_vec()));
    let c = parse_line("store r 0 \"x=1\"").unwrap().unwrap();
    assert_eq!(c.args[2], Value::Bytes(b"x=1".to_vec()));
    assert!(err(&"a".repeat(MAX_LINE_BYTES + 1)).contains("longer than"));
}

/// A word of `kind`: in range when `good`, out of range (or malformed) otherwise.
fn word(kind: Kind, good: bool, r: u64) -> String {
    match (kind, good) {
        (Kind::Name, true) => format!("n{r}"),
        (Kind::Name, false) => format!("{}x", r % 10),
        (Kind::Number(max), true) => match r % 4 {
            0 => format!("{max:#x}"),
            1 => "0".to_string(),
            2 => format!("{}", r % max.saturating_add(1).max(1)),
            _ if max >= 1 << 10 => format!("{}K", (max >> 10).min(r)),
            _ => format!("{}", max / 2),
        },
        (Kind::Number(max), false) => match max.checked_add(1) {
            Some(v) if r.is_multiple_of(2) => format!("{v:#x}"),
            Some(v) => format!("{v}"),
            None => "18446744073709551616".to_string(),
        },
        (Kind::PhysAddr, true) => format!("{:#x}", (PhysAddr::LIMIT - 1) & r),
        (Kind::PhysAddr, false) => format!("{:#x}", PhysAddr::LIMIT | r),
        (Kind::VirtAddr, true) => format!("{:#x}", r & 0x7fff_ffff_ffff),
        (Kind::VirtAddr, false) => format!("{:#x}", 0x8000_0000_0000u64 | (r & 0xffff)),
        (Kind::Choice(words), true) => words[usize::try_from(r).unwrap_or(0) % words.len()].to_string(),
        (Kind::Choice(_), false) => "bogus".to_string(),
        (Kind::Data, true) => format!("{} \"x y\" 0xff", r % 256),
        (Kind::Data, false) => format!("1 {}", 256 + r % 1000),
        (Kind::Operation, true) => "store r 0 1".to_string(),
        (Kind::Operation, false) => "stroe r 0 1".to_string(),
    }
}

/// Lines generated from the table itself, each word valid or not, options and flags in
/// any order: a line parses exactly when every word is valid, into the words it holds.
#[test]
fn the_parser_accepts_exactly_the_lines_the_table_describes() {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 11
    };
    let (mut accepted, mut refused) = (0, 0);
    for op in OPERATIONS {
        for _ in 0..300 {
            let mut valid = true;
            let good = |next: &mut dyn FnMut() -> u64, valid: &mut bool| {
                let g = !next().is_multiple_of(8);
                *valid &= g;
                g
            };
            let mut positional = Vec::new();
            let mut rest = None;
            for &(_, kind) in op.args {
                let g = good(&mut next, &mut valid);
                let w = word(kind, g, next());
                if matches!(kind, Kind::Data | Kind::Operation) {
                    rest = Some(w);
                } else {
                    positional.push(w);
                }
            }
            let mut extras = Vec::new();
            let (mut n_options, mut n_flags) = (0, 0);
            for &(key, _, kind) in op.options {
                if next().is_multiple_of(2) {
                    let g = good(&mut next, &mut valid);
                    extras.push(format!("{key}={}", word(kind, g, next())));
                    n_options += 1;
                }
            }
            for &flag in op.flags {
                if next().is_multiple_of(2) {
                    extras.push(flag.to_string());
                    n_flags += 1;
                }
            }
            if next().is_multiple_of(16) {
                extras.push("bogus=1".to_string());
                valid = false;
            }
            let dropped = rest.is_none() && !positional.is_empty() && next().is_multiple_of(16);
            if dropped {
                positional.pop();
                valid = false;
            }
            let extra = !dropped && rest.is_none() && next().is_multiple_of(16);
            if extra {
                positional.push("extra".to_string());
                valid = false;
            }
            // Options and flags go anywhere among the positional words.
            let mut words = positional;
            for e in extras {
                let at = usize::try_from(next()).unwrap_or(0) % (words.len() + 1);
                words.insert(at, e);
            }
            let mut line = format!("{} {}", op.name, words.join(" "));
            if let Some(r) = rest {
                line.push(' ');
                line.push_str(&r);
            }
            let parsed = parse_line(&line);
            assert_eq!(parsed.is_ok(), valid, "{line}: {parsed:?}");
            match parsed {
                Ok(Some(c)) => {
                    assert_eq!(c.op, op, "{line}");
                    assert_eq!(c.args.len(), op.args.len(), "{line}");
                    assert_eq!((c.options.len(), c.flags.len()), (n_options, n_flags), "{line}");
                    accepted += 1;
                }
                Ok(None) => panic!("{line}: parsed as blank"),
                Err(e) => {
                    assert!(e.starts_with(op.name) || e.starts_with("expect fail"), "{line}: {e}");
                    refused += 1;
                }
            }
        }
    }
    println!("{} lines: {accepted} accepted, {refused} refused", accepted + refused);
    assert!(accepted > 1000 && refused > 1000, "{accepted} accepted, {refused} refused");
}

#[test]
fn the_readme_lists_every_operation() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for op in OPERATIONS {
        assert!(
            readme.contains(&format!("`{} ", op.name)) || readme.contains(&format!("`{}`", op.name)),
            "{}",
            op.name
        );
    }
}
