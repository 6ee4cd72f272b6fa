//! What the validator reports: diagnostics with stable codes, grouped in one
//! report per file, and their renderings (human, JSON, GitHub annotations).

mod codes;
pub mod lines;
pub mod render;

use serde::Serialize;

pub use codes::{Code, Severity};

/// One problem in one file, located at the node it concerns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// What is wrong, naming the offending value (never a secret's value).
    pub message: String,
    /// 1-based line of the offending node; `None` for whole-file problems.
    pub line: Option<u32>,
    /// 1-based column of the offending node.
    pub column: Option<u32>,
    /// JSON pointer of the node inside the document, when there is one.
    pub pointer: Option<String>,
    /// The fix.
    pub help: Option<String>,
    /// Byte range of the node in the (redacted) source, for snippets.
    #[serde(skip)]
    pub span: Option<(usize, usize)>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            line: None,
            column: None,
            pointer: None,
            help: None,
            span: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Places the diagnostic at a line, column and byte range.
    pub fn at(mut self, line: u32, column: u32, offset: usize, len: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self.span = Some((offset, len));
        self
    }

    /// Sets the line and column from the span's offset in `index`'s text:
    /// the position every rendering shows (see [`lines`]).
    pub fn place(&mut self, index: &lines::LineIndex) {
        if let Some((offset, _)) = self.span {
            let (line, column) = index.position(offset);
            self.line = Some(line);
            self.column = Some(column);
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Everything the validator found in one file.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// The path as the user gave or as it was found.
    pub path: String,
    /// The text the diagnostics point into, with any detected secret blanked
    /// out so that no rendering can echo it. Empty when the file could not be
    /// decoded as text.
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileReport {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// Valid means no errors; with `deny_warnings`, no warnings either.
    pub fn is_valid(&self, deny_warnings: bool) -> bool {
        self.errors() == 0 && (!deny_warnings || self.warnings() == 0)
    }
}
