//! One compiled filter regex and what a search of it found: the named
//! groups, and which buffered lines the match spanned.

use std::collections::BTreeMap;

use pcre2::bytes::{CaptureLocations, Regex};

use crate::fail2ban::regex::{compile, resolve_tags, UseDns};
use crate::fail2ban::Located;

use super::FilterError;

/// A line split around its date: text before, the date, text after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleLine {
    pub pre: String,
    pub date: String,
    pub post: String,
}

impl TupleLine {
    /// The line as matched: without its date.
    pub fn matched_text(&self) -> String {
        format!("{}{}", self.pre, self.post)
    }

    pub fn full(&self) -> String {
        format!("{}{}{}", self.pre, self.date, self.post)
    }
}

/// The buffer a regex searches: each line without its date, `\n` after each.
pub fn buffer_text(lines: &[TupleLine], out: &mut String) {
    out.clear();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&l.pre);
        out.push_str(&l.post);
    }
    out.push('\n');
}

pub struct FilterRegex {
    /// The pattern as compiled (tags resolved).
    pub pattern: String,
    re: Regex,
    locs: CaptureLocations,
    names: Vec<(usize, String)>,
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

/// The outcome of one successful search.
#[derive(Debug, Clone, Default)]
pub struct Hit {
    /// Named groups that took part in the match.
    pub groups: BTreeMap<String, String>,
    pub matched: Vec<TupleLine>,
    pub unmatched: Vec<TupleLine>,
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
        let names: Vec<(usize, String)> = re
            .capture_names()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n.clone())))
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
        self.names.iter().any(|(_, n)| n == name)
    }

    /// Searches `buf` (built from `lines`); on a match, reports which of
    /// `org` (the lines as buffered) it spanned.
    pub fn search(&mut self, buf: &str, org: &[TupleLine]) -> Option<Hit> {
        let m = self
            .re
            .captures_read(&mut self.locs, buf.as_bytes())
            .ok()
            .flatten()?;
        let (start, end) = (m.start(), m.end());
        let mut groups = BTreeMap::new();
        for (i, name) in &self.names {
            if let Some((s, e)) = self.locs.get(*i) {
                if let Some(v) = buf.get(s..e) {
                    groups.insert(name.clone(), v.to_owned());
                }
            }
        }
        // Alternative names (`alt_user`) stand in for a missing value.
        let alts: Vec<(String, String)> = groups
            .iter()
            .filter_map(|(k, v)| {
                let base = k.strip_prefix("alt_")?;
                let base = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_');
                let base = crate::fail2ban::regex::capture_name(&base.to_uppercase());
                Some((base, v.clone()))
            })
            .collect();
        for (k, v) in alts {
            if !v.is_empty() && groups.get(&k).is_none_or(String::is_empty) {
                groups.insert(k, v);
            }
        }
        if org.len() <= 1 {
            return Some(Hit {
                groups,
                matched: org.to_vec(),
                unmatched: Vec::new(),
            });
        }
        let line_start = buf[..(start + 1).min(buf.len())]
            .rfind('\n')
            .map_or(0, |p| p + 1);
        let line_end = buf[end.saturating_sub(1)..]
            .find('\n')
            .map_or(buf.len(), |p| end.saturating_sub(1) + p + 1);
        let first = buf[..line_start].matches('\n').count();
        let last = buf[..line_end].matches('\n').count();
        let mut matched: Vec<TupleLine> = org
            .get(first..last.min(org.len()))
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let mut unmatched: Vec<TupleLine> = org
            .get(..first.min(org.len()))
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        // Lines skipped by <SKIPLINES> are not part of the failure.
        let skipped: Vec<String> = self
            .skiplines
            .iter()
            .filter_map(|i| self.locs.get(*i).and_then(|(s, e)| buf.get(s..e)))
            .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let mut n = 0;
        for s in skipped {
            if let Some(pos) = matched[n..].iter().position(|l| l.matched_text() == s) {
                unmatched.push(matched.remove(n + pos));
                n += pos;
            }
        }
        if let Some(rest) = org.get(last..) {
            unmatched.extend_from_slice(rest);
        }
        Some(Hit {
            groups,
            matched,
            unmatched,
        })
    }
}
