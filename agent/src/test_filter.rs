//! `fleetban-agent test-filter`: runs a filter over a log, as
//! `fail2ban-regex` does, and reports each failure and a summary.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use fleetban_engine::date::Zone;
use fleetban_engine::fail2ban::{options, read_filter, FilterDefinition, Located};
use fleetban_engine::{Filter, FilterOptions};
use serde::Serialize;

use crate::fsfiles::FsFiles;
use crate::source::MAX_LINE;

/// What a filter argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSpec {
    /// A filter file (or name resolved in a filter directory), with options.
    File {
        base: PathBuf,
        options: Vec<(String, String)>,
    },
    /// A regex given on the command line.
    Regex(String),
}

/// Why a filter argument cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TestFilterError {
    #[error(transparent)]
    Options(#[from] options::OptionsError),
    #[error(transparent)]
    Config(#[from] fleetban_engine::fail2ban::Fail2banError),
    #[error(transparent)]
    Filter(#[from] fleetban_engine::FilterError),
    #[error("cannot read {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
}

/// Resolves `arg`: a path to a filter file, a filter name found in one of
/// `dirs` (both with optional `[opt=val, …]`), or else a regex.
pub fn resolve(arg: &str, dirs: &[PathBuf]) -> Result<FilterSpec, TestFilterError> {
    let looks_named = !arg.contains(['<', '\\', '^', '$', '(', ' ', '*', '+', '?', '|']);
    if looks_named || Path::new(arg.split('[').next().unwrap_or(arg)).exists() {
        let named = options::parse(arg)?;
        let path = Path::new(&named.name);
        if path.is_file() {
            let base = path.with_extension("");
            return Ok(FilterSpec::File {
                base,
                options: named.options,
            });
        }
        for dir in dirs {
            if dir.join(format!("{}.conf", named.name)).is_file()
                || dir.join(format!("{}.local", named.name)).is_file()
            {
                return Ok(FilterSpec::File {
                    base: dir.join(&named.name),
                    options: named.options,
                });
            }
        }
    }
    Ok(FilterSpec::Regex(arg.to_owned()))
}

/// The filter definition an argument names.
pub fn definition(
    spec: &FilterSpec,
    ignoreregex: Option<&str>,
) -> Result<FilterDefinition, TestFilterError> {
    let mut def = match spec {
        FilterSpec::File { base, options } => read_filter(&FsFiles, base, options)?,
        FilterSpec::Regex(r) => FilterDefinition::from_regexes(None, std::slice::from_ref(r), &[]),
    };
    if let Some(ig) = ignoreregex {
        def.ignoreregex.push(Located {
            value: ig.to_owned(),
            option: "ignoreregex".into(),
            origin: None,
        });
    }
    Ok(def)
}

/// One failure, as `--json` prints it.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonFailure {
    pub line: u64,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The totals, as `--json` prints them last.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub matched: u64,
    pub ignored: u64,
    pub missed: u64,
    #[serde(skip)]
    pub hits: BTreeMap<usize, u64>,
    #[serde(skip)]
    pub cut: u64,
    #[serde(skip)]
    pub invalid_utf8: u64,
}

fn rfc3339(t: f64, zone: &Zone) -> Option<String> {
    let secs = t.floor() as i64;
    let nanos = ((t - t.floor()) * 1e9).round() as u32;
    let utc = Utc.timestamp_opt(secs, nanos.min(999_999_999)).single()?;
    let s = match zone {
        Zone::Named(tz) => utc.with_timezone(tz).to_rfc3339(),
        Zone::Fixed(off) => utc.with_timezone(off).to_rfc3339(),
    };
    Some(s)
}

/// Runs `filter` over every line of `log`, writing one JSON object per
/// failure when `json` is set.
pub fn run(
    filter: &mut Filter,
    zone: &Zone,
    log: &mut dyn BufRead,
    now: i64,
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, std::io::Error> {
    let mut summary = Summary::default();
    let mut number = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if log.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        // As fail2ban-regex: comments and empty lines are not log lines.
        if buf.is_empty() || buf.first() == Some(&b'#') {
            continue;
        }
        summary.lines += 1;
        if buf.len() > MAX_LINE {
            buf.truncate(MAX_LINE);
            summary.cut += 1;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => {
                summary.invalid_utf8 += 1;
                String::from_utf8_lossy(&buf)
            }
        };
        let result = filter.process_line(&text, now);
        // A failure still waiting for its address (a multi-line failure)
        // counts as a match, as in fail2ban-regex, but has no host to print.
        let reported: Vec<_> = result.failures.iter().filter(|f| !f.nofail).collect();
        // A line that is part of a failure but not one (`nofail`) counts as
        // ignored, as in fail2ban-regex.
        let ignored = result.ignored || result.failures.iter().any(|f| f.nofail);
        if ignored {
            summary.ignored += 1;
        } else if !reported.is_empty() {
            summary.matched += 1;
        } else {
            summary.missed += 1;
        }
        if !ignored {
            for f in &reported {
                *summary.hits.entry(f.regex).or_default() += 1;
                if json && f.host.is_some() {
                    let j = JsonFailure {
                        line: number,
                        host: f.host.clone().unwrap_or_default(),
                        time: f.time.and_then(|t| rfc3339(t, zone)),
                        user: f.user.clone().filter(|u| !u.is_empty()),
                    };
                    serde_json::to_writer(&mut *out, &j)?;
                    out.write_all(b"\n")?;
                }
            }
        }
    }
    if json {
        serde_json::to_writer(&mut *out, &summary)?;
        out.write_all(b"\n")?;
    }
    Ok(summary)
}

/// The human summary, after the run.
pub fn report(filter: &Filter, summary: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Failregex: {} total",
        summary.hits.values().sum::<u64>()
    )?;
    for (i, l) in filter.failregex().enumerate() {
        writeln!(
            out,
            "|  #{:<3} {:>8} hits  {}",
            i + 1,
            summary.hits.get(&i).copied().unwrap_or(0),
            l.value
        )?;
    }
    let ignores: Vec<_> = filter.ignoreregex().collect();
    if !ignores.is_empty() {
        writeln!(out, "Ignoreregex: {} lines ignored", summary.ignored)?;
        for (i, l) in ignores.iter().enumerate() {
            writeln!(out, "|  #{:<3} {}", i + 1, l.value)?;
        }
    }
    writeln!(
        out,
        "Lines: {} lines, {} matched, {} ignored, {} missed",
        summary.lines, summary.matched, summary.ignored, summary.missed
    )?;
    if summary.cut > 0 {
        writeln!(
            out,
            "Lines longer than {} bytes, cut: {}",
            MAX_LINE, summary.cut
        )?;
    }
    if summary.invalid_utf8 > 0 {
        writeln!(
            out,
            "Lines with invalid UTF-8 (read with U+FFFD): {}",
            summary.invalid_utf8
        )?;
    }
    Ok(())
}

/// Filter options for testing a log, as fail2ban-regex runs: every
/// failregex is tried, every line keeps its own time (none if it has none).
pub fn options(zone: &Zone) -> FilterOptions {
    use chrono::Datelike;
    FilterOptions {
        zone: zone.clone(),
        now_year: Utc::now().year(),
        check_all: true,
        undated_is_now: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(regex: &str, log: &str) -> (String, Summary) {
        let zone = Zone::utc();
        let def = definition(
            &FilterSpec::Regex(regex.into()),
            Some(r"from 192\.0\.2\.99 "),
        )
        .unwrap();
        let mut filter = Filter::new(&def, options(&zone)).unwrap();
        let mut out = Vec::new();
        let summary = run(
            &mut filter,
            &zone,
            &mut log.as_bytes(),
            1_124_013_600,
            true,
            &mut out,
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), summary)
    }

    #[test]
    fn json_lines_and_summary() {
        let log = "Aug 14 11:59:59 h sshd[1]: Failed password for root from 192.0.2.1 port 2 ssh2\n\
                   Aug 14 11:59:59 h sshd[1]: Accepted password for root from 192.0.2.1 port 2 ssh2\n\
                   Aug 14 12:00:00 h sshd[1]: Failed password for x from 192.0.2.99 port 3 ssh2\n\
                   bad \u{fffd} line\n";
        let (out, s) = run_on(
            r"Failed password for <F-USER>\S+</F-USER> from <HOST> port",
            log,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"line":1,"host":"192.0.2.1","time":"2005-08-14T11:59:59+00:00","user":"root"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"lines":4,"matched":1,"ignored":1,"missed":2}"#
        );
        assert_eq!((s.lines, s.matched, s.ignored, s.missed), (4, 1, 1, 2));
    }

    #[test]
    fn hostile_input_is_counted_not_fatal() {
        let mut log = Vec::new();
        log.extend_from_slice(&vec![b'a'; 1024 * 1024]);
        log.extend_from_slice(b"\nnul\0byte from 192.0.2.3\n\xff\xfe from 192.0.2.4\n# comment\n\n\x1b[31mcolour from 192.0.2.5\n");
        let zone = Zone::utc();
        let def = definition(&FilterSpec::Regex("from <HOST>".into()), None).unwrap();
        let mut filter = Filter::new(&def, options(&zone)).unwrap();
        let mut out = Vec::new();
        let s = run(&mut filter, &zone, &mut log.as_slice(), 0, false, &mut out).unwrap();
        assert_eq!((s.lines, s.matched, s.cut, s.invalid_utf8), (4, 3, 1, 1));
    }

    #[test]
    fn arguments_resolve_to_files_names_or_regexes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.conf"),
            "[Definition]\nfailregex = x <HOST>\n",
        )
        .unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(
            resolve("mine[mode=aggressive]", &dirs).unwrap(),
            FilterSpec::File {
                base: dir.path().join("mine"),
                options: vec![("mode".into(), "aggressive".into())]
            }
        );
        let path = dir.path().join("mine.conf");
        assert_eq!(
            resolve(path.to_str().unwrap(), &[]).unwrap(),
            FilterSpec::File {
                base: dir.path().join("mine"),
                options: vec![]
            }
        );
        assert_eq!(
            resolve("^fail <HOST>$", &dirs).unwrap(),
            FilterSpec::Regex("^fail <HOST>$".into())
        );
        assert_eq!(
            resolve("unknown", &dirs).unwrap(),
            FilterSpec::Regex("unknown".into())
        );
    }
}
