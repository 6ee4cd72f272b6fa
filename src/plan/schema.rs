//! The JSON Schema of the plan format, generated from the types.

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use super::FailbackPlan;

/// The schema's `$id`. A URN: it names the format, it is not fetched.
pub const SCHEMA_ID: &str = "urn:failback:schema:plan:v1";

/// The plan schema as a JSON value (draft 2020-12).
pub fn plan_schema() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.transforms.push(Box::new(NoNull));
    settings.transforms.push(Box::new(EditorFriendly));
    let generator = SchemaGenerator::new(settings);
    let mut schema = generator.into_root_schema_for::<FailbackPlan>();
    schema.insert("$id".into(), Value::String(SCHEMA_ID.into()));
    schema.to_value()
}

/// The schema as pretty-printed JSON with a trailing newline, exactly as
/// committed in `schemas/failback-plan.v1.json`.
pub fn plan_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&plan_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Optional fields are written by leaving them out, never as `null`: remove
/// the `null` alternatives schemars adds for `Option`, so that `verify: ~` is
/// reported as the wrong type instead of passing unnoticed.
#[derive(Clone)]
struct NoNull;

impl Transform for NoNull {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                let collapse = if let Some(Value::Array(branches)) = obj.get_mut(key) {
                    branches.retain(|b| b.get("type").and_then(Value::as_str) != Some("null"));
                    (branches.len() == 1).then(|| branches.remove(0))
                } else {
                    None
                };
                if let Some(Value::Object(only)) = collapse {
                    obj.remove(key);
                    for (k, v) in only {
                        obj.entry(k).or_insert(v);
                    }
                }
            }
        }
        transform_subschemas(self, schema);
    }
}

/// Shapes the schema for editors and for readable errors: string enums as
/// `enum` lists (with `enumDescriptions`, which editors show on completion)
/// instead of `oneOf` of constants; a `title` on every property; descriptions
/// on one line; no non-standard `format` values.
#[derive(Clone)]
struct EditorFriendly;

impl Transform for EditorFriendly {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            let consts = obj
                .get("oneOf")
                .and_then(Value::as_array)
                .and_then(|branches| {
                    branches
                        .iter()
                        .map(|b| {
                            let value = b.get("const")?.as_str()?.to_owned();
                            let description =
                                b.get("description").and_then(Value::as_str).map(one_line);
                            Some((value, description.unwrap_or_default()))
                        })
                        .collect::<Option<Vec<_>>>()
                });
            if let Some(consts) = consts {
                obj.remove("oneOf");
                obj.insert("type".into(), "string".into());
                let (values, descriptions): (Vec<_>, Vec<_>) = consts.into_iter().unzip();
                obj.insert("enum".into(), values.into());
                obj.insert("enumDescriptions".into(), descriptions.into());
            }
            if let Some(Value::String(d)) = obj.get_mut("description") {
                *d = one_line(d);
            }
            if obj
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint") || f.starts_with("int"))
            {
                obj.remove("format");
            }
            // An enum variant's doc comment lands on its `oneOf` branch: give
            // it to the branch's one property too, where editors show it.
            let branch_description = obj.get("description").cloned();
            if let Some(Value::Object(props)) = obj.get_mut("properties") {
                let single = props.len() == 1;
                for (name, prop) in props.iter_mut() {
                    if let Value::Object(p) = prop {
                        p.entry("title").or_insert_with(|| title_of(name).into());
                        if single
                            && !p.contains_key("description")
                            && let Some(d) = &branch_description
                        {
                            p.insert("description".into(), d.clone());
                        }
                    }
                }
            }
        }
        transform_subschemas(self, schema);
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `reverseReplicate` -> `Reverse replicate`.
fn title_of(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
