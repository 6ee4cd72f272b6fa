//! JSON Schema validation of the plan, with each error turned into a
//! diagnostic that names the value, the place and the fix.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::suggest::{closest, did_you_mean, list, place, quote, type_name};
use super::yaml::{escape_segment, pointer_segments};
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::plan_schema;

struct Compiled {
    schema: Value,
    validator: Option<Validator>,
}

/// Compiled once per process, with the linear-time `regex` engine.
static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let schema = plan_schema();
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&schema)
        .ok();
    Compiled { schema, validator }
});

/// Every schema violation of `instance`.
pub fn check(instance: &Value) -> Vec<Diagnostic> {
    let compiled = &*COMPILED;
    let Some(validator) = &compiled.validator else {
        return vec![Diagnostic::new(
            Code::SchemaViolation,
            "internal error: the embedded plan schema does not compile",
        )];
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        convert(&error, instance, &compiled.schema, &mut out);
    }
    out
}

fn convert(error: &ValidationError<'_>, root: &Value, schema: &Value, out: &mut Vec<Diagnostic>) {
    let pointer = error.instance_path().as_str().to_owned();
    let instance = error.instance();
    let sub = schema_at(schema, &pointer);
    let here = place(&pointer, root);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed: Vec<&str> = sub
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for key in unexpected {
                let mut help = did_you_mean(key, allowed.iter().copied());
                help.push_str(&format!("keys allowed here: {}", list(&allowed, 12)));
                out.push(
                    Diagnostic::new(
                        Code::UnknownKey,
                        format!("unknown key '{}' in {here}", short(key)),
                    )
                    .with_help(help)
                    .with_pointer(format!("{pointer}/{}", escape_segment(key))),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let description = sub
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get(name))
                .and_then(|p| description(p, schema))
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let present: Vec<&str> = instance
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let typo = closest(name, present.iter().copied())
                .map(|t| format!(" (is '{t}' a misspelling of it?)"))
                .unwrap_or_default();
            out.push(
                Diagnostic::new(
                    Code::MissingKey,
                    format!("{here} is missing the required key '{name}'{typo}"),
                )
                .with_help(format!("add `{name}:`{description}"))
                .with_pointer(pointer),
            );
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => article(&t.to_string()),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| article(&t.to_string()))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            out.push(
                Diagnostic::new(
                    Code::WrongType,
                    format!(
                        "{here} must be {expected}, found {} {}",
                        type_name(instance),
                        quote_if_scalar(instance)
                    ),
                )
                .with_help(type_help(&expected, instance))
                .with_pointer(pointer),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push(invalid_value(&here, instance, &options, pointer));
        }
        ValidationErrorKind::Constant { expected_value } => {
            let options: Vec<&str> = expected_value.as_str().into_iter().collect();
            out.push(invalid_value(&here, instance, &options, pointer));
        }
        ValidationErrorKind::Pattern { .. }
        | ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. } => {
            let chars = instance.as_str().map_or(0, |s| s.chars().count());
            let why = match error.kind() {
                ValidationErrorKind::MinLength { limit } => {
                    format!(" (it is {chars} characters; at least {limit})")
                }
                ValidationErrorKind::MaxLength { limit } => {
                    format!(" (it is {chars} characters; at most {limit})")
                }
                _ => String::new(),
            };
            let help = sub.and_then(|s| description(s, schema)).map_or_else(
                || "see `failback schema` for the allowed form".to_owned(),
                |d| format!("expected {}", lower_first(&d)),
            );
            out.push(
                Diagnostic::new(
                    Code::InvalidFormat,
                    format!("{} is not a valid value for {here}{why}", quote(instance)),
                )
                .with_help(help)
                .with_pointer(pointer),
            );
        }
        ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. } => {
            let (min, max) = (
                sub.and_then(|s| s.get("minimum")).map(ToString::to_string),
                sub.and_then(|s| s.get("maximum")).map(ToString::to_string),
            );
            let range = match (min, max) {
                (Some(a), Some(b)) => format!("a whole number from {a} to {b}"),
                (Some(a), None) => format!("a number of at least {a}"),
                (None, Some(b)) => format!("a number of at most {b}"),
                (None, None) => "a number in range".to_owned(),
            };
            out.push(
                Diagnostic::new(
                    Code::OutOfRange,
                    format!("{here} is {}, out of range", quote(instance)),
                )
                .with_help(format!("use {range}"))
                .with_pointer(pointer),
            );
        }
        ValidationErrorKind::MinItems { limit } => {
            let what = pointer_segments(&pointer).last().unwrap_or_default();
            out.push(
                Diagnostic::new(
                    Code::WrongCount,
                    format!(
                        "{here} has {} item(s); at least {limit} required",
                        instance.as_array().map_or(0, Vec::len)
                    ),
                )
                .with_help(format!("declare at least {limit} entry in `{what}`"))
                .with_pointer(pointer),
            );
        }
        ValidationErrorKind::MaxItems { limit } => out.push(
            Diagnostic::new(
                Code::WrongCount,
                format!("{here} has more than {limit} items"),
            )
            .with_help(format!("keep at most {limit} entries"))
            .with_pointer(pointer),
        ),
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            one_of(context, instance, &pointer, &here, root, schema, out);
        }
        _ => out.push(
            Diagnostic::new(Code::SchemaViolation, format!("{here}: {}", error.masked()))
                .with_help("see `failback schema` for the plan format")
                .with_pointer(pointer),
        ),
    }
}

/// A failed `oneOf`/`anyOf`: report the branch the author meant, not every
/// branch. The meant branch is the one whose required keys the mapping
/// already uses; failing that, the one with the fewest errors.
fn one_of(
    context: &[Vec<ValidationError<'static>>],
    instance: &Value,
    pointer: &str,
    here: &str,
    root: &Value,
    schema: &Value,
    out: &mut Vec<Diagnostic>,
) {
    let keys: Vec<&str> = instance
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let required = |errors: &Vec<ValidationError<'static>>| -> Vec<String> {
        errors
            .iter()
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Required { property } => property.as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    };
    // Every branch whose distinguishing key is present: more than one means
    // alternatives were combined.
    let satisfied: Vec<String> = context
        .iter()
        .filter(|errs| required(errs).is_empty())
        .filter_map(|errs| {
            errs.iter().find_map(|e| match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    Some(unexpected.join(", "))
                }
                _ => None,
            })
        })
        .collect();
    if satisfied.len() > 1 && instance.is_object() {
        out.push(
            Diagnostic::new(
                Code::SchemaViolation,
                format!(
                    "{here} combines alternatives that exclude each other: {}",
                    keys.join(", ")
                ),
            )
            .with_help(format!("keep exactly one of: {}", keys.join(", ")))
            .with_pointer(pointer.to_owned()),
        );
        return;
    }
    let score = |errs: &Vec<ValidationError<'static>>| -> (usize, usize) {
        let missing = required(errs);
        let near = missing
            .iter()
            .filter(|m| closest(m, keys.iter().copied()).is_some())
            .count();
        (missing.len() - near, errs.len())
    };
    if let Some(branch) = context.iter().min_by_key(|errs| score(errs)) {
        for error in branch {
            convert(error, root, schema, out);
        }
    } else {
        out.push(
            Diagnostic::new(
                Code::SchemaViolation,
                format!("{here} matches none of its allowed forms"),
            )
            .with_pointer(pointer.to_owned()),
        );
    }
}

fn invalid_value(here: &str, instance: &Value, options: &[&str], pointer: String) -> Diagnostic {
    let given = instance.as_str().unwrap_or_default();
    let mut help = did_you_mean(given, options.iter().copied());
    if options.len() == 1 {
        help.push_str(&format!("the only valid value is '{}'", options[0]));
    } else {
        help.push_str(&format!("valid values: {}", options.join(", ")));
    }
    Diagnostic::new(
        Code::InvalidValue,
        format!("{} is not a valid value for {here}", quote(instance)),
    )
    .with_help(help)
    .with_pointer(pointer)
}

fn type_help(expected: &str, instance: &Value) -> String {
    match (expected, instance) {
        ("a boolean", Value::String(s)) => format!(
            "YAML 1.2 has only `true` and `false` as booleans; '{}' is a string here: write true or false",
            super::suggest::shorten(s)
        ),
        ("a string", Value::Number(_) | Value::Bool(_)) => {
            format!("quote the value to make it a string: \"{instance}\"")
        }
        ("a string", Value::Null) => "write a value after the colon, or remove the key".to_owned(),
        ("an array", Value::String(s)) => format!(
            "write a list, for example [\"{}\"]",
            super::suggest::shorten(s)
        ),
        ("an array", _) => "write a list: one `- item` per line, or [a, b]".to_owned(),
        ("an object", Value::Null) => {
            "write the keys of this mapping under it, indented, or remove the key".to_owned()
        }
        ("an object", _) => {
            "write a mapping: `key: value` pairs indented under this key".to_owned()
        }
        ("an integer", Value::String(s)) => format!(
            "write a whole number without quotes, not '{}'",
            super::suggest::shorten(s)
        ),
        _ => format!("write {expected}"),
    }
}

fn quote_if_scalar(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) | Value::Null => String::new(),
        _ => quote(v),
    }
}

fn article(json_type: &str) -> String {
    match json_type {
        "array" | "object" | "integer" => format!("an {json_type}"),
        t => format!("a {t}"),
    }
}

fn short(s: &str) -> String {
    super::suggest::shorten(s)
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A schema node's description, on one line, following a `$ref`.
fn description(node: &Value, schema: &Value) -> Option<String> {
    let d = node
        .get("description")
        .or_else(|| resolve(node, schema).get("description"))?
        .as_str()?;
    Some(d.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn resolve<'a>(node: &'a Value, schema: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..8 {
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(target) => match schema.pointer(target) {
                Some(t) => node = t,
                None => break,
            },
            None => break,
        }
    }
    node
}

/// The schema that applies at an instance pointer, following `$ref`,
/// `properties`, `items` and `additionalProperties`.
fn schema_at<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = resolve(schema, schema);
    for segment in pointer_segments(pointer) {
        let next = node
            .get("properties")
            .and_then(|p| p.get(&segment))
            .or_else(|| {
                node.get("items")
                    .filter(|_| segment.parse::<usize>().is_ok())
            })
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
        node = resolve(next, schema);
    }
    Some(node)
}
