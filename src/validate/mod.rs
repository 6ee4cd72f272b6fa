//! Text -> a checked [`FailbackPlan`], or a report of every problem in it.
//!
//! The pipeline: refuse what is not plain UTF-8 text of a sane size; parse
//! the one YAML document with serde-saphyr into spanned nodes; validate the
//! JSON form against the plan schema; check the semantic rules of the format;
//! only then deserialize into the typed plan. Every stage collects all its
//! problems, and every problem is located at the node it concerns. No I/O.

mod fast;
mod input;
mod rules;
mod schema_check;
mod secrets;
mod suggest;
mod tags;
pub mod yaml;

use serde_json::Value;

use crate::diagnostics::lines::LineIndex;
use crate::diagnostics::{Code, Diagnostic, FileReport};
use crate::plan::{FailbackPlan, KIND};

pub use input::MAX_PLAN_BYTES;
use yaml::{Node, Pos};

/// The outcome of checking one file.
#[derive(Debug)]
pub enum Checked {
    /// The file is YAML but not a `FailbackPlan`; found while walking a
    /// directory, it is skipped.
    NotAPlan,
    /// A plan file: its report, and the plan when it has no errors.
    Plan(Box<FileReport>, Option<Box<FailbackPlan>>),
}

/// How a file came to be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Named by the user: always a plan, whatever it holds.
    Named,
    /// Found while walking a directory: checked only if it is a plan.
    Discovered,
}

/// Checks the bytes of one file named `path`.
pub fn check(path: &str, bytes: &[u8], origin: Origin) -> Checked {
    // Every position is taken from the span in the text the report shows,
    // as the human report takes it (`diagnostics::lines`): the parser's own
    // line and column, and the decoder's, could count differently.
    let report = |source: String, mut diagnostics: Vec<Diagnostic>| {
        if diagnostics.iter().any(|d| d.span.is_some()) {
            let index = LineIndex::new(&source);
            diagnostics.iter_mut().for_each(|d| d.place(&index));
        }
        Box::new(FileReport {
            path: path.to_owned(),
            source,
            diagnostics,
        })
    };
    let text = match input::decode(bytes) {
        Ok(text) => text,
        Err(diag) => {
            if origin == Origin::Discovered && !input::mentions_plan_kind_bytes(bytes) {
                return Checked::NotAPlan;
            }
            // A located decoding error is shown in the lossily decoded text.
            let source = if diag.span.is_some() {
                secrets::redact_text(&input::lossy_source(bytes))
            } else {
                String::new()
            };
            return Checked::Plan(report(source, vec![*diag]), None);
        }
    };
    if let Some(diag) = input::control_character(text) {
        if origin == Origin::Discovered && !input::mentions_plan_kind(text) {
            return Checked::NotAPlan;
        }
        let source = secrets::redact_text(&input::printable(text));
        return Checked::Plan(report(source, vec![*diag]), None);
    }
    if let Some(plan) = check_clean(text) {
        return Checked::Plan(report(secrets::redact_text(text), Vec::new()), Some(plan));
    }
    let root = match parse(text) {
        Ok(mut root) => {
            trim_spans(&mut root, text, &LineIndex::new(text));
            root
        }
        Err(diag) => {
            if origin == Origin::Discovered && !input::mentions_plan_kind(text) {
                return Checked::NotAPlan;
            }
            return Checked::Plan(report(secrets::redact_text(text), vec![*diag]), None);
        }
    };
    let mut complex_keys = Vec::new();
    let value = root.to_json(&mut String::new(), &mut complex_keys);
    if origin == Origin::Discovered && value.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Checked::NotAPlan;
    }

    let secrets = secrets::find(&value, &root);
    let source = secrets::redact(text, &secrets);
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    if matches!(root.kind, yaml::NodeKind::Null) {
        let message = if text.trim().is_empty() {
            "the file is empty"
        } else {
            "the file holds no YAML value, only comments, blank lines or an empty document"
        };
        diagnostics.push(
            Diagnostic::new(Code::EmptyDocument, message).with_help(
                "start from an example in plans/, or run `failback schema` for the format",
            ),
        );
        return Checked::Plan(report(source, diagnostics), None);
    }
    for (pointer, pos) in complex_keys {
        diagnostics.push(locate(
            Diagnostic::new(
                Code::ComplexKey,
                format!(
                    "a mapping or sequence is used as a key in {}",
                    suggest::place(&pointer, &value)
                ),
            )
            .with_help(
                "plan keys are plain strings such as `name:`; remove the `?` or the brackets",
            )
            .with_pointer(pointer),
            pos,
        ));
    }
    diagnostics.extend(tags::check(&root, &value));
    let line_of = |pointer: &str| root.lookup(pointer).map(|(node, _)| node.pos.line);
    let mut from_rules = rules::check(&value, &line_of);
    from_rules.extend(secrets.iter().map(|s| s.diagnostic()));
    let covered: Vec<String> = from_rules
        .iter()
        .filter_map(|d| d.pointer.clone())
        .collect();
    // A node a rule reports on is not reported again by the schema, and
    // nothing under a secret is reported but the secret (a message about a
    // value would quote it).
    let under_secret = |p: &str| {
        secrets.iter().any(|s| {
            p.strip_prefix(s.pointer.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    };
    let source_of = |pointer: &str| {
        let (node, _) = root.lookup(pointer)?;
        let end = node.pos.offset.checked_add(node.pos.len)?;
        text.get(node.pos.offset..end).map(str::to_owned)
    };
    let from_schema = schema_check::check(&value, &source_of)
        .into_iter()
        .filter(|d| {
            let p = d.pointer.as_deref().unwrap_or("");
            !covered.iter().any(|c| p == c) && !under_secret(p)
        });
    diagnostics.extend(from_schema);
    diagnostics.extend(from_rules);
    for diag in &mut diagnostics {
        if diag.line.is_none()
            && let Some(pointer) = diag.pointer.clone()
        {
            let pos = position_of(&root, &pointer, diag.code);
            *diag = locate(diag.clone(), pos);
        }
    }
    diagnostics.sort_by(|a, b| {
        (a.line, a.column, a.code, &a.message).cmp(&(b.line, b.column, b.code, &b.message))
    });
    diagnostics.dedup();

    let plan = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        match serde_json::from_value::<FailbackPlan>(value) {
            Ok(plan) => Some(Box::new(plan)),
            Err(e) => {
                diagnostics.push(Diagnostic::new(
                    Code::SchemaViolation,
                    format!("the plan passed the schema but could not be read: {e}"),
                ));
                None
            }
        }
    };
    Checked::Plan(report(source, diagnostics), plan)
}

/// Where a diagnostic about `pointer` is shown: the key for an unknown key,
/// for a mapping that lacks a required key and for a whole section
/// (`spec.encryption`), the value otherwise, the parent for a missing node.
fn position_of(root: &Node, pointer: &str, code: Code) -> Pos {
    let at_key = matches!(
        code,
        Code::UnknownKey | Code::MissingKey | Code::EncryptionRetired
    );
    match root.lookup(pointer) {
        Some((_, Some(key))) if at_key => key.pos,
        Some((node, _)) => node.pos,
        None => root.nearest(pointer).pos,
    }
}

/// Block scalars end where the next token starts, so the parser's span of
/// one takes in the line break and the indentation after it. Trimmed, a
/// label underlines only the value, and redacting a secret blanks nothing
/// else. The line and column are taken from the span's offset, as every
/// report counts them (`diagnostics::lines`): the parser does not count a
/// lone CR as a line break.
fn trim_spans(node: &mut Node, text: &str, index: &LineIndex) {
    let end = node.pos.offset.saturating_add(node.pos.len).min(text.len());
    if let Some(value) = text.get(node.pos.offset.min(end)..end) {
        node.pos.len = value.trim_end_matches([' ', '\t', '\r', '\n']).len();
    }
    (node.pos.line, node.pos.column) = index.position(node.pos.offset);
    match &mut node.kind {
        yaml::NodeKind::Seq(items) => items.iter_mut().for_each(|n| trim_spans(n, text, index)),
        yaml::NodeKind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            trim_spans(k, text, index);
            trim_spans(v, text, index);
        }),
        _ => {}
    }
}

fn locate(diag: Diagnostic, pos: Pos) -> Diagnostic {
    diag.at(pos.line.max(1), pos.column.max(1), pos.offset, pos.len)
}

/// Parser limits: generous for any real plan (a 10,000-VM plan uses a small
/// part of them), tight enough that no input can exhaust memory or stack.
fn parse_options() -> serde_saphyr::Options {
    let budget = serde_saphyr::budget! {
        max_depth: input::MAX_DEPTH,
        flow_nesting_limit: input::MAX_DEPTH,
        max_documents: 1,
        max_aliases: input::MAX_ALIASES,
        max_anchors: input::MAX_ANCHORS,
        max_nodes: input::MAX_NODES,
        max_events: 2 * input::MAX_NODES,
        max_total_scalar_bytes: MAX_PLAN_BYTES,
        max_recorded_anchor_events: input::MAX_REPLAYED_EVENTS,
        max_recorded_anchor_bytes: 1 << 20,
    };
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = input::MAX_REPLAYED_EVENTS;
    alias_limits.max_replay_stack_depth = 16;
    serde_saphyr::options! {
        budget: budget,
        alias_limits: alias_limits,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// Parses on a thread with a stack sized for the deepest document the
/// budget admits. The outer error is a parser thread that could not run.
fn parse_as<T>(text: &str) -> Result<Result<T, serde_saphyr::Error>, ()>
where
    T: serde::de::DeserializeOwned + Send,
{
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || {
                serde_saphyr::from_str_with_options::<T>(text, parse_options())
            })
            .map(|handle| handle.join())
    });
    match result {
        Ok(Ok(parsed)) => Ok(parsed),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

/// The common case, checked first and cheaply: a plan with no problem at
/// all. Positions are only needed to report problems, so the text is parsed
/// straight into JSON without them: by the event walk of [`fast`] for the
/// plain subset plans are written in, by serde-saphyr for anything else.
/// Anything that is not perfectly clean (a parse error, a diagnostic of any
/// severity, a secret, a YAML tag) returns `None`, and the full check with
/// positions runs instead and reports it.
fn check_clean(text: &str) -> Option<Box<FailbackPlan>> {
    let value = match fast::to_value(text) {
        Some(value) => value,
        // serde-saphyr's `Value` drops tags, which the full check reports
        // (`tags`): text that may hold one is left to it.
        None if text.contains('!') => return None,
        None => parse_as::<Value>(text).ok()?.ok()?,
    };
    if value.is_null() || value.get("kind").and_then(Value::as_str) != Some(KIND) {
        return None;
    }
    if secrets::any(&value) {
        return None;
    }
    if !rules::check(&value, &|_| None).is_empty() || !schema_check::is_clean(&value) {
        return None;
    }
    serde_json::from_value::<FailbackPlan>(value)
        .ok()
        .map(Box::new)
}

/// Stack for the parser thread: a document is at most 32 levels deep, and
/// the spanned-node visitor is a few frames per level; 16 MiB leaves a wide
/// margin in debug builds too.
const PARSE_STACK: usize = 16 << 20;

fn parse(text: &str) -> Result<Node, Box<Diagnostic>> {
    match parse_as::<Node>(text) {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(err)) => Err(Box::new(input::yaml_error(text, &err))),
        Err(()) => Err(Box::new(Diagnostic::new(
            Code::YamlSyntax,
            "the YAML parser failed on this file",
        ))),
    }
}

#[cfg(test)]
mod tests;

/// Plans shared by the unit tests of other modules.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::MINIMAL;
}
