//! From lines to failures and bans: each line goes through the filter of
//! every jail that follows its source.

use std::net::IpAddr;

use fleetban_engine::{Ban, Jail};

use crate::config::JailConfig;
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
}

pub struct Detector {
    jails: Vec<(Jail, fleetban_engine::Filter)>,
    /// Source index → the jails that read it.
    routes: Vec<Vec<usize>>,
}

impl Detector {
    /// `routes[source]` lists the indexes (into `jails`) of the jails that
    /// follow that source.
    pub fn new(jails: &[JailConfig], routes: Vec<Vec<usize>>) -> Self {
        Detector {
            jails: jails
                .iter()
                .map(|j| (Jail::new(j.settings.clone()), j.filter.clone()))
                .collect(),
            routes,
        }
    }

    pub fn on_line(&mut self, line: &Line, now_ms: i64) -> Vec<Detection> {
        let mut out = Vec::new();
        let Some(jails) = self.routes.get(line.source) else {
            return out;
        };
        for &j in jails {
            let Some((jail, filter)) = self.jails.get_mut(j) else {
                continue;
            };
            let Some(failure) = filter.check(&line.text) else {
                continue;
            };
            if jail.ignores(failure.ip) {
                continue;
            }
            out.push(Detection::Failure {
                jail: jail.settings().name.clone(),
                ip: failure.ip,
                user: failure.user,
                at_ms: now_ms,
            });
            if let Some(ban) = jail.on_failure(failure.ip, now_ms) {
                out.push(Detection::Ban(ban));
            }
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
        let mut d = Detector::new(&cfg.jails, vec![vec![0], vec![1]]);
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
}
