//! `name[opt=value, opt2="value, with commas"]`: how fail2ban names a filter
//! (or action) together with options for it.

/// A filter name and its options, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedOptions {
    pub name: String,
    pub options: Vec<(String, String)>,
}

/// Why an option list cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?}: {message}")]
pub struct OptionsError {
    pub spec: String,
    pub message: String,
}

/// Parses `name[opt=val, …]` (several `[…][…]` groups allowed).
pub fn parse(spec: &str) -> Result<NamedOptions, OptionsError> {
    let err = |message: String| OptionsError {
        spec: spec.to_owned(),
        message,
    };
    let trimmed = spec.trim();
    let (name, mut rest) = match trimmed.find('[') {
        Some(i) => (trimmed[..i].trim(), &trimmed[i..]),
        None => (trimmed, ""),
    };
    if name.is_empty() {
        return Err(err("no name before the options".into()));
    }
    let mut options = Vec::new();
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('[') else {
            return Err(err(format!(
                "unexpected {:?} after the options",
                first(rest)
            )));
        };
        rest = body;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(']') {
                rest = after.trim_start();
                break;
            }
            if rest.is_empty() {
                return Err(err("missing ']'".into()));
            }
            let key_len = rest
                .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
                .unwrap_or(rest.len());
            if key_len == 0 || !rest[key_len..].starts_with('=') {
                return Err(err(format!("expected `option=value` at {:?}", first(rest))));
            }
            let key = rest[..key_len].to_owned();
            rest = &rest[key_len + 1..];
            let value;
            if let Some(q @ ('"' | '\'')) = rest.chars().next() {
                let Some(end) = rest[1..].find(q) else {
                    return Err(err(format!("unclosed quote in the value of {key}")));
                };
                value = rest[1..=end].to_owned();
                rest = &rest[end + 2..];
            } else {
                let end = rest.find([',', ']']).unwrap_or(rest.len());
                value = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            options.push((key, value));
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with(']') {
                return Err(err(format!("expected ',' or ']' at {:?}", first(rest))));
            }
        }
    }
    Ok(NamedOptions {
        name: name.to_owned(),
        options,
    })
}

fn first(s: &str) -> String {
    s.chars().take(25).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn names_and_options() {
        assert_eq!(
            parse("sshd").unwrap(),
            NamedOptions {
                name: "sshd".into(),
                options: vec![]
            }
        );
        assert_eq!(
            parse(" sshd[mode=aggressive] ").unwrap().options,
            opts(&[("mode", "aggressive")])
        );
        assert_eq!(
            parse(r#"x[a=1, b="two, three", c='[4]',d=]"#)
                .unwrap()
                .options,
            opts(&[("a", "1"), ("b", "two, three"), ("c", "[4]"), ("d", "")])
        );
        assert_eq!(
            parse("a[x=1][y=2]").unwrap().options,
            opts(&[("x", "1"), ("y", "2")])
        );
        assert_eq!(
            parse("/etc/fail2ban/filter.d/sshd.conf[mode=ddos]")
                .unwrap()
                .name,
            "/etc/fail2ban/filter.d/sshd.conf"
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(parse("[a=1]").is_err());
        assert!(parse("x[a=1").is_err());
        assert!(parse("x[=1]").is_err());
        assert!(parse("x[a=\"1]").is_err());
        assert!(parse("x[a=1] y").is_err());
    }
}
