//! The checks made on a file's bytes before any YAML parsing: size,
//! encoding, control characters; and the mapping of parser errors to
//! diagnostics.

use crate::diagnostics::{Code, Diagnostic};

/// The largest plan file accepted. A 10,000-VM plan is about 2 MiB.
pub const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;

/// Byte-order marks of encodings other than UTF-8, longest first.
const FOREIGN_BOMS: &[(&[u8], &str)] = &[
    (
        &[0x00, 0x00, 0xFE, 0xFF],
        "UTF-32 BE (byte-order mark 00 00 FE FF)",
    ),
    (
        &[0xFF, 0xFE, 0x00, 0x00],
        "UTF-32 LE (byte-order mark FF FE 00 00)",
    ),
    (&[0xFE, 0xFF], "UTF-16 BE (byte-order mark FE FF)"),
    (&[0xFF, 0xFE], "UTF-16 LE (byte-order mark FF FE)"),
];

const SAVE_AS_UTF8: &str = "save the file as UTF-8 (without a byte-order mark), for example with `iconv -t UTF-8` or your editor's \"Save with encoding\"";

/// The file as UTF-8 text without its optional UTF-8 byte-order mark.
pub fn decode(bytes: &[u8]) -> Result<&str, Box<Diagnostic>> {
    if bytes.len() > MAX_PLAN_BYTES {
        return Err(Box::new(
            Diagnostic::new(
                Code::FileTooLarge,
                format!(
                    "the file is larger than {MAX_PLAN_BYTES} bytes (4 MiB), the most a plan may be"
                ),
            )
            .with_help("split the plan into several plans, one per application or wave"),
        ));
    }
    for (bom, name) in FOREIGN_BOMS {
        if bytes.starts_with(bom) {
            return Err(Box::new(
                Diagnostic::new(
                    Code::NotUtf8,
                    format!("the file is encoded as {name}, not UTF-8"),
                )
                .with_help(SAVE_AS_UTF8),
            ));
        }
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text),
        Err(e) => {
            let valid = &body[..e.valid_up_to()];
            let (line, column) = line_column(valid);
            let bad = &body[e.valid_up_to()..body.len().min(e.valid_up_to() + 4)];
            let hex: Vec<String> = bad.iter().map(|b| format!("{b:02X}")).collect();
            let guess = if looks_utf16(body) {
                " (it looks like UTF-16 without a byte-order mark)"
            } else {
                ""
            };
            Err(Box::new(
                Diagnostic::new(
                    Code::NotUtf8,
                    format!(
                        "the file is not valid UTF-8: bytes {} at line {line}, column {column}{guess}",
                        hex.join(" ")
                    ),
                )
                .with_help(SAVE_AS_UTF8)
                .at(line, column, 0, 0),
            ))
        }
    }
}

/// Many NUL bytes at odd or even positions: UTF-16 text without a BOM.
fn looks_utf16(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(512)];
    let zeros = sample.iter().filter(|b| **b == 0).count();
    sample.len() >= 8 && zeros * 3 >= sample.len()
}

fn line_column(prefix: &[u8]) -> (u32, u32) {
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = prefix
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count()
        + 1;
    (clamp(line), clamp(column))
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A control character is refused wherever it stands, before parsing: YAML
/// forbids most of them, and in a plan they only ever hide something.
pub fn control_character(text: &str) -> Option<Box<Diagnostic>> {
    let (offset, ch) = text
        .char_indices()
        .find(|(_, c)| is_forbidden_control(*c))?;
    let (line, column) = line_column(&text.as_bytes()[..offset]);
    Some(Box::new(
        Diagnostic::new(
            Code::ControlCharacter,
            format!("control character U+{:04X} at line {line}, column {column}", u32::from(ch)),
        )
        .with_help("remove it; a plan is plain text (tabs and line breaks are the only control characters allowed)")
        .at(line, column, offset, ch.len_utf8()),
    ))
}

fn is_forbidden_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FEFF}')
}

/// The text with control characters replaced by U+FFFD, safe to show.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_forbidden_control(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Whether unparseable text looks like it was meant to be a plan.
pub fn mentions_plan_kind(text: &str) -> bool {
    text.contains("FailbackPlan")
}

pub fn mentions_plan_kind_bytes(bytes: &[u8]) -> bool {
    bytes.windows(12).any(|w| w == b"FailbackPlan")
}

/// A serde-saphyr error as a located diagnostic.
pub fn yaml_error(text: &str, err: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let inner = err.without_snippet();
    let (code, message, help) = match inner {
        E::DuplicateMappingKey { key, .. } => (
            Code::DuplicateKey,
            match key {
                Some(k) => format!("duplicate key '{k}' in this mapping"),
                None => "duplicate key in this mapping".to_owned(),
            },
            "a key may appear once per mapping: remove or merge the repeated entry".to_owned(),
        ),
        E::MultipleDocuments { .. } => (
            Code::MultipleDocuments,
            "a second YAML document starts here; a plan file holds exactly one".to_owned(),
            "put each plan in its own file, or remove the `---` separator".to_owned(),
        ),
        E::Budget { breach, .. } => (
            Code::YamlBudget,
            format!("the document exceeds a parsing limit: {breach:?}"),
            "plans are at most 32 levels deep with at most 1,000 aliases and anchors; expand the aliases or flatten the structure".to_owned(),
        ),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => (
            Code::YamlBudget,
            "aliases expand to more nodes than a plan may have".to_owned(),
            "write the values out instead of nesting aliases of aliases".to_owned(),
        ),
        other => {
            let text = other.to_string();
            let message = strip_location_prefix(&text);
            let (code, help) = if message.contains("recursion limit") {
                (Code::YamlBudget, "plans are at most 32 levels deep; flatten the structure")
            } else if message.contains("tab") {
                (Code::YamlSyntax, "indent with spaces; YAML does not allow tabs for indentation")
            } else {
                (Code::YamlSyntax, "fix the YAML syntax at this position")
            };
            (code, message.to_owned(), help.to_owned())
        }
    };
    let diag = Diagnostic::new(code, message).with_help(help);
    match inner.location() {
        Some(loc) if loc.line() > 0 => {
            let line = u32::try_from(loc.line()).unwrap_or(u32::MAX);
            let column = u32::try_from(loc.column()).unwrap_or(u32::MAX).max(1);
            let offset = loc
                .span()
                .byte_offset()
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| *o <= text.len())
                .unwrap_or_else(|| offset_of(text, line, column));
            diag.at(line, column, offset, 0)
        }
        _ => diag,
    }
}

fn strip_location_prefix(message: &str) -> &str {
    let re_like = message
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(loc, _)| loc.contains("column"));
    match re_like {
        Some((_, tail)) => tail,
        None => message,
    }
}

fn offset_of(text: &str, line: u32, column: u32) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if u32::try_from(i + 1).unwrap_or(u32::MAX) == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1) as usize)
                    .map_or(l.len(), |(o, _)| o);
        }
        offset += l.len();
    }
    text.len()
}
