//! A filter: finds failures in log lines the way fail2ban does. Each line's
//! date is found and cut out; `prefregex` (if any) must match and may narrow
//! the text to its `<F-CONTENT>`; then `failregex` entries are tried in
//! order, `ignoreregex` entries veto, and lines of one connection
//! (`<F-MLFID>`) are merged. Native filters are the same machinery with
//! regexes written in fleetban's own configuration.

mod mlfid;
mod prefilter;
mod regex;

use std::collections::BTreeMap;
use std::net::IpAddr;

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
    /// Every user seen in one multi-line failure.
    pub users: Vec<String>,
    /// Lines that make up the failure.
    pub attempts: usize,
    /// A line that is part of a failure but is not one itself.
    pub nofail: bool,
    pub groups: BTreeMap<String, String>,
    pub lines: Vec<String>,
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
    text: String,
    last_date: Option<(String, f64)>,
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
            text: String::new(),
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
        let tuple = match self.dates.find(line, now, &self.options.zone) {
            Some(found) => {
                let text = &line[found.start..found.end];
                let tuple = TupleLine {
                    pre: line[..found.start].to_owned(),
                    date: text.to_owned(),
                    post: line[found.end..].to_owned(),
                };
                if !text.is_empty() {
                    if let Some(t) = found.time {
                        date = Some(t);
                        self.last_date = Some((text.to_owned(), t));
                    }
                    tuple
                } else if let Some((last_text, t)) = self.recent_date(now) {
                    date = Some(t);
                    TupleLine {
                        pre: String::new(),
                        date: last_text,
                        post: line.to_owned(),
                    }
                } else {
                    date = Some(now as f64);
                    tuple
                }
            }
            None => TupleLine {
                pre: String::new(),
                date: String::new(),
                post: line.to_owned(),
            },
        };
        let mut tuple = tuple;
        if date.is_none() {
            if let Some((last_text, t)) = self.recent_date(now) {
                tuple = TupleLine {
                    pre: String::new(),
                    date: last_text,
                    post: line.to_owned(),
                };
                date = Some(t);
            } else if self.options.undated_is_now {
                date = Some(now as f64);
            }
        }
        self.find_failure(tuple, date, now)
    }

    /// A line whose time is already known (e.g. from the journal).
    pub fn process_dated(&mut self, line: &str, time: f64, now: i64) -> LineResult {
        self.last_date = Some((String::new(), time));
        let tuple = TupleLine {
            pre: String::new(),
            date: String::new(),
            post: line.to_owned(),
        };
        self.find_failure(tuple, Some(time), now)
    }

    fn recent_date(&self, now: i64) -> Option<(String, f64)> {
        self.last_date
            .clone()
            .filter(|(_, t)| *t > (now - 60) as f64)
    }

    fn ignored(&mut self, hit: Option<&Hit>, org: &[TupleLine]) -> bool {
        let (buf, lines) = match hit {
            Some(h) if self.maxlines > 1 => {
                let mut b = String::new();
                buffer_text(&h.matched, &mut b);
                (b, h.matched.clone())
            }
            _ => (self.text.clone(), org.to_vec()),
        };
        let mut found = false;
        for ig in &mut self.ignore {
            if ig.search(&buf, &lines).is_some() {
                found = true;
                if !self.options.check_all || self.maxlines > 1 {
                    if let Some(h) = hit {
                        self.buffer = h.unmatched.clone();
                    }
                }
                if !self.options.check_all {
                    break;
                }
            }
        }
        found
    }

    fn find_failure(&mut self, tuple: TupleLine, date: Option<f64>, now: i64) -> LineResult {
        let mut result = LineResult::default();
        if self.maxlines > 1 {
            self.buffer.push(tuple);
            let excess = self.buffer.len().saturating_sub(self.maxlines);
            self.buffer.drain(..excess);
        } else {
            self.buffer.clear();
            self.buffer.push(tuple);
        }
        let org = self.buffer.clone();
        buffer_text(&self.buffer, &mut self.text);
        let mut stale = false;

        if !self.ignore.is_empty()
            && (self.ignore.len() as isize) < self.fail.len() as isize - 2
            && self.ignored(None, &org)
        {
            result.ignored = true;
            return result;
        }
        let mut pre_groups = BTreeMap::new();
        if let Some(pref) = self.prefregex.as_mut() {
            let Some(hit) = pref.search(&self.text, &org) else {
                return result;
            };
            pre_groups = hit.groups;
            if let Some(content) = pre_groups.remove("content").filter(|c| !c.is_empty()) {
                self.buffer = vec![TupleLine {
                    pre: String::new(),
                    date: String::new(),
                    post: content,
                }];
                stale = true;
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
            let Some(hit) = self.fail[i].search(&self.text, &org) else {
                continue;
            };
            result.matched = true;
            if !self.ignore.is_empty() && self.ignored(Some(&hit), &org) {
                result.ignored = true;
                stale = true;
                if !self.options.check_all {
                    break;
                }
                continue;
            }
            if !self.options.check_all || self.maxlines > 1 {
                self.buffer = hit.unmatched.clone();
                stale = true;
            }
            let mut groups = pre_groups.clone();
            groups.extend(hit.groups.clone());
            let mlfid = groups.get("mlfid").cloned();
            let fail = FailData {
                groups,
                ..Default::default()
            };
            let merged = match &mlfid {
                Some(id) => {
                    let m = self.mlfid.merge(id, fail, &hit.matched, now);
                    let nofail = match &m {
                        Merged::Cached(k) => {
                            self.mlfid.get_mut(k).is_some_and(|d| d.truthy("nofail"))
                        }
                        Merged::Owned(d) => d.truthy("nofail"),
                    };
                    if nofail && !self.options.check_all {
                        return result;
                    }
                    m
                }
                None => {
                    let mut f = fail;
                    f.matches.extend(hit.matched.iter().cloned());
                    Merged::Owned(f)
                }
            };
            let (mut owned, key) = match merged {
                Merged::Owned(d) => (Some(d), None),
                Merged::Cached(k) => (None, Some(k)),
            };
            let Some(data) = (match (&mut owned, &key) {
                (Some(d), _) => Some(d),
                (None, Some(k)) => self.mlfid.get_mut(k),
                (None, None) => None,
            }) else {
                continue;
            };
            let fid = data.groups.get("fid").cloned();
            let (id, kind, cidr) = if let Some(ip) = data.groups.get("ip4").cloned() {
                (
                    Some(ip),
                    HostKind::Ip4,
                    data.groups.get("cidr").and_then(|c| c.parse().ok()),
                )
            } else if let Some(ip) = data.groups.get("ip6").cloned() {
                (
                    Some(ip),
                    HostKind::Ip6,
                    data.groups.get("cidr").and_then(|c| c.parse().ok()),
                )
            } else if let Some(name) = data.groups.get("dns").cloned() {
                (Some(name), HostKind::Name, None)
            } else {
                (fid.clone(), HostKind::Id, None)
            };
            let host = match id {
                None => {
                    data.pending = true;
                    if !self.options.check_all {
                        return result;
                    }
                    None
                }
                Some(ip) => match &fid {
                    Some(f) if *f != ip && kind != HostKind::Id => {
                        data.ip = Some(ip);
                        Some(f.clone())
                    }
                    _ => Some(ip),
                },
            };
            let kind = if host.is_some() && data.ip.is_some() && fid.is_some() {
                HostKind::Id
            } else {
                kind
            };
            let host = host.map(|h| normalise_host(h, kind, cidr));
            let users = data.all_users();
            result.failures.push(Failure {
                regex: i,
                host,
                kind,
                cidr,
                ip: data.ip.clone(),
                time: date,
                user: data.groups.get("user").cloned(),
                users,
                attempts: data.matches.len(),
                nofail: data.truthy("nofail"),
                groups: data.groups.clone(),
                lines: data.matches.iter().map(TupleLine::full).collect(),
            });
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

/// An address as fail2ban prints it: as written, a prefix as `network/len`
/// (a full-length prefix as the bare address).
fn normalise_host(host: String, kind: HostKind, cidr: Option<u8>) -> String {
    if !matches!(kind, HostKind::Ip4 | HostKind::Ip6) {
        return host;
    }
    let Ok(ip) = host.parse::<IpAddr>() else {
        return host;
    };
    match cidr {
        Some(len) => match ipnet::IpNet::new(ip, len) {
            Ok(net) if net.prefix_len() < net.max_prefix_len() => net.trunc().to_string(),
            Ok(_) => ip.to_string(),
            Err(_) => host,
        },
        None => host,
    }
}

#[cfg(test)]
mod tests;
