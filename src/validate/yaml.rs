//! YAML text -> a tree of nodes that remember where they stand in the file.
//!
//! serde-saphyr does the parsing (YAML 1.2 core schema, strict booleans,
//! duplicate keys as errors, a resource budget); this module only asks it for
//! every node wrapped in [`serde_saphyr::Spanned`], so that any JSON pointer
//! into the document can be mapped back to the line and column of the node.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

/// Where a node starts in the source: 1-based line and column, byte range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub offset: usize,
    pub len: usize,
}

/// One YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
    /// The node's tag as the parser resolved it (`!!str` is
    /// `tag:yaml.org,2002:str`, a local `!Ref` stays `!Ref`); `None` when
    /// the node has none. The value itself is read as if it had none.
    pub tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Tagged<NodeKind>>::deserialize(d)?;
        let Tagged(kind, tag) = s.value;
        let loc = s.referenced;
        let span = loc.span();
        Ok(Node {
            pos: Pos {
                line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
                column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
                offset: span
                    .byte_offset()
                    .and_then(|o| usize::try_from(o).ok())
                    .unwrap_or(0),
                len: span
                    .byte_len()
                    .and_then(|o| usize::try_from(o).ok())
                    .unwrap_or(0),
            },
            kind,
            tag,
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeKind, E> {
        Ok(NodeKind::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(NodeKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(NodeKind::Map(entries))
    }
}

impl Node {
    /// The node a JSON pointer names, with the key node that leads to it when
    /// its parent is a mapping.
    pub fn lookup(&self, pointer: &str) -> Option<(&Node, Option<&Node>)> {
        let mut node = self;
        let mut key = None;
        for segment in pointer_segments(pointer) {
            match &node.kind {
                NodeKind::Map(entries) => {
                    let (k, v) = entries
                        .iter()
                        .rev()
                        .find(|(k, _)| k.key_text().as_deref() == Some(segment.as_str()))?;
                    key = Some(k);
                    node = v;
                }
                NodeKind::Seq(items) => {
                    node = items.get(segment.parse::<usize>().ok()?)?;
                    key = None;
                }
                _ => return None,
            }
        }
        Some((node, key))
    }

    /// The deepest existing node on the way to `pointer`: where a problem
    /// about a missing node is best shown.
    pub fn nearest(&self, pointer: &str) -> &Node {
        let mut node = self;
        for segment in pointer_segments(pointer) {
            let next = match &node.kind {
                NodeKind::Map(entries) => entries
                    .iter()
                    .rev()
                    .find(|(k, _)| k.key_text().as_deref() == Some(segment.as_str()))
                    .map(|(_, v)| v),
                NodeKind::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// A scalar key's text as the JSON conversion spells it; `None` for
    /// mapping and sequence keys.
    pub fn key_text(&self) -> Option<String> {
        Some(match &self.kind {
            NodeKind::Null => "null".to_owned(),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Int(i) => i.to_string(),
            NodeKind::UInt(u) => u.to_string(),
            NodeKind::Float(f) => f.to_string(),
            NodeKind::Str(s) => s.clone(),
            NodeKind::Seq(_) | NodeKind::Map(_) => return None,
        })
    }

    /// Converts to JSON for schema validation. Keys that are not scalars are
    /// reported through `complex_keys` (their pointers) and left out.
    pub fn to_json(
        &self,
        pointer: &mut String,
        complex_keys: &mut Vec<(String, Pos)>,
    ) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::UInt(u) => Value::from(*u),
            NodeKind::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let len = pointer.len();
                        push_index(pointer, i);
                        let v = n.to_json(pointer, complex_keys);
                        pointer.truncate(len);
                        v
                    })
                    .collect(),
            ),
            NodeKind::Map(entries) => {
                let mut map = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let Some(key) = k.key_text() else {
                        complex_keys.push((pointer.clone(), k.pos));
                        continue;
                    };
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&escape_segment(&key));
                    let value = v.to_json(pointer, complex_keys);
                    pointer.truncate(len);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }
}

/// Appends `/i` to a pointer without allocating.
pub fn push_index(pointer: &mut String, i: usize) {
    use std::fmt::Write as _;
    let _ = write!(pointer, "/{i}");
}

/// Splits a JSON pointer into unescaped segments.
pub fn pointer_segments(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// Escapes one segment for a JSON pointer.
pub fn escape_segment(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.contains(['~', '/']) {
        segment.replace('~', "~0").replace('/', "~1").into()
    } else {
        segment.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Node {
        let opts =
            serde_saphyr::options! { strict_booleans: true, leading_zero_numbers_as_strings: true };
        serde_saphyr::from_str_with_options::<Node>(s, opts).unwrap()
    }

    #[test]
    fn nodes_know_their_positions() {
        let root = parse("a: 1\nb:\n  - x\n  - {c: yes}\n");
        let (node, key) = root.lookup("/b/1/c").unwrap();
        assert_eq!(node.kind, NodeKind::Str("yes".into()));
        assert_eq!((node.pos.line, node.pos.column), (4, 9));
        let key = key.unwrap();
        assert_eq!((key.pos.line, key.pos.column), (4, 6));
        assert_eq!(root.nearest("/b/7/z").pos.line, 3);
    }

    #[test]
    fn yaml_1_2_scalars() {
        let root = parse("a: yes\nb: 0755\nc: 1:30\nd: true\ne: 0o17\n");
        let v = root.to_json(&mut String::new(), &mut Vec::new());
        assert_eq!(
            v,
            serde_json::json!({"a": "yes", "b": "0755", "c": "1:30", "d": true, "e": 15})
        );
    }
}
