//! Conformance with fail2ban's own test suite: every sample log that
//! Debian's fail2ban package ships (`fail2ban/tests/files/logs/*`, with
//! `# failJSON:` expectations) through the filter of the same name, read
//! unchanged from `/etc/fail2ban/filter.d`, with every `filterOptions` set
//! the log names. Times are checked as fail2ban's suite checks them: "now"
//! is 2005-08-14 12:00 CEST and logs are in Central European time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fleetban_engine::date::Zone;
use fleetban_engine::fail2ban::{read_filter, SourceFiles};
use fleetban_engine::filter::{Filter, FilterOptions};
use serde_json::{Map, Value};

const LOGS: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";
const TEST_FILTERS: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/config/filter.d";
const FILTERS: &str = "/etc/fail2ban/filter.d";
/// fail2ban's suite runs at Sun Aug 14 12:00:00 CEST 2005.
const NOW: i64 = 1_124_013_600;
/// The share of expectations that must hold.
const BAR: f64 = 0.97;

#[path = "support/fs.rs"]
mod fs;

/// The file system, with one mapping: the suite's own test filters include
/// `common.conf` by a path into fail2ban's source tree
/// (`…/config/filter.d/`); installed, that tree is /etc/fail2ban.
struct Fs;

impl SourceFiles for Fs {
    fn read(&self, path: &Path) -> Option<Result<String, String>> {
        if !path.exists() && path.to_string_lossy().contains("/config/filter.d/") {
            return fs::Fs.read(&Path::new(FILTERS).join(path.file_name().unwrap_or_default()));
        }
        fs::Fs.read(path)
    }

    fn list(&self, dir: &Path, suffix: &str) -> Vec<PathBuf> {
        fs::Fs.list(dir, suffix)
    }
}

/// The few conditions fail2ban's sample logs use: `name == 'x'`,
/// `opts.get('k') != 'v'` and the like.
fn condition(expr: &str, name: &str, opts: &Map<String, Value>) -> Result<bool, String> {
    let expr = expr.trim();
    let (lhs, op, rhs) = if let Some((l, r)) = expr.split_once("==") {
        (l.trim(), "==", r.trim())
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l.trim(), "!=", r.trim())
    } else {
        return Err(format!("unsupported condition {expr:?}"));
    };
    let unquote = |s: &str| s.trim_matches(|c| c == '\'' || c == '"').to_owned();
    let left = if lhs == "name" {
        Some(name.to_owned())
    } else if let Some(k) = lhs
        .strip_prefix("opts.get(")
        .and_then(|s| s.strip_suffix(')'))
    {
        opts.get(&unquote(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        return Err(format!("unsupported condition {expr:?}"));
    };
    let right = if rhs == "None" {
        None
    } else {
        Some(unquote(rhs))
    };
    Ok(if op == "==" {
        left == right
    } else {
        left != right
    })
}

fn options_of(opts: &Map<String, Value>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = opts
        .iter()
        .filter(|(k, _)| !k.starts_with("test."))
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect();
    v.sort();
    v
}

struct Run {
    zone: Zone,
    filters: HashMap<String, Result<Filter, String>>,
    passed: usize,
    /// Expectations whose time was checked too.
    timed: usize,
    failed: Vec<String>,
}

fn load<'a>(
    filters: &'a mut HashMap<String, Result<Filter, String>>,
    zone: &Zone,
    key: &str,
    name: &str,
    opts: &[(String, String)],
) -> &'a mut Result<Filter, String> {
    let zone = zone.clone();
    filters.entry(key.to_owned()).or_insert_with(|| {
        let base = if Path::new(TEST_FILTERS)
            .join(format!("{name}.conf"))
            .exists()
            && name.starts_with("zzz-")
        {
            Path::new(TEST_FILTERS).join(name)
        } else {
            Path::new(FILTERS).join(name)
        };
        let def = read_filter(&Fs, &base, opts).map_err(|e| e.to_string())?;
        Filter::new(
            &def,
            FilterOptions {
                zone,
                now_year: 2026,
                check_all: true,
                undated_is_now: false,
            },
        )
        .map_err(|e| e.to_string())
    })
}

impl Run {
    fn check(
        &mut self,
        name: &str,
        file: &str,
        lineno: usize,
        line: &str,
        expect: &Map<String, Value>,
        test: &(String, Map<String, Value>),
    ) {
        let (key, opts) = test;
        let where_ = format!("{name} {key} {file}:{lineno}");
        let journal = opts.get("logtype").and_then(Value::as_str) == Some("journal");
        let zone = self.zone.clone();
        let filter = match load(&mut self.filters, &self.zone, key, name, &options_of(opts)) {
            Ok(f) => f,
            Err(e) => {
                self.failed
                    .push(format!("{where_}: filter does not load: {e}"));
                return;
            }
        };
        let result = if journal {
            let prefix = opts
                .get("test.prefix-line")
                .and_then(Value::as_str)
                .unwrap_or("");
            filter.process_dated(&format!("{prefix}{line}"), NOW as f64, NOW)
        } else {
            filter.process_line(line, NOW)
        };
        let found: Vec<_> = result
            .failures
            .into_iter()
            .filter(|f| f.host.is_some() && !f.nofail)
            .collect();
        let want_match = expect
            .get("match")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let fail = |why: String| format!("{where_}: {why}\n    line: {line}");
        if found.is_empty() {
            if want_match {
                self.failed
                    .push(fail("expected a failure, found none".into()));
            } else {
                self.passed += 1;
            }
            return;
        }
        if !want_match {
            self.failed.push(fail(format!(
                "expected no failure, found {:?}",
                found[0].host
            )));
            return;
        }
        if found.len() != 1 {
            self.failed
                .push(fail(format!("{} regexes matched", found.len())));
            return;
        }
        let f = &found[0];
        for (k, v) in expect {
            if matches!(k.as_str(), "time" | "match" | "desc" | "constraint") {
                continue;
            }
            let got: Option<Value> = match k.as_str() {
                "host" => f.host.clone().map(Value::String),
                "user" => f.user.clone().map(Value::String),
                "attempts" => Some(Value::from(f.attempts)),
                "users" => Some(Value::from(f.users.clone())),
                other => f.groups.get(other).cloned().map(Value::String),
            };
            let same = match (v, &got) {
                (Value::Array(want), Some(Value::Array(have))) => {
                    let mut a: Vec<String> = want
                        .iter()
                        .map(|x| x.as_str().unwrap_or_default().to_owned())
                        .collect();
                    let mut b: Vec<String> = have
                        .iter()
                        .map(|x| x.as_str().unwrap_or_default().to_owned())
                        .collect();
                    a.sort();
                    b.sort();
                    a == b
                }
                (want, Some(have)) => want == have,
                (Value::Null, None) => true,
                _ => false,
            };
            if !same {
                self.failed
                    .push(fail(format!("{k}: expected {v}, found {got:?}")));
                return;
            }
        }
        if let Some(t) = expect.get("time").and_then(Value::as_str) {
            self.timed += 1;
            let want = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .and_then(|n| {
                    zone.timestamp(n)
                        .map(|s| s as f64 + f64::from(n.and_utc().timestamp_subsec_micros()) / 1e6)
                });
            if want.is_none()
                || f.time
                    .is_none_or(|got| (got - want.unwrap_or_default()).abs() > 1e-6)
            {
                self.failed.push(fail(format!(
                    "time: expected {t} ({want:?}), found {:?}",
                    f.time
                )));
                return;
            }
        }
        self.passed += 1;
    }

    fn sample(&mut self, name: &str) {
        let mut files = vec![name.to_owned()];
        let mut common: Map<String, Value> = Map::new();
        let mut tests: Vec<(String, Map<String, Value>)> = Vec::new();
        let mut i = 0;
        while i < files.len() {
            let file = files[i].clone();
            i += 1;
            let Ok(bytes) = std::fs::read(Path::new(LOGS).join(&file)) else {
                self.failed
                    .push(format!("{name}: cannot read sample {file}"));
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines: Vec<&str> = text.split('\n').collect();
            let mut ignore_block = false;
            let mut n = 0;
            while n < lines.len() {
                let mut line = lines[n];
                n += 1;
                let mut expect = Map::new();
                let directive = line
                    .trim_start_matches('#')
                    .trim_start_matches(' ')
                    .split_once(':')
                    .filter(|_| line.starts_with('#'))
                    .filter(|(k, _)| {
                        matches!(*k, "failJSON" | "fileOptions" | "filterOptions" | "addFILE")
                    });
                if let Some((kind, json)) = directive {
                    let value: Value = match serde_json::from_str(json) {
                        Ok(v) => v,
                        Err(e) => {
                            self.failed
                                .push(format!("{name} {file}:{n}: bad JSON: {e}"));
                            continue;
                        }
                    };
                    match kind {
                        "fileOptions" => {
                            common = value.as_object().cloned().unwrap_or_default();
                            continue;
                        }
                        "filterOptions" => {
                            tests.clear();
                            ignore_block = false;
                            let sets = match value {
                                Value::Array(a) => a,
                                other => vec![other],
                            };
                            for set in sets {
                                let mut opts = common.clone();
                                opts.extend(set.as_object().cloned().unwrap_or_default());
                                if let Some(c) = opts.get("test.condition").and_then(Value::as_str)
                                {
                                    ignore_block = !condition(c, name, &opts).unwrap_or(true);
                                }
                                if !ignore_block {
                                    let key = opts
                                        .get("test.filter-name")
                                        .and_then(Value::as_str)
                                        .map(str::to_owned)
                                        .unwrap_or_else(|| format!("{:?}", options_of(&opts)));
                                    tests.push((format!("{name}{key}"), opts));
                                }
                            }
                            continue;
                        }
                        "addFILE" => {
                            if let Some(f) = value.as_str() {
                                files.push(f.to_owned());
                            }
                            continue;
                        }
                        _ => {
                            expect = value.as_object().cloned().unwrap_or_default();
                            let Some(next) = lines.get(n) else { break };
                            line = next;
                            n += 1;
                        }
                    }
                } else if ignore_block || line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                if ignore_block {
                    continue;
                }
                if tests.is_empty() {
                    tests.push((name.to_owned(), Map::new()));
                }
                let line = line.trim_end_matches(['\r', '\n']);
                for test in tests.clone() {
                    if let Some(c) = expect.get("constraint").and_then(Value::as_str) {
                        match condition(c, name, &test.1) {
                            Ok(false) => continue,
                            Ok(true) => {}
                            Err(e) => {
                                self.failed.push(format!("{name} {file}:{n}: {e}"));
                                continue;
                            }
                        }
                    }
                    self.check(name, &file, n, line, &expect, &test);
                }
            }
        }
    }
}

#[test]
fn fail2ban_sample_logs() {
    if !Path::new(LOGS).is_dir() || !Path::new(FILTERS).is_dir() {
        if std::env::var("FLEETBAN_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("fail2ban's sample logs or filters are missing and FLEETBAN_TEST_STRICT=1");
        }
        eprintln!("skipped fail2ban_sample_logs: Debian's fail2ban package is not installed");
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(LOGS)
        .expect("read logs")
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| {
            Path::new(FILTERS).join(format!("{n}.conf")).exists()
                || Path::new(TEST_FILTERS).join(format!("{n}.conf")).exists()
        })
        .collect();
    names.sort();
    let mut run = Run {
        zone: Zone::parse("Europe/Zurich").expect("zone"),
        filters: HashMap::new(),
        passed: 0,
        timed: 0,
        failed: Vec::new(),
    };
    for name in &names {
        run.sample(name);
    }
    let total = run.passed + run.failed.len();
    let share = run.passed as f64 / total.max(1) as f64;
    println!(
        "fail2ban conformance: {} of {} expectations hold ({:.2}%) over {} sample logs; {} failures' times checked",
        run.passed,
        total,
        share * 100.0,
        names.len(),
        run.timed
    );
    for f in &run.failed {
        println!("  not conforming: {f}");
    }
    assert!(names.len() >= 80, "only {} sample logs found", names.len());
    assert!(
        share >= BAR,
        "{:.2}% of fail2ban's expectations hold; the bar is {:.0}%",
        share * 100.0,
        BAR * 100.0
    );
}
