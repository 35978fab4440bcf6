//! Finding and reading the date of a log line, as fail2ban's date detector
//! does: a list of templates (fail2ban's defaults, or the filter's
//! `datepattern`), the last one that matched tried first.

mod strptime;
mod template;
mod zone;

use pcre2::bytes::CaptureLocations;

pub use template::{Found, Template};
pub use zone::{abbreviation_offset, Zone};

/// fail2ban's default date formats, most common first.
const DEFAULT_PATTERNS: [&str; 17] = [
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
];

/// A date detector for one filter.
pub struct DateDetector {
    templates: Vec<(Template, CaptureLocations)>,
    last: Option<(usize, usize)>,
    /// The last date read: template, text, `now` it was read at, time.
    cache: Option<(usize, String, i64, Option<f64>)>,
}

impl std::fmt::Debug for DateDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DateDetector")
            .field("templates", &self.template_names())
            .finish()
    }
}

/// fail2ban's defaults: a line-start variant of each (tried first), then
/// each as it is.
fn defaults(now_year: i32, line_start_only: bool) -> Result<Vec<Template>, String> {
    let mut anchored = Vec::new();
    let mut plain = Vec::new();
    for p in DEFAULT_PATTERNS {
        if let Some(a) = Template::anchored_variant(p, now_year) {
            anchored.push(a?);
        }
        let t = Template::new(p, now_year)?;
        if !line_start_only || t.anchored {
            plain.push(t);
        }
    }
    anchored.extend(plain);
    Ok(anchored)
}

impl DateDetector {
    /// From a filter's `datepattern` lines; none: fail2ban's defaults.
    /// Special entries: `{^LN-BEG}` (the defaults, at line start only),
    /// `{DEFAULT}`, `{NONE}` (no date in lines), and `{DATE}` inside a
    /// pattern (each default format at that place).
    pub fn new(patterns: &[String], now_year: i32) -> Result<Self, String> {
        let mut templates: Vec<Template> = Vec::new();
        let push = |t: Template, list: &mut Vec<Template>| {
            if !list.iter().any(|x| x.name == t.name) {
                list.push(t);
            }
        };
        if patterns.is_empty() {
            templates = defaults(now_year, false)?;
        }
        for p in patterns {
            let upper = if p.contains('%') {
                p.clone()
            } else {
                p.to_uppercase()
            };
            match upper.as_str() {
                "{^LN-BEG}" => {
                    for t in defaults(now_year, true)? {
                        push(t, &mut templates);
                    }
                }
                "{DEFAULT}" => {
                    for t in defaults(now_year, false)? {
                        push(t, &mut templates);
                    }
                }
                "{NONE}" => push(Template::new("{UNB}^", now_year)?, &mut templates),
                _ if p.contains("{DATE}") => {
                    for d in DEFAULT_PATTERNS {
                        let inner = d.trim_start_matches("{^LN-BEG}");
                        push(
                            Template::new(&p.replace("{DATE}", inner), now_year)?,
                            &mut templates,
                        );
                    }
                }
                _ => push(Template::new(p, now_year)?, &mut templates),
            }
        }
        let templates = templates
            .into_iter()
            .map(|t| {
                let locs = t.capture_locations();
                (t, locs)
            })
            .collect();
        Ok(DateDetector {
            templates,
            last: None,
            cache: None,
        })
    }

    /// The date in `line`: the last template that matched is tried first
    /// and kept if it matches at the same place (or is anchored); otherwise
    /// every template is tried and the match nearest the line's start wins
    /// (an anchored template at once). Consecutive lines often carry the
    /// same date text; its time is then not computed again.
    pub fn find(&mut self, line: &str, now: i64, zone: &Zone) -> Option<Found> {
        let mut chosen: Option<(usize, usize, usize)> = None;
        if let Some((i, pos)) = self.last {
            if let Some((t, locs)) = self.templates.get_mut(i) {
                if let Some((s, e)) = t.locate(line, locs) {
                    if t.anchored || s == pos || self.templates.len() == 1 {
                        chosen = Some((i, s, e));
                    }
                }
            }
        }
        if chosen.is_none() {
            for (i, (t, locs)) in self.templates.iter_mut().enumerate() {
                let Some((s, e)) = t.locate(line, locs) else {
                    continue;
                };
                if t.anchored {
                    chosen = Some((i, s, e));
                    break;
                }
                if chosen.is_none_or(|(_, b, _)| s < b) {
                    chosen = Some((i, s, e));
                    if s == 0 {
                        break;
                    }
                }
            }
        }
        let (i, start, end) = chosen?;
        self.last = Some((i, start));
        let text = line.get(start..end).unwrap_or("");
        let time = match &self.cache {
            Some((ci, ctext, cnow, t)) if *ci == i && ctext == text && *cnow == now => *t,
            _ => {
                let (t, locs) = &self.templates[i];
                let time = t.time(line, locs, now, zone);
                self.cache = Some((i, text.to_owned(), now, time));
                time
            }
        };
        Some(Found { start, end, time })
    }

    pub fn template_names(&self) -> Vec<&str> {
        self.templates
            .iter()
            .map(|(t, _)| t.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(d: &mut DateDetector, line: &str) -> Option<(String, Option<f64>)> {
        let f = d.find(line, 1_124_013_600, &Zone::utc())?;
        Some((line[f.start..f.end].to_owned(), f.time))
    }

    #[test]
    fn defaults_find_common_formats() {
        let mut d = DateDetector::new(&[], 2026).unwrap();
        assert_eq!(
            detect(&mut d, "Aug 14 11:58:59 host sshd[1]: x").unwrap(),
            ("Aug 14 11:58:59".into(), Some(1_124_020_739.0))
        );
        assert_eq!(
            detect(&mut d, "2005-08-14 11:58:59 x").unwrap().0,
            "2005-08-14 11:58:59"
        );
        assert_eq!(
            detect(&mut d, "x [14/Aug/2005:11:58:59 +0000] y")
                .unwrap()
                .0,
            "14/Aug/2005:11:58:59 +0000"
        );
        assert_eq!(
            detect(&mut d, "1124013600 x").unwrap().1,
            Some(1_124_013_600.0)
        );
        assert_eq!(detect(&mut d, "no date here"), None);
    }

    #[test]
    fn special_patterns() {
        let mut d = DateDetector::new(&["{^LN-BEG}".into()], 2026).unwrap();
        assert!(detect(&mut d, "prefix Aug 14 11:58:59 x").is_none());
        assert!(detect(&mut d, "Aug 14 11:58:59 x").is_some());
        let mut d = DateDetector::new(&["{NONE}".into()], 2026).unwrap();
        assert_eq!(detect(&mut d, "Aug 14 11:58:59 x").unwrap().0, "");
        let mut d = DateDetector::new(&[r"^<\d+>\d+\s+{DATE}".into()], 2026).unwrap();
        assert_eq!(
            detect(&mut d, "<34>1 2005-08-14T11:58:59Z host x")
                .unwrap()
                .0,
            "<34>1 2005-08-14T11:58:59Z"
        );
        assert!(DateDetector::new(&["%Q".into()], 2026).is_err());
    }
}
