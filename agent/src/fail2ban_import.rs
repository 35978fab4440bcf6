//! An existing fail2ban configuration as agent jails: every enabled jail of
//! `jail.conf`/`jail.local`/`jail.d` with its filter, times and ignore list.

use std::path::Path;

use fleetban_engine::fail2ban::{read_jails, Fail2banError, JailDefinition};
use fleetban_engine::JailSettings;
use fleetban_proto::config::ConfigError;
use fleetban_proto::PortScope;
use ipnet::IpNet;
use tracing::warn;

use crate::config::{duration, JailConfig, SourceSettings};
use crate::fsfiles::FsFiles;
use crate::source::{journal::parse_journalmatch, Backend, Start};

/// fail2ban's defaults where a jail says nothing.
const DEFAULT_MAXRETRY: u32 = 5;
const DEFAULT_TIME: &str = "10m";
/// `bantime = -1` (or any negative time) bans for good: 100 years here.
const FOREVER_MS: i64 = 100 * 365 * 86_400 * 1_000;

fn located(e: Fail2banError) -> ConfigError {
    ConfigError {
        path: e.file,
        line: e.line,
        key: String::new(),
        message: e.message,
    }
}

/// The enabled jails under `dir` (all of them, or those named in `only`).
pub fn import(dir: &Path, only: &[String]) -> Result<Vec<JailConfig>, ConfigError> {
    let defs = read_jails(&FsFiles, dir).map_err(located)?;
    for name in only {
        if !defs.iter().any(|d| d.name == *name) {
            return Err(ConfigError::file(
                &dir.join("jail.conf"),
                format!("no jail named {name:?}"),
            ));
        }
    }
    defs.into_iter()
        .filter(|d| d.enabled && (only.is_empty() || only.contains(&d.name)))
        .map(|d| convert(dir, d))
        .collect()
}

fn convert(dir: &Path, d: JailDefinition) -> Result<JailConfig, ConfigError> {
    let at = |message: String| match &d.origin {
        Some(o) => ConfigError {
            path: o.file.clone(),
            line: o.line,
            key: String::new(),
            message: format!("[{}] {message}", d.name),
        },
        None => ConfigError::file(&dir.join("jail.conf"), format!("[{}] {message}", d.name)),
    };
    let Some(filter) = d.filter.clone() else {
        return Err(at("has no filter".into()));
    };
    let journal = d.backend.starts_with("systemd");
    let filter_usedns = filter.usedns.clone();
    let ms = |v: &Option<String>, what: &str| -> Result<i64, ConfigError> {
        let v = v.as_deref().unwrap_or(DEFAULT_TIME).trim();
        if v.starts_with('-') {
            return Ok(FOREVER_MS);
        }
        let d = duration(v).map_err(|e| at(format!("{what}: {e}")))?;
        Ok(i64::try_from(d.as_millis()).unwrap_or(FOREVER_MS))
    };
    let mut ignoreip: Vec<IpNet> = Vec::new();
    for entry in &d.ignoreip {
        match fleetban_proto::parse_target(entry) {
            Ok(net) => ignoreip.push(net),
            // fail2ban also accepts host names here; they are not resolved.
            Err(_) => {
                warn!(jail = %d.name, entry = %entry, "ignoreip entry is not an address or network; skipped")
            }
        }
    }
    let ports = scope(&d).map_err(|m| ConfigError {
        key: "port".into(),
        ..at(m)
    })?;
    if d.logpath.is_empty() && !journal {
        return Err(at("has no logpath".into()));
    }
    // fail2ban's `logpath = PATH tail` starts at the end (fleetban's
    // default); `head`, its own default, reads what is there first.
    let start = if d.logpath.iter().any(|p| p.ends_with(" head")) {
        Start::Beginning
    } else {
        Start::End
    };
    let source = if journal {
        // Each journalmatch line is one alternative, as fail2ban adds them.
        let spec = filter.journalmatch.join(" + ");
        let journalmatch =
            parse_journalmatch(&spec).map_err(|e| at(format!("journalmatch: {e}")))?;
        SourceSettings {
            backend: Backend::Systemd,
            journalmatch,
            start: Start::End,
        }
    } else {
        SourceSettings {
            backend: Backend::Auto,
            journalmatch: Vec::new(),
            start,
        }
    };
    Ok(JailConfig {
        settings: JailSettings {
            name: d.name.clone(),
            maxretry: d.maxretry.unwrap_or(DEFAULT_MAXRETRY).max(1),
            findtime_ms: ms(&d.findtime, "findtime")?,
            bantime_ms: ms(&d.bantime, "bantime")?,
            ignoreip,
        },
        // A path may end with " tail" or " head" in fail2ban: the start policy.
        logpaths: if journal {
            Vec::new()
        } else {
            d.logpath
                .iter()
                .map(|p| match p.rsplit_once(' ') {
                    Some((path, "head" | "tail")) => path.into(),
                    _ => p.into(),
                })
                .collect()
        },
        usedns: crate::config::usedns_resolves(d.usedns.as_deref().or(filter_usedns.as_deref()))
            .map_err(at)?,
        filter,
        source,
        ports,
    })
}

/// What a jail's bans cover, as fail2ban's own ban actions would: the
/// jail's `port` and `protocol`, unless its action bans all traffic
/// (`banaction_allports`, as the `recidive` jail uses) or the ports are
/// every port (fail2ban's default `0:65535`).
fn scope(d: &JailDefinition) -> Result<PortScope, String> {
    let Some(port) = d.port.as_deref().filter(|p| !p.trim().is_empty()) else {
        return Ok(PortScope::all());
    };
    let scope = crate::services::jail_scope(port, d.protocol.as_deref())
        .map_err(|e| format!("port = {port:?}: {e}"))?;
    if d.action
        .as_deref()
        .is_some_and(crate::services::action_bans_all_ports)
    {
        return Ok(PortScope::all());
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_jails_become_agent_jails() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("filter.d")).unwrap();
        std::fs::create_dir_all(d.join("jail.d")).unwrap();
        std::fs::write(
            d.join("filter.d/x.conf"),
            "[Definition]\nfailregex = ^fail <HOST>$\n",
        )
        .unwrap();
        std::fs::write(
            d.join("jail.conf"),
            "[DEFAULT]\nfilter = %(__name__)s\nbantime = 1h\nignoreip = 127.0.0.1/8 localhost\n[x]\nlogpath = /var/log/x.log tail\nmaxretry = 2\n[y]\nlogpath = /y\n",
        )
        .unwrap();
        std::fs::write(
            d.join("jail.d/on.local"),
            "[x]\nenabled = true\nfindtime = 1m\n",
        )
        .unwrap();
        let jails = import(d, &[]).unwrap();
        assert_eq!(jails.len(), 1);
        let j = &jails[0];
        assert_eq!(j.settings.name, "x");
        assert_eq!(
            (
                j.settings.maxretry,
                j.settings.findtime_ms,
                j.settings.bantime_ms
            ),
            (2, 60_000, 3_600_000)
        );
        assert_eq!(j.settings.ignoreip.len(), 1);
        assert_eq!(j.logpaths, vec![std::path::PathBuf::from("/var/log/x.log")]);
        assert_eq!(j.filter.failregex[0].value, "^fail <HOST>$");
        assert!(import(d, &["nope".into()]).is_err());
        // A journal jail reads the journal with its filter's journalmatch.
        std::fs::write(d.join("filter.d/j.conf"), "[Definition]\nfailregex = ^fail <HOST>$\njournalmatch = _SYSTEMD_UNIT=x.service + _COMM=x\n").unwrap();
        std::fs::write(
            d.join("jail.d/j.local"),
            "[j]\nenabled = true\nbackend = systemd\n",
        )
        .unwrap();
        let jails = import(d, &["j".into()]).unwrap();
        assert_eq!(jails[0].source.backend, Backend::Systemd);
        assert!(jails[0].logpaths.is_empty());
        assert!(!jails[0].source.journalmatch.is_empty());
        std::fs::remove_file(d.join("jail.d/j.local")).unwrap();
        std::fs::write(d.join("jail.d/bad.local"), "[x]\nbantime = soon\n").unwrap();
        let e = import(d, &[]).unwrap_err();
        assert!(
            e.to_string().contains("[x] bantime: invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn jails_ban_their_ports_as_fail2ban_actions_do() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("filter.d")).unwrap();
        std::fs::write(
            d.join("filter.d/x.conf"),
            "[Definition]\nfailregex = ^fail <HOST>$\n",
        )
        .unwrap();
        // fail2ban's own shape: a default port range, and actions built
        // from `banaction` or `banaction_allports`.
        std::fs::write(
            d.join("jail.conf"),
            "[DEFAULT]\nfilter = x\nlogpath = /x\nenabled = true\nport = 0:65535\nprotocol = tcp\n\
             banaction = iptables-multiport\nbanaction_allports = iptables-allports\n\
             action_ = %(banaction)s[port=\"%(port)s\", protocol=\"%(protocol)s\"]\naction = %(action_)s\n\
             [sshd]\nport = ssh\n[web]\nport = http,https\n[every]\n\
             [recidive]\nport = ssh\nbanaction = %(banaction_allports)s\n",
        )
        .unwrap();
        let jails = import(d, &[]).unwrap();
        let scope = |name: &str| {
            jails
                .iter()
                .find(|j| j.settings.name == name)
                .map(|j| j.ports.to_string())
                .unwrap()
        };
        assert_eq!(scope("sshd"), "tcp/22");
        assert_eq!(scope("web"), "tcp/80,443");
        assert_eq!(scope("every"), "");
        assert_eq!(scope("recidive"), "");
        std::fs::write(d.join("jail.local"), "[web]\nport = htp\n").unwrap();
        let e = import(d, &[]).unwrap_err();
        assert_eq!(e.key, "port");
        assert!(e.line > 0, "{e}");
        assert!(
            e.message.contains("[web] port = \"htp\": unknown service"),
            "{e}"
        );
    }
}
