//! Config errors that point at the place to fix: file, line, column, the offending line with a
//! caret under it, and a `help:` line saying what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A config problem, located in the file when it has a location. Boxed: it travels through
/// many `Result`s and is rare.
#[derive(Debug, Clone)]
pub struct ConfigError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    location: Option<(usize, usize)>,
    /// The source line and the caret range on it.
    snippet: Option<(String, Range<usize>)>,
    message: String,
    help: Option<String>,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, missing).
    pub fn whole_file(file: &Path, message: impl Into<String>, help: Option<String>) -> Self {
        ConfigError(Box::new(Inner {
            file: file.to_path_buf(),
            location: None,
            snippet: None,
            message: message.into(),
            help,
        }))
    }

    /// 1-based line and column, when the problem has a place in the file.
    pub fn location(&self) -> Option<(usize, usize)> {
        self.0.location
    }

    /// An error at byte range `span` of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        let mut err = ConfigError::whole_file(file, message, help);
        if let Some(span) = span {
            let start = span.start.min(source.len());
            let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = source[start..]
                .find('\n')
                .map_or(source.len(), |i| start + i);
            let line_no = source[..start].matches('\n').count() + 1;
            let col = source[line_start..start].chars().count() + 1;
            let text = source[line_start..line_end]
                .trim_end_matches('\r')
                .to_string();
            let caret_start = col - 1;
            let caret_len = source[start..span.end.clamp(start, line_end)]
                .chars()
                .count()
                .max(1);
            err.0.location = Some((line_no, col));
            err.0.snippet = Some((text, caret_start..caret_start + caret_len));
        }
        err
    }

    /// `file:line:col: message (help: ...)` on one line, for a log.
    pub fn one_line(&self) -> String {
        let e = &self.0;
        let mut s = match e.location {
            Some((line, col)) => format!("{}:{line}:{col}: {}", e.file.display(), e.message),
            None => format!("{}: {}", e.file.display(), e.message),
        };
        if let Some(help) = &e.help {
            s.push_str(&format!(" (help: {help})"));
        }
        s
    }

    /// Drops the quoted source line: for errors about a value that may be a secret.
    pub fn without_snippet(mut self) -> Self {
        self.0.snippet = None;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        match e.location {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", e.file.display(), line, col, e.message)?,
            None => write!(f, "{}: {}", e.file.display(), e.message)?,
        }
        if let (Some((line, _)), Some((text, caret))) = (e.location, &e.snippet) {
            let gutter = line.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {}{}",
                "",
                "",
                " ".repeat(caret.start),
                "^".repeat(caret.len()),
            )?;
        }
        if let Some(help) = &e.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_caret_and_help() {
        let src = "[daemon]\nschedule = \"nope\"\n";
        let start = src.find("\"nope\"").unwrap();
        let e = ConfigError::at(
            Path::new("c.toml"),
            src,
            Some(start..start + 6),
            "bad cron",
            Some("write six fields".into()),
        );
        assert_eq!(e.location(), Some((2, 12)));
        let text = e.to_string();
        assert_eq!(
            text,
            "c.toml:2:12: bad cron\n  |\n2 | schedule = \"nope\"\n  |            ^^^^^^\nhelp: write six fields"
        );
    }
}
