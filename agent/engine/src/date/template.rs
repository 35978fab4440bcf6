//! Date templates: a regular expression finding a date in a line (group 1
//! is the date's text) and how to read the time from it.

use pcre2::bytes::{CaptureLocations, Regex};

use super::strptime::{expand, to_time, Fields};
use super::zone::Zone;
use crate::fail2ban::regex::{compile, python_to_pcre};

/// How a template reads its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Fields,
    /// Unix seconds; `long`: milliseconds or microseconds allowed.
    Epoch {
        long: bool,
        group: usize,
    },
    Tai64n,
}

/// Where a template may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// Anywhere a word starts.
    Word,
    /// At the start of the line (after at most two non-word characters).
    Line,
    /// Anywhere.
    Unbound,
}

pub struct Template {
    pub name: String,
    regex: Regex,
    reader: Reader,
    /// Anchored at the line's start (or end): tried alone, never searched.
    pub anchored: bool,
    names: Vec<(usize, String)>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("regex", &self.regex.as_str())
            .finish()
    }
}

/// A date found in a line.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Byte span of the date's text.
    pub start: usize,
    pub end: usize,
    /// Unix seconds; `None` when the text is not a valid date.
    pub time: Option<f64>,
}

const EPOCH: &str = r"\d{10,11}\b(?:\.\d{3,6})?";
const LONG_EPOCH: &str = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?";

impl Template {
    /// A template from a `datepattern` entry: strptime directives
    /// (`%b %d %H:%M:%S`), `EPOCH`, `LEPOCH`, `TAI64N`, `{EPOCH}` inside a
    /// pattern, and the `{^LN-BEG}` (line start) and `{UNB}` (no word
    /// boundaries) prefixes.
    pub fn new(pattern: &str, now_year: i32) -> Result<Self, String> {
        let key = if pattern.contains('%') {
            pattern.to_owned()
        } else {
            pattern.to_uppercase()
        };
        if key.contains("EPOCH") {
            if key.contains("{EPOCH}") || key.contains("{LEPOCH}") {
                let long = key.contains("{LEPOCH}");
                let re = if long { LONG_EPOCH } else { EPOCH };
                let inner = pattern
                    .replace("{EPOCH}", &format!("({re})"))
                    .replace("{LEPOCH}", &format!("({re})"));
                return Self::build(
                    pattern,
                    &format!("({inner})"),
                    Begin::Word,
                    true,
                    Reader::Epoch { long, group: 2 },
                );
            }
            let long = key.trim_start_matches("{^LN-BEG}").trim_start_matches('^') == "LEPOCH";
            let re = if long { LONG_EPOCH } else { EPOCH };
            match key.as_str() {
                "EPOCH" | "LEPOCH" => {
                    let regex = format!(
                        r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\())){re})(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"
                    );
                    return Self::build(
                        &key,
                        &regex,
                        Begin::Unbound,
                        true,
                        Reader::Epoch { long, group: 1 },
                    );
                }
                "{^LN-BEG}EPOCH" | "^EPOCH" | "{^LN-BEG}LEPOCH" | "^LEPOCH" => {
                    let regex = format!(r"((?P<square>(?<=^\[))?{re})(?(square)(?=\]))");
                    let name = format!("{{^LN-BEG}}{}", if long { "LEPOCH" } else { "EPOCH" });
                    return Self::build(
                        &name,
                        &regex,
                        Begin::Line,
                        true,
                        Reader::Epoch { long, group: 1 },
                    );
                }
                _ => {}
            }
        }
        match key.as_str() {
            "TAI64N" => {
                return Self::build(
                    "TAI64N",
                    "@[0-9a-f]{24}",
                    Begin::Unbound,
                    true,
                    Reader::Tai64n,
                )
            }
            "{^LN-BEG}TAI64N" | "^TAI64N" => {
                return Self::build(
                    "{^LN-BEG}TAI64N",
                    "@[0-9a-f]{24}",
                    Begin::Line,
                    true,
                    Reader::Tai64n,
                )
            }
            _ => {}
        }
        let (mut p, mut begin, mut end) = (pattern, Begin::Word, true);
        if let Some(rest) = p.strip_prefix("{UNB}") {
            p = rest;
            begin = Begin::Unbound;
            end = false;
        }
        if begin == Begin::Word {
            if let Some(rest) = p.strip_prefix("{^LN-BEG}") {
                p = rest;
                begin = Begin::Line;
            }
        }
        let (mut regex, alpha) =
            expand(p, now_year).map_err(|e| format!("date pattern {pattern:?}: {e}"))?;
        if alpha {
            regex = format!("(?i){regex}");
        }
        Self::build(pattern, &regex, begin, end, Reader::Fields)
    }

    fn build(
        name: &str,
        regex: &str,
        begin: Begin,
        word_end: bool,
        reader: Reader,
    ) -> Result<Self, String> {
        let mut regex = python_to_pcre(regex.trim());
        // Global flags at the front stay at the front.
        let mut flags = String::new();
        if let Some(f) = leading_flags(&regex) {
            flags = f.to_owned();
            regex = regex[f.len()..].to_owned();
        }
        let bound_begin = begin != Begin::Unbound && !starts_unbounded(&regex);
        let bound_end = word_end && !ends_unbounded(&regex);
        if !has_capturing_group(&regex) {
            regex = wrap_in_group(&regex);
        }
        let mut name = name.to_owned();
        if bound_begin {
            match begin {
                Begin::Word => regex = format!(r"(?=^|\b|\W){regex}"),
                Begin::Line => {
                    regex = format!(r"^(?:\W{{0,2}})?{regex}");
                    if !name.starts_with("{^LN-BEG}") {
                        name = format!("{{^LN-BEG}}{name}");
                    }
                }
                Begin::Unbound => {}
            }
        }
        if bound_end {
            regex.push_str(r"(?=\b|\W|$)");
        }
        let regex = strip_star_bounds(&regex);
        let anchored =
            (bound_begin && begin == Begin::Line) || line_anchored(&regex) || regex.ends_with('$');
        let full = format!("{flags}{regex}");
        let compiled = compile(&full, false).map_err(|e| format!("date pattern {name:?}: {e}"))?;
        let names = compiled
            .capture_names()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n.clone())))
            .collect();
        Ok(Template {
            name,
            regex: compiled,
            reader,
            anchored,
            names,
        })
    }

    /// The template fail2ban derives to find this date at a line's start.
    pub fn anchored_variant(pattern: &str, now_year: i32) -> Option<Result<Self, String>> {
        if pattern.starts_with("{^LN-BEG}") || pattern.starts_with('^') {
            return None;
        }
        Some(Template::new(&format!("{{^LN-BEG}}{pattern}"), now_year))
    }

    /// Where the date is in `line` (the span of its text), leaving the
    /// captured fields in `locs` for [`Template::time`].
    pub fn locate(&self, line: &str, locs: &mut CaptureLocations) -> Option<(usize, usize)> {
        let m = self
            .regex
            .captures_read(locs, line.as_bytes())
            .ok()
            .flatten()?;
        Some(locs.get(1).unwrap_or((m.start(), m.end())))
    }

    /// The time of the date [`Template::locate`] found.
    pub fn time(&self, line: &str, locs: &CaptureLocations, now: i64, zone: &Zone) -> Option<f64> {
        let text = |i: usize| locs.get(i).and_then(|(s, e)| line.get(s..e));
        match self.reader {
            Reader::Fields => {
                let fields = Fields {
                    values: self
                        .names
                        .iter()
                        .filter_map(|(i, n)| text(*i).map(|v| (n.as_str(), v)))
                        .collect(),
                };
                to_time(&fields, now, zone)
            }
            Reader::Epoch { long, group } => text(group).and_then(|v| epoch(v, long)),
            Reader::Tai64n => text(1)
                .and_then(|v| v.get(2..17))
                .and_then(|hex| i64::from_str_radix(hex, 16).ok())
                .map(|s| s as f64),
        }
    }

    /// Looks for the date in `line`.
    pub fn find(
        &self,
        line: &str,
        now: i64,
        zone: &Zone,
        locs: &mut CaptureLocations,
    ) -> Option<Found> {
        let (start, end) = self.locate(line, locs)?;
        Some(Found {
            start,
            end,
            time: self.time(line, locs, now, zone),
        })
    }

    pub fn capture_locations(&self) -> CaptureLocations {
        self.regex.capture_locations()
    }
}

fn epoch(v: &str, long: bool) -> Option<f64> {
    let f: f64 = v.parse().ok()?;
    if long && v.len() >= 13 {
        if v.len() >= 16 && !v.contains('.') {
            return Some(f / 1_000_000.0);
        }
        return Some(f / 1_000.0);
    }
    Some(f)
}

/// `(?i)` and the like at the very start.
fn leading_flags(r: &str) -> Option<&str> {
    let rest = r.strip_prefix("(?")?;
    let n = rest.chars().take_while(char::is_ascii_lowercase).count();
    (n > 0 && rest[n..].starts_with(')')).then(|| &r[..n + 3])
}

/// The pattern itself anchors its start (`^`, `(^`) or disables the
/// boundary (`**`).
fn starts_unbounded(r: &str) -> bool {
    let t = r.trim_start_matches('(');
    let t = match leading_flags(t) {
        Some(f) => &t[f.len()..],
        None => t,
    };
    t.starts_with('^') || t.starts_with("**") || r.trim_start_matches('(').starts_with("?:^")
}

fn ends_unbounded(r: &str) -> bool {
    let escaped = |s: &str| s.ends_with('\\') && !s.ends_with("\\\\");
    let t = r.trim_end_matches(')');
    (r.ends_with('$') && !escaped(&r[..r.len() - 1]))
        || r.ends_with("$)")
        || r.ends_with(r"\b")
        || r.ends_with(r"\s")
        || t.ends_with("**")
}

/// A `(` that opens a capturing group: not escaped, not `(?`.
fn has_capturing_group(r: &str) -> bool {
    let b = r.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class && b.get(i + 1) != Some(&b'?') => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// `^body$` → `^(body)$`.
fn wrap_in_group(r: &str) -> String {
    let (head, body) = match r.strip_prefix('^') {
        Some(b) => ("^", b),
        None => ("", r),
    };
    let (body, tail) = match body.strip_suffix('$') {
        Some(b) if !b.ends_with('\\') => (b, "$"),
        _ => (body, ""),
    };
    format!("{head}({body}){tail}")
}

/// Removes the `**` markers that switched the word boundaries off.
fn strip_star_bounds(r: &str) -> String {
    let mut s = r.to_owned();
    if let Some(pos) = s.find("**") {
        if s[..pos].chars().all(|c| c == '(') || s[..pos].ends_with("(?=^|\\b|\\W)") {
            s.replace_range(pos..pos + 2, "");
        }
    }
    if let Some(pos) = s.rfind("**") {
        if s[pos + 2..].chars().all(|c| c == ')') && !s[..pos].ends_with('\\') {
            s.replace_range(pos..pos + 2, "");
        }
    }
    s
}

fn line_anchored(r: &str) -> bool {
    let t = match leading_flags(r) {
        Some(f) => &r[f.len()..],
        None => r,
    };
    t.starts_with('^') || t.starts_with("(^") || t.starts_with("(?:^")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(pattern: &str, line: &str) -> Option<(String, Option<f64>)> {
        let t = Template::new(pattern, 2026).unwrap();
        let mut locs = t.capture_locations();
        let f = t.find(line, 1_124_013_600, &Zone::utc(), &mut locs)?;
        Some((line[f.start..f.end].to_owned(), f.time))
    }

    #[test]
    fn syslog_and_iso_dates() {
        let (text, t) = find(
            "(?:%a )?%b %d %k:%M:%S(?:\\.%f)?(?: %ExY)?",
            "Aug 14 11:59:59 host sshd[1]: x",
        )
        .unwrap();
        assert_eq!(text, "Aug 14 11:59:59");
        assert_eq!(t, Some(1_124_020_799.0));
        let (text, t) = find(
            "%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\\s*%z)?",
            "[2005-08-14T10:00:00+02:00] x",
        )
        .unwrap();
        assert_eq!(text, "2005-08-14T10:00:00+02:00");
        assert_eq!(t, Some(1_124_006_400.0));
        assert!(find("{^LN-BEG}%H:%M:%S", "x 10:00:00").is_none());
        assert_eq!(
            find("{^LN-BEG}%H:%M:%S", "10:00:00 x").unwrap().0,
            "10:00:00"
        );
    }

    #[test]
    fn epochs_and_tai64n() {
        assert_eq!(
            find("EPOCH", "1124013600 x").unwrap(),
            ("1124013600".into(), Some(1_124_013_600.0))
        );
        assert_eq!(
            find("EPOCH", "[1124013600.500] x").unwrap().1,
            Some(1_124_013_600.5)
        );
        assert_eq!(
            find("EPOCH", "type=X msg=audit(1124013600.123:42): y")
                .unwrap()
                .1,
            Some(1_124_013_600.123)
        );
        assert!(find("EPOCH", "id 1124013600 x").is_none());
        assert_eq!(
            find("LEPOCH", "1124013600123 x").unwrap().1,
            Some(1_124_013_600.123)
        );
        assert_eq!(
            find("^EPOCH", "1124013600 x").unwrap().1,
            Some(1_124_013_600.0)
        );
        assert_eq!(
            find("user={EPOCH}", "a user=1124013600 b").unwrap().1,
            Some(1_124_013_600.0)
        );
        assert_eq!(
            find("TAI64N", "@4000000042ff1c2a00000000 x").unwrap().1,
            Some(1_124_015_146.0)
        );
    }

    #[test]
    fn helpers() {
        assert!(has_capturing_group("a(b)"));
        assert!(!has_capturing_group(r"a(?:b)\(c[(]"));
        assert_eq!(wrap_in_group("^ab$"), "^(ab)$");
        assert_eq!(strip_star_bounds("**ab**"), "ab");
        assert!(starts_unbounded("^x") && starts_unbounded("**x") && !starts_unbounded("x"));
        assert!(ends_unbounded("x$") && ends_unbounded(r"x\b") && !ends_unbounded(r"x\$"));
        assert!(Template::new("%Q", 2026).is_err());
    }
}
