//! The line and column of a diagnostic are the same in every rendering: the
//! JSON report (and GitHub annotations, which print the same fields) and the
//! human report (miette's `[file:line:column]` header, or the `at
//! file:line:column` line under a diagnostic whose line is too long to show).
//! Both are what an editor shows: 1-based lines, where LF, CRLF and a lone CR
//! (a YAML 1.2 line break) each end a line, and 1-based columns counted in
//! characters (a tab is one).
//!
//! Replays the fuzzer's position findings (`fuzz/regressions/` and, while
//! any is open, `fuzz/regressions/positions/`), and checks by hand one case
//! of each kind it found: a lone CR, invalid UTF-8, a line of tabs.

use failback::diagnostics::render::{self, HumanStyle};
use failback::diagnostics::{Code, FileReport};
use failback::validate::{self, Checked, Origin};

use crate::validate::minimal_plan;

/// A 1-based line and column.
type At = Option<(u32, u32)>;

/// Every diagnostic's code and position as the JSON report gives it, and as
/// the human report shows it, rendered one diagnostic at a time.
fn both_positions(report: &FileReport) -> Vec<(Code, At, At)> {
    report
        .diagnostics
        .iter()
        .map(|d| {
            let one = FileReport {
                path: report.path.clone(),
                source: report.source.clone(),
                diagnostics: vec![d.clone()],
            };
            let human = render::human(&one, HumanStyle::plain());
            let json_at = d.line.zip(d.column);
            (d.code, json_at, shown_position(&human, &report.path))
        })
        .collect()
}

/// The `line:column` the human report shows: the `[path:L:C]` header of a
/// snippet, or `at path:L:C` when the line is too long to show.
fn shown_position(human: &str, path: &str) -> Option<(u32, u32)> {
    let (open, close) = if let Some(at) = human.find(&format!("[{path}:")) {
        (at + path.len() + 2, ']')
    } else {
        let at = human.find(&format!("at {path}:"))?;
        (at + path.len() + 4, ' ')
    };
    let rest = &human[open..];
    let (line, column) = rest[..rest.find(close)?].split_once(':')?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

fn report(name: &str, bytes: &[u8], origin: Origin) -> Option<FileReport> {
    match validate::check(name, bytes, origin) {
        Checked::Plan(report, _) => Some(*report),
        Checked::NotAPlan => None,
    }
}

/// The JSON and the human position of every diagnostic of `bytes` agree.
fn assert_agree(name: &str, bytes: &[u8]) {
    for origin in [Origin::Named, Origin::Discovered] {
        let Some(report) = report("input.yaml", bytes, origin) else {
            continue;
        };
        for (code, json, human) in both_positions(&report) {
            if let (Some(json), Some(human)) = (json, human) {
                assert_eq!(
                    json,
                    human,
                    "{name}: {} is at {}:{} in JSON, {}:{} in the human report",
                    code.as_str(),
                    json.0,
                    json.1,
                    human.0,
                    human.1
                );
            }
            if let Some(span) = report
                .diagnostics
                .iter()
                .find(|d| d.code == code)
                .and_then(|d| d.span)
            {
                assert!(
                    human.is_some() || json.is_none(),
                    "{name}: {} has a span {span:?} and a position {json:?} but the human report shows none",
                    code.as_str()
                );
            }
        }
    }
}

/// The one diagnostic of `code` in the report of `bytes`: its JSON
/// position, after checking that the human report shows the same.
fn position(bytes: &[u8], code: Code) -> (u32, u32) {
    let report = report("input.yaml", bytes, Origin::Named).unwrap();
    let found: Vec<_> = both_positions(&report)
        .into_iter()
        .filter(|(c, _, _)| *c == code)
        .collect();
    assert_eq!(found.len(), 1, "{:#?}", report.diagnostics);
    let (_, json, human) = found[0];
    assert_eq!(json, human, "{:#?}", report.diagnostics);
    json.unwrap()
}

#[test]
fn fuzz_findings_have_one_position_in_every_report() {
    let mut files = crate::support::yaml_files("fuzz/regressions");
    files.extend(crate::support::yaml_files("fuzz/regressions/positions"));
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert_agree(&path.display().to_string(), &bytes);
    }
}

#[test]
fn a_lone_cr_ends_a_line() {
    // A lone CR inside a plain scalar that goes on over two lines (the
    // fuzzer's case): `nmae` is on line 7.
    let text = minimal_plan().replacen(
        "  name: minimal\n",
        "  name: minimal\n  description: a\r    b\n  nmae: typo\n",
        1,
    );
    assert_eq!(position(text.as_bytes(), Code::UnknownKey), (7, 3));
    // `kind` is misspelt on line 3 of the minimal plan; lines 1 and 2 end
    // with a lone CR, the others with LF: the unknown key is on line 3.
    let text = minimal_plan()
        .replacen("apiVersion: failback/v1\n", "apiVersion: failback/v1\r", 1)
        .replacen("kind: FailbackPlan\n", "kind: FailbackPlan\rkinds: x\n", 1);
    assert_eq!(position(text.as_bytes(), Code::UnknownKey), (3, 1));
    // A CRLF is one line break, a lone CR after it another (an empty line 3).
    let text = minimal_plan().replacen(
        "kind: FailbackPlan\n",
        "kind: FailbackPlan\r\n\rkinds: x\n",
        1,
    );
    assert_eq!(position(text.as_bytes(), Code::UnknownKey), (4, 1));
}

#[test]
fn invalid_utf8_is_placed_in_characters() {
    // `café` in Windows-1252 after `é` in UTF-8: the bad byte is the 21st
    // character of line 5 (`  description: é caf` is 20 characters).
    let mut bytes = minimal_plan()
        .replacen(
            "  name: minimal\n",
            "  name: minimal\n  description: \u{e9} caf\u{1}\n",
            1,
        )
        .into_bytes();
    let i = bytes.iter().position(|b| *b == 1).unwrap();
    bytes[i] = 0xE9;
    assert_eq!(position(&bytes, Code::NotUtf8), (5, 21));
    // After a lone CR and a control character, which the report shows as U+FFFD.
    let mut bytes = b"apiVersion: failback/v1\rkind: Failback\x07Plan \xff\n".to_vec();
    assert_eq!(position(&bytes, Code::NotUtf8), (2, 21));
    bytes.truncate(bytes.len() - 2);
    bytes.push(b'\xC3');
    assert_eq!(position(&bytes, Code::NotUtf8), (2, 21));
    // After a U+0085 (2 bytes) on a line the report blanks as a secret.
    let bytes = b"a: -----BEGIN x\xC2\x85y \xFF\n";
    assert_eq!(position(bytes, Code::NotUtf8), (1, 19));
}

#[test]
fn a_tab_is_one_column() {
    // A value after thousands of tabs: shown with a snippet (3,000 tabs)
    // and, on a line over 4 KiB, as `at file:line:column`.
    for tabs in [3_000u32, 5_000] {
        let text = minimal_plan().replacen(
            "    site: azure\n",
            &format!(
                "    site: azure\n  parallelism:{}\"4\"\n",
                "\t".repeat(tabs as usize)
            ),
            1,
        );
        assert_eq!(
            position(text.as_bytes(), Code::WrongType),
            (13, 15 + tabs),
            "{tabs} tabs"
        );
    }
    // Three tabs before a value: `site:` ends at column 9, the value is at 13.
    let text = minimal_plan().replacen("    site: dc1\n", "    site:\t\t\t1\n", 1);
    assert_eq!(position(text.as_bytes(), Code::WrongType), (7, 13));
}
