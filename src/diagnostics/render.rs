//! Renderings of file reports. Each returns text; only `cli::output` writes.

use std::fmt::Write as _;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde_json::json;

use super::{Diagnostic, FileReport, Severity};

/// Options for the human rendering.
#[derive(Clone, Copy, Debug)]
pub struct HumanStyle {
    pub color: bool,
    pub unicode: bool,
    pub width: usize,
}

impl HumanStyle {
    /// The stable form used in snapshots: no colour, unicode, 100 columns.
    pub fn plain() -> Self {
        HumanStyle {
            color: false,
            unicode: true,
            width: 100,
        }
    }
}

/// A miette view of one diagnostic in its file.
#[derive(Debug)]
struct MietteView<'a> {
    diag: &'a Diagnostic,
    source: Source<'a>,
    /// Whether the snippet is shown: not for a node on an absurdly long
    /// line, which miette cannot underline (its padding overflows).
    snippet: bool,
}

/// The longest line shown as a snippet, in bytes.
const MAX_SNIPPET_LINE: usize = 4096;

/// Whether the lines a snippet shows around `offset` (the node's line and
/// the context lines) are short enough to print.
fn snippet_fits(text: &str, offset: usize) -> bool {
    const CONTEXT: usize = 2;
    let offset = offset.min(text.len());
    let before = text[..offset].split(['\n', '\r']).rev().take(CONTEXT + 1);
    let after = text[offset..].split(['\n', '\r']).take(CONTEXT + 1);
    let mut lines = before.chain(after);
    lines.all(|l| l.len() <= MAX_SNIPPET_LINE)
}

/// The file's text as miette reads it for one diagnostic.
///
/// Borrowed, not copied per diagnostic; and read through a window of the
/// lines around the span, because miette's own reader scans the text from
/// its start on every call: on a 4 MiB plan with thousands of diagnostics
/// that is quadratic. Columns are counted in characters, as the
/// diagnostics and editors count them (miette's `file:line:column` header
/// counts bytes).
#[derive(Debug)]
struct Source<'a> {
    name: &'a str,
    text: &'a str,
    /// Where each line after the first starts, as miette counts lines
    /// (`\n`, `\r\n` and a lone `\r` each end one).
    line_starts: &'a [usize],
}

impl Source<'_> {
    /// The 0-based line that holds byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// The byte where 0-based `line` starts (the end of the text past the last line).
    fn start_of(&self, line: usize) -> usize {
        match line {
            0 => 0,
            n => self
                .line_starts
                .get(n - 1)
                .copied()
                .unwrap_or(self.text.len()),
        }
    }
}

/// Old Mac line ends (a `\r` alone) as `\n`, byte for byte: miette counts
/// them as line ends when it numbers lines but prints them inside the line,
/// and a bare carriage return sent to a terminal overwrites the line.
fn lone_cr_as_lf(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !(0..bytes.len()).any(lone) {
        return std::borrow::Cow::Borrowed(text);
    }
    let fixed: Vec<u8> = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    // Only an ASCII byte was replaced by another: still UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(fixed).unwrap_or_else(|_| text.to_owned()))
}

impl SourceCode for Source<'_> {
    fn read_span<'b>(
        &'b self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'b> + 'b>, MietteError> {
        let (offset, end) = (span.offset(), span.offset() + span.len());
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        // Enough whole lines around the span for miette to find the same
        // context in the window as in the whole text.
        let first = self.line_of(offset).saturating_sub(context_lines_before);
        let last = self.line_of(end.saturating_sub(1).max(offset)) + context_lines_after + 2;
        let (from, to) = (self.start_of(first), self.start_of(last));
        let window = self.text.get(from..to).ok_or(MietteError::OutOfBounds)?;
        let inner = window.read_span(
            &SourceSpan::new((offset - from).into(), span.len()),
            context_lines_before,
            context_lines_after,
        )?;
        let start = from + inner.span().offset();
        let line_start = self.start_of(self.line_of(start));
        let column = self
            .text
            .get(line_start..start)
            .map_or(inner.column(), |t| t.chars().count());
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.to_owned(),
            inner.data(),
            SourceSpan::new(start.into(), inner.span().len()),
            first + inner.line(),
            column,
            first + inner.line_count(),
        )))
    }
}

impl std::fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for MietteView<'_> {}

impl miette::Diagnostic for MietteView<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        Some(Box::new(self.diag.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diag
            .span
            .filter(|_| self.snippet)
            .map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, len) = self.diag.span.filter(|_| self.snippet)?;
        let label = match (&self.diag.pointer, self.diag.code.as_str()) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            _ => "here".to_owned(),
        };
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(label), (offset, len)),
        )))
    }
}

/// The human report of one file: one graphical block per diagnostic, then a
/// one-line summary for the file.
pub fn human(report: &FileReport, style: HumanStyle) -> String {
    let theme = match (style.unicode, style.color) {
        (true, true) => GraphicalTheme::unicode(),
        (true, false) => GraphicalTheme::unicode_nocolor(),
        (false, true) => GraphicalTheme::ascii(),
        (false, false) => GraphicalTheme::none(),
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false)
        .with_context_lines(2);
    let mut out = String::new();
    let text = lone_cr_as_lf(&report.source);
    let starts = super::lines::line_starts(&text);
    for diag in &report.diagnostics {
        let snippet = diag
            .span
            .is_some_and(|(offset, _)| snippet_fits(&text, offset));
        let view = MietteView {
            diag,
            snippet,
            source: Source {
                name: &report.path,
                text: &text,
                line_starts: &starts,
            },
        };
        let mut block = String::new();
        if handler.render_report(&mut block, &view).is_err() {
            block = format!(
                "{}[{}]: {}\n",
                diag.severity.as_str(),
                diag.code.as_str(),
                diag.message
            );
        }
        out.push_str(&block);
        if !snippet && let (Some(line), Some(column)) = (diag.line, diag.column) {
            let _ = writeln!(
                out,
                "  at {}:{line}:{column} (the line is too long to show)",
                report.path
            );
        }
        out.push('\n');
    }
    out
}

/// The summary line of one file.
pub fn summary_line(report: &FileReport, deny_warnings: bool) -> String {
    let verdict = if report.is_valid(deny_warnings) {
        "valid"
    } else {
        "invalid"
    };
    let mut line = format!("{}: {verdict}", report.path);
    let (e, w) = (report.errors(), report.warnings());
    if e + w > 0 {
        let _ = write!(
            line,
            " ({} error{}, {} warning{})",
            e,
            plural(e),
            w,
            plural(w)
        );
    }
    line
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The JSON object of one file, as in `validate --format json`.
pub fn json_file(report: &FileReport, deny_warnings: bool) -> serde_json::Value {
    json!({
        "path": report.path,
        "valid": report.is_valid(deny_warnings),
        "errors": report.errors(),
        "warnings": report.warnings(),
        "diagnostics": report.diagnostics,
    })
}

/// GitHub Actions workflow commands, one line per diagnostic.
pub fn github(report: &FileReport) -> String {
    let mut out = String::new();
    for d in &report.diagnostics {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = write!(out, "::{level} file={}", escape_property(&report.path));
        if let Some(line) = d.line {
            let _ = write!(out, ",line={line}");
        }
        if let Some(col) = d.column {
            let _ = write!(out, ",col={col}");
        }
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let _ = writeln!(
            out,
            ",title={}::{}",
            escape_property(d.code.as_str()),
            escape_data(&message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Code;

    #[test]
    fn github_escapes_workflow_command_characters() {
        let report = FileReport {
            path: "plans/a,b:c.yaml".into(),
            source: String::new(),
            diagnostics: vec![Diagnostic::new(Code::YamlSyntax, "bad: 100%\nnext").at(3, 4, 0, 0)],
        };
        assert_eq!(
            github(&report),
            "::error file=plans/a%2Cb%3Ac.yaml,line=3,col=4,title=FB0101::bad: 100%25%0Anext\n"
        );
    }
}
