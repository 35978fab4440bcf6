//! From lines to failures and bans: each line goes through the filter of
//! every jail that follows its source.

use std::net::IpAddr;

use fleetban_engine::date::Zone;
use fleetban_engine::{Ban, Filter, FilterError, HostKind, Jail, JailSettings};

use crate::config::{filter_options, JailConfig};
use crate::source::Line;

/// What one line led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    Failure {
        jail: String,
        ip: IpAddr,
        user: Option<String>,
        at_ms: i64,
    },
    Ban(Ban),
    /// The host is a name, and the jail asks for names to be resolved.
    Resolve(crate::resolve::Pending),
}

/// When a failure happened: its log time, unless that is more than a minute
/// away from now, as fail2ban treats lines while following a log: a host
/// whose clock or zone is off still bans (its times would otherwise fall
/// outside every window).
fn event_time(log_time: Option<f64>, now_ms: i64) -> i64 {
    match log_time {
        Some(t) if t.is_finite() && ((t * 1000.0) as i64 - now_ms).abs() <= 60_000 => {
            (t * 1000.0) as i64
        }
        _ => now_ms,
    }
}

/// Counts a failure of `ip` in `jail`; a ban follows at `maxretry`.
fn count(jail: &mut Jail, ip: IpAddr, user: Option<String>, at_ms: i64, out: &mut Vec<Detection>) {
    if jail.ignores(ip) {
        return;
    }
    out.push(Detection::Failure {
        jail: jail.settings().name.clone(),
        ip,
        user,
        at_ms,
    });
    if let Some(ban) = jail.on_failure(ip, at_ms) {
        out.push(Detection::Ban(ban));
    }
}

/// The server's settings for one jail; `None` keeps the configured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailOverride {
    pub jail: String,
    pub enabled: bool,
    pub maxretry: Option<u32>,
    pub findtime_ms: Option<i64>,
    pub bantime_ms: Option<i64>,
}

/// A jail's settings under the server's policy: whether it runs, and with
/// what. Without an override, the configuration as written.
pub fn effective(base: &JailSettings, o: Option<&JailOverride>) -> (bool, JailSettings) {
    let Some(o) = o else {
        return (true, base.clone());
    };
    let mut s = base.clone();
    if let Some(m) = o.maxretry.filter(|m| *m > 0) {
        s.maxretry = m;
    }
    if let Some(f) = o.findtime_ms.filter(|f| *f > 0) {
        s.findtime_ms = f;
    }
    if let Some(b) = o.bantime_ms.filter(|b| *b > 0) {
        s.bantime_ms = b;
    }
    (o.enabled, s)
}

pub struct Detector {
    jails: Vec<(Jail, Filter)>,
    /// Each jail's settings as configured, before any server policy.
    configured: Vec<JailSettings>,
    /// Whether each jail runs (a server policy may switch one off).
    enabled: Vec<bool>,
    /// Per jail: whether host names are resolved (`usedns`).
    resolve: Vec<bool>,
    /// Source index → the jails that read it.
    routes: Vec<Vec<usize>>,
}

impl Detector {
    /// `routes[source]` lists the indexes (into `jails`) of the jails that
    /// follow that source.
    /// Filters were checked when the configuration was loaded; one that
    /// still fails to build here is an error.
    pub fn new(
        jails: &[JailConfig],
        routes: Vec<Vec<usize>>,
        zone: &Zone,
    ) -> Result<Self, FilterError> {
        let options = filter_options(zone);
        let resolve = jails.iter().map(|j| j.usedns).collect();
        let configured: Vec<JailSettings> = jails.iter().map(|j| j.settings.clone()).collect();
        let enabled = vec![true; configured.len()];
        let jails = jails
            .iter()
            .map(|j| {
                Ok((
                    Jail::new(j.settings.clone()),
                    Filter::new(&j.filter, options.clone())?,
                ))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Detector {
            jails,
            configured,
            enabled,
            routes,
            resolve,
        })
    }

    /// Applies the server's jail policy, replacing the previous one: listed
    /// jails take its settings (or stop), the others go back to their
    /// configuration. Returns the jails whose state changed, for the log.
    pub fn apply_policy(
        &mut self,
        overrides: &[JailOverride],
    ) -> Vec<(String, bool, JailSettings)> {
        let mut changed = Vec::new();
        for (i, (jail, _)) in self.jails.iter_mut().enumerate() {
            let Some(base) = self.configured.get(i) else {
                continue;
            };
            let o = overrides.iter().find(|o| o.jail == base.name);
            let (on, settings) = effective(base, o);
            let was_on = self.enabled.get(i).copied().unwrap_or(true);
            if on != was_on || &settings != jail.settings() {
                changed.push((base.name.clone(), on, settings.clone()));
                jail.set_settings(settings);
                if let Some(e) = self.enabled.get_mut(i) {
                    *e = on;
                }
            }
        }
        changed
    }

    pub fn on_line(&mut self, line: &Line, now_ms: i64) -> Vec<Detection> {
        let mut out = Vec::new();
        let Some(jails) = self.routes.get(line.source) else {
            return out;
        };
        for &j in jails {
            if !self.enabled.get(j).copied().unwrap_or(true) {
                continue;
            }
            let Some((jail, filter)) = self.jails.get_mut(j) else {
                continue;
            };
            let now_s = now_ms.div_euclid(1000);
            // The journal says when a line was logged; a file's lines carry
            // their date in the text.
            let result = match line.time_ms {
                Some(t) => filter.process_dated(&line.text, t as f64 / 1000.0, now_s),
                None => filter.process_line(&line.text, now_s),
            };
            let resolve = self.resolve.get(j).copied().unwrap_or(false);
            for failure in result.failures {
                if failure.nofail {
                    continue;
                }
                let at_ms = event_time(failure.time, now_ms);
                let Some(ip) = failure.address() else {
                    // A host name: resolved only when the jail asks.
                    if let (true, HostKind::Name, Some(name)) =
                        (resolve, failure.kind, failure.host)
                    {
                        out.push(Detection::Resolve(crate::resolve::Pending {
                            jail: j,
                            name,
                            user: failure.user,
                            at_ms,
                        }));
                    }
                    continue;
                };
                count(jail, ip, failure.user, at_ms, &mut out);
            }
        }
        out
    }

    /// A failure whose host name resolved to `ip`.
    pub fn on_resolved(
        &mut self,
        jail: usize,
        ip: IpAddr,
        user: Option<String>,
        at_ms: i64,
    ) -> Vec<Detection> {
        let mut out = Vec::new();
        if !self.enabled.get(jail).copied().unwrap_or(true) {
            return out;
        }
        if let Some((jail, _)) = self.jails.get_mut(jail) {
            count(jail, ip, user, at_ms, &mut out);
        }
        out
    }

    /// Addresses tracked by all jails (failures in a window, or banned).
    pub fn tracked(&self) -> usize {
        self.jails.iter().map(|(j, _)| j.tracked()).sum()
    }

    /// Forgets state that left every window.
    pub fn expire(&mut self, now_ms: i64) {
        for (jail, _) in &mut self.jails {
            jail.expire(now_ms);
        }
    }
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn log_times_are_kept_within_a_minute_of_now() {
        assert_eq!(super::event_time(Some(150.0), 200_000), 150_000);
        assert_eq!(super::event_time(Some(100.0), 200_000), 200_000);
        assert_eq!(super::event_time(Some(270.0), 200_000), 200_000);
        assert_eq!(super::event_time(Some(259.0), 200_000), 259_000);
        assert_eq!(super::event_time(None, 200_000), 200_000);
        assert_eq!(super::event_time(Some(f64::NAN), 200_000), 200_000);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::AgentConfig;

    #[test]
    fn lines_reach_their_jails_only() {
        let cfg = AgentConfig::parse(
            Path::new("a.toml"),
            r#"
[agent]
id = "a"
[[jail]]
name = "sshd"
logpath = ["/a"]
failregex = ['Failed password for \S+ from <HOST>']
maxretry = 2
ignoreip = ["10.0.0.0/8"]
[[jail]]
name = "web"
logpath = ["/b"]
failregex = ['<HOST> .*" 401 ']
"#,
        )
        .expect("config");
        let mut d = Detector::new(&cfg.jails, vec![vec![0], vec![1]], &Zone::utc()).unwrap();
        let line = |source, text: &str| Line::new(source, text);
        let ssh = "sshd[1]: Failed password for root from 192.0.2.4 port 22";
        assert_eq!(d.on_line(&line(1, ssh), 0), vec![]);
        assert_eq!(d.on_line(&line(0, ssh), 0).len(), 1);
        let out = d.on_line(&line(0, ssh), 1);
        assert!(
            matches!(&out[1], Detection::Ban(b) if b.failures == 2 && b.jail == "sshd"),
            "{out:?}"
        );
        assert_eq!(
            d.on_line(
                &line(0, "sshd[1]: Failed password for x from 10.1.1.1 port 2"),
                2
            ),
            vec![]
        );
        assert_eq!(d.on_line(&line(7, ssh), 2), vec![]);
    }

    #[test]
    fn a_server_policy_switches_jails_and_changes_their_limits() {
        let cfg = AgentConfig::parse(
            Path::new("a.toml"),
            r#"
[agent]
id = "a"
[[jail]]
name = "sshd"
logpath = ["/a"]
failregex = ['Failed password for \S+ from <HOST>']
maxretry = 3
"#,
        )
        .expect("config");
        let mut d = Detector::new(&cfg.jails, vec![vec![0]], &Zone::utc()).unwrap();
        let ssh = |ip: &str| {
            Line::new(
                0,
                format!("sshd[1]: Failed password for root from {ip} port 22"),
            )
        };
        let off = JailOverride {
            jail: "sshd".into(),
            enabled: false,
            maxretry: None,
            findtime_ms: None,
            bantime_ms: None,
        };
        assert_eq!(d.apply_policy(std::slice::from_ref(&off)).len(), 1);
        assert!(
            d.on_line(&ssh("192.0.2.1"), 0).is_empty(),
            "a disabled jail sees nothing"
        );
        assert!(
            d.apply_policy(std::slice::from_ref(&off)).is_empty(),
            "no change twice"
        );
        let strict = JailOverride {
            enabled: true,
            maxretry: Some(1),
            bantime_ms: Some(7_000),
            ..off
        };
        d.apply_policy(&[strict]);
        let out = d.on_line(&ssh("192.0.2.1"), 0);
        assert!(
            matches!(&out[..], [Detection::Failure { .. }, Detection::Ban(b)] if b.duration_ms == 7_000),
            "{out:?}"
        );
        // Without a policy the configuration is back: three failures to ban.
        assert_eq!(d.apply_policy(&[]).len(), 1);
        assert_eq!(d.on_line(&ssh("192.0.2.2"), 0).len(), 1);
        assert_eq!(d.on_line(&ssh("192.0.2.2"), 1).len(), 1);
        assert_eq!(d.on_line(&ssh("192.0.2.2"), 2).len(), 2);
    }

    #[test]
    fn zero_values_keep_the_configuration() {
        let base = JailSettings {
            name: "j".into(),
            maxretry: 5,
            findtime_ms: 1_000,
            bantime_ms: 2_000,
            ignoreip: Vec::new(),
        };
        let o = JailOverride {
            jail: "j".into(),
            enabled: true,
            maxretry: Some(0),
            findtime_ms: Some(-1),
            bantime_ms: Some(9_000),
        };
        let (on, s) = effective(&base, Some(&o));
        assert!(on);
        assert_eq!((s.maxretry, s.findtime_ms, s.bantime_ms), (5, 1_000, 9_000));
        assert_eq!(effective(&base, None), (true, base.clone()));
    }
}
