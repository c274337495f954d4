//! The one error type of loading a configuration.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Why a configuration could not be loaded. Every variant that points into the text says
/// where (line and column, 1-based) and, when known, which field (`subnets[0].pools[1]`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is larger than [`crate::MAX_FILE_SIZE`].
    #[error("the configuration is {size} bytes; at most {limit} bytes (256 MiB) are accepted")]
    TooLarge {
        /// Size of the text in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The text could not be read as the configuration's structure: RON syntax, a value of
    /// the wrong type, an unknown or missing field, a NUL byte, invalid UTF-8, too deep nesting.
    #[error("{}", render(Some(*line), Some(*column), field.as_deref(), message))]
    Syntax {
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based, in characters).
        column: usize,
        /// The field being read, when known.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The text is well formed but a value breaks a rule (overlapping pools, an address
    /// outside its subnet, …).
    #[error("{}", render(*line, *column, Some(field), message))]
    Invalid {
        /// Line of the offending value, when it could be found.
        line: Option<usize>,
        /// Column of the offending value, when it could be found.
        column: Option<usize>,
        /// Path of the offending value, e.g. `subnets[0].pools[1]`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An error in the named file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in it.
        #[source]
        source: Box<ConfigError>,
    },
}

fn render(
    line: Option<usize>,
    column: Option<usize>,
    field: Option<&str>,
    message: &str,
) -> String {
    let mut out = String::new();
    match (line, column) {
        (Some(line), Some(column)) => {
            let _ = write!(out, "line {line}, column {column}: ");
        }
        (Some(line), None) => {
            let _ = write!(out, "line {line}: ");
        }
        _ => {}
    }
    match (field, line) {
        (Some(field), Some(_)) => {
            let _ = write!(out, "field `{field}`: ");
        }
        (Some(field), None) => {
            let _ = write!(out, "{field}: ");
        }
        (None, _) => {}
    }
    out.push_str(message);
    out
}

impl ConfigError {
    /// The line (1-based) the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } => Some(*line),
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::InFile { source, .. } => source.line(),
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
        }
    }

    /// The column (1-based, in characters) the error points at, if any.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { column, .. } => Some(*column),
            ConfigError::Invalid { column, .. } => *column,
            ConfigError::InFile { source, .. } => source.column(),
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
        }
    }

    /// The path of the field the error is about (`subnets[0].pools[1]`), if known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Syntax { field, .. } => field.as_deref(),
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::InFile { source, .. } => source.field(),
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
        }
    }

    /// What is wrong, without the position, field or file name.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Syntax { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
            ConfigError::InFile { source, .. } => source.message(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let syntax = ConfigError::Syntax {
            line: 3,
            column: 7,
            field: Some("subnets[0].network".into()),
            message: "invalid IPv4 address syntax".into(),
        };
        assert_eq!(
            syntax.to_string(),
            "line 3, column 7: field `subnets[0].network`: invalid IPv4 address syntax"
        );
        let invalid = ConfigError::Invalid {
            line: None,
            column: None,
            field: "subnets[0].pools[1]".into(),
            message: "overlaps".into(),
        };
        assert_eq!(invalid.to_string(), "subnets[0].pools[1]: overlaps");
        let in_file = ConfigError::InFile {
            path: "/etc/prodhcp/prodhcp.ron".into(),
            source: Box::new(syntax),
        };
        assert_eq!(
            in_file.to_string(),
            "/etc/prodhcp/prodhcp.ron: line 3, column 7: field `subnets[0].network`: invalid IPv4 address syntax"
        );
        assert_eq!(in_file.line(), Some(3));
        assert_eq!(in_file.column(), Some(7));
        assert_eq!(in_file.field(), Some("subnets[0].network"));
        assert_eq!(in_file.message(), "invalid IPv4 address syntax");
    }
}
