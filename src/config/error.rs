//! The errors of a configuration file: each names the file, the line (when known) and the
//! dotted field, so that `certkeeper check` points at what to fix.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One configuration error, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted field name, e.g. `certificate[2].key`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file.display(), line, self.field, self.message),
            None => write!(f, "{}: {}: {}", self.file.display(), self.field, self.message),
        }
    }
}

/// All errors found in one configuration file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Finds the key an error from the TOML parser points at, for the `field` part of the message.
pub(super) fn field_from_toml_error(text: &str, span: Option<Range<usize>>) -> Option<String> {
    let span = span?;
    let start = span.start.min(text.len());
    let snippet = text.get(start..span.end.min(text.len()))?.trim();
    let key: String = snippet
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if !key.is_empty() {
        return Some(key);
    }
    let line_start = text[..start].rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line = text[line_start..].lines().next()?;
    let key: String = line
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!key.is_empty()).then_some(key)
}
