//! JSON Schema validation of the plan, with each error turned into a
//! diagnostic that names the value, the place and the fix.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::suggest::{closest, did_you_mean, list, place, quote, type_name};
use super::yaml::{escape_segment, pointer_segments, push_index};
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

/// The source text of the scalar at a JSON pointer: a number is quoted as
/// it was written (`99999999999999999999`), not as the float it became.
pub type SourceOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What converting an error needs besides the error.
struct Context<'a> {
    root: &'a Value,
    schema: &'a Value,
    source: SourceOf<'a>,
}

impl Context<'_> {
    /// A value as messages quote it.
    fn shown(&self, value: &Value, pointer: &str) -> String {
        match value {
            Value::Number(_) => (self.source)(pointer)
                .filter(|s| !s.is_empty() && s.len() <= 60)
                .unwrap_or_else(|| quote(value)),
            _ => quote(value),
        }
    }
}

/// Every schema violation of `instance`.
pub fn check(instance: &Value, source: SourceOf<'_>) -> Vec<Diagnostic> {
    let compiled = &*COMPILED;
    let Some(validator) = &compiled.validator else {
        return vec![Diagnostic::new(
            Code::SchemaViolation,
            "internal error: the embedded plan schema does not compile",
        )];
    };
    let mut out = Vec::new();
    let ctx = Context {
        root: instance,
        schema: &compiled.schema,
        source,
    };
    for error in validator.iter_errors(instance) {
        convert(&error, &ctx, &mut out);
    }
    out.extend(float_errors(instance, &compiled.schema));
    // An empty name breaks both its pattern and its minimum length: the
    // length error says more, and one error per value is enough.
    let lengths: Vec<Option<String>> = out
        .iter()
        .filter(|d| is_length_error(d))
        .map(|d| d.pointer.clone())
        .collect();
    out.retain(|d| {
        d.code != Code::InvalidFormat || is_length_error(d) || !lengths.contains(&d.pointer)
    });
    out
}

/// Whether [`check`] would find nothing: what the clean fast path asks of
/// every plan, answered without building an error for each problem. (An
/// error `check` would not turn into a diagnostic makes it `false`: the
/// full check then runs, and finds nothing either.)
pub fn is_clean(instance: &Value) -> bool {
    let compiled = &*COMPILED;
    let Some(validator) = &compiled.validator else {
        return false;
    };
    if !validator.is_valid(instance) {
        return false;
    }
    float_errors(instance, &compiled.schema).is_empty()
}

/// The whole-number floats of `instance` where the schema wants an integer.
fn float_errors(instance: &Value, schema: &Value) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    integral_floats(instance, &mut Vec::new(), instance, schema, &mut out);
    out
}

fn is_length_error(d: &Diagnostic) -> bool {
    d.code == Code::InvalidFormat && d.message.contains(" characters; at ")
}

/// A step on the way from the root to a node: a key or an index. The
/// walk keeps these, and writes a JSON pointer only for a node it reports.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn pointer_of(path: &[Step<'_>]) -> String {
    let mut pointer = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                pointer.push('/');
                pointer.push_str(&escape_segment(k));
            }
            Step::Index(i) => push_index(&mut pointer, *i),
        }
    }
    pointer
}

/// JSON Schema counts `4.0` as an integer, the typed plan does not: a
/// float where the schema wants an integer is reported here, at its node,
/// instead of failing the final deserialization without a position.
fn integral_floats<'a>(
    value: &'a Value,
    path: &mut Vec<Step<'a>>,
    root: &Value,
    schema: &Value,
    out: &mut Vec<Diagnostic>,
) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let pointer = pointer_of(path);
            let pointer = pointer.as_str();
            let wants_integer = schema_at(schema, pointer)
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                == Some("integer");
            // Beyond 2^53 the float is an integer literal too large for
            // any integer type; the range check reports that one.
            let written_as_decimal = n
                .as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0);
            if wants_integer && written_as_decimal {
                out.push(
                    Diagnostic::new(
                        Code::WrongType,
                        format!(
                            "{} must be an integer, found the decimal number {n}",
                            place(pointer, root)
                        ),
                    )
                    .with_help("write a whole number without a decimal point")
                    .with_pointer(pointer),
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                integral_floats(v, path, root, schema, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Step::Key(k));
                integral_floats(v, path, root, schema, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn convert(error: &ValidationError<'_>, ctx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let (root, schema) = (ctx.root, ctx.schema);
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
                .map(|d| format!(". {d}"))
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
                .with_help(format!("add `{name}:` to {here}{description}"))
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
            let found = match &**instance {
                Value::Array(_) | Value::Object(_) | Value::Null => type_name(instance).to_owned(),
                _ => format!("{} {}", type_name(instance), ctx.shown(instance, &pointer)),
            };
            let help = if pointer.is_empty() {
                "a plan is a mapping that starts with `apiVersion: failback/v1` and `kind: FailbackPlan`; start from an example in plans/".to_owned()
            } else {
                type_help(&expected, instance, &ctx.shown(instance, &pointer))
            };
            out.push(
                Diagnostic::new(
                    Code::WrongType,
                    format!("{here} must be {expected}, found {found}"),
                )
                .with_help(help)
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
            let mut help = sub.and_then(|s| description(s, schema)).map_or_else(
                || "see `failback schema` for the allowed form".to_owned(),
                |d| format!("expected {}", lower_first(&d)),
            );
            if let ValidationErrorKind::Pattern { pattern } = error.kind() {
                help.push_str(&format!(" It must match the pattern `{pattern}`."));
            }
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
                    format!("{here} is {}, out of range", ctx.shown(instance, &pointer)),
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
                    match instance.as_array().map_or(0, Vec::len) {
                        0 => format!("{here} is empty; at least {limit} required"),
                        n => format!("{here} has {n} item(s); at least {limit} required"),
                    },
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
            one_of(context, instance, &pointer, &here, ctx, out);
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
    ctx: &Context<'_>,
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
            convert(error, ctx, out);
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
    let mut help = String::new();
    if options.len() == 1 {
        help.push_str(&format!("the only valid value is '{}'", options[0]));
    } else {
        help = did_you_mean(given, options.iter().copied());
        help.push_str(&format!("valid values: {}", options.join(", ")));
    }
    Diagnostic::new(
        Code::InvalidValue,
        format!("{} is not a valid value for {here}", quote(instance)),
    )
    .with_help(help)
    .with_pointer(pointer)
}

fn type_help(expected: &str, instance: &Value, shown: &str) -> String {
    match (expected, instance) {
        ("a boolean", Value::String(s)) => format!(
            "YAML 1.2 has only `true` and `false` as booleans; '{}' is a string here: write true or false",
            super::suggest::shorten(s)
        ),
        ("a string", Value::Number(_) | Value::Bool(_)) => {
            format!(
                "quote the value to make it a string: \"{}\"",
                shown.trim_matches('\'')
            )
        }
        ("a string", Value::Null) => "write a value after the colon, or remove the key".to_owned(),
        ("a list", Value::String(s)) => format!(
            "write a list, for example [\"{}\"]",
            super::suggest::shorten(s)
        ),
        ("a list", _) => "write a list: one `- item` per line, or [a, b]".to_owned(),
        ("a mapping", Value::Null) => {
            "write the keys of this mapping under it, indented, or remove the key".to_owned()
        }
        ("a mapping", _) => {
            "write a mapping: `key: value` pairs indented under this key".to_owned()
        }
        ("an integer", Value::String(s)) => format!(
            "write a whole number without quotes, not '{}'",
            super::suggest::shorten(s)
        ),
        _ => format!("write {expected}"),
    }
}

/// A JSON type as YAML authors call it.
fn article(json_type: &str) -> String {
    match json_type {
        "array" => "a list".to_owned(),
        "object" => "a mapping".to_owned(),
        "integer" => "an integer".to_owned(),
        "null" => "empty (null)".to_owned(),
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
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| {
                // A `oneOf`/`anyOf` of mappings (a secret reference): the
                // branch that has the property.
                ["oneOf", "anyOf"]
                    .iter()
                    .filter_map(|k| node.get(*k).and_then(Value::as_array))
                    .flatten()
                    .find_map(|b| resolve(b, schema).get("properties")?.get(&segment))
            })?;
        node = resolve(next, schema);
    }
    Some(node)
}
