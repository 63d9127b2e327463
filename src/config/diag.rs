//! Configuration diagnostics: an error or warning tied to a file, line,
//! column and key path, e.g.
//! `probes/web.yaml:12:7: probes[0].http.url: invalid URL: relative URL without a base`.
//!
//! The compiler collects every diagnostic before giving up, so an operator
//! fixes all their mistakes in one pass.

use std::fmt;

use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `probes[2].expect.status`. Empty for whole-file errors.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn at(severity: Severity, pos: &Pos, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            file: pos.file.to_string(),
            line: pos.line,
            column: pos.col,
            key: key.to_string(),
            message: crate::redact::redact(&message.into()),
        }
    }

    /// A problem with a whole file (unreadable, missing).
    pub fn file(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {sev}: {}", self.file, self.message)
        } else if self.key.is_empty() {
            write!(
                f,
                "{}:{}:{}: {sev}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {sev}: {}: {}",
                self.file, self.line, self.column, self.key, self.message
            )
        }
    }
}

/// All the diagnostics of one load; an error among them means the
/// configuration is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
