//! A filter: finds failures in log lines the way fail2ban does. Each line's
//! date is found and cut out; `prefregex` (if any) must match and may narrow
//! the text to its `<F-CONTENT>`; then `failregex` entries are tried in
//! order, `ignoreregex` entries veto, and lines of one connection
//! (`<F-MLFID>`) are merged. Native filters are the same machinery with
//! regexes written in fleetban's own configuration.

mod groups;
mod mlfid;
mod names;
mod prefilter;
mod regex;

use std::collections::BTreeMap;
use std::net::IpAddr;

use self::groups::Groups;
pub use self::mlfid::FailData;
use self::mlfid::{Merged, MlfidCache};
use self::prefilter::Prefilter;
pub use self::regex::TupleLine;
use self::regex::{buffer_text, FilterRegex, Hit};
use crate::date::{DateDetector, Zone};
use crate::fail2ban::regex::UseDns;
use crate::fail2ban::{FilterDefinition, Located, Origin};

/// A filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{}{option}{}: {message} at position {position}", where_(.origin), if *index > 0 { format!(" #{index}") } else { String::new() })]
    Regex {
        origin: Option<Origin>,
        option: String,
        index: usize,
        position: usize,
        message: String,
    },
    #[error("datepattern: {0}")]
    DatePattern(String),
    #[error("{0}")]
    Invalid(String),
}

fn where_(o: &Option<Origin>) -> String {
    match o {
        Some(o) => format!("{}:{}: ", o.file.display(), o.line),
        None => String::new(),
    }
}

impl FilterError {
    fn located(source: &Located, index: usize, position: usize, message: String) -> Self {
        FilterError::Regex {
            origin: source.origin.clone(),
            option: source.option.clone(),
            index,
            position,
            message,
        }
    }
}

/// How a filter runs.
#[derive(Debug, Clone)]
pub struct FilterOptions {
    /// The zone of times that name none.
    pub zone: Zone,
    /// The current year, for date patterns that accept a range of years.
    pub now_year: i32,
    /// Report every failregex that matches (fail2ban's test mode), not only
    /// the first.
    pub check_all: bool,
    /// A line without a date happened now (when following a log); off, its
    /// failure has no time (when testing a filter on old logs).
    pub undated_is_now: bool,
}

/// What the failure id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Ip4,
    Ip6,
    /// A host name (`<HOST>` matched a name, not an address).
    Name,
    /// Another id (`<F-ID>`); the address, if any, is in `Failure::ip`.
    Id,
}

/// One failure found.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Index of the failregex that matched.
    pub regex: usize,
    /// The failure id as written in the line (an address, a host name, an
    /// id); `None` while a multi-line failure waits for its address.
    pub host: Option<String>,
    pub kind: HostKind,
    /// Prefix length given with the address (`<CIDR>`).
    pub cidr: Option<u8>,
    /// The address when the id is not one.
    pub ip: Option<String>,
    /// Unix seconds; `None` when the line had no date.
    pub time: Option<f64>,
    pub user: Option<String>,
    /// Every user seen in one multi-line failure (with `check_all`).
    pub users: Vec<String>,
    /// Lines that make up the failure.
    pub attempts: usize,
    /// A line that is part of a failure but is not one itself.
    pub nofail: bool,
    /// Every named group (with `check_all`).
    pub groups: BTreeMap<String, String>,
}

impl Failure {
    /// The address to ban, if the failure names one.
    pub fn address(&self) -> Option<IpAddr> {
        let text = match self.kind {
            HostKind::Ip4 | HostKind::Ip6 => self.host.as_deref(),
            HostKind::Id => self.ip.as_deref(),
            HostKind::Name => None,
        }?;
        let ip: IpAddr = text.parse().ok()?;
        Some(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        })
    }
}

/// What one line led to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineResult {
    pub failures: Vec<Failure>,
    /// An ignoreregex vetoed a failure on this line.
    pub ignored: bool,
    /// A failregex matched, whether or not it gave a failure.
    pub matched: bool,
}

#[derive(Debug)]
pub struct Filter {
    prefregex: Option<FilterRegex>,
    fail: Vec<FilterRegex>,
    /// Which failregexes can match a text, in one pass.
    prefilter: Prefilter,
    candidates: Vec<bool>,
    ignore: Vec<FilterRegex>,
    maxlines: usize,
    dates: DateDetector,
    options: FilterOptions,
    buffer: Vec<TupleLine>,
    org: Vec<TupleLine>,
    text: String,
    scratch: String,
    last_date: Option<f64>,
    mlfid: MlfidCache,
}

impl Filter {
    pub fn new(def: &FilterDefinition, options: FilterOptions) -> Result<Self, FilterError> {
        let dns = UseDns::from_option(def.usedns.as_deref());
        let multiline = def.maxlines > 1;
        let prefregex = def
            .prefregex
            .as_ref()
            .map(|p| FilterRegex::new(p, multiline, dns, 0))
            .transpose()?;
        let compile_all = |list: &[Located]| -> Result<Vec<FilterRegex>, FilterError> {
            list.iter()
                .enumerate()
                .map(|(i, l)| FilterRegex::new(l, multiline, dns, i + 1))
                .collect()
        };
        let fail = compile_all(&def.failregex)?;
        if fail.is_empty() {
            return Err(FilterError::Invalid("no failregex".into()));
        }
        const IDS: [&str; 5] = ["fid", "ip4", "ip6", "dns", "mlfid"];
        let pref_has_id = prefregex
            .as_ref()
            .is_some_and(|p| IDS.iter().any(|g| p.has_group(g)));
        for (i, f) in fail.iter().enumerate() {
            if !pref_has_id && !IDS.iter().any(|g| f.has_group(g)) {
                return Err(FilterError::located(
                    &f.source,
                    i + 1,
                    0,
                    "no failure id (<HOST>, <ADDR>, <F-ID> …)".into(),
                ));
            }
        }
        let ignore = compile_all(&def.ignoreregex)?;
        let dates = DateDetector::new(&def.datepattern, options.now_year)
            .map_err(FilterError::DatePattern)?;
        let patterns: Vec<String> = fail.iter().map(|f| f.pattern.clone()).collect();
        let prefilter = Prefilter::new(&patterns, multiline);
        Ok(Filter {
            prefregex,
            fail,
            prefilter,
            candidates: Vec::new(),
            ignore,
            maxlines: def.maxlines.max(1),
            dates,
            options,
            buffer: Vec::new(),
            org: Vec::new(),
            text: String::new(),
            scratch: String::new(),
            last_date: None,
            mlfid: MlfidCache::default(),
        })
    }

    pub fn failregex(&self) -> impl Iterator<Item = &Located> {
        self.fail.iter().map(|f| &f.source)
    }

    pub fn ignoreregex(&self) -> impl Iterator<Item = &Located> {
        self.ignore.iter().map(|f| &f.source)
    }

    /// Looks for failures in `line`; `now` (Unix seconds) completes dates
    /// without a year or day and stands in for a missing date.
    pub fn process_line(&mut self, line: &str, now: i64) -> LineResult {
        let mut date = None;
        let mut span = 0..0;
        if let Some(found) = self.dates.find(line, now, &self.options.zone) {
            if found.end > found.start {
                span = found.start..found.end;
                if let Some(t) = found.time {
                    date = Some(t);
                    self.last_date = Some(t);
                }
            } else if let Some(t) = self.recent_date(now) {
                date = Some(t);
            } else {
                date = Some(now as f64);
            }
        }
        if date.is_none() {
            if let Some(t) = self.recent_date(now) {
                date = Some(t);
            } else if self.options.undated_is_now {
                date = Some(now as f64);
            }
        }
        self.find_failure(line, span, date, now)
    }

    /// A line whose time is already known (e.g. from the journal).
    pub fn process_dated(&mut self, line: &str, time: f64, now: i64) -> LineResult {
        self.last_date = Some(time);
        self.find_failure(line, 0..0, Some(time), now)
    }

    fn recent_date(&self, now: i64) -> Option<f64> {
        self.last_date.filter(|t| *t > (now - 60) as f64)
    }

    /// Whether an ignoreregex matches: the whole buffer, or (multi-line)
    /// the lines a failregex matched.
    fn ignored(&mut self, hit: Option<&Hit>, org: &[TupleLine]) -> bool {
        let (buf, lines) = match hit {
            Some(h) if self.maxlines > 1 => {
                let lines = h.matched(org);
                let mut b = String::new();
                buffer_text(&lines, &mut b);
                (std::borrow::Cow::Owned(b), std::borrow::Cow::Owned(lines))
            }
            _ => (
                std::borrow::Cow::Borrowed(self.text.as_str()),
                std::borrow::Cow::Borrowed(org),
            ),
        };
        let mut found = false;
        let mut unmatched = None;
        for ig in &mut self.ignore {
            if ig.search(&buf, &lines).is_some() {
                found = true;
                if !self.options.check_all || self.maxlines > 1 {
                    if let Some(h) = hit {
                        unmatched = Some(h.unmatched(org));
                    }
                }
                if !self.options.check_all {
                    break;
                }
            }
        }
        if let Some(u) = unmatched {
            self.buffer = u;
        }
        found
    }

    fn find_failure(
        &mut self,
        line: &str,
        span: std::ops::Range<usize>,
        date: Option<f64>,
        now: i64,
    ) -> LineResult {
        // The lines as buffered before this line's processing changes them;
        // for one-line filters the same allocation serves every line.
        let mut org = std::mem::take(&mut self.org);
        if self.maxlines > 1 {
            self.buffer.push(TupleLine {
                text: line.to_owned(),
                date: span,
            });
            let excess = self.buffer.len().saturating_sub(self.maxlines);
            self.buffer.drain(..excess);
            org.clone_from(&self.buffer);
        } else {
            self.buffer.clear();
            if org.len() != 1 {
                org.clear();
                org.push(TupleLine::default());
            }
            org[0].text.clear();
            org[0].text.push_str(line);
            org[0].date = span;
        }
        let result = self.find_in(&org, date, now);
        self.org = org;
        result
    }

    fn find_in(&mut self, org: &[TupleLine], date: Option<f64>, now: i64) -> LineResult {
        let mut result = LineResult::default();
        buffer_text(org, &mut self.text);
        // Whether `self.text` must be rebuilt from `self.buffer`.
        let mut stale = false;

        if !self.ignore.is_empty()
            && (self.ignore.len() as isize) < self.fail.len() as isize - 2
            && self.ignored(None, org)
        {
            result.ignored = true;
            return result;
        }
        // The prefregex's groups, read from its text only when a failregex
        // matches (most lines match none); once the content took the text's
        // place, that text is in `scratch`.
        let mut pre_groups = Groups::default();
        let mut pre_hit: Option<Hit> = None;
        let mut pre_in_scratch = false;
        if let Some(pref) = self.prefregex.as_mut() {
            let Some(hit) = pref.search(&self.text, org) else {
                return result;
            };
            if let Some(content) = hit.group(&self.text, "content").filter(|c| !c.is_empty()) {
                if self.maxlines > 1 {
                    pre_groups = groups_of(&hit, &self.text, "content");
                    self.buffer = vec![TupleLine::undated(content.to_owned())];
                    stale = true;
                } else {
                    pre_in_scratch = true;
                    self.scratch.clear();
                    self.scratch.push_str(content);
                    self.scratch.push('\n');
                    std::mem::swap(&mut self.text, &mut self.scratch);
                }
            }
            if pre_groups.is_empty() {
                pre_hit = Some(hit);
            }
        }
        let mut checked = false;
        for i in 0..self.fail.len() {
            if stale {
                buffer_text(&self.buffer, &mut self.text);
                stale = false;
                checked = false;
            }
            if !checked {
                self.prefilter.candidates(&self.text, &mut self.candidates);
                checked = true;
            }
            if !self.candidates.get(i).copied().unwrap_or(true) {
                continue;
            }
            let Some(hit) = self.fail[i].search(&self.text, org) else {
                continue;
            };
            result.matched = true;
            if !self.ignore.is_empty() && self.ignored(Some(&hit), org) {
                result.ignored = true;
                stale = true;
                if !self.options.check_all {
                    break;
                }
                continue;
            }
            if let Some(p) = pre_hit.take() {
                pre_groups = groups_of(
                    &p,
                    if pre_in_scratch {
                        &self.scratch
                    } else {
                        &self.text
                    },
                    "content",
                );
            }
            // Only when every regex is checked can a later one need them.
            let mut groups = if self.options.check_all {
                pre_groups.clone()
            } else {
                std::mem::take(&mut pre_groups)
            };
            for (name, s, e) in &hit.groups {
                groups.insert(name, self.text.get(*s..*e).unwrap_or("").to_owned());
            }
            if !self.options.check_all || self.maxlines > 1 {
                self.buffer = hit.unmatched(org);
                stale = true;
            }
            let matched = hit.matched_count();
            let mlfid = groups.get("mlfid").cloned();
            let fail = FailData {
                groups,
                ..Default::default()
            };
            let merged = match &mlfid {
                Some(id) => {
                    let m = self.mlfid.merge(id, fail, matched, now);
                    let nofail = match &m {
                        Merged::Cached => {
                            self.mlfid.get_mut(id).is_some_and(|d| d.truthy("nofail"))
                        }
                        Merged::Owned(d) => d.truthy("nofail"),
                    };
                    if nofail && !self.options.check_all {
                        return result;
                    }
                    m
                }
                None => Merged::Owned(FailData {
                    matches: matched,
                    ..fail
                }),
            };
            let mut owned = match merged {
                Merged::Owned(d) => Some(d),
                Merged::Cached => None,
            };
            let Some(data) = (match (&mut owned, &mlfid) {
                (Some(d), _) => Some(d),
                (None, Some(id)) => self.mlfid.get_mut(id),
                (None, None) => None,
            }) else {
                continue;
            };
            let failure = failure_of(i, data, date, self.options.check_all);
            // A failure still waiting for its address is reported only when
            // every regex is checked (as fail2ban's test tools do).
            if failure.host.is_none() && !self.options.check_all {
                return result;
            }
            result.failures.push(failure);
            if !self.options.check_all {
                break;
            }
        }
        result
    }

    /// How many failregexes the fast first pass covers.
    pub fn prefiltered(&self) -> usize {
        self.prefilter.covered()
    }

    /// Multi-line failures being assembled now (bounded).
    pub fn pending(&self) -> usize {
        self.mlfid.len()
    }
}

/// The failure `data` describes; without a host (and marked pending) while
/// a multi-line failure waits for its address.
fn failure_of(regex: usize, data: &mut FailData, time: Option<f64>, details: bool) -> Failure {
    let fid = data.groups.get("fid").cloned();
    let (id, kind, cidr) = if let Some(ip) = data.groups.get("ip4") {
        (
            Some(ip.clone()),
            HostKind::Ip4,
            data.groups.get("cidr").and_then(|c| c.parse().ok()),
        )
    } else if let Some(ip) = data.groups.get("ip6") {
        (
            Some(ip.clone()),
            HostKind::Ip6,
            data.groups.get("cidr").and_then(|c| c.parse().ok()),
        )
    } else if let Some(name) = data.groups.get("dns") {
        (Some(name.clone()), HostKind::Name, None)
    } else {
        (fid.clone(), HostKind::Id, None)
    };
    let host = match id {
        None => {
            data.pending = true;
            return Failure {
                regex,
                host: None,
                kind,
                cidr,
                ip: None,
                time,
                user: data.groups.get("user").cloned(),
                users: if details {
                    data.all_users()
                } else {
                    Vec::new()
                },
                attempts: data.matches,
                nofail: data.truthy("nofail"),
                groups: details_of(data, details),
            };
        }
        Some(ip) => match &fid {
            Some(f) if *f != ip && kind != HostKind::Id => {
                data.ip = Some(ip);
                f.clone()
            }
            _ => ip,
        },
    };
    let kind = if data.ip.is_some() && fid.is_some() {
        HostKind::Id
    } else {
        kind
    };
    Failure {
        regex,
        host: Some(normalise_host(host, kind, cidr)),
        kind,
        cidr,
        ip: data.ip.clone(),
        time,
        user: data.groups.get("user").cloned(),
        users: if details {
            data.all_users()
        } else {
            Vec::new()
        },
        attempts: data.matches,
        nofail: data.truthy("nofail"),
        groups: details_of(data, details),
    }
}

/// The named groups of `hit` in `text`, but `skip`.
fn groups_of(hit: &Hit, text: &str, skip: &str) -> Groups {
    hit.groups
        .iter()
        .filter(|(n, _, _)| *n != skip)
        .map(|(n, s, e)| (*n, text.get(*s..*e).unwrap_or("").to_owned()))
        .collect()
}

/// Every named group, for tools that show them (not on the agent's path).
fn details_of(data: &FailData, details: bool) -> BTreeMap<String, String> {
    if details {
        data.groups.to_map()
    } else {
        BTreeMap::new()
    }
}

/// An address as fail2ban prints it: as written, a prefix as `network/len`
/// (a full-length prefix as the bare address).
fn normalise_host(host: String, kind: HostKind, cidr: Option<u8>) -> String {
    let Some(len) = cidr.filter(|_| matches!(kind, HostKind::Ip4 | HostKind::Ip6)) else {
        return host;
    };
    let Ok(ip) = host.parse::<IpAddr>() else {
        return host;
    };
    match ipnet::IpNet::new(ip, len) {
        Ok(net) if net.prefix_len() < net.max_prefix_len() => net.trunc().to_string(),
        Ok(_) => ip.to_string(),
        Err(_) => host,
    }
}

#[cfg(test)]
mod tests;
