//! YAML tags on plan values. A plan is plain YAML: no value needs a tag, and
//! serde-saphyr reads a tagged value as if it had none, so a tag the author
//! meant something by (`!Ref`, `!Sub`, `!!binary`, `!vault`) would be
//! dropped without a word. Each one is reported:
//!
//! - FB0107 (error): any tag but the core-schema ones below, and a
//!   core-schema tag on a node of another type (which the parser refuses
//!   for scalars, but not always for collections);
//! - FB0404 (warning): `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`,
//!   `!!map` or `!!seq` on a node of that type: valid YAML 1.2, and no
//!   effect on the plan, but nothing a plan needs either.

use serde_json::Value;

use super::suggest;
use super::yaml::{Node, NodeKind, escape_segment, push_index};
use crate::diagnostics::{Code, Diagnostic};

/// The prefix of the YAML core-schema tags (`!!name` is `tag:yaml.org,2002:name`).
const CORE: &str = "tag:yaml.org,2002:";

/// One diagnostic per tagged node of `root` (keys included), in document
/// order; `value` is `root`'s JSON form, to name the places.
pub fn check(root: &Node, value: &Value) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    walk(root, &mut String::new(), value, &mut found);
    found
}

fn walk(node: &Node, pointer: &mut String, root: &Value, found: &mut Vec<Diagnostic>) {
    if let Some(tag) = &node.tag {
        found.push(diagnostic(node, tag, pointer, root));
    }
    match &node.kind {
        NodeKind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                push_index(pointer, i);
                walk(item, pointer, root, found);
                pointer.truncate(len);
            }
        }
        NodeKind::Map(entries) => {
            for (key, item) in entries {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_segment(&key.key_text().unwrap_or_default()));
                walk(key, pointer, root, found);
                walk(item, pointer, root, found);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

fn diagnostic(node: &Node, tag: &str, pointer: &str, root: &Value) -> Diagnostic {
    let shown = suggest::shorten(&spelling(tag));
    let place = suggest::place(pointer, root);
    let diag = if agrees(tag, &node.kind) {
        Diagnostic::new(
            Code::RedundantTag,
            format!("the value of {place} has the YAML tag `{shown}`, which has no effect here"),
        )
        .with_help(format!(
            "remove `{shown}`: a plan needs no tags (quote a value that must stay a string)"
        ))
    } else {
        Diagnostic::new(
            Code::UnknownTag,
            format!("the value of {place} has the YAML tag `{shown}`, which a plan has no use for"),
        )
        .with_help(format!(
            "remove `{shown}` and write the value itself: a plan is plain YAML, with no tags, references or functions"
        ))
    };
    let pos = node.pos;
    diag.with_pointer(pointer)
        .at(pos.line.max(1), pos.column.max(1), pos.offset, pos.len)
}

/// The tag as an author writes it: `!!str` for a core-schema tag, `!Ref`
/// for a local one, `!<uri>` for any other global tag.
fn spelling(tag: &str) -> String {
    match tag.strip_prefix(CORE) {
        Some(name) => format!("!!{name}"),
        None if tag.starts_with('!') => tag.to_owned(),
        None => format!("!<{tag}>"),
    }
}

/// Whether `tag` is a core-schema tag naming the node's own type.
fn agrees(tag: &str, kind: &NodeKind) -> bool {
    matches!(
        (tag.strip_prefix(CORE), kind),
        (Some("str"), NodeKind::Str(_))
            | (Some("int"), NodeKind::Int(_) | NodeKind::UInt(_))
            | (Some("float"), NodeKind::Float(_))
            | (Some("bool"), NodeKind::Bool(_))
            | (Some("null"), NodeKind::Null)
            | (Some("map"), NodeKind::Map(_))
            | (Some("seq"), NodeKind::Seq(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(text: &str) -> Vec<(Code, String, u32, u32)> {
        let root: Node = serde_saphyr::from_str(text).unwrap();
        let value = root.to_json(&mut String::new(), &mut Vec::new());
        check(&root, &value)
            .into_iter()
            .map(|d| (d.code, d.message, d.line.unwrap(), d.column.unwrap()))
            .collect()
    }

    #[test]
    fn every_tag_is_reported_at_its_node() {
        let found = codes("a: !Ref x\nb:\n  - !!binary aGk=\n  - !!str y\n!!str c: !!map {d: 1}\n");
        let summary: Vec<(Code, u32, u32)> = found.iter().map(|f| (f.0, f.2, f.3)).collect();
        assert_eq!(
            summary,
            [
                (Code::UnknownTag, 1, 9),
                (Code::UnknownTag, 3, 14),
                (Code::RedundantTag, 4, 11),
                (Code::RedundantTag, 5, 7),
                (Code::RedundantTag, 5, 16),
            ]
        );
        assert!(found[0].1.contains("`!Ref`"), "{}", found[0].1);
        assert!(found[1].1.contains("`!!binary`"), "{}", found[1].1);
        assert!(found[2].1.contains("`!!str`"), "{}", found[2].1);
    }

    #[test]
    fn a_core_tag_on_another_type_is_an_error() {
        assert!(!agrees("tag:yaml.org,2002:str", &NodeKind::Int(5)));
        assert!(!agrees("tag:yaml.org,2002:set", &NodeKind::Map(Vec::new())));
        assert!(!agrees("!str", &NodeKind::Str("x".into())));
        assert_eq!(
            spelling("tag:example.com,2000:x"),
            "!<tag:example.com,2000:x>"
        );
    }

    #[test]
    fn untagged_documents_have_nothing_to_report() {
        assert!(codes("a: x\nb: [1, 'y']\n").is_empty());
    }
}
