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
                    "the file is larger than 4 MiB ({} bytes), the most a plan may be",
                    thousands(MAX_PLAN_BYTES)
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
    if let Some(name) = wide_encoding(body) {
        // ASCII text in UTF-16 or UTF-32 is valid UTF-8 full of NUL bytes:
        // name the encoding rather than report the first NUL.
        return Err(Box::new(
            Diagnostic::new(
                Code::NotUtf8,
                format!("the file looks like {name} text without a byte-order mark, not UTF-8"),
            )
            .with_help(SAVE_AS_UTF8),
        ));
    }
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text),
        Err(e) => {
            let valid = &body[..e.valid_up_to()];
            let (line, column) = line_column(valid);
            // The bytes that cannot be decoded: one invalid sequence, or the
            // incomplete one the file ends with.
            let bad_len = e.error_len().unwrap_or(body.len() - e.valid_up_to());
            let bad = &body[e.valid_up_to()..e.valid_up_to() + bad_len];
            let hex: Vec<String> = bad.iter().map(|b| format!("{b:02X}")).collect();
            // The report shows the text decoded lossily; the span is the
            // replacement character that stands for the first bad byte.
            let offset = printable(&String::from_utf8_lossy(valid)).len();
            Err(Box::new(
                Diagnostic::new(
                    Code::NotUtf8,
                    format!(
                        "the file is not valid UTF-8: {} {} cannot be decoded",
                        if bad.len() == 1 { "byte" } else { "bytes" },
                        hex.join(" ")
                    ),
                )
                .with_help(format!(
                    "{SAVE_AS_UTF8}; a file from Windows is often Windows-1252 (`iconv -f WINDOWS-1252 -t UTF-8`)"
                ))
                .at(line, column, offset, '\u{FFFD}'.len_utf8()),
            ))
        }
    }
}

/// The bytes as text to show with a decoding error: invalid sequences and
/// control characters replaced by U+FFFD, as [`decode`]'s spans expect.
pub fn lossy_source(bytes: &[u8]) -> String {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    printable(&String::from_utf8_lossy(body))
}

/// UTF-16 or UTF-32 without a byte-order mark, recognised by where the NUL
/// bytes of ASCII characters fall in the first bytes of the file.
fn wide_encoding(bytes: &[u8]) -> Option<&'static str> {
    let sample = &bytes[..bytes.len().min(512)];
    if sample.len() < 8 {
        return None;
    }
    let zeros_at = |width: usize, lane: usize| {
        sample
            .chunks_exact(width)
            .filter(|unit| {
                unit.iter()
                    .enumerate()
                    .all(|(i, b)| (*b == 0) == (i != lane))
            })
            .count()
    };
    let units = |width: usize| sample.len() / width;
    let mostly = |count: usize, width: usize| count * 4 >= units(width) * 3;
    if mostly(zeros_at(4, 0), 4) {
        Some("UTF-32 LE")
    } else if mostly(zeros_at(4, 3), 4) {
        Some("UTF-32 BE")
    } else if mostly(zeros_at(2, 0), 2) {
        Some("UTF-16 LE")
    } else if mostly(zeros_at(2, 1), 2) {
        Some("UTF-16 BE")
    } else {
        None
    }
}

/// The line and column just after `prefix`, counted as every report counts
/// them (`diagnostics::lines`: a lone CR ends a line, a column is a character).
fn line_column(prefix: &[u8]) -> (u32, u32) {
    let text = String::from_utf8_lossy(prefix);
    crate::diagnostics::lines::LineIndex::new(&text).position(text.len())
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A control character is refused wherever it stands, before parsing: YAML
/// forbids most of them, and in a plan they only ever hide something. So do
/// the bidirectional overrides of "Trojan Source" (CVE-2021-42574): they make
/// a reviewer read text in another order than the program does.
pub fn control_character(text: &str) -> Option<Box<Diagnostic>> {
    // The common case, printable ASCII with tabs and line breaks, needs no
    // decoding: one pass over the bytes.
    if text
        .bytes()
        .all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    let (offset, ch) = text
        .char_indices()
        .find(|(_, c)| is_forbidden_control(*c))?;
    let (line, column) = line_column(&text.as_bytes()[..offset]);
    let name = match ch {
        '\0' => " (NUL)",
        '\u{1B}' => " (escape)",
        '\u{7F}' => " (delete)",
        '\u{85}' => " (next line)",
        '\u{FEFF}' => " (a byte-order mark inside the text)",
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => " (a bidirectional text override)",
        _ => "",
    };
    Some(Box::new(
        Diagnostic::new(
            Code::ControlCharacter,
            format!("control character U+{:04X}{name}", u32::from(ch)),
        )
        .with_help("remove it; a plan is plain text (tabs and line breaks are the only control characters allowed)")
        .at(line, column, offset, ch.len_utf8()),
    ))
}

fn is_forbidden_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{FEFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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

/// Whether undecodable bytes mention the plan kind, in UTF-8 or in any of
/// the UTF-16 and UTF-32 forms that [`decode`] refuses: a plan saved as
/// UTF-16 (the default of Windows PowerShell 5's `>`) must be reported
/// when a directory is walked, not skipped as "other YAML".
pub fn mentions_plan_kind_bytes(bytes: &[u8]) -> bool {
    const KIND: &[u8] = b"FailbackPlan";
    let wide = |width: usize, lane: usize| -> Vec<u8> {
        KIND.iter()
            .flat_map(|b| (0..width).map(move |i| if i == lane { *b } else { 0 }))
            .collect()
    };
    [
        KIND.to_vec(),
        wide(2, 0),
        wide(2, 1),
        wide(4, 0),
        wide(4, 3),
    ]
    .iter()
    .any(|pattern| {
        bytes
            .windows(pattern.len())
            .any(|w| w == pattern.as_slice())
    })
}

/// The parser limits, as [`yaml_error`] words them (`parse_options` in the
/// parent module sets them).
pub const MAX_DEPTH: usize = 32;
pub const MAX_ALIASES: usize = 1_000;
pub const MAX_ANCHORS: usize = 1_000;
pub const MAX_NODES: usize = 2_000_000;
pub const MAX_REPLAYED_EVENTS: usize = 100_000;

const FLATTEN: &str =
    "a plan is at most 32 levels deep (a VM's network is at level 8); remove the extra nesting";
const EXPAND_ALIASES: &str = "write the values out instead of nesting aliases of aliases";

/// A serde-saphyr error as a located diagnostic.
pub fn yaml_error(text: &str, err: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;
    // Alias and snippet wrappers carry locations; the error inside says what.
    let mut inner = err.without_snippet();
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (code, message, help): (Code, String, String) = match inner {
        E::DuplicateMappingKey { key, .. } => (
            Code::DuplicateKey,
            match key {
                Some(k) => format!(
                    "duplicate key '{}' in this mapping",
                    super::suggest::shorten(k)
                ),
                None => "duplicate key in this mapping".to_owned(),
            },
            "a key may appear once per mapping: remove or merge the repeated entry".to_owned(),
        ),
        E::MultipleDocuments { .. }
        | E::Budget {
            breach: B::Documents { .. },
            ..
        } => (
            Code::MultipleDocuments,
            "a second YAML document starts here; a plan file holds exactly one".to_owned(),
            "put each plan in its own file, or remove the `---` separator".to_owned(),
        ),
        E::Budget { breach, .. } => {
            let (message, help) = match breach {
                B::Depth { .. } => (
                    format!("the document is nested more than {MAX_DEPTH} levels deep"),
                    FLATTEN,
                ),
                B::Aliases { .. } => (
                    format!(
                        "the document uses more than {} aliases (`*name`)",
                        thousands(MAX_ALIASES)
                    ),
                    EXPAND_ALIASES,
                ),
                B::Anchors { .. } => (
                    format!(
                        "the document defines more than {} anchors (`&name`)",
                        thousands(MAX_ANCHORS)
                    ),
                    "a plan needs few anchors; remove the unused ones",
                ),
                B::Nodes { .. } | B::Events { .. } => (
                    format!("the document has more than {} values", thousands(MAX_NODES)),
                    "split the plan into several plans, one per application or wave",
                ),
                B::ScalarBytes { .. } => (
                    "the text values add up to more than 4 MiB".to_owned(),
                    "split the plan into several plans, one per application or wave",
                ),
                B::RecordedAnchorEvents { .. }
                | B::RecordedAnchorBytes { .. }
                | B::AliasAnchorRatio { .. }
                | B::MergeKeys { .. } => (
                    format!(
                        "aliases expand to more than {} values (each alias of an alias multiplies the size)",
                        thousands(MAX_REPLAYED_EVENTS)
                    ),
                    EXPAND_ALIASES,
                ),
                other => (
                    format!("the document exceeds a parsing limit ({other:?})"),
                    EXPAND_ALIASES,
                ),
            };
            (Code::YamlBudget, message, help.to_owned())
        }
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => (
            Code::YamlBudget,
            format!(
                "aliases expand to more than {} values (each alias of an alias multiplies the size)",
                thousands(MAX_REPLAYED_EVENTS)
            ),
            EXPAND_ALIASES.to_owned(),
        ),
        E::UnknownAnchor { .. } => (
            Code::YamlSyntax,
            "this alias (`*name`) refers to an anchor that is not defined before it".to_owned(),
            "define the anchor with `&name` on a value above this line, or write the value out"
                .to_owned(),
        ),
        E::NonFiniteFloat { value, .. } => (
            Code::WrongType,
            format!(
                "'{}' reads as an infinite or not-a-number float, which no plan field accepts",
                super::suggest::shorten(value)
            ),
            format!(
                "quote it if it is text (\"{}\"), or write a whole number",
                super::suggest::shorten(value)
            ),
        ),
        other => {
            use serde_saphyr::MessageFormatter as _;
            let message: String = serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let (code, help) = if message.contains("recursion limit") {
                (Code::YamlBudget, FLATTEN.to_owned())
            } else if message.contains("tabs") {
                (
                    Code::YamlSyntax,
                    "indent with spaces; YAML does not allow tabs for indentation".to_owned(),
                )
            } else {
                (Code::YamlSyntax, syntax_help(text, err))
            };
            let message = if code == Code::YamlBudget {
                format!("the document is nested more than {MAX_DEPTH} levels deep")
            } else {
                message
            };
            (code, message, help)
        }
    };
    let diag = Diagnostic::new(code, message).with_help(help);
    match location(text, err) {
        Some((line, mut column, mut offset)) => {
            let mut len = 0;
            if diag.message.contains("tabs") {
                // The parser stops after the tab; the tab is what to fix.
                if let Some((tab_offset, tab_column)) = leading_tab(text, offset) {
                    (offset, column, len) = (tab_offset, tab_column, 1);
                }
            }
            diag.at(line, column, offset, len)
        }
        _ => diag,
    }
}

/// Line, column and byte offset of a parser error, when it has a place.
fn location(text: &str, err: &serde_saphyr::Error) -> Option<(u32, u32, usize)> {
    let loc = err.location().filter(|l| l.line() > 0)?;
    let line = u32::try_from(loc.line()).unwrap_or(u32::MAX);
    let column = u32::try_from(loc.column()).unwrap_or(u32::MAX).max(1);
    let offset = loc
        .span()
        .byte_offset()
        .and_then(|o| usize::try_from(o).ok())
        .filter(|o| *o <= text.len())
        .unwrap_or_else(|| offset_of(text, line, column));
    Some((line, column, offset))
}

/// `1,000,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first tab in the indentation of the line that holds `offset`.
fn leading_tab(text: &str, offset: usize) -> Option<(usize, u32)> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |p| p + 1);
    let line = &text[start..];
    let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
    let tab = line[..indent].find('\t')?;
    Some((start + tab, clamp(line[..tab].chars().count() + 1)))
}

/// The help for a syntax error: an unclosed `[` or `{` before the error is
/// the usual cause, and the parser only notices it lines later.
fn syntax_help(text: &str, err: &serde_saphyr::Error) -> String {
    let offset = location(text, err).map_or(text.len(), |(_, _, offset)| offset);
    let message = err.to_string();
    if message.contains("mismatched bracket") {
        "a flow list opened with `[` ends with `]`, a flow mapping opened with `{` ends with `}`"
            .to_owned()
    } else if let Some((open, line, column)) = unclosed_bracket(text.get(..offset).unwrap_or(text))
    {
        let close = if open == '[' { ']' } else { '}' };
        format!(
            "the `{open}` at line {line}, column {column} is not closed before this point: end its value with `{close}`"
        )
    } else if message.contains("did not find expected key")
        || message.contains("mapping values are not allowed")
        || message.contains("did not find expected '-'")
    {
        "check the indentation of this line: the keys of one mapping, and the `-` items of one list, start in the same column".to_owned()
    } else if message.contains("unclosed quote")
        || message.contains("found unexpected end of stream")
    {
        "close the quote that starts here with the same quote character".to_owned()
    } else {
        "fix the YAML syntax at this position".to_owned()
    }
}

/// The innermost flow bracket still open at the end of `text`, with its
/// line and column, skipping quoted text and comments. Block scalars are
/// not recognised, so this is a hint for a help line, not a parser.
fn unclosed_bracket(text: &str) -> Option<(char, u32, u32)> {
    let mut stack: Vec<(char, u32, u32)> = Vec::new();
    let (mut line, mut column) = (1u32, 0u32);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column = column.saturating_add(1);
        // A lone CR ends a line too (`diagnostics::lines`).
        if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
            line = line.saturating_add(1);
            column = 0;
            comment = false;
            prev = c;
            continue;
        }
        match quote {
            _ if comment => {}
            Some('"') if c == '\\' => {
                chars.next();
                column = column.saturating_add(1);
            }
            Some(q) if c == q => {
                if q == '\'' && chars.peek() == Some(&'\'') {
                    chars.next();
                    column = column.saturating_add(1);
                } else {
                    quote = None;
                }
            }
            Some(_) => {}
            None => match c {
                '#' if prev.is_whitespace() => comment = true,
                '"' | '\'' if !prev.is_alphanumeric() => quote = Some(c),
                '[' | '{' => stack.push((c, line, column)),
                ']' | '}' => {
                    stack.pop();
                }
                _ => {}
            },
        }
        prev = c;
    }
    stack.pop()
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
