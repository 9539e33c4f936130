//! Where a configuration error is: file, line:column and dotted key.
//!
//! [`parse_all`] deserializes the raw structs and, when serde stops at an
//! unknown key or a wrong type, records that error, removes the offending key
//! from the parsed document and tries again, so that one run of
//! `check-config` reports every such error, not only the first.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key (`channels.ttl`, `accounts[1].name`); empty for the file.
    pub key: String,
    /// What is wrong, in words that never include a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one configuration file (never empty).
#[derive(Debug, Clone)]
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

/// The file being validated and the errors found so far.
pub(super) struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Source<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Source {
            file,
            text,
            errors: Vec::new(),
        }
    }

    pub(super) fn file(&self) -> &Path {
        self.file
    }

    /// Records an error at `span` (a byte range of the file).
    pub(super) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let position = Some(line_col(self.text, span.start));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Records an error at a spanned value.
    pub(super) fn error_at<T>(&mut self, at: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.error(at.span(), key, message)
    }

    /// Records an error about a key that is absent (points at its table).
    pub(super) fn missing(&mut self, table_span: Range<usize>, key: &str) {
        self.error(table_span, key, "is required")
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Deserializes `T`, collecting every unknown-key and wrong-type error.
/// Returns the value parsed once the offending keys are removed, or `None`
/// when the document is not TOML at all.
pub(super) fn parse_all<T: DeserializeOwned>(src: &mut Source<'_>) -> Option<T> {
    let mut doc = match DeTable::parse(src.text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            src.error(span, "", format!("not valid TOML: {}", e.message().trim()));
            return None;
        }
    };
    // Each round removes one key, so this ends.
    loop {
        let attempt = toml::de::Deserializer::from(doc.clone());
        match T::deserialize(attempt) {
            Ok(value) => return Some(value),
            Err(e) => {
                let message = e.message().trim().to_string();
                let removed = e.span().and_then(|s| remove_at(doc.get_mut(), s.start));
                match removed {
                    Some((key, span)) => src.error(span, &key, message),
                    None => {
                        src.error(e.span().unwrap_or(0..0), "", message);
                        return None;
                    }
                }
            }
        }
    }
}

/// Removes the innermost table entry whose key or scalar value contains
/// byte `pos`; returns its dotted path and the span of the key. Searches
/// every nested table and array of tables, because the span of a table
/// written as a `[header]` covers only its header.
fn remove_at(table: &mut DeTable<'_>, pos: usize) -> Option<(String, Range<usize>)> {
    let direct = table.iter().position(|(k, v)| {
        contains(k.span(), pos)
            || (!matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_))
                && contains(v.span(), pos))
    });
    if let Some(hit) = direct {
        let (name, key_span) = table
            .iter()
            .nth(hit)
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))?;
        table.remove(name.as_str());
        return Some((name, key_span));
    }
    let mut found = None;
    for (k, v) in table.iter_mut() {
        if let Some((inner, span)) = remove_in_value(v.get_mut(), pos) {
            found = Some((format!("{}{inner}", k.get_ref()), span));
            break;
        }
    }
    if found.is_none() {
        // An array of scalars (or an inline value) holding the position:
        // drop the whole key.
        let hit = table.iter().position(|(_, v)| contains(v.span(), pos))?;
        let (name, key_span) = table
            .iter()
            .nth(hit)
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))?;
        table.remove(name.as_str());
        return Some((name, key_span));
    }
    found
}

fn remove_in_value(value: &mut DeValue<'_>, pos: usize) -> Option<(String, Range<usize>)> {
    match value {
        DeValue::Table(t) => remove_at(t, pos).map(|(k, s)| (format!(".{k}"), s)),
        DeValue::Array(items) => {
            items
                .as_mut()
                .iter_mut()
                .enumerate()
                .find_map(|(i, item)| match item.get_mut() {
                    DeValue::Table(t) => remove_at(t, pos).map(|(k, s)| (format!("[{i}].{k}"), s)),
                    _ => None,
                })
        }
        _ => None,
    }
}

fn contains(span: Range<usize>, pos: usize) -> bool {
    span.start <= pos && pos < span.end.max(span.start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3)); // after the two-byte é
    }
}
