//! A fail2ban filter (`filter.d/NAME.conf`) read as fail2ban reads it: the
//! `[Definition]` options interpolated with the filter's options and
//! `[Init]`, then `<tag>` references substituted recursively (`<mode>`,
//! `<mdre-<mode>>`, `<lt_<logtype>/__prefix_line>`, …).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{ConfigSet, Fail2banError, Origin, SourceFiles};

/// The options of a filter that matter for matching.
const FILTER_OPTIONS: [&str; 7] = [
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];
/// How often one tag may be substituted in one value before it counts as
/// a self reference.
const MAX_TAG_REPLACE: usize = 25;

/// A regular expression as configured, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub value: String,
    /// The option (`failregex`, `prefregex`, …).
    pub option: String,
    /// Where the option was written; `None` when given as a filter option.
    pub origin: Option<Origin>,
}

/// A filter, every option resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterDefinition {
    /// The filter's own file.
    pub file: PathBuf,
    pub prefregex: Option<Located>,
    pub failregex: Vec<Located>,
    pub ignoreregex: Vec<Located>,
    pub maxlines: usize,
    /// One date pattern per line; empty: fail2ban's default templates.
    pub datepattern: Vec<String>,
    /// `journalmatch` lines, each a set of `FIELD=value` terms.
    pub journalmatch: Vec<String>,
    pub usedns: Option<String>,
}

impl FilterDefinition {
    /// A filter written directly as regexes (fleetban's own configuration):
    /// `option` names where they were configured, for error messages.
    pub fn from_regexes(
        origin: Option<Origin>,
        failregex: &[String],
        ignoreregex: &[String],
    ) -> Self {
        let located = |option: &str, list: &[String]| -> Vec<Located> {
            list.iter()
                .map(|v| Located {
                    value: v.clone(),
                    option: option.to_owned(),
                    origin: origin.clone(),
                })
                .collect()
        };
        FilterDefinition {
            file: origin.as_ref().map(|o| o.file.clone()).unwrap_or_default(),
            prefregex: None,
            failregex: located("failregex", failregex),
            ignoreregex: located("ignoreregex", ignoreregex),
            maxlines: 1,
            datepattern: Vec::new(),
            journalmatch: Vec::new(),
            usedns: None,
        }
    }
}

/// Reads filter `base` (a path without `.conf`) with `options` (as in
/// `sshd[mode=aggressive]`).
pub fn read_filter(
    src: &dyn SourceFiles,
    base: &Path,
    options: &[(String, String)],
) -> Result<FilterDefinition, Fail2banError> {
    let cfg = ConfigSet::read(src, base)?;
    let mut file = base.as_os_str().to_owned();
    file.push(".conf");
    let file = PathBuf::from(file);
    let err = |message: String| Fail2banError {
        file: file.clone(),
        line: 0,
        message,
    };

    let given: HashMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.clone()))
        .collect();
    // The filter's own options, interpolated with the given ones winning.
    let mut opts: HashMap<String, String> = HashMap::new();
    for name in FILTER_OPTIONS {
        if given.contains_key(name) {
            continue;
        }
        if let Some(v) = cfg.get("Definition", name, &given)? {
            opts.insert(name.to_owned(), v);
        }
    }
    // [Init] supplies defaults for the options (and `known/NAME` for each).
    let mut init = given.clone();
    if cfg.has_section("Init") {
        for name in cfg.options("Init", false) {
            let v = cfg.get("Init", &name, &HashMap::new())?.unwrap_or_default();
            if !name.starts_with("known/") {
                init.insert(format!("known/{name}"), v.clone());
            }
            init.entry(name).or_insert(v);
        }
    }
    opts.extend(init);
    let lookup = |name: &str| cfg.get_ex("Definition", name, &given).ok().flatten();
    let resolved = substitute_tags(opts, &lookup).map_err(err)?;

    let located = |name: &str| -> Vec<Located> {
        let origin = if given.contains_key(name) {
            None
        } else {
            cfg.origin("Definition", name).cloned()
        };
        resolved
            .get(name)
            .map(|v| {
                v.split('\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| Located {
                        value: l.to_owned(),
                        option: name.to_owned(),
                        origin: origin.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let maxlines = match resolved.get("maxlines").map(|s| s.trim()) {
        None | Some("") => 1,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(err(format!(
                    "maxlines {s:?}: expected a whole number above 0"
                )))
            }
        },
    };
    let lines = |name: &str| -> Vec<String> {
        resolved
            .get(name)
            .map(|v| {
                v.split('\n')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(FilterDefinition {
        prefregex: located("prefregex")
            .into_iter()
            .next()
            .filter(|p| !p.value.trim().is_empty()),
        failregex: located("failregex"),
        ignoreregex: located("ignoreregex"),
        maxlines,
        datepattern: lines("datepattern"),
        journalmatch: lines("journalmatch"),
        usedns: resolved
            .get("usedns")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        file,
    })
}

/// Replaces `<name>` references in every value by the value of `name` (from
/// the map, else from `lookup`), recursively; unknown names stay as they
/// are (`<HOST>` is the regex compiler's). A reference to itself, directly
/// or through a cycle, is an error.
pub fn substitute_tags(
    mut tags: HashMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, String>, String> {
    let keys: Vec<String> = tags.keys().cloned().collect();
    for key in keys {
        let mut counts: HashMap<String, usize> = HashMap::new();
        while let Some(value) = tags.get(&key).cloned() {
            let mut replaced = false;
            let mut from = 0;
            while let Some((start, end)) = find_tag(&value, from) {
                let name = &value[start + 1..end - 1];
                let repl = if name == key {
                    None
                } else {
                    tags.get(name).cloned().or_else(|| lookup(name))
                };
                if name == key && (tags.contains_key(name) || lookup(name).is_some()) {
                    return Err(format!("option {key} refers to itself through <{name}>"));
                }
                let Some(repl) = repl else {
                    from = start + 1;
                    continue;
                };
                let n = counts.entry(name.to_owned()).or_default();
                *n += 1;
                if *n > MAX_TAG_REPLACE {
                    return Err(format!(
                        "option {key}: <{name}> cannot be resolved (a reference cycle)"
                    ));
                }
                let new = value.replace(&value[start..end], &repl);
                tags.insert(key.clone(), new);
                replaced = true;
                break;
            }
            if !replaced {
                break;
            }
        }
    }
    Ok(tags)
}

/// The next `<name>` (no space, `<` or `>` inside) at or after `from`.
fn find_tag(s: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let mut j = i + 1;
            while j < bytes.len() && !matches!(bytes[j], b' ' | b'<' | b'>') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'>' && j > i + 1 {
                return Some((i, j + 1));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fail2ban::config::tests::MemFiles;

    #[test]
    fn tags_resolve_recursively() {
        let tags: HashMap<String, String> = [
            (
                "failregex".to_owned(),
                "^<mdre-<mode>> <HOST> (?P<cond>x)".to_owned(),
            ),
            ("mode".to_owned(), "normal".to_owned()),
        ]
        .into();
        let lookup = |n: &str| {
            (n == "mdre-normal")
                .then(|| "<a>-<a>".to_owned())
                .or_else(|| (n == "a").then(|| "A".into()))
        };
        let out = substitute_tags(tags, &lookup).unwrap();
        assert_eq!(out["failregex"], "^A-A <HOST> (?P<cond>x)");
        let looped: HashMap<String, String> = [
            ("a".to_owned(), "<b>".to_owned()),
            ("b".to_owned(), "<a>".to_owned()),
        ]
        .into();
        assert!(substitute_tags(looped, &|_| None).is_err());
        let own: HashMap<String, String> = [("a".to_owned(), "x<a>".to_owned())].into();
        assert!(substitute_tags(own, &|_| None).is_err());
    }

    #[test]
    fn a_filter_with_modes_and_init() {
        let files = MemFiles::with(&[
            ("/f/common.conf", "[DEFAULT]\nlogtype = file\n__prefix_line = <lt_<logtype>/__prefix_line>\n[lt_file]\n__prefix_line = FILE\n[lt_journal]\n__prefix_line = JOURNAL\n"),
            (
                "/f/x.conf",
                "[INCLUDES]\nbefore = common.conf\n[Definition]\nprefregex = ^%(__prefix_line)s<F-CONTENT>.+</F-CONTENT>$\nfailregex = ^a <HOST>\n            <mdre-<mode>>\nmdre-normal =\nmdre-extra = ^extra <HOST>\nmode = normal\nmaxlines = 2\njournalmatch = _COMM=x\n[Init]\nmaxlines = 3\n",
            ),
        ]);
        let d = read_filter(&files, Path::new("/f/x"), &[]).unwrap();
        assert_eq!(
            d.prefregex.unwrap().value,
            "^<lt_file/__prefix_line><F-CONTENT>.+</F-CONTENT>$"
                .replace("<lt_file/__prefix_line>", "FILE")
        );
        assert_eq!(
            d.failregex
                .iter()
                .map(|l| l.value.as_str())
                .collect::<Vec<_>>(),
            vec!["^a <HOST>"]
        );
        assert_eq!(d.failregex[0].origin.as_ref().unwrap().line, 5);
        assert_eq!(d.maxlines, 3);
        assert_eq!(d.journalmatch, vec!["_COMM=x"]);
        let opts = vec![
            ("mode".to_owned(), "extra".to_owned()),
            ("logtype".to_owned(), "journal".to_owned()),
        ];
        let d = read_filter(&files, Path::new("/f/x"), &opts).unwrap();
        assert_eq!(d.failregex.len(), 2);
        assert_eq!(d.failregex[1].value, "^extra <HOST>");
        assert!(d.prefregex.unwrap().value.starts_with("^JOURNAL"));
    }
}
