//! fail2ban jails (`jail.conf`, `jail.d/*.conf`, `jail.local`,
//! `jail.d/*.local`) read as fail2ban reads them: every section but
//! DEFAULT is a jail, `enabled` jails run, each with its filter read from
//! `filter.d` with the jail's options (`filter = %(__name__)s[mode=…]`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{ConfigSet, Fail2banError, Origin, SourceFiles};
use super::filter_def::{read_filter, FilterDefinition};
use super::options;

/// fail2ban's `bantime.*` options: each new ban of a known offender lasts
/// longer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BantimeIncrement {
    pub enabled: bool,
    pub factor: Option<String>,
    pub formula: Option<String>,
    pub multipliers: Option<String>,
    pub maxtime: Option<String>,
    pub rndtime: Option<String>,
    pub overalljails: bool,
}

/// One jail, its options interpolated (durations still as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailDefinition {
    pub name: String,
    /// Where the jail's section starts (its first option).
    pub origin: Option<Origin>,
    pub enabled: bool,
    /// `filter` as written (`sshd[mode=normal]`); empty: no filter.
    pub filter_spec: String,
    pub filter: Option<FilterDefinition>,
    pub backend: String,
    /// Log paths or globs, one per line.
    pub logpath: Vec<String>,
    pub maxretry: Option<u32>,
    pub findtime: Option<String>,
    pub bantime: Option<String>,
    pub increment: BantimeIncrement,
    pub ignoreip: Vec<String>,
    pub ignoreself: bool,
    pub usedns: Option<String>,
    pub logtimezone: Option<String>,
    pub port: Option<String>,
    pub protocol: Option<String>,
    pub action: Option<String>,
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Reads every jail of the fail2ban configuration in `dir` (e.g.
/// `/etc/fail2ban`). Filters are read for enabled jails only.
pub fn read_jails(src: &dyn SourceFiles, dir: &Path) -> Result<Vec<JailDefinition>, Fail2banError> {
    let cfg = ConfigSet::read(src, &dir.join("jail"))?;
    let mut jails = Vec::new();
    let names: Vec<String> = cfg
        .sections()
        .filter(|s| *s != "INCLUDES" && !s.starts_with("KNOWN/"))
        .map(str::to_owned)
        .collect();
    for name in names {
        jails.push(read_jail(src, dir, &cfg, &name)?);
    }
    Ok(jails)
}

fn read_jail(
    src: &dyn SourceFiles,
    dir: &Path,
    cfg: &ConfigSet,
    name: &str,
) -> Result<JailDefinition, Fail2banError> {
    let no_vars = HashMap::new();
    let get = |opt: &str| cfg.get(name, opt, &no_vars);
    let origin = cfg
        .origin(name, "enabled")
        .or_else(|| cfg.origin(name, "filter"))
        .cloned();
    let err = |opt: &str, message: String| {
        let o = cfg.origin(name, opt).cloned().or_else(|| origin.clone());
        Fail2banError {
            file: o
                .as_ref()
                .map(|o| o.file.clone())
                .unwrap_or_else(|| dir.join("jail.conf")),
            line: o.map_or(0, |o| o.line),
            message: format!("[{name}] {opt}: {message}"),
        }
    };
    let bool_opt = |opt: &str, default: bool| -> Result<bool, Fail2banError> {
        match get(opt)? {
            Some(v) => {
                truthy(&v).ok_or_else(|| err(opt, format!("{v:?} is not a boolean (true/false)")))
            }
            None => Ok(default),
        }
    };
    let enabled = bool_opt("enabled", false)?;
    let backend = get("backend")?
        .unwrap_or_else(|| "auto".into())
        .trim()
        .to_owned();
    let filter_spec = get("filter")?.unwrap_or_default().trim().to_owned();
    let filter = if enabled && !filter_spec.is_empty() {
        let named = options::parse(&filter_spec).map_err(|e| err("filter", e.to_string()))?;
        let mut opts = named.options;
        // A journal backend reads lines without a syslog prefix.
        let has_logtype = opts.iter().any(|(k, _)| k == "logtype");
        if !has_logtype {
            let logtype = if backend.starts_with("systemd") {
                "journal"
            } else {
                "file"
            };
            let base = filter_base(dir, &named.name);
            let definition_sets_it = ConfigSet::read(src, &base).is_ok_and(|c| {
                c.options("Definition", false)
                    .iter()
                    .any(|o| o == "logtype")
            });
            if !definition_sets_it {
                opts.push(("logtype".into(), logtype.into()));
            }
        }
        Some(read_filter(src, &filter_base(dir, &named.name), &opts)?)
    } else {
        None
    };
    let lines = |v: Option<String>| -> Vec<String> {
        v.map(|s| {
            s.split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let maxretry = match get("maxretry")? {
        Some(v) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| err("maxretry", format!("{v:?} is not a whole number")))?,
        ),
        None => None,
    };
    let opt = |o: &str| get(o).map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
    Ok(JailDefinition {
        name: name.to_owned(),
        origin: origin.clone(),
        enabled,
        filter_spec,
        filter,
        logpath: lines(get("logpath")?),
        maxretry,
        findtime: opt("findtime")?,
        bantime: opt("bantime")?,
        increment: BantimeIncrement {
            enabled: bool_opt("bantime.increment", false)?,
            factor: opt("bantime.factor")?,
            formula: opt("bantime.formula")?,
            multipliers: opt("bantime.multipliers")?,
            maxtime: opt("bantime.maxtime")?,
            rndtime: opt("bantime.rndtime")?,
            overalljails: bool_opt("bantime.overalljails", false)?,
        },
        ignoreip: get("ignoreip")?
            .map(|v| {
                v.split([' ', ',', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        ignoreself: bool_opt("ignoreself", true)?,
        usedns: opt("usedns")?,
        logtimezone: opt("logtimezone")?,
        port: opt("port")?,
        protocol: opt("protocol")?,
        action: opt("action").ok().flatten(),
        backend,
    })
}

/// `filter.d/NAME` under `dir`, or NAME itself when it is a path.
fn filter_base(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.with_extension("")
    } else {
        dir.join("filter.d").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fail2ban::config::tests::MemFiles;

    fn files() -> MemFiles {
        MemFiles::with(&[
            ("/f2b/paths-common.conf", "[DEFAULT]\nsshd_log = /var/log/auth.log\nsshd_backend = auto\n"),
            (
                "/f2b/jail.conf",
                "[INCLUDES]\nbefore = paths-common.conf\n[DEFAULT]\nbantime = 10m\nfindtime = 10m\nmaxretry = 5\nbackend = auto\nenabled = false\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\nignoreip = 127.0.0.1/8 ::1\n\n[sshd]\nport = ssh\nlogpath = %(sshd_log)s\nbackend = %(sshd_backend)s\n\n[web]\nlogpath = /var/log/web/*.log\n          /srv/access.log\nmaxretry = 2\n",
            ),
            ("/f2b/jail.d/defaults-debian.conf", "[sshd]\nenabled = true\n"),
            ("/f2b/jail.local", "[sshd]\nmode = aggressive\nbantime.increment = true\nbantime.factor = 2\n"),
            (
                "/f2b/filter.d/sshd.conf",
                "[INCLUDES]\nbefore = common.conf\n[Definition]\nfailregex = ^<prefix>Failed for <HOST>\n            <extra-<mode>>\nextra-normal =\nextra-aggressive = ^<prefix>Bad thing from <HOST>\nprefix = <lt_<logtype>/p>\n",
            ),
            ("/f2b/filter.d/common.conf", "[DEFAULT]\nlogtype = file\n[lt_file]\np = FILE \n[lt_journal]\np = \n"),
        ])
    }

    #[test]
    fn jails_options_and_filters() {
        let jails = read_jails(&files(), Path::new("/f2b")).unwrap();
        assert_eq!(
            jails.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            vec!["sshd", "web"]
        );
        let sshd = &jails[0];
        assert!(sshd.enabled);
        assert_eq!(sshd.filter_spec, "sshd[mode=aggressive]");
        assert_eq!(sshd.logpath, vec!["/var/log/auth.log"]);
        assert_eq!(sshd.maxretry, Some(5));
        assert_eq!(sshd.bantime.as_deref(), Some("10m"));
        assert_eq!(sshd.ignoreip, vec!["127.0.0.1/8", "::1"]);
        assert!(sshd.increment.enabled);
        assert_eq!(sshd.increment.factor.as_deref(), Some("2"));
        assert_eq!(sshd.port.as_deref(), Some("ssh"));
        let filter = sshd.filter.as_ref().unwrap();
        let regexes: Vec<&str> = filter.failregex.iter().map(|l| l.value.as_str()).collect();
        assert_eq!(
            regexes,
            vec!["^FILEFailed for <HOST>", "^FILEBad thing from <HOST>"]
        );
        let web = &jails[1];
        assert!(!web.enabled);
        assert!(web.filter.is_none());
        assert_eq!(web.logpath, vec!["/var/log/web/*.log", "/srv/access.log"]);
        assert_eq!(web.maxretry, Some(2));
    }

    #[test]
    fn a_journal_backend_reads_journal_lines() {
        let mut f = files();
        f.0.insert(
            "/f2b/jail.d/z.local".into(),
            "[sshd]\nbackend = systemd\n".into(),
        );
        let jails = read_jails(&f, Path::new("/f2b")).unwrap();
        let filter = jails[0].filter.as_ref().unwrap();
        assert_eq!(filter.failregex[0].value, "^Failed for <HOST>");
        assert_eq!(jails[0].backend, "systemd");
    }

    #[test]
    fn bad_values_name_the_jail_and_option() {
        let mut f = files();
        f.0.insert(
            "/f2b/jail.d/bad.local".into(),
            "[web]\nmaxretry = many\n".into(),
        );
        let e = read_jails(&f, Path::new("/f2b")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/f2b/jail.d/bad.local:2: [web] maxretry: \"many\" is not a whole number"
        );
        let mut f = files();
        f.0.insert(
            "/f2b/jail.d/bad.local".into(),
            "[sshd]\nfilter = nosuch\n".into(),
        );
        assert!(read_jails(&f, Path::new("/f2b")).is_err());
    }
}
