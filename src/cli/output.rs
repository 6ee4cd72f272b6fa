//! The only place that writes to stdout and stderr (besides `tracing`).
//! Write errors (a closed pipe) end the output quietly.

use std::io::Write;

/// Writes a result to stdout.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes a result line to stdout.
pub fn out_line(text: &str) {
    out(&format!("{text}\n"));
}

/// Writes one JSON document (or JSON Lines record) to stdout.
pub fn out_json(value: &serde_json::Value) {
    out_line(&value.to_string());
}

/// Writes a diagnostic or message for people to stderr.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Writes a line to stderr.
pub fn err_line(text: &str) {
    err(&format!("{text}\n"));
}
