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
    // A value's error is the key's: `user = 7` is about `user`, not `7`.
    let line_start = text[..start].rfind('\n').map(|p| p + 1).unwrap_or(0);
    if let Some((key, _)) = text[line_start..start].split_once('=') {
        let key = key.trim().trim_matches('"');
        if !key.is_empty() {
            return Some(key.to_string());
        }
    }
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

/// The text with the mistake at `span` set aside, so that reading it again finds the next one:
/// a value of the wrong type replaced by a placeholder of the expected type (the lines kept),
/// anything else blanked with [`blank_lines`]. `None` when it cannot be set aside.
pub(super) fn set_aside(text: &str, span: Range<usize>, message: &str) -> Option<String> {
    let expected = message.split_once("expected ").map(|(_, e)| e);
    let placeholder = expected.and_then(|e| {
        let e = e.trim_start_matches("a ").trim_start_matches("an ");
        [
            ("i64", "0"),
            ("i32", "0"),
            ("u64", "0"),
            ("u32", "0"),
            ("u16", "0"),
            ("usize", "0"),
            ("integer", "0"),
            ("f64", "0.0"),
            ("float", "0.0"),
            ("bool", "false"),
            ("string", "\"\""),
            ("sequence", "[]"),
            ("map", "{}"),
            ("struct", "{}"),
            ("table", "{}"),
        ]
        .iter()
        .find(|(t, _)| e.starts_with(t))
        .map(|(_, p)| *p)
    });
    let (start, end) = (span.start.min(text.len()), span.end.min(text.len()));
    match placeholder {
        Some(p) if start < end && text.is_char_boundary(start) && text.is_char_boundary(end) => {
            let value = &text[start..end];
            let newlines = value.matches('\n').count();
            let head = value.trim_start();
            // A table header or a whole table is not a value to replace.
            if newlines > 0 && !head.starts_with(['[', '{']) || head.starts_with("[[") {
                return None;
            }
            Some(format!(
                "{}{p}{}{}",
                &text[..start],
                "\n".repeat(newlines),
                &text[end..]
            ))
        }
        _ => blank_lines(text, span),
    }
}

/// The text with the lines `span` touches turned into spaces (newlines kept), or `None` when
/// the span covers more than one line or nothing would change: blanking a whole table would
/// only turn one error into others.
pub(super) fn blank_lines(text: &str, span: Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line_start = text[..start].rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line_end = text[end..].find('\n').map(|p| p + end).unwrap_or(text.len());
    let line = &text[line_start..line_end];
    if line.contains('\n') || line.trim().is_empty() || line.trim_start().starts_with('[') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..line_start]);
    for c in line.chars() {
        // A multi-byte character becomes as many spaces as it had bytes, so offsets stay.
        match c {
            '\r' => out.push(c),
            _ => out.extend(std::iter::repeat_n(' ', c.len_utf8())),
        }
    }
    out.push_str(&text[line_end..]);
    Some(out)
}
