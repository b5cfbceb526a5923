//! Located, teachable errors about a definition file.
//!
//! A [`Diagnostic`] names the file, the line and column, the key, what went wrong and what
//! would be valid, and renders the offending line with a caret underneath, in the shape
//! users know from rustc and cargo.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The text of a definition file and where it came from; turns byte spans into locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line and column of a byte offset, with the line's text.
    pub fn locate(&self, span: &Range<usize>) -> Location {
        let mut start = floor_char_boundary(&self.text, span.start.min(self.text.len()));
        // A span at the `\n` of a `\r\n` is the end of the line, where `\r` is.
        if self.text[start..].starts_with('\n') && self.text[..start].ends_with('\r') {
            start -= 1;
        }
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let line = self.text[..line_start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(&self.text, span.end.clamp(start, line_end));
        let width = self.text[start..end].chars().count().max(1);
        Location {
            line,
            column,
            width,
            line_text: line_text.to_owned(),
        }
    }

    /// A diagnostic pointing at `span` in this file.
    pub fn error_at(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            location: Some(self.locate(span)),
            key: None,
            message: message.into(),
            help: Vec::new(),
        }
    }

    /// A diagnostic about the file as a whole (no line to point at).
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::whole_file(&self.path, message)
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// A position inside a file, 1-based, with the text of its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    /// How many characters the caret underline covers.
    #[serde(skip)]
    pub width: usize,
    #[serde(skip)]
    pub line_text: String,
}

/// One problem in one definition file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    #[serde(flatten)]
    pub location: Option<Location>,
    /// The dotted key the problem is about, such as `exec.command`.
    pub key: Option<String>,
    pub message: String,
    /// What would be valid, or how to fix it; one line each.
    pub help: Vec<String>,
}

impl Diagnostic {
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            location: None,
            key: None,
            message: message.into(),
            help: Vec::new(),
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => writeln!(f, "error: {}: {}", key, self.message)?,
            None => writeln!(f, "error: {}", self.message)?,
        }
        let file = self.file.display();
        match &self.location {
            Some(loc) => {
                let number = loc.line.to_string();
                let pad = " ".repeat(number.len());
                writeln!(f, "{pad}--> {file}:{}:{}", loc.line, loc.column)?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{number} | {}", loc.line_text)?;
                let indent: String = loc
                    .line_text
                    .chars()
                    .take(loc.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "{pad} | {indent}{}", "^".repeat(loc.width))?;
                for help in &self.help {
                    write!(f, "\n{pad} = help: {help}")?;
                }
            }
            None => {
                write!(f, " --> {file}")?;
                for help in &self.help {
                    write!(f, "\n  = help: {help}")?;
                }
            }
        }
        Ok(())
    }
}

/// Every problem found in one definition file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn first(&self) -> Option<&Diagnostic> {
        self.0.first()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Self(vec![diagnostic])
    }
}

/// The closest of `candidates` to a misspelt `word`, ignoring case, if one is close enough
/// to suggest: within a third of its length in edits (a swap of neighbours is one edit),
/// or sharing a long prefix.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let edits = strsim::normalized_damerau_levenshtein(&word, &c_lower);
            let prefix = strsim::jaro_winkler(&word, &c_lower);
            (edits, prefix, c)
        })
        .filter(|(edits, prefix, _)| *edits >= 0.6 || *prefix >= 0.9)
        .max_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_columns() {
        let file = SourceFile::new("x.toml", "a = 1\n[exec]\ncomand = 2\n");
        let at = file.locate(&(13..19));
        assert_eq!((at.line, at.column, at.width), (3, 1, 6));
        assert_eq!(at.line_text, "comand = 2");
    }

    #[test]
    fn locates_past_the_end_and_inside_multibyte_text() {
        let file = SourceFile::new("x.toml", "é = 1");
        assert_eq!(file.locate(&(1..2)).column, 1);
        let end = file.locate(&(100..200));
        assert_eq!((end.line, end.width), (1, 1));
    }

    #[test]
    fn renders_with_a_caret() {
        let file = SourceFile::new("m/web.toml", "[exec]\ncomand = 2\n");
        let d = file
            .error_at(&(7..13), "unknown key `comand`")
            .key("exec.comand")
            .help("did you mean `command`?");
        let text = d.to_string();
        assert!(text.contains("--> m/web.toml:2:1"), "{text}");
        assert!(text.contains("2 | comand = 2\n  | ^^^^^^"), "{text}");
        assert!(text.ends_with("= help: did you mean `command`?"), "{text}");
    }

    #[test]
    fn suggests_only_close_words() {
        assert_eq!(
            closest("comand", ["boot", "command", "env"]),
            Some("command")
        );
        assert_eq!(closest("zzz", ["boot", "command", "env"]), None);
        assert_eq!(closest("wbe", ["dev", "web"]), Some("web"));
        assert_eq!(
            closest("MEMROY", ["memory", "cpus", "pids"]),
            Some("memory")
        );
        assert_eq!(closest("privat", ["host", "private"]), Some("private"));
    }
}
