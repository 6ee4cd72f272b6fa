//! Secrets written into a plan. A plan is reviewed in Git and printed in CI
//! logs: it may reference a secret (`file:` / `env:`), never hold one. A
//! detected secret is reported without its value, and blanked out of the
//! source text that reports quote.

use serde_json::Value;

use super::suggest::place;
use super::yaml::{Node, escape_segment, push_index};
use crate::diagnostics::{Code, Diagnostic};

/// A node that holds a secret.
#[derive(Clone, Debug)]
pub struct Secret {
    pub pointer: String,
    what: &'static str,
    place: String,
    offset: usize,
    len: usize,
}

impl Secret {
    pub fn diagnostic(&self) -> Diagnostic {
        let help = if self.pointer == "/spec/encryption/certificate" {
            "keep the certificate out of the plan and reference it: `certificate: { file: certs/dr.pfx }` or `certificate: { env: FAILBACK_CERT }`"
        } else {
            "remove it from the plan; store it in a file or an environment variable and reference it with `{ file: PATH }` or `{ env: NAME }`"
        };
        Diagnostic::new(
            Code::LiteralSecret,
            format!("{} holds {} (value not shown)", self.place, self.what),
        )
        .with_help(help)
        .with_pointer(self.pointer.clone())
    }
}

/// Every secret in the document, in values and in mapping keys.
pub fn find(value: &Value, root: &Node) -> Vec<Secret> {
    let mut found = Vec::new();
    let mut pointer = String::new();
    walk(value, &mut pointer, &mut |ptr, v| {
        let what = if ptr == "/spec/encryption/certificate" {
            match v {
                Value::String(_) => Some("the certificate itself instead of a reference"),
                _ => None,
            }
        } else {
            v.as_str().and_then(looks_secret)
        };
        let key_secret = v
            .as_object()
            .and_then(|m| m.keys().find_map(|k| looks_secret(k)));
        let what = match (what, key_secret) {
            (Some(what), _) => what,
            (None, Some(_)) => "a key that is a certificate or key",
            (None, None) => return,
        };
        let (offset, len) = root
            .lookup(ptr)
            .map_or((0, 0), |(n, _)| (n.pos.offset, n.pos.len));
        found.push(Secret {
            pointer: ptr.to_owned(),
            what,
            place: place(ptr, value),
            offset,
            len,
        });
    });
    found
}

/// Whether the document holds any secret `find` would report. The clean
/// path asks this of every plan, so it writes no pointers: the one place
/// that matters is looked up directly, and the walk keeps its stack itself.
pub fn any(value: &Value) -> bool {
    if value
        .pointer("/spec/encryption/certificate")
        .is_some_and(Value::is_string)
    {
        return true;
    }
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if looks_secret(s).is_some() => return true,
            Value::Object(map) => {
                if map.keys().any(|k| looks_secret(k).is_some()) {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

fn walk(value: &Value, pointer: &mut String, visit: &mut dyn FnMut(&str, &Value)) {
    visit(pointer, value);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_segment(k));
                walk(v, pointer, visit);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = pointer.len();
                push_index(pointer, i);
                walk(v, pointer, visit);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether a string is a secret by its shape: PEM blocks, private keys,
/// long base64 DER blobs (certificates and PFX files start `MII`).
pub fn looks_secret(s: &str) -> Option<&'static str> {
    // Most strings are names: rule them out in one pass over the bytes,
    // without allocating (a PEM marker holds `---`).
    if !s
        .as_bytes()
        .windows(3)
        .any(|w| matches!(w, b"MII" | b"---"))
    {
        return None;
    }
    if !s.contains("-----BEGIN") && !s.contains("MII") {
        return None;
    }
    let t = s.trim();
    if t.contains("-----BEGIN") && t.contains("PRIVATE KEY") {
        return Some("a private key");
    }
    if t.contains("-----BEGIN") {
        return Some("a PEM-encoded certificate or key");
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let base64 = compact
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if base64 && compact.len() >= 64 && compact.starts_with("MII") {
        return Some("a base64-encoded certificate or key");
    }
    None
}

/// The source with every secret's characters replaced by `*` (whitespace
/// kept, so that every other position and the layout are unchanged), and
/// then whatever [`redact_text`] finds.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for s in secrets {
        let end = s.offset.saturating_add(s.len).min(bytes.len());
        blank(&mut bytes[s.offset.min(end)..end]);
    }
    redact_text(&into_text(bytes))
}

/// The source with everything that looks like a secret by its text alone
/// blanked out: PEM blocks and long base64 runs starting `MII`, with the
/// base64 lines that continue them. This is what reports show when the
/// document cannot be parsed, and a second net when it can (a secret
/// defined by an anchor, or used as a key).
pub fn redact_text(text: &str) -> String {
    if !text.contains("-----BEGIN") && !text.contains("MII") {
        return text.to_owned();
    }
    enum State {
        Outside,
        /// After `-----BEGIN`: base64 lines, then `-----END`.
        Pem,
        /// After a long `MII` run: the lines of the same wrapped blob.
        Blob,
    }
    let mut bytes = text.as_bytes().to_vec();
    let mut state = State::Outside;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let range = start..start + line.len();
        start += line.len();
        let content = line.trim().trim_matches(['"', '\'']);
        if let Some(begin) = line.find("-----BEGIN") {
            blank(&mut bytes[range.start + begin..range.end]);
            state = if line[begin..].contains("-----END") {
                State::Outside
            } else {
                State::Pem
            };
            continue;
        }
        match state {
            State::Pem if content.contains("-----END") => {
                blank(&mut bytes[range]);
                state = State::Outside;
                continue;
            }
            State::Pem if !content.is_empty() && content.bytes().all(is_base64_byte) => {
                blank(&mut bytes[range]);
                continue;
            }
            State::Blob if is_base64_line(content) => {
                blank(&mut bytes[range]);
                continue;
            }
            _ => state = State::Outside,
        }
        for (at, len) in base64_runs(line) {
            if len >= 64 && line[at..].starts_with("MII") {
                blank(&mut bytes[range.start + at..range.start + at + len]);
                state = State::Blob;
            }
        }
    }
    into_text(bytes)
}

/// Blanks a line of a secret with `*`, byte for byte, so that every span
/// keeps its offset. A multi-byte character becomes one masking character
/// of the same length (`·`, `∗`, `𝟎`), not one `*` per byte: columns count
/// characters, and the human report's must stay those of the file.
fn blank(bytes: &mut [u8]) {
    const MASKS: [&[u8]; 3] = ["·".as_bytes(), "∗".as_bytes(), "𝟎".as_bytes()];
    let mut i = 0;
    while i < bytes.len() {
        let width: usize = match bytes[i] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        let mask = MASKS.get(width.wrapping_sub(2)).copied();
        match (bytes.get_mut(i..i + width), mask) {
            (Some(char_bytes), Some(mask)) if width > 1 => char_bytes.copy_from_slice(mask),
            _ => {
                if !bytes[i].is_ascii_whitespace() {
                    bytes[i] = b'*';
                }
            }
        }
        i += width.min(bytes.len() - i).max(1);
    }
}

fn into_text(bytes: Vec<u8>) -> String {
    // Replacing whole UTF-8 sequences byte by byte with ASCII keeps it valid.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// A line that continues a wrapped base64 blob: long, or the padded end.
fn is_base64_line(content: &str) -> bool {
    (content.len() >= 16 || content.ends_with('=')) && content.bytes().all(is_base64_byte)
}

/// Offsets and lengths of the runs of base64 characters in a line.
fn base64_runs(line: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut run_start = None;
    for (i, b) in line.bytes().chain(std::iter::once(b' ')).enumerate() {
        match (is_base64_byte(b), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i - s));
                run_start = None;
            }
            _ => {}
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(
            looks_secret("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_some()
        );
        assert!(looks_secret(&format!("MII{}", "A".repeat(80))).is_some());
        assert!(looks_secret("certs/dr.pfx").is_none());
        assert!(looks_secret("Production").is_none());
    }

    #[test]
    fn text_redaction_keeps_layout() {
        let pem = "a: |\n  -----BEGIN CERTIFICATE-----\n  MIIBszCCAVmg\n  -----END CERTIFICATE-----\nb: x\n";
        let out = redact_text(pem);
        assert_eq!(out.len(), pem.len());
        assert!(!out.contains("BEGIN") && !out.contains("MIIB"), "{out}");
        assert!(out.ends_with("\nb: x\n"), "{out}");
        let blob = format!("k: MII{}\nn: 1\n", "A".repeat(80));
        let out = redact_text(&blob);
        assert!(!out.contains("MII") && out.ends_with("\nn: 1\n"), "{out}");
        assert_eq!(redact_text("name: MIIshort\n"), "name: MIIshort\n");
    }
}
