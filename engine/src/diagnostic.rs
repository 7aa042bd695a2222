//! `file:line:col: message` errors for configuration, channel and mapping files.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, span: Option<&marked_yaml::Marker>, message: impl Into<String>) -> Self {
        let (line, column) = span.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        Self::new(file, line, column, message)
    }

    /// Position of a byte offset in a text, counted the way editors do (1-based, in characters).
    pub fn at_offset(file: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        Self::new(file, line, column, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line.max(1),
            self.column.max(1),
            self.message
        )
    }
}

/// Several diagnostics reported together, e.g. by `passerelle check`.
#[derive(Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_column() {
        let text = "a = 1\nbé = x\n";
        let d = Diagnostic::at_offset(Path::new("p.toml"), text, text.find('x').unwrap(), "bad");
        assert_eq!(d.to_string(), "p.toml:2:6: bad");
    }
}
