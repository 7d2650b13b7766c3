//! Diagnostics located in the user's files.
//!
//! Validation produces [`Diagnostic`]s that name a field by its path in the
//! TOML document (`nodes.worker1.address`); [`SourceFile`] turns the path into
//! line and column using the spans toml_edit keeps, and renders a report in
//! the style of rustc (location, source line, caret, help).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// A path to a field in a TOML document, e.g. `["nodes", "worker1", "address"]`.
/// An index into an array is written as its decimal number.
pub type FieldPath = Vec<String>;

/// One finding about one field of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file the field is in.
    pub file: PathBuf,
    /// The field; empty for the whole file.
    pub field: FieldPath,
    /// What is wrong.
    pub message: String,
    /// What would be right.
    pub help: Option<String>,
    /// A byte span, when the parser gave one directly (syntax errors).
    pub span: Option<std::ops::Range<usize>>,
}

impl Diagnostic {
    pub fn error(file: &Path, field: FieldPath, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            field,
            message: message.into(),
            help: None,
            span: None,
        }
    }

    pub fn warning(file: &Path, field: FieldPath, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, field, message)
        }
    }

    pub fn note(file: &Path, field: FieldPath, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(file, field, message)
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_span(mut self, span: Option<std::ops::Range<usize>>) -> Self {
        self.span = span;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The field path as the user writes it (`nodes.worker1.address`).
    pub fn field_display(&self) -> String {
        display_path(&self.field)
    }

    /// The finding on one line, located in its file as it is on disk now:
    /// `file:line:column: field: message; help`. For the errors of commands
    /// that stop at the first (`build`), where there is no report to render.
    pub fn one_line(&self) -> String {
        let location = std::fs::read_to_string(&self.file)
            .ok()
            .map(|text| SourceFile::new(self.file.clone(), text))
            .and_then(|source| {
                let span = self.span.clone().or_else(|| source.locate(&self.field))?;
                let (line, column) = source.line_col(span.start);
                Some(format!("{}:{line}:{column}", self.file.display()))
            })
            .unwrap_or_else(|| self.file.display().to_string());
        let help = self
            .help
            .as_ref()
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        format!(
            "{location}: {}: {}{help}",
            self.field_display(),
            self.message
        )
    }
}

/// Writes a field path the way a user would type it in TOML.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            let _ = write!(out, "[{part}]");
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        let bare = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if bare {
            out.push_str(part);
        } else {
            let _ = write!(out, "\"{part}\"");
        }
    }
    out
}

/// A user's file, kept with its text and parsed spans so paths can be located.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as given by the user (shown in reports).
    pub path: PathBuf,
    pub text: String,
    document: Option<toml_edit::Document<String>>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        let document = toml_edit::Document::parse(text.clone()).ok();
        SourceFile {
            path,
            text,
            document,
        }
    }

    /// The byte span of a field: its value if present, else the deepest
    /// table or key on the way to it.
    pub fn locate(&self, path: &[String]) -> Option<std::ops::Range<usize>> {
        let doc = self.document.as_ref()?;
        locate_in_table(doc.as_table(), path, None)
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Renders one diagnostic about this file.
    pub fn render(&self, diagnostic: &Diagnostic) -> String {
        let span = diagnostic
            .span
            .clone()
            .or_else(|| self.locate(&diagnostic.field));
        let mut out = String::new();
        let field = diagnostic.field_display();
        if field.is_empty() {
            let _ = writeln!(
                out,
                "{}: {}",
                diagnostic.severity.label(),
                diagnostic.message
            );
        } else {
            let _ = writeln!(
                out,
                "{}: {field}: {}",
                diagnostic.severity.label(),
                diagnostic.message
            );
        }
        match span {
            Some(span) => {
                let (line, column) = self.line_col(span.start);
                let _ = writeln!(out, "  --> {}:{line}:{column}", self.path.display());
                let source_line = self.text.lines().nth(line - 1).unwrap_or("");
                let width = line.to_string().len();
                let underline_len = self.text[span.clone()]
                    .lines()
                    .next()
                    .map_or(1, |s| s.chars().count().max(1));
                let _ = writeln!(out, "{:width$} |", "");
                let _ = writeln!(out, "{line} | {source_line}");
                let _ = writeln!(
                    out,
                    "{:width$} | {}{}",
                    "",
                    " ".repeat(column - 1),
                    "^".repeat(underline_len)
                );
            }
            None => {
                let _ = writeln!(out, "  --> {}", self.path.display());
            }
        }
        if let Some(help) = &diagnostic.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }
}

fn locate_in_table(
    table: &toml_edit::Table,
    path: &[String],
    best: Option<std::ops::Range<usize>>,
) -> Option<std::ops::Range<usize>> {
    let Some((part, rest)) = path.split_first() else {
        return best;
    };
    let Some((key, item)) = table.get_key_value(part) else {
        return best;
    };
    let best = item.span().or(key.span()).or(best);
    match item {
        toml_edit::Item::Table(inner) => locate_in_table(inner, rest, best),
        toml_edit::Item::Value(value) => locate_in_value(value, rest, best),
        toml_edit::Item::ArrayOfTables(array) => {
            let Some((index, rest)) = rest.split_first() else {
                return best;
            };
            match index.parse::<usize>().ok().and_then(|i| array.get(i)) {
                Some(inner) => locate_in_table(inner, rest, inner.span().or(best)),
                None => best,
            }
        }
        toml_edit::Item::None => best,
    }
}

fn locate_in_value(
    value: &toml_edit::Value,
    path: &[String],
    best: Option<std::ops::Range<usize>>,
) -> Option<std::ops::Range<usize>> {
    let Some((part, rest)) = path.split_first() else {
        return value.span().or(best);
    };
    let next = match value {
        toml_edit::Value::InlineTable(table) => table.get(part),
        toml_edit::Value::Array(array) => part.parse::<usize>().ok().and_then(|i| array.get(i)),
        _ => None,
    };
    match next {
        Some(inner) => locate_in_value(inner, rest, inner.span().or(best)),
        None => value.span().or(best),
    }
}

/// Renders every diagnostic, grouped in the order given.
pub fn render_all(files: &[&SourceFile], diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for diagnostic in diagnostics {
        match files.iter().find(|f| f.path == diagnostic.file) {
            Some(file) => out.push_str(&file.render(diagnostic)),
            None => {
                let _ = writeln!(
                    out,
                    "{}: {}: {}\n  --> {}",
                    diagnostic.severity.label(),
                    diagnostic.field_display(),
                    diagnostic.message,
                    diagnostic.file.display()
                );
                if let Some(help) = &diagnostic.help {
                    let _ = writeln!(out, "  = help: {help}");
                }
            }
        }
        out.push('\n');
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}
