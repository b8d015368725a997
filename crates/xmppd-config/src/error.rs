//! The one-line configuration error.

use std::fmt;

/// A configuration error, displayed as one line: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as the operator named it.
    pub file: String,
    /// 1-based line of the offending key or value, when it is known.
    pub line: Option<usize>,
    /// Dotted key path (`c2s.starttls_listen`, `tls.certificate[0].domain`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            // A quoted TOML key may hold any character, a line break included.
            write_one_line(f, key)?;
            write!(f, ": ")?;
        }
        // Messages from the TOML parser may span lines; the contract is one line.
        let mut first = true;
        for part in self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            if !first {
                write!(f, "; ")?;
            }
            write_one_line(f, part)?;
            first = false;
        }
        Ok(())
    }
}

/// Writes `s` with control characters and Unicode line and paragraph separators escaped, so
/// that nothing quoted from the document can start a new line in a terminal or a journal.
fn write_one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}
