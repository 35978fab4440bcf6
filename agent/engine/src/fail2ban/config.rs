//! A set of fail2ban configuration files read as fail2ban reads them: a
//! file, its `.local` companion and `.d/` drop-ins, `[INCLUDES] before` and
//! `after` (recursively), later files overriding earlier ones (the
//! overridden values stay reachable as `%(known/NAME)s`), and `%(NAME)s`,
//! `%(SECTION/NAME)s` interpolation at read time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ini;

/// Access to configuration files; the engine itself does no I/O.
pub trait SourceFiles {
    /// The file's text; `None` when it does not exist.
    fn read(&self, path: &Path) -> Option<Result<String, String>>;
    /// Files of `dir` whose name ends with `suffix`, sorted by name.
    fn list(&self, dir: &Path, suffix: &str) -> Vec<PathBuf>;
}

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    raw: String,
    origin: Origin,
}

/// A configuration problem, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct Fail2banError {
    pub file: PathBuf,
    /// 0 when unknown.
    pub line: usize,
    pub message: String,
}

const MAX_DEPTH: usize = 10;
const DEFAULT: &str = "DEFAULT";

/// Merged sections of several files.
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    defaults: HashMap<String, Value>,
    sections: HashMap<String, HashMap<String, Value>>,
    section_order: Vec<String>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
}

impl ConfigSet {
    /// Reads `<base>.conf`, `<base>.d/*.conf`, `<base>.local` and
    /// `<base>.d/*.local` (those that exist), each with its includes. An
    /// error when none exists.
    pub fn read(src: &dyn SourceFiles, base: &Path) -> Result<Self, Fail2banError> {
        let with_ext = |ext: &str| {
            let mut s = base.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        let dropins = with_ext(".d");
        let mut candidates = vec![with_ext(".conf")];
        candidates.extend(src.list(&dropins, ".conf"));
        candidates.push(with_ext(".local"));
        candidates.extend(src.list(&dropins, ".local"));
        let mut set = ConfigSet::default();
        let mut texts: HashMap<PathBuf, ini::IniFile> = HashMap::new();
        let existing: Vec<PathBuf> = candidates
            .into_iter()
            .filter(|p| src.read(p).is_some())
            .collect();
        if existing.is_empty() {
            return Err(Fail2banError {
                file: with_ext(".conf"),
                line: 0,
                message: "no such configuration (.conf or .local)".into(),
            });
        }
        let order = includes(src, &existing, &mut texts, &[])?;
        for path in order {
            if let Some(file) = texts.get(&path) {
                set.merge(&path, file);
            }
        }
        Ok(set)
    }

    /// Reads exactly one file (with its includes), e.g. a filter given by path.
    pub fn read_file(src: &dyn SourceFiles, path: &Path) -> Result<Self, Fail2banError> {
        let mut set = ConfigSet::default();
        let mut texts = HashMap::new();
        if src.read(path).is_none() {
            return Err(Fail2banError {
                file: path.to_owned(),
                line: 0,
                message: "no such file".into(),
            });
        }
        for p in includes(src, &[path.to_owned()], &mut texts, &[])? {
            if let Some(file) = texts.get(&p) {
                set.merge(&p, file);
            }
        }
        Ok(set)
    }

    fn merge(&mut self, path: &Path, file: &ini::IniFile) {
        self.files.push(path.to_owned());
        for (name, opts) in &file.sections {
            let values = opts.iter().map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        raw: v.value.clone(),
                        origin: Origin {
                            file: path.to_owned(),
                            line: v.line,
                        },
                    },
                )
            });
            if name == DEFAULT {
                self.defaults.extend(values);
                continue;
            }
            let values: Vec<(String, Value)> = values.collect();
            match self.sections.get_mut(name) {
                Some(existing) => {
                    let known: Vec<(String, Value)> = values
                        .iter()
                        .filter_map(|(k, _)| existing.get(k).map(|old| (k.clone(), old.clone())))
                        .collect();
                    existing.extend(values);
                    self.sections
                        .entry(format!("KNOWN/{name}"))
                        .or_default()
                        .extend(known);
                }
                None => {
                    self.section_order.push(name.clone());
                    self.sections
                        .insert(name.clone(), values.into_iter().collect());
                }
            }
        }
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    /// Section names in the order first seen (not DEFAULT, not KNOWN/…).
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.section_order.iter().map(String::as_str)
    }

    /// Option names of a section, with or without those of DEFAULT.
    pub fn options(&self, section: &str, with_default: bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .sections
            .get(section)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        if with_default {
            for k in self.defaults.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names.sort();
        names
    }

    /// Where an option was written (the section's own value, else DEFAULT's).
    pub fn origin(&self, section: &str, option: &str) -> Option<&Origin> {
        self.lookup(section, option).map(|v| &v.origin)
    }

    fn lookup(&self, section: &str, option: &str) -> Option<&Value> {
        self.sections
            .get(section)
            .and_then(|s| s.get(option))
            .or_else(|| self.defaults.get(option))
    }

    /// The raw (uninterpolated) value.
    pub fn get_raw(&self, section: &str, option: &str) -> Option<&str> {
        self.lookup(section, option).map(|v| v.raw.as_str())
    }

    /// The interpolated value of `section`/`option`; `vars` win over the
    /// file's values, as given options do in fail2ban.
    pub fn get(
        &self,
        section: &str,
        option: &str,
        vars: &HashMap<String, String>,
    ) -> Result<Option<String>, Fail2banError> {
        let option = option.to_lowercase();
        let (raw, origin) = match vars.get(&option) {
            Some(v) => (v.clone(), None),
            None => match self.lookup(section, &option) {
                Some(v) => (v.raw.clone(), Some(v.origin.clone())),
                None => return Ok(None),
            },
        };
        let mut out = String::new();
        self.interpolate(section, &raw, vars, 0, &mut out)
            .map_err(|message| {
                let (file, line) = origin
                    .map_or((self.files.last().cloned().unwrap_or_default(), 0), |o| {
                        (o.file, o.line)
                    });
                Fail2banError {
                    file,
                    line,
                    message: format!("[{section}] {option}: {message}"),
                }
            })?;
        Ok(Some(out))
    }

    /// `SECTION/NAME` reads another section (`known/NAME`: the value this
    /// section overrode; `default/NAME`: DEFAULT's), else this section.
    pub fn get_ex(
        &self,
        section: &str,
        option: &str,
        vars: &HashMap<String, String>,
    ) -> Result<Option<String>, Fail2banError> {
        if let Some((sec, opt)) = split_section_option(option) {
            let candidates: Vec<String> = match sec.to_lowercase().as_str() {
                "known" => vec![format!("KNOWN/{section}"), section.to_owned()],
                "default" => vec![DEFAULT.to_owned()],
                _ => vec![sec.to_owned()],
            };
            for candidate in candidates {
                if candidate == DEFAULT {
                    if let Some(v) = self.defaults.get(&opt.to_lowercase()) {
                        let mut out = String::new();
                        self.interpolate(section, &v.raw, vars, 0, &mut out)
                            .map_err(|m| Fail2banError {
                                file: v.origin.file.clone(),
                                line: v.origin.line,
                                message: m,
                            })?;
                        return Ok(Some(out));
                    }
                } else if self.sections.contains_key(&candidate) {
                    if let Some(v) = self.get(&candidate, opt, vars)? {
                        return Ok(Some(v));
                    }
                }
            }
        }
        self.get(section, option, vars)
    }

    fn resolve_name(
        &self,
        section: &str,
        name: &str,
        vars: &HashMap<String, String>,
    ) -> Option<String> {
        if name == "__name__" {
            return Some(section.to_owned());
        }
        if let Some(v) = vars.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = self.lookup(section, name) {
            return Some(v.raw.clone());
        }
        let (sec, opt) = split_section_option(name)?;
        match sec.to_lowercase().as_str() {
            "known" => self
                .sections
                .get(&format!("KNOWN/{section}"))
                .and_then(|s| s.get(opt))
                .or_else(|| self.defaults.get(opt))
                .map(|v| v.raw.clone()),
            "default" => self.defaults.get(opt).map(|v| v.raw.clone()),
            _ => self
                .sections
                .get(sec)
                .and_then(|s| s.get(opt))
                .or_else(|| self.defaults.get(opt))
                .map(|v| v.raw.clone()),
        }
    }

    fn interpolate(
        &self,
        section: &str,
        mut rest: &str,
        vars: &HashMap<String, String>,
        depth: usize,
        out: &mut String,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("interpolation nested too deeply (a %(…)s loop?)".into());
        }
        while !rest.is_empty() {
            let Some(p) = rest.find('%') else {
                out.push_str(rest);
                return Ok(());
            };
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            match rest.as_bytes().get(1) {
                Some(b'%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some(b'(') => {
                    let Some(close) = rest.find(")s") else {
                        return Err(format!("bad interpolation {:?}", truncate(rest)));
                    };
                    let name = rest[2..close].to_lowercase();
                    if name.is_empty() || name.contains(')') {
                        return Err(format!("bad interpolation {:?}", truncate(rest)));
                    }
                    rest = &rest[close + 2..];
                    let value = self
                        .resolve_name(section, &name, vars)
                        .ok_or_else(|| format!("%({name})s is not defined"))?;
                    if value.contains('%') {
                        self.interpolate(section, &value, vars, depth + 1, out)?;
                    } else {
                        out.push_str(&value);
                    }
                }
                _ => {
                    return Err(format!(
                        "'%' must be followed by '%' or '(', found {:?}",
                        truncate(rest)
                    ))
                }
            }
        }
        Ok(())
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `section/option` → (section, option), as fail2ban's `[\w-]+/[^\s>]+`.
pub fn split_section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let ok = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !opt.is_empty()
        && !opt.chars().any(|c| c.is_whitespace() || c == '>');
    ok.then_some((sec, opt))
}

/// The files to read for `resources`, in order: for each, its `before`
/// includes, itself, its `.local`, its `after` includes.
fn includes(
    src: &dyn SourceFiles,
    resources: &[PathBuf],
    texts: &mut HashMap<PathBuf, ini::IniFile>,
    seen: &[PathBuf],
) -> Result<Vec<PathBuf>, Fail2banError> {
    let mut expanded = Vec::new();
    for r in resources {
        expanded.push(r.clone());
        let local = r.with_extension("local");
        if !resources.contains(&local) && local != *r && src.read(&local).is_some() {
            expanded.push(local);
        }
    }
    let mut out = Vec::new();
    for resource in expanded {
        let Some(text) = src.read(&resource) else {
            continue;
        };
        let text = text.map_err(|message| Fail2banError {
            file: resource.clone(),
            line: 0,
            message,
        })?;
        let file = ini::parse(&text).map_err(|e| Fail2banError {
            file: resource.clone(),
            line: e.line,
            message: e.message,
        })?;
        let dir = resource.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut before = Vec::new();
        let mut after = Vec::new();
        if let Some(inc) = file.section("INCLUDES") {
            let mut now_seen = seen.to_vec();
            now_seen.push(resource.clone());
            for (key, target) in [("before", &mut before), ("after", &mut after)] {
                let Some((_, v)) = inc.iter().find(|(k, _)| k == key) else {
                    continue;
                };
                for name in v.value.split('\n').map(str::trim).filter(|s| !s.is_empty()) {
                    let path = if Path::new(name).is_absolute() {
                        PathBuf::from(name)
                    } else {
                        dir.join(name)
                    };
                    if seen.contains(&path) || path == resource {
                        continue;
                    }
                    target.extend(includes(src, &[path], texts, &now_seen)?);
                }
            }
        }
        texts.insert(resource.clone(), file);
        out.extend(before);
        out.push(resource);
        out.extend(after);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Files held in memory.
    #[derive(Default)]
    pub struct MemFiles(pub HashMap<PathBuf, String>);

    impl MemFiles {
        pub fn with(files: &[(&str, &str)]) -> Self {
            MemFiles(
                files
                    .iter()
                    .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                    .collect(),
            )
        }
    }

    impl SourceFiles for MemFiles {
        fn read(&self, path: &Path) -> Option<Result<String, String>> {
            self.0.get(path).cloned().map(Ok)
        }
        fn list(&self, dir: &Path, suffix: &str) -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = self
                .0
                .keys()
                .filter(|p| p.parent() == Some(dir) && p.to_string_lossy().ends_with(suffix))
                .cloned()
                .collect();
            v.sort();
            v
        }
    }

    fn no_vars() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn includes_locals_and_interpolation() {
        let files = MemFiles::with(&[
            ("/f/common.conf", "[INCLUDES]\nafter = common.local\n[DEFAULT]\n_daemon = \\S*\npref = <%(_daemon)s>\n[lt_file]\nx = file-x\n"),
            ("/f/sshd.conf", "[INCLUDES]\nbefore = common.conf\n[DEFAULT]\n_daemon = sshd\n[Definition]\nfailregex = ^%(pref)s %(lt_file/x)s 100%%\nmode = normal\n"),
            ("/f/sshd.local", "[Definition]\nmode = aggressive\nold = %(known/mode)s\n"),
            ("/f/sshd.d/extra.conf", "[Definition]\nextra = 1\n"),
        ]);
        let c = ConfigSet::read(&files, Path::new("/f/sshd")).unwrap();
        assert_eq!(
            c.get("Definition", "failregex", &no_vars())
                .unwrap()
                .unwrap(),
            "^<sshd> file-x 100%"
        );
        assert_eq!(
            c.get("Definition", "mode", &no_vars()).unwrap().unwrap(),
            "aggressive"
        );
        assert_eq!(
            c.get("Definition", "old", &no_vars()).unwrap().unwrap(),
            "normal"
        );
        assert_eq!(
            c.get("Definition", "extra", &no_vars()).unwrap().unwrap(),
            "1"
        );
        let vars: HashMap<String, String> = [("_daemon".to_owned(), "dropbear".to_owned())].into();
        assert_eq!(
            c.get("Definition", "failregex", &vars).unwrap().unwrap(),
            "^<dropbear> file-x 100%"
        );
        assert_eq!(
            c.get_ex("Definition", "lt_file/x", &no_vars())
                .unwrap()
                .unwrap(),
            "file-x"
        );
        assert_eq!(c.get("Definition", "missing", &no_vars()).unwrap(), None);
        assert_eq!(
            c.origin("Definition", "mode").unwrap().file,
            PathBuf::from("/f/sshd.local")
        );
        assert_eq!(
            c.files,
            vec![
                PathBuf::from("/f/common.conf"),
                PathBuf::from("/f/sshd.conf"),
                PathBuf::from("/f/sshd.d/extra.conf"),
                PathBuf::from("/f/sshd.local")
            ]
        );
    }

    #[test]
    fn interpolation_errors_are_located() {
        let files = MemFiles::with(&[(
            "/f/x.conf",
            "[Definition]\n\nfailregex = %(nope)s\nloop = %(loop)s\nbad = 5%\n",
        )]);
        let c = ConfigSet::read(&files, Path::new("/f/x")).unwrap();
        let e = c.get("Definition", "failregex", &no_vars()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/f/x.conf:3: [Definition] failregex: %(nope)s is not defined"
        );
        assert!(c
            .get("Definition", "loop", &no_vars())
            .unwrap_err()
            .message
            .contains("too deeply"));
        assert!(c.get("Definition", "bad", &no_vars()).is_err());
        assert!(ConfigSet::read(&files, Path::new("/f/none")).is_err());
    }

    #[test]
    fn include_loops_end() {
        let files = MemFiles::with(&[
            ("/f/a.conf", "[INCLUDES]\nbefore = b.conf\n[x]\na=1\n"),
            ("/f/b.conf", "[INCLUDES]\nbefore = a.conf\n[x]\nb=1\n"),
        ]);
        let c = ConfigSet::read(&files, Path::new("/f/a")).unwrap();
        assert_eq!(c.get("x", "a", &no_vars()).unwrap().unwrap(), "1");
        assert_eq!(c.get("x", "b", &no_vars()).unwrap().unwrap(), "1");
    }
}
