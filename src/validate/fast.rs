//! YAML text straight to JSON, for the plain subset that plans are written
//! in: the clean fast path's parser (`check_clean` in the parent module).
//!
//! serde-saphyr builds a `serde_json::Value` through serde's visitors, which
//! costs about twice what its event parser (granit-parser) does. This module
//! walks the same parser's events with an explicit stack and builds the value
//! directly, resolving scalars exactly as serde-saphyr's `deserialize_any`
//! does under [`super::parse_options`] (YAML 1.2 booleans only; numbers with
//! a leading zero or an underscore kept as strings).
//!
//! It is an accelerator, never an authority: [`to_value`] returns `None`
//! for anything outside that subset, or that serde-saphyr might treat
//! differently, and the caller then parses with serde-saphyr. Whenever it
//! returns a value, that value equals what serde-saphyr would return, and
//! serde-saphyr would succeed (the differential tests below hold it to
//! this). Returned `None`:
//! - anchors, aliases, tags of any kind (`!!str` included), merge keys;
//! - keys that are not scalars, plain keys that do not read as strings or
//!   start like a number, and repeated keys;
//! - empty streams, a `%YAML` directive, a second document, parser errors;
//! - more nesting, values or text than the parser budget admits;
//! - scalars that read as non-finite floats (`.inf`, `.nan`, `1e999`), and
//!   any plain scalar with leading or trailing blanks.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, StrInput};

use super::MAX_PLAN_BYTES;
use super::input::{MAX_DEPTH, MAX_NODES};

/// A collection being built: its items so far, and for a mapping the key
/// whose value comes next.
enum Frame {
    Seq(Vec<Value>),
    Map(Map<String, Value>, Option<String>),
}

/// What a plain (unquoted, untagged) scalar reads as.
enum Plain {
    Null,
    Bool(bool),
    Number(Number),
    Str,
}

/// The JSON form of one YAML document, when the text is in the plain subset
/// this module handles exactly; `None` means "ask serde-saphyr".
pub fn to_value(text: &str) -> Option<Value> {
    let mut parser = Parser::with_options(StrInput::new(text), parser_options());
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    let mut documents = 0usize;
    // Counted as serde-saphyr's budget counts them: every parser event, every
    // node, the bytes of every scalar.
    let (mut events, mut nodes, mut scalar_bytes) = (0usize, 0usize, 0usize);
    loop {
        let (event, _span) = parser.next_event()?.ok()?;
        events += 1;
        if events > 2 * MAX_NODES {
            return None;
        }
        let value = match event {
            Event::StreamStart | Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::DocumentStart(_, version) => {
                documents += 1;
                if documents > 1 || version.is_some() {
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                nodes += 1;
                scalar_bytes += text.len();
                if nodes > MAX_NODES || scalar_bytes > MAX_PLAN_BYTES {
                    return None;
                }
                if let Some(Frame::Map(_, pending)) = stack.last_mut()
                    && pending.is_none()
                {
                    *pending = Some(key(text, style)?);
                    continue;
                }
                scalar(text, style)?
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                let is_map = matches!(event, Event::MappingStart(..));
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                nodes += 1;
                // A collection as a key, or nested deeper than the budget.
                if matches!(stack.last(), Some(Frame::Map(_, None)))
                    || nodes > MAX_NODES
                    || stack.len() >= MAX_DEPTH
                {
                    return None;
                }
                stack.push(if is_map {
                    Frame::Map(Map::new(), None)
                } else {
                    Frame::Seq(Vec::new())
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop()? {
                Frame::Seq(items) => Value::Array(items),
                Frame::Map(..) => return None,
            },
            Event::MappingEnd => match stack.pop()? {
                Frame::Map(map, None) => Value::Object(map),
                Frame::Map(_, Some(_)) | Frame::Seq(_) => return None,
            },
            // Aliases, and whatever else the parser may report.
            _ => return None,
        };
        match stack.last_mut() {
            None if root.is_none() => root = Some(value),
            None => return None,
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map(map, pending)) => {
                let key = pending.take()?;
                if map.insert(key, value).is_some() {
                    return None;
                }
            }
        }
    }
    if documents != 1 || !stack.is_empty() {
        return None;
    }
    root
}

/// The parser options serde-saphyr derives from [`super::parse_options`]:
/// its budget's flow nesting limit, no comment events.
fn parser_options() -> Options {
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = options.block_nesting_limit.max(MAX_DEPTH + 1);
    options.emit_comments = false;
    options
}

/// A mapping key: only one that serde-saphyr hands to `serde_json` as its
/// own text and compares with other keys by that text. A plain key that
/// reads as anything but a string, or that starts like a number (`1_000`
/// and `1000` are the same key to serde-saphyr), is left to serde-saphyr;
/// so are the merge key and `serde_json`'s private marker keys.
fn key(text: Cow<'_, str>, style: ScalarStyle) -> Option<String> {
    if style == ScalarStyle::Plain
        && (matches!(text.as_bytes().first(), Some(b'0'..=b'9' | b'+' | b'-'))
            || !matches!(plain(&text)?, Plain::Str))
    {
        return None;
    }
    if text == "<<" || text.starts_with("$serde_json") {
        return None;
    }
    Some(text.into_owned())
}

/// A scalar value. Quoted and block scalars are strings; a plain one is
/// resolved by [`plain`].
fn scalar(text: Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    if style != ScalarStyle::Plain {
        return Some(Value::String(text.into_owned()));
    }
    Some(match plain(&text)? {
        Plain::Null => Value::Null,
        Plain::Bool(b) => Value::Bool(b),
        Plain::Number(n) => Value::Number(n),
        Plain::Str => Value::String(text.into_owned()),
    })
}

/// Resolves a plain scalar as serde-saphyr's `deserialize_any` does with
/// `strict_booleans`, `leading_zero_numbers_as_strings` and
/// `underscored_numbers_as_strings`: null, then a YAML 1.2 boolean, then
/// the spellings kept as text, an integer, a float, and text otherwise.
/// `None` for what it would reject (non-finite floats) or what is not
/// plainly one of these.
fn plain(s: &str) -> Option<Plain> {
    const BLANKS: [char; 4] = [' ', '\t', '\r', '\n'];
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Plain::Null),
        "true" | "True" | "TRUE" => return Some(Plain::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Plain::Bool(false)),
        _ => {}
    }
    // serde-saphyr trims these before reading a boolean or a number; the
    // parser never leaves them around a plain scalar, so this is a guard.
    if s.starts_with(BLANKS) || s.ends_with(BLANKS) {
        return None;
    }
    match s.as_bytes().first() {
        Some(b'0'..=b'9' | b'+' | b'-' | b'.') => number(s),
        // No integer or YAML float starts otherwise, and the words Rust
        // reads as floats (`inf`, `nan`) are not finite: text.
        _ => Some(Plain::Str),
    }
}

/// A plain scalar that starts like a number.
fn number(t: &str) -> Option<Plain> {
    let negative = t.starts_with('-');
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let signed = unsigned.len() != t.len();
    let bytes = unsigned.as_bytes();
    // Kept as text: an upper-case radix prefix, a signed NaN, a decimal
    // integer with a leading zero, anything with an underscore.
    if matches!(bytes, [b'0', b'X' | b'O' | b'B', ..])
        || (signed && matches!(unsigned, ".nan" | ".NaN" | ".NAN"))
        || (bytes.len() > 1 && bytes[0] == b'0' && bytes.iter().all(u8::is_ascii_digit))
        || t.contains('_')
    {
        return Some(Plain::Str);
    }
    if let Some(magnitude) = integer(unsigned) {
        if negative {
            let value = i128::try_from(magnitude)
                .ok()
                .and_then(|m| i64::try_from(-m).ok());
            if let Some(value) = value {
                return Some(Plain::Number(value.into()));
            }
        } else if let Ok(value) = u64::try_from(magnitude) {
            return Some(Plain::Number(value.into()));
        }
    }
    // YAML's non-finite spellings: serde-saphyr rejects them in a JSON value.
    if matches!(
        unsigned,
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF"
    ) {
        return None;
    }
    match t.parse::<f64>() {
        Ok(value) if value.is_finite() => Number::from_f64(value).map(Plain::Number),
        // Overflow to infinity, or Rust's own spellings (`+inf`).
        Ok(_) => None,
        Err(_) => Some(Plain::Str),
    }
}

/// The magnitude of an unsigned integer spelling: `0x`, `0o` and `0b`
/// prefixes, or decimal without a redundant leading zero.
fn integer(digits: &str) -> Option<u128> {
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b") {
        (2, d)
    } else if digits.starts_with('0') && digits != "0" {
        return None;
    } else {
        (10, digits)
    };
    if digits.is_empty() {
        return None;
    }
    digits.chars().try_fold(0u128, |value, c| {
        value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(c.to_digit(radix)?))
    })
}

#[cfg(test)]
mod tests;
