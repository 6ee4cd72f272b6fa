//! Secrets written into a plan. A plan is reviewed in Git and printed in CI
//! logs: it may reference a secret (`file:` / `env:`), never hold one. A
//! detected secret is reported without its value, and blanked out of the
//! source text that reports quote.

use serde_json::Value;

use super::suggest::place;
use super::yaml::{Node, escape_segment};
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

/// Every secret in the document.
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
        if let Some(what) = what {
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
        }
    });
    found
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
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(v, pointer, visit);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether a string is a secret by its shape: PEM blocks, private keys,
/// long base64 DER blobs (certificates and PFX files start `MII`).
fn looks_secret(s: &str) -> Option<&'static str> {
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

/// The source with every secret's bytes replaced by `*` (line breaks kept,
/// so that every other position is unchanged).
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    if secrets.is_empty() {
        return text.to_owned();
    }
    let mut bytes = text.as_bytes().to_vec();
    for s in secrets {
        let end = s.offset.saturating_add(s.len).min(bytes.len());
        for b in &mut bytes[s.offset.min(end)..end] {
            if *b != b'\n' && *b != b'\r' {
                *b = b'*';
            }
        }
    }
    // Replacing whole UTF-8 sequences byte by byte with ASCII keeps it valid.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
}
