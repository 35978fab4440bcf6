//! The INI dialect of fail2ban's configuration files (Python's
//! `configparser` with `;` inline comments): sections, `key = value` or
//! `key: value`, values continued on indented lines, keys case-folded.

/// One value as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// A parsed file: sections in order, options in order within each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IniFile {
    pub sections: Vec<(String, Vec<(String, RawValue)>)>,
}

/// A line the parser cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

impl IniFile {
    pub fn section(&self, name: &str) -> Option<&[(String, RawValue)]> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.as_slice())
    }
}

/// Strips an inline `;` comment: one preceded by whitespace.
fn strip_inline_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b';' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &s[..i];
        }
    }
    s
}

fn is_comment(trimmed: &str) -> bool {
    trimmed.starts_with('#') || trimmed.starts_with(';')
}

/// Parses `text`. As Python's parser does, a duplicate section or a
/// duplicate key within one section is an error.
pub fn parse(text: &str) -> Result<IniFile, IniError> {
    let mut file = IniFile::default();
    // (indent of the key line, lines of the value so far)
    let mut current: Option<(usize, Vec<String>)> = None;

    fn flush(file: &mut IniFile, current: &mut Option<(usize, Vec<String>)>) {
        if let Some((_, mut lines)) = current.take() {
            while lines.last().is_some_and(String::is_empty) {
                lines.pop();
            }
            if let Some((_, opts)) = file.sections.last_mut() {
                if let Some((_, v)) = opts.last_mut() {
                    v.value = lines.join("\n");
                }
            }
        }
    }

    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        let indent = raw.len() - raw.trim_start().len();
        if trimmed.is_empty() {
            if let Some((_, lines)) = current.as_mut() {
                lines.push(String::new());
            }
            continue;
        }
        if is_comment(trimmed) {
            continue;
        }
        let content = strip_inline_comment(raw);
        let ctrim = content.trim();
        // A continuation: indented deeper than the key of the open value.
        if let Some((key_indent, lines)) = current.as_mut() {
            if indent > *key_indent && !ctrim.is_empty() {
                lines.push(ctrim.to_owned());
                continue;
            }
        }
        flush(&mut file, &mut current);
        if ctrim.starts_with('[') {
            let Some(end) = ctrim.find(']') else {
                return Err(IniError {
                    line: lineno,
                    message: format!("unclosed section header {ctrim:?}"),
                });
            };
            let name = ctrim[1..end].to_owned();
            if file.sections.iter().any(|(n, _)| *n == name) {
                return Err(IniError {
                    line: lineno,
                    message: format!("section [{name}] appears twice"),
                });
            }
            file.sections.push((name, Vec::new()));
            continue;
        }
        let Some(pos) = ctrim.find(['=', ':']) else {
            return Err(IniError {
                line: lineno,
                message: format!("expected `key = value`, found {ctrim:?}"),
            });
        };
        let key = ctrim[..pos].trim().to_lowercase();
        let value = ctrim[pos + 1..].trim().to_owned();
        if key.is_empty() {
            return Err(IniError {
                line: lineno,
                message: "empty key".into(),
            });
        }
        let Some((section, opts)) = file.sections.last_mut() else {
            return Err(IniError {
                line: lineno,
                message: format!("key {key:?} before any [section]"),
            });
        };
        if opts.iter().any(|(k, _)| *k == key) {
            return Err(IniError {
                line: lineno,
                message: format!("key {key:?} appears twice in [{section}]"),
            });
        }
        opts.push((
            key,
            RawValue {
                value: value.clone(),
                line: lineno,
            },
        ));
        current = Some((indent, vec![value]));
    }
    flush(&mut file, &mut current);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_and_continuations() {
        let f = parse(
            "# comment\n[INCLUDES]\nbefore = common.conf\n\n[Definition]\nFailRegex = ^a <HOST>$\n            ^b <HOST>$ ; trailing\n\n   ^c <HOST>\nignoreregex =\nk: v\n; comment\n[Init]\nx=1\n",
        )
        .unwrap();
        let def = f.section("Definition").unwrap();
        assert_eq!(def[0].0, "failregex");
        assert_eq!(def[0].1.value, "^a <HOST>$\n^b <HOST>$\n\n^c <HOST>");
        assert_eq!(def[0].1.line, 6);
        assert_eq!(def[1].1.value, "");
        assert_eq!(
            def[2],
            (
                "k".to_owned(),
                RawValue {
                    value: "v".into(),
                    line: 11
                }
            )
        );
        assert_eq!(f.section("Init").unwrap()[0].1.value, "1");
        assert_eq!(f.section("INCLUDES").unwrap()[0].1.value, "common.conf");
    }

    #[test]
    fn semicolons_inside_values_stay() {
        let f = parse("[d]\nr = a;b ; comment\n").unwrap();
        assert_eq!(f.section("d").unwrap()[0].1.value, "a;b");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("key = 1\n").unwrap_err().line, 1);
        assert_eq!(parse("[a]\nx\n").unwrap_err().line, 2);
        assert_eq!(parse("[a]\nx=1\nX=2\n").unwrap_err().line, 3);
        assert_eq!(parse("[a]\n[a]\n").unwrap_err().line, 2);
        assert_eq!(parse("[a\n").unwrap_err().line, 1);
    }
}
