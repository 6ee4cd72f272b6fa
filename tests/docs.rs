//! The reference pages in `docs/` keep up with the code: every field of the
//! plan schema is documented in `plan-format.md`, and `diagnostics.md` has
//! one entry per diagnostic code whose example produces exactly the output
//! it shows.

use std::collections::BTreeSet;

use failback::diagnostics::render::{self, HumanStyle};
use failback::diagnostics::{Code, FileReport};
use failback::validate::{self, Checked, Origin};
use serde_json::Value;

fn read_doc(name: &str) -> String {
    let path = format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- plan-format.md

/// Every property of the schema as a dotted path: `spec.groups[].vms[].host`.
fn schema_paths() -> BTreeSet<String> {
    let schema = failback::plan::plan_schema();
    let mut paths = BTreeSet::new();
    collect_paths(&schema, &schema, "", &mut paths, 0);
    paths
}

fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let target = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are expected, found {reference}"));
        node = schema
            .pointer(target)
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
    }
    node
}

fn collect_paths(
    schema: &Value,
    node: &Value,
    at: &str,
    paths: &mut BTreeSet<String>,
    depth: usize,
) {
    assert!(depth < 32, "the schema nests deeper than expected at {at}");
    let node = resolve(schema, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            paths.insert(path.clone());
            collect_paths(schema, prop, &path, paths, depth + 1);
        }
    }
    if let Some(items) = node.get("items") {
        collect_paths(schema, items, &format!("{at}[]"), paths, depth + 1);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        // Free-form maps (labels) have no property names of their own; a
        // map of objects would need documenting, so walk it under `.*`.
        if resolve(schema, extra).get("properties").is_some() {
            collect_paths(schema, extra, &format!("{at}.*"), paths, depth + 1);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_paths(schema, branch, at, paths, depth + 1);
        }
    }
}

/// Backticked spans of a Markdown text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn plan_format_documents_every_schema_field() {
    let doc = read_doc("plan-format.md");
    let spans: BTreeSet<&str> = code_spans(&doc).into_iter().collect();
    let paths = schema_paths();
    assert!(
        paths.contains("spec.groups[].vms[].verify.timeout"),
        "schema walk is broken: {paths:?}"
    );
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !spans.contains(p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/plan-format.md does not document these schema fields (write each as a backticked dotted path): {missing:?}"
    );
}

#[test]
fn plan_format_documents_no_field_the_schema_lacks() {
    let doc = read_doc("plan-format.md");
    let paths = schema_paths();
    let stale: BTreeSet<&str> = code_spans(&doc)
        .into_iter()
        .filter(|s| s.starts_with("spec.") || s.starts_with("metadata."))
        .filter(|s| {
            s.chars()
                .all(|c| c.is_ascii_alphabetic() || matches!(c, '.' | '[' | ']'))
        })
        .filter(|s| !paths.contains(*s))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/plan-format.md names fields the schema does not have: {stale:?}"
    );
}

#[test]
fn plan_format_shows_the_modeline() {
    let doc = read_doc("plan-format.md");
    assert!(doc.contains("# yaml-language-server: $schema=../schemas/failback-plan.v1.json"));
}

// ---------------------------------------------------------------- diagnostics.md

/// One `## FBnnnn: title` entry of diagnostics.md.
struct Entry<'a> {
    code: &'a str,
    title: &'a str,
    body: &'a str,
}

/// The text before the first entry, and the entries. Any level-2 heading
/// that starts with `FB` is taken as an entry, so a malformed one is caught.
fn entries(doc: &str) -> (&str, Vec<Entry<'_>>) {
    let mut parts = doc.split("\n## ");
    let preamble = parts.next().unwrap_or_default();
    let mut out = Vec::new();
    for part in parts {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        if !heading.starts_with("FB") {
            continue;
        }
        let (code, title) = heading
            .split_once(": ")
            .unwrap_or_else(|| panic!("heading `## {heading}` is not `## FBnnnn: short title`"));
        assert!(
            !title.trim().is_empty(),
            "heading `## {heading}` has no title"
        );
        out.push(Entry { code, title, body });
    }
    (preamble, out)
}

/// The contents of the first fenced block with this info string.
fn fenced<'a>(text: &'a str, info: &str) -> Option<&'a str> {
    let open = format!("```{info}\n");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find("\n```")?;
    Some(&text[start..start + len + 1])
}

fn normalise(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

#[test]
fn diagnostics_has_one_entry_per_code_in_order() {
    let doc = read_doc("diagnostics.md");
    let (_, entries) = entries(&doc);
    let documented: Vec<&str> = entries.iter().map(|e| e.code).collect();
    let known: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    let unknown: Vec<&&str> = documented.iter().filter(|c| !known.contains(c)).collect();
    assert!(
        unknown.is_empty(),
        "docs/diagnostics.md has headings for codes that do not exist: {unknown:?}"
    );
    let undocumented: Vec<&&str> = known.iter().filter(|c| !documented.contains(c)).collect();
    assert!(
        undocumented.is_empty(),
        "docs/diagnostics.md lacks a `## FBnnnn: title` heading for: {undocumented:?}"
    );
    assert_eq!(
        documented, known,
        "docs/diagnostics.md: one heading per code, in the order of Code::ALL"
    );
    for entry in &entries {
        assert!(
            !entry.title.ends_with('.'),
            "{}: a title, not a sentence",
            entry.code
        );
    }
}

/// Codes whose documented example is currently reported under another code,
/// and the code it gets. A validator fix makes the test below fail: then
/// update the entry's output and note, and remove the line here.
const REPORTED_AS: &[(&str, &str)] = &[];

/// Examples that are not text, built here as the entry's shell command
/// builds them from the base plan.
fn byte_example(code: &str, base: &str) -> Option<Vec<u8>> {
    match code {
        "FB0001" => Some(format!("{base}{}", "# padding\n".repeat(500_000)).into_bytes()),
        "FB0002" => {
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend(base.encode_utf16().flat_map(u16::to_le_bytes));
            Some(bytes)
        }
        "FB0003" => Some(
            base.replacen("name: app-01", "name: app-01\0", 1)
                .into_bytes(),
        ),
        _ => None,
    }
}

#[test]
fn diagnostics_examples_print_what_the_entries_show() {
    let doc = read_doc("diagnostics.md");
    let (preamble, entries) = entries(&doc);
    let base = fenced(preamble, "yaml")
        .expect("diagnostics.md shows the base plan before the first entry");
    match validate::check("plan.yaml", base.as_bytes(), Origin::Named) {
        Checked::Plan(report, Some(_)) => assert!(
            report.diagnostics.is_empty(),
            "the base plan is not clean: {:#?}",
            report.diagnostics
        ),
        other => panic!("the base plan is invalid: {other:?}"),
    }
    let mut failures = Vec::new();
    for entry in &entries {
        let Some(code) = Code::ALL.iter().find(|c| c.as_str() == entry.code) else {
            continue;
        };
        let severity = format!("Severity: {}.", code.severity().as_str());
        if !entry.body.contains(&severity) {
            failures.push(format!(
                "{}: the entry does not say `{severity}`",
                entry.code
            ));
        }
        let bytes = match (byte_example(entry.code, base), fenced(entry.body, "yaml")) {
            (Some(bytes), _) => bytes,
            (None, Some(yaml)) => yaml.as_bytes().to_vec(),
            (None, None) => {
                failures.push(format!("{}: no ```yaml example", entry.code));
                continue;
            }
        };
        let Some(shown) = fenced(entry.body, "text") else {
            failures.push(format!(
                "{}: no ```text block with the validator's output",
                entry.code
            ));
            continue;
        };
        let expected = REPORTED_AS
            .iter()
            .find(|(c, _)| *c == entry.code)
            .map_or(entry.code, |(_, reported)| reported);
        let Checked::Plan(report, _) = validate::check("plan.yaml", &bytes, Origin::Named) else {
            failures.push(format!(
                "{}: the example is not checked as a plan",
                entry.code
            ));
            continue;
        };
        let diagnostics: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.code.as_str() == expected)
            .cloned()
            .collect();
        if diagnostics.is_empty() {
            let got: Vec<&str> = report.diagnostics.iter().map(|d| d.code.as_str()).collect();
            failures.push(format!(
                "{}: the example does not report {expected}; it reports {got:?}",
                entry.code
            ));
            continue;
        }
        let only = FileReport {
            path: report.path.clone(),
            source: report.source.clone(),
            diagnostics,
        };
        let printed = render::human(&only, HumanStyle::plain());
        if normalise(&printed) != normalise(shown) {
            failures.push(format!(
                "{}: the output shown differs from what the validator prints; replace it with:\n{}",
                entry.code,
                normalise(&printed)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "docs/diagnostics.md:\n\n{}",
        failures.join("\n\n")
    );
}
