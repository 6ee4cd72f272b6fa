//! Hostile inputs: what an attacker, a broken editor or a bad merge can put
//! in a plan file. Every input is generated here. For each one the
//! validator must not panic or overflow its stack, must give the right
//! diagnostic code (with a line and column wherever the problem has a
//! place), and the binary must exit with the right code in every output
//! format.
//!
//! Bounds: every input the library sees here is at most 4 MiB
//! (`MAX_PLAN_BYTES`), except the oversized ones, which must be refused
//! before decoding or parsing. How long the validator takes and how much
//! memory it uses on the largest of these inputs is measured by the
//! benchmark in `benches/validate/`, not asserted here with timers: a
//! wall-clock assertion would fail on a loaded CI runner, not on a
//! regression.

use std::path::Path;

use assert_cmd::Command;
use failback::diagnostics::{Code, Diagnostic, FileReport};
use failback::plan::FailbackPlan;
use failback::validate::{self, Checked, MAX_PLAN_BYTES, Origin};
use serde_json::Value;

use crate::support::{encode_utf16, encode_utf32, with_boms};
use crate::validate::minimal_plan;

/// One hostile input and what the validator must say about it.
struct Case {
    name: String,
    bytes: Vec<u8>,
    /// The code that must be reported; `None` when the input is a valid plan.
    code: Option<Code>,
    /// Where that diagnostic must point, when the test knows the place.
    at: Option<(u32, u32)>,
}

impl Case {
    fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>, code: Code) -> Self {
        Case {
            name: name.into(),
            bytes: bytes.into(),
            code: Some(code),
            at: None,
        }
    }

    fn valid(name: impl Into<String>, text: String) -> Self {
        Case {
            name: name.into(),
            bytes: text.into_bytes(),
            code: None,
            at: None,
        }
    }

    fn at(mut self, line: u32, column: u32) -> Self {
        self.at = Some((line, column));
        self
    }

    fn exit_code(&self) -> i32 {
        match self.code {
            Some(code) if code.severity() == failback::diagnostics::Severity::Error => 65,
            _ => 0,
        }
    }
}

/// The minimal plan with `line` inserted after the first line that is
/// `after`, and the 1-based line and column of the inserted text's first
/// non-blank character.
fn insert_after(after: &str, line: &str) -> (String, u32, u32) {
    let plan = minimal_plan();
    let mut out = String::new();
    let mut at = None;
    for (i, l) in plan.lines().enumerate() {
        out.push_str(l);
        out.push('\n');
        if at.is_none() && l == after {
            out.push_str(line);
            out.push('\n');
            let indent = line.len() - line.trim_start().len();
            at = Some((i as u32 + 2, indent as u32 + 1));
        }
    }
    let (l, c) = at.unwrap_or_else(|| panic!("no line {after:?} in the minimal plan"));
    (out, l, c)
}

fn replace_line(from: &str, to: &str) -> String {
    let plan = minimal_plan();
    assert!(plan.contains(from), "{from:?} is not in the minimal plan");
    plan.replacen(from, to, 1)
}

fn billion_laughs() -> String {
    let mut text = String::from(
        "apiVersion: failback/v1\nkind: FailbackPlan\nmetadata:\n  name: laughs\n  labels:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 10].join(", ");
        text.push_str(&format!("    {}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    text
}

/// Merge keys multiply like aliases: each level merges the one below ten times.
fn merge_key_laughs() -> String {
    let mut text = String::from(
        "apiVersion: failback/v1\nkind: FailbackPlan\nmetadata:\n  name: merges\n  labels:\n    a: &a {k: v}\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 10].join(", ");
        text.push_str(&format!(
            "    {}: &{}\n      <<: [{refs}]\n      k{}: v\n",
            pair[1], pair[1], pair[1]
        ));
    }
    text
}

/// Nested block mappings, one level per line, as deep as fits in 4 MiB.
fn deep_block_mappings() -> String {
    let mut text = String::new();
    let mut depth = 0;
    loop {
        let line = format!("{}k:\n", " ".repeat(depth));
        if text.len() + line.len() > MAX_PLAN_BYTES {
            break;
        }
        text.push_str(&line);
        depth += 1;
    }
    assert!(depth > 2_000, "{depth} levels");
    text
}

fn cases() -> Vec<Case> {
    let plan = minimal_plan();
    let mut cases = vec![
        // Resource exhaustion.
        Case::new("billion-laughs", billion_laughs(), Code::YamlBudget),
        Case::new("merge-key-laughs", merge_key_laughs(), Code::YamlBudget),
        Case::new(
            "flow-sequences-10000-deep",
            format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            Code::YamlBudget,
        )
        .at(1, 33),
        Case::new(
            "flow-sequences-10000-unclosed",
            "[".repeat(10_000),
            Code::YamlBudget,
        )
        .at(1, 33),
        Case::new(
            "flow-mappings-10000-deep",
            format!("{}x{}\n", "{a: ".repeat(10_000), "}".repeat(10_000)),
            Code::YamlBudget,
        ),
        Case::new(
            "block-sequences-10000-on-one-line",
            format!("{}x\n", "- ".repeat(10_000)),
            Code::YamlBudget,
        )
        .at(1, 65),
        Case::new(
            "block-mappings-as-deep-as-4-mib",
            deep_block_mappings(),
            Code::YamlBudget,
        )
        .at(33, 33),
        Case::new(
            "over-1000-aliases",
            format!("a: &a x\nb: [{}]\n", vec!["*a"; 1_500].join(", ")),
            Code::YamlBudget,
        ),
        Case::new(
            "over-1000-anchors",
            format!(
                "b: [{}]\n",
                (0..1_500)
                    .map(|i| format!("&a{i} x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Code::YamlBudget,
        ),
        // Several documents.
        Case::new(
            "two-documents",
            format!("{plan}---\n{plan}"),
            Code::MultipleDocuments,
        )
        .at(18, 1),
        Case::new(
            "document-end-then-another",
            format!("{plan}...\n---\nkind: x\n"),
            Code::MultipleDocuments,
        )
        .at(19, 1),
        Case::new("two-empty-documents", "---\n---\n", Code::MultipleDocuments).at(2, 1),
        // Encodings and bytes.
        Case::new(
            "utf16-be-without-bom",
            encode_utf16(&plan, true),
            Code::NotUtf8,
        ),
        Case::new(
            "utf32-le-without-bom",
            encode_utf32(&plan, false),
            Code::NotUtf8,
        ),
        Case::new(
            "invalid-utf8",
            {
                let mut bytes = replace_line(
                    "  name: minimal\n",
                    "  name: minimal\n  description: caf\u{1}\n",
                )
                .into_bytes();
                let i = bytes.iter().position(|b| *b == 1).unwrap();
                bytes[i] = 0xE9;
                bytes
            },
            Code::NotUtf8,
        )
        .at(5, 19),
        Case::new(
            "truncated-utf8-sequence",
            format!("{plan}# caf\u{E9}").into_bytes()[..plan.len() + 6].to_vec(),
            Code::NotUtf8,
        )
        .at(18, 6),
        Case::new(
            "nul-byte",
            replace_line("name: app-01", "name: app\u{0}01"),
            Code::ControlCharacter,
        )
        .at(16, 20),
        Case::new("nul-bytes-only", vec![0u8; 4096], Code::ControlCharacter).at(1, 1),
        Case::new(
            "bell",
            replace_line("site: dc1", "site: dc1\u{7}"),
            Code::ControlCharacter,
        )
        .at(7, 14),
        Case::new(
            "bom-inside-the-text",
            replace_line("site: azure", "site: \u{FEFF}azure"),
            Code::ControlCharacter,
        )
        .at(12, 11),
        Case::new(
            "bidi-override",
            replace_line("host: hv-01\n", "host: hv-\u{202E}10\n"),
            Code::ControlCharacter,
        )
        .at(17, 20),
        // Whitespace and layout.
        Case::new(
            "tab-indentation",
            replace_line("  name: minimal", "\tname: minimal"),
            Code::YamlSyntax,
        )
        .at(4, 1),
        Case::new(
            "tab-after-spaces",
            replace_line("    site: dc1", "  \tsite: dc1"),
            Code::YamlSyntax,
        ),
        Case::new("empty-file", "", Code::EmptyDocument),
        Case::new("only-whitespace", " \n\n   \n", Code::EmptyDocument),
        Case::new(
            "comments-only",
            "# a plan\n# that was never written\n",
            Code::EmptyDocument,
        ),
        Case::new("only-a-document-marker", "---\n", Code::EmptyDocument),
        Case::new("only-null", "~\n", Code::EmptyDocument),
        // Shapes.
        Case::new(
            "a-list-instead-of-a-plan",
            "- apiVersion: failback/v1\n- kind: FailbackPlan\n",
            Code::WrongType,
        )
        .at(1, 1),
        Case::new(
            "a-scalar-instead-of-a-plan",
            "FailbackPlan\n",
            Code::WrongType,
        )
        .at(1, 1),
        Case::new("complex-key", "? [a, b]\n: c\n", Code::ComplexKey).at(1, 3),
        Case::new(
            "unknown-key-at-root",
            insert_after("kind: FailbackPlan", "kinds: x").0,
            Code::UnknownKey,
        )
        .at(3, 1),
        Case::new(
            "wrong-type-for-spec",
            replace_line("spec:\n  primary:", "spec: [primary]\nx:\n  primary:"),
            Code::WrongType,
        )
        .at(5, 7),
        Case::new(
            "float-parallelism",
            insert_after("    site: azure", "  parallelism: 4.0").0,
            Code::WrongType,
        )
        .at(13, 16),
        // Tags: dropped by the parser, so reported.
        Case::new(
            "unknown-tag",
            replace_line("site: dc1", "site: !Ref dc1"),
            Code::UnknownTag,
        )
        .at(7, 16),
        Case::new(
            "binary-tag",
            replace_line("site: azure", "site: !!binary YXp1cmU="),
            Code::UnknownTag,
        )
        .at(12, 20),
        Case::new(
            "non-finite-float",
            insert_after("  recovery:", "    vault: .nan").0,
            Code::WrongType,
        ),
    ];
    for (slug, _, bytes) in with_boms(&plan) {
        cases.push(Case::new(format!("{slug}-bom"), bytes, Code::NotUtf8));
    }

    // Old Mac line ends: lines counted as an editor counts them.
    cases.push(
        Case::new(
            "carriage-returns-only",
            plan.replace("host: hv-01", "host: hv-02")
                .replace('\n', "\r"),
            Code::UnknownHost,
        )
        .at(17, 17),
    );
    cases.push(
        Case::new(
            "crlf",
            plan.replace("host: hv-01", "host: hv-02")
                .replace('\n', "\r\n"),
            Code::UnknownHost,
        )
        .at(17, 17),
    );

    // Unknown keys deeper down: reported at the key.
    let (text, l, c) = insert_after("          host: hv-01", "          hots: hv-01");
    cases.push(Case::new("unknown-key-in-a-vm", text, Code::UnknownKey).at(l, c));
    let (text, l, c) = insert_after("  name: minimal", "  nmae: typo");
    cases.push(Case::new("unknown-key-in-metadata", text, Code::UnknownKey).at(l, c));

    // A duplicate key at every level of the plan: reported at the second key.
    for (level, after, line) in [
        ("root", "kind: FailbackPlan", "kind: FailbackPlan"),
        ("metadata", "  name: minimal", "  name: other"),
        ("spec", "    site: azure", "  recovery: {site: b}"),
        (
            "host",
            "        vswitches: [Production]",
            "        vswitches: [Backup]",
        ),
        ("vm", "          host: hv-01", "          host: hv-02"),
    ] {
        let (text, l, c) = insert_after(after, line);
        cases.push(
            Case::new(
                format!("duplicate-key-in-{level}"),
                text,
                Code::DuplicateKey,
            )
            .at(l, c),
        );
    }
    let (text, l, c) = insert_after(
        "          host: hv-01",
        "          networks:\n            - vswitch: Production\n              vswitch: Backup",
    );
    cases.push(Case::new("duplicate-key-in-network", text, Code::DuplicateKey).at(l + 2, c + 4));
    let (text, l, c) = insert_after("  name: minimal", "  'name': quoted");
    cases.push(Case::new("duplicate-key-quoted-differently", text, Code::DuplicateKey).at(l, c));
    let (text, l, _) = insert_after("  name: minimal", "  labels: {a: x, a: y}");
    cases.push(Case::new("duplicate-key-in-flow-mapping", text, Code::DuplicateKey).at(l, 18));

    // YAML 1.1 scalars in typed positions: strings, so the wrong type, at the value.
    for (key, value) in [
        ("reverseReplicate", "yes"),
        ("reverseReplicate", "no"),
        ("createIfMissing", "on"),
        ("createIfMissing", "off"),
        ("createIfMissing", "Y"),
        ("reverseReplicate", "ON"),
    ] {
        let (text, l, c) = insert_after(
            "          host: hv-01",
            &format!("          {key}: {value}"),
        );
        cases.push(
            Case::new(format!("{key}-{value}"), text, Code::WrongType)
                .at(l, c + key.len() as u32 + 2),
        );
    }
    for (name, value) in [
        ("0755", "0755"),
        ("1:30", "1:30"),
        ("1_000", "1_000"),
        ("quoted", "\"4\""),
    ] {
        let (text, l, c) = insert_after("    site: azure", &format!("  parallelism: {value}"));
        cases.push(Case::new(format!("parallelism-{name}"), text, Code::WrongType).at(l, c + 13));
    }
    for value in ["0x10", "0o17"] {
        // YAML 1.2 integers in other bases are integers.
        let (text, _, _) = insert_after("    site: azure", &format!("  parallelism: {value}"));
        cases.push(Case::valid(format!("parallelism-{value}"), text));
    }
    let (text, l, c) = insert_after("    site: azure", "  parallelism: 99999999999999999999");
    cases.push(Case::new("parallelism-huge", text, Code::OutOfRange).at(l, c + 13));

    // YAML 1.2 booleans in any of their three spellings are booleans.
    for value in ["true", "True", "FALSE"] {
        let (text, _, _) = insert_after(
            "          host: hv-01",
            &format!("          reverseReplicate: {value}"),
        );
        cases.push(Case::valid(format!("reverseReplicate-{value}"), text));
    }

    // The same scalars where a string belongs stay strings.
    cases.push(Case::valid(
        "yaml-1.1-words-as-names",
        plan.replace("name: app-01", "name: no")
            .replace("- name: hv-01", "- name: \"0755\"")
            .replace("host: hv-01", "host: 0755")
            .replace("[Production]", "[on, off, yes, 1:30]")
            .replace("- name: app", "- name: off")
            .replace("site: dc1", "site: 1:30"),
    ));

    cases
}

fn check(case: &Case) -> FileReport {
    match validate::check(&case.name, &case.bytes, Origin::Named) {
        Checked::Plan(report, _) => *report,
        Checked::NotAPlan => panic!("{}: a named file is always a plan", case.name),
    }
}

fn find<'a>(case: &Case, report: &'a FileReport) -> Option<&'a Diagnostic> {
    let code = case.code?;
    let found = report.diagnostics.iter().find(|d| d.code == code);
    assert!(
        found.is_some(),
        "{}: expected {}, got {:#?}",
        case.name,
        code.as_str(),
        report.diagnostics
    );
    found
}

#[test]
fn the_library_reports_each_hostile_input() {
    let mut failed = Vec::new();
    for case in cases() {
        if let Err(e) = std::panic::catch_unwind(|| check_one(&case)) {
            let message = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{}: {message}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn check_one(case: &Case) {
    assert!(
        case.bytes.len() <= MAX_PLAN_BYTES,
        "{}: the inputs here are bounded to one plan's size",
        case.name
    );
    let report = check(case);
    let Some(d) = find(case, &report) else {
        assert!(
            report.diagnostics.is_empty(),
            "{}: {:#?}",
            case.name,
            report.diagnostics
        );
        return;
    };
    let whole_file = matches!(d.code, Code::FileTooLarge | Code::EmptyDocument)
        || (d.code == Code::NotUtf8 && case.at.is_none());
    if whole_file {
        assert_eq!((d.line, d.column), (None, None), "{}: {d:#?}", case.name);
    } else {
        assert!(
            d.line.is_some() && d.column.is_some(),
            "{}: no position: {d:#?}",
            case.name
        );
    }
    if let Some((line, column)) = case.at {
        assert_eq!(
            (d.line, d.column),
            (Some(line), Some(column)),
            "{}: {d:#?}",
            case.name
        );
    }
    assert!(d.help.is_some(), "{}: no help: {d:#?}", case.name);
}

#[test]
fn other_encodings_are_named() {
    let plan = minimal_plan();
    let with_mark = with_boms(&plan)
        .into_iter()
        .map(|(_, name, bytes)| (bytes, name));
    let without = [
        (encode_utf16(&plan, false), "UTF-16 LE"),
        (encode_utf16(&plan, true), "UTF-16 BE"),
        (encode_utf32(&plan, false), "UTF-32 LE"),
        (encode_utf32(&plan, true), "UTF-32 BE"),
    ];
    for (bytes, name) in with_mark.chain(without) {
        let report = check(&Case::new(name, bytes, Code::NotUtf8));
        assert_eq!(
            report.diagnostics.len(),
            1,
            "{name}: {:#?}",
            report.diagnostics
        );
        let message = &report.diagnostics[0].message;
        assert!(message.contains(name), "{name}: {message}");
    }
}

#[test]
fn yaml_1_1_words_stay_strings_where_strings_belong() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "yaml-1.1-words-as-names")
        .unwrap();
    let plan: FailbackPlan = match validate::check(&case.name, &case.bytes, Origin::Named) {
        Checked::Plan(report, Some(plan)) => {
            assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
            *plan
        }
        other => panic!("{other:?}"),
    };
    let vm = &plan.spec.groups[0].vms[0];
    assert_eq!(vm.name.as_str(), "no");
    assert_eq!(vm.host.as_str(), "0755");
    assert_eq!(plan.spec.groups[0].name.as_str(), "off");
    assert_eq!(plan.spec.primary.site.as_str(), "1:30");
    let switches: Vec<&str> = plan.spec.primary.hosts[0]
        .vswitches
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(switches, ["on", "off", "yes", "1:30"]);
}

#[test]
fn an_input_over_4_mib_is_refused_before_it_is_decoded() {
    // Valid YAML all the way: only its size is wrong.
    let mut bytes = minimal_plan().into_bytes();
    bytes.resize(MAX_PLAN_BYTES + 1, b'\n');
    let report = check(&Case::new("too-large", bytes, Code::FileTooLarge));
    assert_eq!(report.diagnostics.len(), 1, "{:#?}", report.diagnostics);
    assert_eq!(report.diagnostics[0].code, Code::FileTooLarge);
    // Nothing was decoded, so nothing was parsed.
    assert!(report.source.is_empty());

    let mut bytes = minimal_plan().into_bytes();
    bytes.resize(MAX_PLAN_BYTES, b'\n');
    let report = check(&Case::new("exactly-4-mib", bytes, Code::FileTooLarge));
    assert!(
        report.diagnostics.is_empty(),
        "a plan of exactly 4 MiB is accepted: {:#?}",
        report.diagnostics
    );
}

// ---- through the binary ----

fn failback() -> Command {
    let mut cmd = Command::cargo_bin("failback").unwrap();
    let inherited = std::env::vars_os().map(|(name, _)| name).filter(|name| {
        let name = name.to_string_lossy();
        name.starts_with("FAILBACK_") || ["RUST_LOG", "CLICOLOR_FORCE"].contains(&name.as_ref())
    });
    for var in inherited {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `failback validate` on `path` in the three formats; checks the
/// exit code, that nothing panicked, and returns the JSON report and every
/// byte written.
fn run_all_formats(path: &Path, exit: i32, what: &str) -> (Value, String) {
    let mut everything = String::new();
    let mut json = Value::Null;
    for format in ["human", "json", "github"] {
        let output = failback()
            .args(["validate", "--format", format])
            .arg(path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(exit),
            "{what} ({format}): {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what} ({format}): {stderr}");
        if format == "json" {
            json =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"));
        }
        // No input reaches the terminal as a control sequence or a bare
        // carriage return (which would overwrite the line shown).
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            let bad = text.chars().find(|c| c.is_control() && *c != '\n');
            assert!(
                bad.is_none(),
                "{what} ({format}): {stream} has {bad:?}: {text:?}"
            );
        }
        everything.push_str(&stdout);
        everything.push_str(&stderr);
    }
    (json, everything)
}

#[test]
fn the_binary_reports_each_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let path = dir.path().join(format!("{}.yaml", case.name));
        std::fs::write(&path, &case.bytes).unwrap();
        let (json, _) = run_all_formats(&path, case.exit_code(), &case.name);
        let diagnostics = json["files"][0]["diagnostics"].as_array().unwrap();
        match case.code {
            Some(code) => {
                let d = diagnostics
                    .iter()
                    .find(|d| d["code"] == code.as_str())
                    .unwrap_or_else(|| {
                        panic!("{}: no {} in {diagnostics:#?}", case.name, code.as_str())
                    });
                if let Some((line, column)) = case.at {
                    assert_eq!(
                        (d["line"].as_u64(), d["column"].as_u64()),
                        (Some(line.into()), Some(column.into())),
                        "{}",
                        case.name
                    );
                }
            }
            None => assert!(diagnostics.is_empty(), "{}: {diagnostics:#?}", case.name),
        }
    }
}

#[test]
fn a_50_mib_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    // A plan, then 50 MiB of nothing: sparse, so the test writes little.
    std::fs::write(&path, minimal_plan()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let (json, _) = run_all_formats(&path, 65, "50 MiB");
    let diagnostics = json["files"][0]["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0]["code"], "FB0001");
}

/// A pipe that would deliver 50 MiB: the binary must stop reading a little
/// after 4 MiB, which the writer sees as the pipe closing early.
#[cfg(unix)]
#[test]
fn a_50_mib_stream_is_not_read_whole() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stream.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is not available; skipped");
        return;
    }
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("failback"))
        .args(["validate", "--format", "json"])
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening blocks until the binary opens the pipe to read it.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let chunk = vec![b'#'; 64 << 10];
    let mut written = 0usize;
    while written < 50 << 20 {
        match writer.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(writer);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["files"][0]["diagnostics"][0]["code"], "FB0001");
    assert!(
        written < 8 << 20,
        "the binary read {written} bytes of a 50 MiB stream; it should stop after 4 MiB"
    );
}

// ---- secrets ----

const PEM_BODY: [&str; 3] = [
    "MIIBszCCAVmgAwIBAgIUTOPSECRETPEMBODYLINEONExxxxxxxxxxwCgYIKoZIzj0E",
    "AwIwFjEUMBIGA1UEAwwLZXhhbXBsZS5jb20wHhcNMjQwMTAxMDAwMDAwWhcNSECRET",
    "MzQwMTAxMDAwMDAwWjAWMRQwEgYDVQQDDAtleGFtcGxlLmNvbTBZMBMGByqGSM49Ag",
];
const BLOB: &str = "MIIKPAIBAzCCCfYGCSqGSIb3DQEHAaCCCecEggnjTOPSECRETBLOBMIIJ3zCCBgAGCSqGSIb3DQEHAaCCBfEEggXtMIIF6TCCBeUGCyqGSIb3";

fn pem_block(indent: &str) -> String {
    let mut s = format!("{indent}-----BEGIN CERTIFICATE-----\n");
    for line in PEM_BODY {
        s.push_str(&format!("{indent}{line}\n"));
    }
    s.push_str(&format!("{indent}-----END CERTIFICATE-----\n"));
    s
}

/// Plans that hold a certificate in every way the validator meets one.
fn secret_plans() -> Vec<(&'static str, String, i32)> {
    let plan = minimal_plan();
    let encryption = |value: &str| {
        plan.replace(
            "  groups:",
            &format!("  encryption:\n    certificate: {value}\n  groups:"),
        )
    };
    vec![
        (
            "pem-certificate",
            encryption(&format!("|\n{}", pem_block("      "))),
            65,
        ),
        ("base64-certificate", encryption(BLOB), 65),
        (
            "quoted-pem-certificate",
            encryption(&format!("\"{}\"", pem_block("").replace('\n', "\\n"))),
            65,
        ),
        (
            "private-key-in-description",
            plan.replace(
                "  name: minimal\n",
                &format!(
                    "  name: minimal\n  description: |\n{}",
                    pem_block("    ").replace("CERTIFICATE", "PRIVATE KEY")
                ),
            ),
            65,
        ),
        (
            "base64-in-a-label",
            plan.replace(
                "  name: minimal\n",
                &format!("  name: minimal\n  labels:\n    pfx: {BLOB}\n"),
            ),
            65,
        ),
        (
            "base64-as-a-label-key",
            plan.replace(
                "  name: minimal\n",
                &format!("  name: minimal\n  labels:\n    {BLOB}: x\n"),
            ),
            65,
        ),
        (
            "base64-as-a-vm-name",
            plan.replace("name: app-01", &format!("name: {BLOB}")),
            65,
        ),
        (
            "base64-as-a-vswitch",
            plan.replace(
                "host: hv-01\n",
                &format!("host: hv-01\n          networks: [{{ vswitch: {BLOB} }}]\n"),
            ),
            65,
        ),
        (
            "base64-as-an-unknown-key-value",
            plan.replace(
                "    site: azure\n",
                &format!("    site: azure\n    cert: {BLOB}\n"),
            ),
            65,
        ),
        (
            "anchor-defined-in-a-label",
            plan.replace(
                "  name: minimal\n",
                &format!("  name: minimal\n  labels:\n    x: &cert {BLOB}\n"),
            )
            .replace(
                "  groups:",
                "  encryption:\n    certificate: *cert\n  groups:",
            ),
            65,
        ),
        (
            "pem-in-a-file-that-does-not-parse",
            encryption(&format!("|\n{}", pem_block("      ")))
                .replace("vswitches: [Production]", "vswitches: [Production"),
            65,
        ),
        (
            "pem-in-a-file-with-a-control-character",
            encryption(&format!("|\n{}", pem_block("      ")))
                .replace("site: dc1", "site: dc1\u{7}"),
            65,
        ),
        (
            "pem-near-a-duplicate-key",
            encryption(&format!("|\n{}", pem_block("      ")))
                .replace("  groups:", "  parallelism: 2\n  parallelism: 3\n  groups:"),
            65,
        ),
    ]
}

/// Pieces of the secrets long enough to identify them, short enough to
/// catch a partial leak (a message cut at 60 characters).
fn secret_fragments() -> Vec<String> {
    let mut fragments = Vec::new();
    for text in PEM_BODY.iter().copied().chain([BLOB]) {
        let chars: Vec<char> = text.chars().collect();
        for window in chars.windows(12).step_by(6) {
            fragments.push(window.iter().collect());
        }
    }
    fragments.push("TOPSECRET".to_owned());
    fragments
}

#[test]
fn a_secret_is_printed_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let fragments = secret_fragments();
    for (name, text, exit) in secret_plans() {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let (json, everything) = run_all_formats(&path, exit, name);
        for fragment in &fragments {
            if text.contains(fragment.as_str()) {
                assert!(
                    !everything.contains(fragment.as_str()),
                    "{name}: '{fragment}' of the secret is in the output:\n{everything}"
                );
            }
        }
        let codes: Vec<&str> = json["files"][0]["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["code"].as_str())
            .collect();
        let parses = !name.contains("does-not-parse")
            && !name.contains("control-character")
            && !name.contains("duplicate-key");
        if parses {
            assert!(codes.contains(&"FB0207"), "{name}: {codes:?}");
        }
    }
}
