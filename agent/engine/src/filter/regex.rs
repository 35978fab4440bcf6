//! One compiled filter regex and what a search of it found: the named
//! groups, and which buffered lines the match spanned.

use pcre2::bytes::{CaptureLocations, Regex};

use crate::fail2ban::regex::{compile, resolve_tags, UseDns};
use crate::fail2ban::Located;

use super::FilterError;

/// A line and where its date is: the date is cut out before matching.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleLine {
    pub text: String,
    pub date: std::ops::Range<usize>,
}

impl TupleLine {
    pub fn undated(text: String) -> Self {
        TupleLine { text, date: 0..0 }
    }

    /// The text before the date.
    pub fn pre(&self) -> &str {
        self.text.get(..self.date.start).unwrap_or("")
    }

    /// The text after the date.
    pub fn post(&self) -> &str {
        self.text.get(self.date.end..).unwrap_or("")
    }

    /// The line as matched: without its date.
    pub fn matched_text(&self) -> String {
        format!("{}{}", self.pre(), self.post())
    }
}

/// The buffer a regex searches: each line without its date, `\n` after each.
pub fn buffer_text(lines: &[TupleLine], out: &mut String) {
    out.clear();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(l.pre());
        out.push_str(l.post());
    }
    out.push('\n');
}

pub struct FilterRegex {
    /// The pattern as compiled (tags resolved).
    pub pattern: String,
    re: Regex,
    locs: CaptureLocations,
    names: Vec<(usize, &'static str)>,
    skiplines: Vec<usize>,
    pub source: Located,
}

impl std::fmt::Debug for FilterRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterRegex")
            .field("source", &self.source.value)
            .finish()
    }
}

/// The outcome of one successful search: spans in the searched text, and
/// which buffered lines the match spanned.
#[derive(Debug, Clone, Default)]
pub struct Hit {
    /// (group name, start, end) of named groups that took part.
    pub groups: Vec<(&'static str, usize, usize)>,
    /// Buffered lines `first..last` were spanned, less `skipped`.
    pub first: usize,
    pub last: usize,
    pub skipped: Vec<usize>,
}

impl Hit {
    pub fn group<'t>(&self, text: &'t str, name: &str) -> Option<&'t str> {
        self.groups
            .iter()
            .find(|(n, _, _)| *n == name)
            .and_then(|(_, s, e)| text.get(*s..*e))
    }

    /// How many buffered lines make up the match.
    pub fn matched_count(&self) -> usize {
        self.last
            .saturating_sub(self.first)
            .saturating_sub(self.skipped.len())
    }

    /// The buffered lines the match did not use, in order.
    pub fn unmatched(&self, org: &[TupleLine]) -> Vec<TupleLine> {
        let mut out: Vec<TupleLine> = org.iter().take(self.first).cloned().collect();
        out.extend(self.skipped.iter().filter_map(|i| org.get(*i).cloned()));
        out.extend(org.iter().skip(self.last).cloned());
        out
    }

    pub fn matched(&self, org: &[TupleLine]) -> Vec<TupleLine> {
        (self.first..self.last.min(org.len()))
            .filter(|i| !self.skipped.contains(i))
            .filter_map(|i| org.get(i).cloned())
            .collect()
    }
}

impl FilterRegex {
    pub fn new(
        source: &Located,
        multiline: bool,
        dns: UseDns,
        index: usize,
    ) -> Result<Self, FilterError> {
        let pattern = resolve_tags(&source.value, dns);
        if pattern.trim().is_empty() {
            return Err(FilterError::located(source, index, 0, "empty regex".into()));
        }
        let re = compile(&pattern, multiline)
            .map_err(|e| FilterError::located(source, index, e.offset, e.message))?;
        let names: Vec<(usize, &'static str)> = re
            .capture_names()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_deref().map(|n| (i, super::names::intern(n))))
            .collect();
        let skiplines = names
            .iter()
            .filter(|(_, n)| n.starts_with("skiplines"))
            .map(|(i, _)| *i)
            .collect();
        let locs = re.capture_locations();
        Ok(FilterRegex {
            pattern,
            re,
            locs,
            names,
            skiplines,
            source: source.clone(),
        })
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.names.iter().any(|(_, n)| *n == name)
    }

    /// Searches `buf` (built from the buffered lines `org`).
    pub fn search(&mut self, buf: &str, org: &[TupleLine]) -> Option<Hit> {
        let m = self
            .re
            .captures_read(&mut self.locs, buf.as_bytes())
            .ok()
            .flatten()?;
        let (start, end) = (m.start(), m.end());
        let mut groups = Vec::with_capacity(self.names.len());
        for (i, name) in &self.names {
            if let Some((s, e)) = self.locs.get(*i) {
                groups.push((*name, s, e));
            }
        }
        // Alternative names (`alt_user`) stand in for a missing value.
        let mut alts = Vec::new();
        for (k, s, e) in &groups {
            let Some(base) = k.strip_prefix("alt_") else {
                continue;
            };
            let base = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_');
            let base = crate::fail2ban::regex::capture_name(&base.to_uppercase());
            if e > s && groups.iter().all(|(n, gs, ge)| *n != base || ge == gs) {
                alts.push((base, *s, *e));
            }
        }
        for (base, s, e) in alts {
            groups.retain(|(n, _, _)| *n != base);
            groups.push((super::names::intern(&base), s, e));
        }
        if org.len() <= 1 {
            return Some(Hit {
                groups,
                first: 0,
                last: org.len(),
                skipped: Vec::new(),
            });
        }
        let line_start = buf[..(start + 1).min(buf.len())]
            .rfind('\n')
            .map_or(0, |p| p + 1);
        let line_end = buf[end.saturating_sub(1)..]
            .find('\n')
            .map_or(buf.len(), |p| end.saturating_sub(1) + p + 1);
        let first = buf[..line_start].matches('\n').count();
        let last = buf[..line_end].matches('\n').count().min(org.len());
        // Lines skipped by <SKIPLINES> are not part of the failure.
        let skipped_text: Vec<&str> = self
            .skiplines
            .iter()
            .filter_map(|i| self.locs.get(*i).and_then(|(s, e)| buf.get(s..e)))
            .flat_map(str::lines)
            .collect();
        let mut skipped = Vec::new();
        let mut n = first;
        for s in skipped_text {
            if let Some(pos) =
                (n..last).find(|i| !skipped.contains(i) && org[*i].matched_text() == s)
            {
                skipped.push(pos);
                n = pos;
            }
        }
        Some(Hit {
            groups,
            first,
            last,
            skipped,
        })
    }
}
