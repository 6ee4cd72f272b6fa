//! Wording helpers: "did you mean", value quoting, and readable names for
//! places in a plan.

use serde_json::Value;

use super::yaml::pointer_segments;

/// The candidate closest to `input` by edit distance, if it is close enough
/// to be a plausible typo (or differs only in case).
pub fn closest<'a, I>(input: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = input.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == input {
            continue;
        }
        let cand_lower = candidate.to_lowercase();
        let distance = if cand_lower == lower {
            0
        } else if lower.chars().count() >= 3 && cand_lower.starts_with(&lower) {
            1
        } else {
            strsim::osa_distance(&lower, &cand_lower)
        };
        let limit = (candidate.chars().count().max(input.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean 'x'? " or nothing.
pub fn did_you_mean<'a, I>(input: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(input, candidates)
        .map_or_else(String::new, |c| format!("did you mean '{}'? ", shorten(c)))
}

/// A value as it is quoted in a message: short, one line.
pub fn quote(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", shorten(s)),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// The JSON type of a value, in words.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Null => "an empty value (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value as messages show it: one line, at most 60 characters, and
/// never a secret (see `secrets::looks_secret`).
pub fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if super::secrets::looks_secret(s).is_some() {
        return "<secret, not shown>".to_owned();
    }
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// A pointer as a dotted path people read, naming list items by their
/// `name` where they have one: `spec.groups[app].vms[app-01].host`.
pub fn place(pointer: &str, root: &Value) -> String {
    let mut out = String::new();
    let mut node = Some(root);
    for segment in pointer_segments(pointer) {
        let next = node.and_then(|n| match n {
            Value::Object(m) => m.get(&segment),
            Value::Array(a) => segment.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        });
        match node {
            Some(Value::Array(_)) => {
                match next.and_then(|n| n.get("name")).and_then(Value::as_str) {
                    Some(name) => out.push_str(&format!("[{}]", shorten(name))),
                    None => out.push_str(&format!("[{segment}]")),
                }
            }
            _ => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shorten(&segment));
            }
        }
        node = next;
    }
    if out.is_empty() {
        "the document".to_owned()
    } else {
        out
    }
}

/// "a, b, c" of at most `max` items, with "…" after.
pub fn list(items: &[&str], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(|i| shorten(i))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(", …");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("Prod", ["Production", "Backup"]),
            Some("Production")
        );
        assert_eq!(closest("Pr", ["Production", "Backup"]), None);
        assert_eq!(
            closest("Productoin", ["Production", "Backup"]),
            Some("Production")
        );
        assert_eq!(
            closest("production", ["Production", "Backup"]),
            Some("Production")
        );
        assert_eq!(
            closest("hots", ["site", "management", "hosts"]),
            Some("hosts")
        );
        assert_eq!(closest("zzz", ["site"]), None);
    }

    #[test]
    fn places_name_list_items() {
        let v: Value =
            serde_json::json!({"spec": {"groups": [{"name": "app", "vms": [{"name": "a1"}]}]}});
        assert_eq!(
            place("/spec/groups/0/vms/0/host", &v),
            "spec.groups[app].vms[a1].host"
        );
        assert_eq!(place("", &v), "the document");
    }
}
