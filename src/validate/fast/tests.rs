//! Differential tests: wherever [`to_value`] answers, serde-saphyr with the
//! validator's options must succeed with the same value.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// What the slow path makes of `text`: serde-saphyr with `parse_options()`,
/// on the parser thread.
fn reference(text: &str) -> Option<Result<Value, String>> {
    super::super::parse_as::<Value>(text)
        .ok()
        .map(|r| r.map_err(|e| e.to_string()))
}

/// The differential property; returns whether the fast path answered.
fn agrees(text: &str) -> bool {
    match to_value(text) {
        None => false,
        Some(fast) => {
            assert_eq!(
                reference(text),
                Some(Ok(fast)),
                "fast path differs from serde-saphyr on {text:?}"
            );
            true
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn agrees_with_serde_saphyr_on_every_yaml_file_of_the_repository() {
    let mut files = Vec::new();
    for dir in ["tests/fixtures/validate", "plans", "fuzz/regressions"] {
        yaml_files(&repo(dir), &mut files);
    }
    assert!(files.len() > 50, "{files:?}");
    let mut answered = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        // As stored (a BOM included), and as `check` hands it on.
        let mut texts = Vec::new();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            texts.push(text.to_owned());
        }
        if let Ok(text) = super::super::input::decode(&bytes) {
            texts.push(text.to_owned());
            texts.push(text.replace("\r\n", "\n"));
            texts.push(text.replace('\n', "\r\n"));
        }
        for text in &texts {
            answered += usize::from(agrees(text));
        }
    }
    assert!(
        answered > 40,
        "the fast path answered only {answered} times"
    );
}

/// Every clean example without anchors takes the fast path (a plan with
/// anchors and aliases, such as plans/quick-start.yaml, falls back).
#[test]
fn takes_the_clean_example_plans() {
    let mut files = vec![
        repo("plans/contoso-erp.yaml"),
        repo("plans/new-hardware.yaml"),
    ];
    for name in [
        "comments-and-scalars",
        "crlf",
        "flow-style",
        "full",
        "minimal",
        "unicode",
        "utf8-bom",
        "yaml-1.2-strings",
    ] {
        files.push(repo(&format!("tests/fixtures/validate/valid/{name}.yaml")));
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let text = super::super::input::decode(&bytes).unwrap();
        assert!(agrees(text), "fell back on {}", file.display());
        assert!(
            super::super::check_clean(text).is_some(),
            "{}",
            file.display()
        );
    }
    assert!(agrees(super::super::tests_support::MINIMAL));
    let quick_start = std::fs::read_to_string(repo("plans/quick-start.yaml")).unwrap();
    assert!(to_value(&quick_start).is_none());
    assert!(super::super::check_clean(&quick_start).is_some());
}

/// Scalars in every spelling the resolver distinguishes.
const SCALARS: &[&str] = &[
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "nULL",
    "true",
    "True",
    "TRUE",
    "tRUE",
    "false",
    "False",
    "FALSE",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Yes",
    "NO",
    "0",
    "1",
    "-1",
    "+1",
    "-0",
    "+0",
    "00",
    "01",
    "-01",
    "+01",
    "007",
    "0.5",
    "00.5",
    "-0.0",
    "+0.5",
    ".5",
    "-.5",
    "+.5",
    "5.",
    "1e3",
    "1E3",
    "1e+3",
    "1e-3",
    "-1e3",
    "1.5e10",
    "1e",
    "e1",
    "1e999",
    "-1e999",
    "1_000",
    "1__0",
    "_1",
    "1_",
    "0x1F",
    "0x1f",
    "0X1F",
    "-0x1F",
    "+0x1F",
    "0x",
    "0xg",
    "0o17",
    "0O17",
    "0o8",
    "0b101",
    "0B101",
    "0b2",
    "-0b1",
    "0x_1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "340282366920938463463374607431768211456",
    "0xffffffffffffffff",
    "0x10000000000000000",
    "-0x8000000000000000",
    "-0x8000000000000001",
    ".inf",
    ".Inf",
    ".INF",
    "-.inf",
    "+.inf",
    ".nan",
    ".NaN",
    ".NAN",
    "-.nan",
    "+.nan",
    ".iNf",
    "inf",
    "-inf",
    "+inf",
    "nan",
    "NaN",
    "infinity",
    "-Infinity",
    "+-1",
    "-+1",
    "--1",
    "+",
    "-",
    ".",
    "..",
    "1.2.3",
    "1,000",
    "12:30",
    "1:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "0.1.2",
    "+.",
    "-.",
    "1e1.5",
    "0e0",
    "-0e0",
    "1.0",
    "3.14159",
    "6.8523015e+5",
    "685.230_15e+03",
    "0x1.8p1",
    "hv-01",
    "Production",
    "a b",
    "a#b",
    "<<",
    "=",
    "!",
    "&",
    "*",
    "@",
    "`",
    "%",
    "é",
    "日本",
    "$serde_json::private::RawValue",
    "$serde_json::private::Number",
    "foo:bar",
    "http://x",
];

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn agrees_on_every_scalar_form_as_value_key_and_item() {
    for s in SCALARS {
        let q = quoted(s);
        let single = format!("'{}'", s.replace('\'', "''"));
        for text in [
            format!("{s}\n"),
            format!("v: {s}\n"),
            format!("v: {q}\n"),
            format!("v: {single}\n"),
            format!("- {s}\n- {q}\n"),
            format!("[{s}]\n"),
            format!("{{v: {s}}}\n"),
            format!("{s}: v\n"),
            format!("{q}: v\n"),
            format!("{single}: v\n"),
            format!("{{{s}: v}}\n"),
            format!("a: 1\n{s}: 2\n"),
            format!("v: |\n  {s}\n"),
            format!("v: >-\n  {s}\n"),
            format!("v: {s} # comment\n"),
            format!("v: {s}\r\n"),
            format!("? {s}\n: v\n"),
        ] {
            agrees(&text);
        }
    }
}

#[test]
fn resolves_scalars_as_serde_saphyr_does() {
    let cases = [
        ("v: ~\n", json!({"v": null})),
        ("v:\n", json!({"v": null})),
        ("v: True\n", json!({"v": true})),
        ("v: yes\n", json!({"v": "yes"})),
        ("v: 0x1F\n", json!({"v": 31})),
        ("v: 0o17\n", json!({"v": 15})),
        ("v: -0\n", json!({"v": 0})),
        ("v: +1\n", json!({"v": 1})),
        ("v: 007\n", json!({"v": "007"})),
        ("v: 1_000\n", json!({"v": "1_000"})),
        ("v: 1.5\n", json!({"v": 1.5})),
        (
            "v: 18446744073709551616\n",
            json!({"v": 18_446_744_073_709_551_616.0}),
        ),
        ("v: \"1\"\n", json!({"v": "1"})),
        ("v: [a, 'b', \"c\"]\n", json!({"v": ["a", "b", "c"]})),
        ("v: |\n  a\n  b\n", json!({"v": "a\nb\n"})),
        ("v: >\n  a\n  b\n", json!({"v": "a b\n"})),
        ("v: a\n  b\n", json!({"v": "a b"})),
        ("\"quoted key\": 1\n", json!({"quoted key": 1})),
        ("---\nv: 1\n...\n", json!({"v": 1})),
    ];
    for (text, want) in cases {
        assert_eq!(to_value(text), Some(want), "{text:?}");
        assert!(agrees(text));
    }
}

#[test]
fn leaves_the_rest_to_serde_saphyr() {
    let depth = |n: usize| {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&" ".repeat(2 * i));
            text.push_str("a:\n");
        }
        text.push_str(&" ".repeat(2 * n));
        text.push_str("b: 1\n");
        text
    };
    let deep_flow = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    for text in [
        "a: &x 1\nb: *x\n".to_owned(),
        "a: !!str 1\n".to_owned(),
        "a: !custom 1\n".to_owned(),
        "!!map {a: 1}\n".to_owned(),
        "base: &b {x: 1}\nc:\n  <<: *b\n".to_owned(),
        "<<: {x: 1}\n".to_owned(),
        "a: 1\na: 2\n".to_owned(),
        "a: 1\n\"a\": 2\n".to_owned(),
        "1: a\n".to_owned(),
        "1_000: a\n10_00: b\n".to_owned(),
        "true: a\n".to_owned(),
        "~: a\n".to_owned(),
        ": a\n".to_owned(),
        "[a]: b\n".to_owned(),
        "? {a: 1}\n: b\n".to_owned(),
        "a: 1\n---\nb: 2\n".to_owned(),
        "%YAML 1.2\n---\na: 1\n".to_owned(),
        String::new(),
        "# only a comment\n".to_owned(),
        "a: [1\n".to_owned(),
        "a: .inf\n".to_owned(),
        "a: .nan\n".to_owned(),
        "a: 1e999\n".to_owned(),
        "{\"$serde_json::private::RawValue\": \"[1]\"}\n".to_owned(),
        depth(32),
        deep_flow(33),
    ] {
        assert_eq!(to_value(&text), None, "{text:?}");
        // serde-saphyr may accept or reject each; it is not asked here
        // whether the fast path would agree, since it does not answer.
        let _ = reference(&text);
    }
    // The deepest nesting the budget admits is still taken.
    assert!(agrees(&depth(31)));
    assert!(agrees(&deep_flow(31)));
}

#[test]
fn agrees_on_layouts() {
    for text in [
        "a: 1\nb:\n  - x\n  - y: [1, 2, {z: ~}]\n    w: 'q'\n",
        "a:\n- x\n- y\n",
        "- - a\n  - b\n- - c\n",
        "- a: 1\n  b: 2\n- {}\n- []\n",
        "{a: [1, 2], b: {c: d}, \"e\": 'f'}\n",
        "[a, b, [c, [d, {e: f}]]]\n",
        "a: multi\n  line\n\n  plain\n",
        "a: \"multi\n  line\n\n  quoted\"\n",
        "a: 'it''s'\n",
        "a: \"\\t\\u00e9\\x41\\n\\L\\P\\N\"\n",
        "a: |+\n  kept\n\n",
        "a: |-\n  stripped\n",
        "a: >2\n   indented\n",
        "a: # comment\n  b\n",
        "# head\na: 1 # tail\n# foot\n",
        "\u{feff}a: 1\n",
        "a: 1\r\nb:\r\n  - 2\r\n",
        "a:    \t1\n",
        "'': 1\n",
        "\"\": 1\n",
        "a: ''\n",
        "? a\n: 1\n",
        "? |\n  block key\n: 1\n",
        "a: b: c\n",
        "a:\tb\n",
        "- a\n-\n- c\n",
        "{a, b: 1}\n",
        "[a: 1, b]\n",
        "---\n",
        "--- a\n",
        "---\n...\n",
        "a: 1\n...\n# after the end\n",
        "a: 1\n...\n---\nb: 2\n",
        "a: -\n",
        "a: -1\nb: - 1\n",
        "a: 'x'y\n",
    ] {
        agrees(text);
    }
}

/// Plain-looking scalar text, heavy in the characters numbers, booleans
/// and nulls are made of.
fn scalar_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(SCALARS).prop_map(str::to_owned),
        "[-+._0-9]{0,6}",
        "[-+.]?(0[xobXOB])?[0-9a-fA-F_]{0,5}",
        "[-+]?[0-9]{0,3}(\\.[0-9]{0,3})?([eE][-+]?[0-9]{0,3})?",
        "[~nNuUlLtTrReEfFaAsSiI.]{0,6}",
        "[a-z0-9 :#'\"{}\\[\\],&*!|>%@`?-]{0,8}",
    ]
}

/// A small document: a tree of mappings, sequences and scalars.
#[derive(Clone, Debug)]
enum Doc {
    Scalar(String, u8),
    Seq(Vec<Doc>),
    Map(Vec<(String, u8, Doc)>),
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = (scalar_text(), 0u8..4).prop_map(|(s, q)| Doc::Scalar(s, q));
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Doc::Seq),
            proptest::collection::vec((scalar_text(), 0u8..3, inner), 0..4).prop_map(Doc::Map),
        ]
    })
}

fn scalar_yaml(s: &str, style: u8) -> String {
    match style {
        1 => quoted(s),
        2 => format!("'{}'", s.replace('\'', "''")),
        _ => s.to_owned(),
    }
}

fn flow(d: &Doc, out: &mut String) {
    match d {
        Doc::Scalar(s, q) => out.push_str(&scalar_yaml(s, *q)),
        Doc::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(item, out);
            }
            out.push(']');
        }
        Doc::Map(entries) => {
            out.push('{');
            for (i, (k, q, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&scalar_yaml(k, *q));
                out.push_str(": ");
                flow(v, out);
            }
            out.push('}');
        }
    }
}

fn block(d: &Doc, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match d {
        Doc::Scalar(s, 3) => {
            out.push_str("|\n");
            out.push_str(&pad);
            out.push_str("  ");
            out.push_str(s);
            out.push('\n');
        }
        Doc::Scalar(..) | Doc::Seq(_) | Doc::Map(_) if !is_block(d) => {
            flow(d, out);
            out.push('\n');
        }
        Doc::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                block(item, indent + 2, out);
            }
        }
        Doc::Map(entries) => {
            out.push('\n');
            for (k, q, v) in entries {
                out.push_str(&pad);
                out.push_str(&scalar_yaml(k, *q));
                out.push(':');
                if !is_block(v) {
                    out.push(' ');
                }
                block(v, indent + 2, out);
            }
        }
        Doc::Scalar(..) => {}
    }
}

fn is_block(d: &Doc) -> bool {
    match d {
        Doc::Seq(items) => !items.is_empty(),
        Doc::Map(entries) => !entries.is_empty(),
        Doc::Scalar(..) => false,
    }
}

/// Cases per property: `FAILBACK_PROPTEST_CASES`, as for the reconciler's
/// properties (default 512 here).
fn cases() -> u32 {
    std::env::var("FAILBACK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_scalars_agree(s in scalar_text(), q in 0u8..3) {
        let s = scalar_yaml(&s, q);
        for text in [format!("v: {s}\n"), format!("{s}: v\n"), format!("[{s}]\n"), format!("{s}\n")] {
            agrees(&text);
        }
    }

    #[test]
    fn random_documents_agree(
        d in doc(),
        crlf in any::<bool>(),
        header in proptest::sample::select(&["", "---\n", "--- # c\n", "# c\n\n"][..]),
        footer in proptest::sample::select(&["", "...\n", "# c\n", "\n\n"][..]),
    ) {
        let mut text = String::new();
        block(&d, 0, &mut text);
        let mut flow_text = String::new();
        flow(&d, &mut flow_text);
        flow_text.push('\n');
        for text in [text, flow_text] {
            let text = format!("{header}{text}{footer}");
            let text = if crlf { text.replace('\n', "\r\n") } else { text };
            agrees(&text);
        }
    }

    /// A plan with one value, or one key, replaced by random scalar text.
    #[test]
    fn mutated_plans_agree(
        line in 0usize..40,
        s in scalar_text(),
        q in 0u8..3,
        as_key in any::<bool>(),
    ) {
        let plan = super::super::tests_support::MINIMAL;
        let lines: Vec<&str> = plan.lines().collect();
        let line = line % lines.len();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            if i == line && let Some(colon) = l.find(": ") {
                let new = scalar_yaml(&s, q);
                if as_key {
                    let indent = l.len() - l.trim_start_matches([' ', '-']).len();
                    out.push_str(&l[..indent]);
                    out.push_str(&new);
                    out.push_str(&l[colon..]);
                } else {
                    out.push_str(&l[..colon + 2]);
                    out.push_str(&new);
                }
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
        agrees(&out);
    }
}
