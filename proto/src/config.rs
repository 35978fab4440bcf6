//! Errors in TOML configuration files, shared by the agent and the server:
//! every error names the file, the line and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration file could not be read or holds a bad key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    /// Dotted path of the key (`jail.bantime`), empty when unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about the file as a whole (missing, unreadable).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message: message.into(),
        }
    }

    /// An error about one key, located by searching the file for it.
    pub fn key(path: &Path, source: &str, key: &str, message: impl Into<String>) -> Self {
        Self::key_in_table(path, source, None, key, message)
    }

    /// An error about one key of the `nth` (0-based) `[[array]]` table,
    /// e.g. the third `[[jail]]`; without a table, the first match in the file.
    pub fn key_in_table(
        path: &Path,
        source: &str,
        table: Option<(&str, usize)>,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        let last = key.rsplit('.').next().unwrap_or(key);
        let start = table.map_or(0, |(name, nth)| {
            let header = format!("[[{name}]]");
            source
                .lines()
                .enumerate()
                .filter(|(_, l)| l.trim() == header)
                .nth(nth)
                .map_or(0, |(i, _)| i)
        });
        let line = source
            .lines()
            .enumerate()
            .skip(start)
            .find(|(_, l)| l.split('=').next().is_some_and(|k| k.trim() == last))
            .map_or(0, |(i, _)| i + 1);
        ConfigError {
            path: path.to_owned(),
            line,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads and parses a TOML file into `T`.
pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    let value = parse(path, &source)?;
    Ok((value, source))
}

/// Parses TOML `source` (read from `path`) into `T`.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, source: &str) -> Result<T, ConfigError> {
    toml::from_str(source).map_err(|e| locate(path, source, &e))
}

fn locate(path: &Path, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return ConfigError::file(path, message);
    };
    let start = span.start.min(source.len());
    let line = source[..start].matches('\n').count() + 1;
    let text = source.lines().nth(line - 1).unwrap_or("");
    let section = source[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = match (text.split_once('='), text.trim_start().starts_with('[')) {
        (Some((k, _)), false) => {
            let k = k.trim().trim_matches('"');
            match section {
                Some(s) if !s.is_empty() => format!("{s}.{k}"),
                _ => k.to_owned(),
            }
        }
        _ => text
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned(),
    };
    ConfigError {
        path: path.to_owned(),
        line,
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Conf {
        name: String,
        #[serde(default)]
        jail: Vec<Jail>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Jail {
        maxretry: u32,
    }

    fn err(src: &str) -> ConfigError {
        parse::<Conf>(Path::new("/etc/x.toml"), src).expect_err("must fail")
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err("name = \"a\"\n\n[[jail]]\nmaxretry = 3\nbogus = 1\n");
        assert_eq!(e.line, 5);
        assert_eq!(e.key, "jail.bogus");
        assert!(e.message.contains("unknown field `bogus`"), "{}", e.message);
        assert!(
            e.to_string()
                .starts_with("/etc/x.toml:5: key `jail.bogus`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let e = err("name = \"a\"\n[[jail]]\nmaxretry = -3\n");
        assert_eq!((e.line, e.key.as_str()), (3, "jail.maxretry"));
        let e = err("name = 5\n");
        assert_eq!((e.line, e.key.as_str()), (1, "name"));
    }

    #[test]
    fn syntax_error_and_missing_file() {
        let e = err("name = \"a\n");
        assert_eq!(e.line, 1);
        let e = load::<Conf>(Path::new("/nonexistent/fleetban.toml")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/fleetban.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn key_errors_search_the_file() {
        let e = ConfigError::key(
            Path::new("a.toml"),
            "x = 1\n  findtime = \"1q\"\n",
            "jail.findtime",
            "bad",
        );
        assert_eq!(e.to_string(), "a.toml:2: key `jail.findtime`: bad");
        let src = "[[jail]]\nbantime = 1\n[[jail]]\nbantime = 2\n";
        let e = ConfigError::key_in_table(
            Path::new("a.toml"),
            src,
            Some(("jail", 1)),
            "jail.bantime",
            "bad",
        );
        assert_eq!(e.line, 4);
    }
}
