//! fail2ban regular expressions (Python `re` syntax with fail2ban's tags)
//! compiled for PCRE2: `<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`, `<DNS>`,
//! `<CIDR>`, `<SUBNET>`, `<F-NAME>…</F-NAME>` captures, `<SKIPLINES>`, and
//! the few places where Python's syntax differs from PCRE2's.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use pcre2::bytes::{Regex, RegexBuilder};

/// Work one match may do before it is abandoned (a hostile line must not
/// stall the agent); the defaults of PCRE2 allow ten million steps.
const MATCH_LIMIT: u32 = 1_000_000;

const IP4: &str = r"(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})";
const IP6: &str = r"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):))";
const DNS: &str = r"(?P<dns>[\w\-.^_]*\w)";
const CIDR: &str = r"(?P<cidr>\d+)";

/// Whether `<HOST>` may match a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UseDns {
    /// Host names match (and are resolved only when asked): fail2ban's
    /// default (`warn`), `yes` and `raw`.
    #[default]
    Names,
    /// `no`: only addresses match.
    AddressesOnly,
}

impl UseDns {
    pub fn from_option(v: Option<&str>) -> Self {
        match v.map(str::trim) {
            Some("no") => UseDns::AddressesOnly,
            _ => UseDns::Names,
        }
    }
}

fn addr() -> String {
    format!(r"\[?(?:{IP4}|{IP6})\]?")
}

/// Expands fail2ban's tags into named groups.
pub fn resolve_tags(regex: &str, dns: UseDns) -> String {
    let mut out = String::with_capacity(regex.len() * 2);
    let mut open: Vec<String> = Vec::new();
    let mut skiplines = 0;
    let mut rest = regex;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some(len) = tag_len(tail) else {
            out.push('<');
            rest = &tail[1..];
            continue;
        };
        let tag = &tail[..len];
        let name = &tag[1..len - 1];
        let replacement = match name {
            "HOST" => Some(match dns {
                UseDns::Names => format!("(?:{}|{DNS})", addr()),
                UseDns::AddressesOnly => addr(),
            }),
            "SKIPLINES" => {
                let r = format!(r"\n(?P<skiplines{skiplines}>(?:(?:.*\n)*?))");
                skiplines += 1;
                Some(r)
            }
            "IP4" | "F-IP4/" => Some(IP4.to_owned()),
            "IP6" | "F-IP6/" => Some(IP6.to_owned()),
            "ADDR" | "F-ADDR/" => Some(addr()),
            "CIDR" | "F-CIDR/" => Some(CIDR.to_owned()),
            "SUBNET" | "F-SUBNET/" => Some(format!(r"\[?(?:{IP4}|{IP6})(?:/{CIDR})?\]?")),
            "DNS" | "F-DNS/" => Some(DNS.to_owned()),
            "F-ID/" => Some(r"(?P<fid>\S+)".to_owned()),
            "F-PORT/" => Some(r"(?P<fport>\w+)".to_owned()),
            _ => custom_capture(name, &mut open),
        };
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(tag),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    python_to_pcre(&group_local_flags(&out))
}

/// `<F-NAME>` opens a capture named `name` (`F-ID` → `fid`, `F-PORT` →
/// `fport`); `</F-NAME>` closes it if it was opened.
fn custom_capture(name: &str, open: &mut Vec<String>) -> Option<String> {
    let (closing, body) = match name.strip_prefix('/') {
        Some(b) => (true, b),
        None => (false, name),
    };
    let id = body.strip_prefix("F-")?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return None;
    }
    if closing {
        return open.iter().any(|o| o == id).then(|| ")".to_owned());
    }
    open.push(id.to_owned());
    Some(format!("(?P<{}>", capture_name(id)))
}

/// The group name fail2ban gives to `<F-ID>`: lower case, `id` → `fid`.
pub fn capture_name(id: &str) -> String {
    match id.to_lowercase().as_str() {
        "id" => "fid".to_owned(),
        "port" => "fport".to_owned(),
        other => other.to_owned(),
    }
}

/// Length of a tag `</?[\w-]+/?>` at the start of `s`.
fn tag_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    let start = i;
    while i < b.len()
        && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-' || b[i] >= 0x80)
    {
        i += 1;
    }
    if i == start {
        return None;
    }
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    (b.get(i) == Some(&b'>')).then_some(i + 1)
}

/// `((?i)…)` and `(?:(?i)…)` become `(?i:…)`, as fail2ban does for Python,
/// which refuses global flags past the start of a pattern.
fn group_local_flags(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') {
            let mut j = i + 1;
            if s[j..].starts_with("?:") {
                j += 2;
            }
            if s[j..].starts_with("(?") {
                let mut k = j + 2;
                while k < b.len() && b[k].is_ascii_lowercase() {
                    k += 1;
                }
                if k > j + 2 && b.get(k) == Some(&b')') {
                    out.push_str(&s[j..k]);
                    out.push(':');
                    i = k + 1;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Python's `\Z` is PCRE2's `\z`; Python's `{,n}` is `{0,n}`; Python's
/// `u`, `a` and `L` flags (Unicode is always on here) are dropped.
pub fn python_to_pcre(s: &str) -> String {
    let s = &drop_python_flags(s);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                match next {
                    Some('Z') if !in_class => out.push_str(r"\z"),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' if !in_class && chars.peek() == Some(&',') => {
                out.push_str("{0");
            }
            _ => out.push(c),
        }
    }
    out
}

fn drop_python_flags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("(?") {
        let escaped = rest[..p].chars().rev().take_while(|c| *c == '\\').count() % 2 == 1;
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let letters = after.chars().take_while(char::is_ascii_alphabetic).count();
        let end = after[letters..].chars().next();
        let flags = &after[..letters];
        if !escaped
            && letters > 0
            && matches!(end, Some(')' | ':'))
            && flags.chars().all(|c| "aiLmsux".contains(c))
        {
            let kept: String = flags.chars().filter(|c| !"aLu".contains(*c)).collect();
            match (kept.is_empty(), end) {
                (true, Some(')')) => {}
                (true, _) => out.push_str("(?:"),
                (false, Some(e)) => {
                    out.push_str("(?");
                    out.push_str(&kept);
                    out.push(e);
                }
                (false, None) => {}
            }
            rest = &after[letters + 1..];
        } else {
            out.push_str("(?");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A pattern PCRE2 refuses, with the offset it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {offset} of {pattern:?}")]
pub struct CompileError {
    pub pattern: String,
    pub offset: usize,
    pub message: String,
}

/// Compiles an already resolved pattern (JIT when available, Unicode
/// classes as Python's `re`, a bounded match). A pattern compiled before is
/// shared: ten jails with the same filter (and every filter's date
/// templates) keep one copy of the compiled code.
pub fn compile(pattern: &str, multiline: bool) -> Result<Regex, CompileError> {
    type Cache = Mutex<HashMap<(String, bool), Regex>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (pattern.to_owned(), multiline);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(re.clone());
    }
    let re = compile_new(pattern, multiline)?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, re.clone());
    Ok(re)
}

fn compile_new(pattern: &str, multiline: bool) -> Result<Regex, CompileError> {
    let limited = format!("(*LIMIT_MATCH={MATCH_LIMIT}){pattern}");
    RegexBuilder::new()
        .utf(true)
        .ucp(true)
        .jit_if_available(true)
        .multi_line(multiline)
        .build(&limited)
        .map_err(|e| CompileError {
            pattern: pattern.to_owned(),
            offset: e
                .offset()
                .map_or(0, |o| o.saturating_sub(limited.len() - pattern.len())),
            message: {
                let full = e.to_string();
                match full
                    .split_once(": ")
                    .and_then(|(_, rest)| rest.split_once(": "))
                {
                    Some((_, msg)) => msg.to_owned(),
                    None => full,
                }
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(re: &Regex, s: &'a str, group: &str) -> Option<&'a str> {
        let caps = re.captures(s.as_bytes()).ok()??;
        let m = caps.name(group)?;
        std::str::from_utf8(m.as_bytes()).ok()
    }

    #[test]
    fn host_tags_capture_addresses_and_names() {
        let re = compile(&resolve_tags("^from <HOST> port", UseDns::Names), false).unwrap();
        assert_eq!(find(&re, "from 192.0.2.1 port", "ip4"), Some("192.0.2.1"));
        assert_eq!(
            find(&re, "from ::ffff:192.0.2.1 port", "ip4"),
            Some("192.0.2.1")
        );
        assert_eq!(
            find(&re, "from [2001:db8::1] port", "ip6"),
            Some("2001:db8::1")
        );
        assert_eq!(
            find(&re, "from evil.example.com port", "dns"),
            Some("evil.example.com")
        );
        let re = compile(
            &resolve_tags("^from <HOST> port", UseDns::AddressesOnly),
            false,
        )
        .unwrap();
        assert_eq!(find(&re, "from evil.example.com port", "dns"), None);
    }

    #[test]
    fn custom_captures_and_subnets() {
        let r = resolve_tags(
            "^<F-USER>\\S+</F-USER> <F-ID>\\d+</F-ID> <SUBNET> </F-NOPE>",
            UseDns::Names,
        );
        let re = compile(&r, false).unwrap();
        let s = "bob 42 198.51.100.0/24 </F-NOPE>";
        assert_eq!(find(&re, s, "user"), Some("bob"));
        assert_eq!(find(&re, s, "fid"), Some("42"));
        assert_eq!(find(&re, s, "cidr"), Some("24"));
    }

    #[test]
    fn python_syntax_is_translated() {
        assert_eq!(group_local_flags("a((?i)b)c"), "a(?i:b)c");
        assert_eq!(group_local_flags("(?:(?i)x)"), "(?i:x)");
        assert_eq!(group_local_flags(r"\((?i)x)"), r"\((?i)x)");
        assert_eq!(python_to_pcre(r"a\Z[\Z]x{,3}[{,]"), r"a\z[\Z]x{0,3}[{,]");
        assert_eq!(
            python_to_pcre("(?iu)a(?u)b(?u:c)(?P<x>d)"),
            "(?i)ab(?:c)(?P<x>d)"
        );
        let re = compile(
            &resolve_tags(r"^(?P<a>x)?(?(a)y|z)\Z", UseDns::Names),
            false,
        )
        .unwrap();
        assert!(re.is_match(b"xy").unwrap());
        assert!(re.is_match(b"z").unwrap());
        assert!(!re.is_match(b"xz").unwrap());
    }

    #[test]
    fn compile_errors_name_the_position() {
        let e = compile("ab(c", false).unwrap_err();
        assert_eq!(e.offset, 4);
        assert!(e.message.contains("missing closing parenthesis"), "{e}");
    }

    #[test]
    fn hostile_backtracking_is_cut_short() {
        let re = compile(&resolve_tags(r"^(a+)+$", UseDns::Names), false).unwrap();
        let line = format!("{}b", "a".repeat(40));
        assert!(
            re.is_match(line.as_bytes()).is_err() || !re.is_match(line.as_bytes()).unwrap_or(true)
        );
    }
}
