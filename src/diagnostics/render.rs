//! Renderings of file reports. Each returns text; only `cli::output` writes.

use std::fmt::Write as _;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
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
    source: NamedSource<String>,
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
            .map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, len) = self.diag.span?;
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
    for diag in &report.diagnostics {
        let view = MietteView {
            diag,
            source: NamedSource::new(report.path.clone(), report.source.clone()),
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
