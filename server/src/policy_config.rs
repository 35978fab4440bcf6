//! The `[policy]` section of the server's configuration: the fleet's
//! correlation rules.

use std::collections::BTreeMap;
use std::path::Path;

use fleetban_policy::{Allowlist, BanGrowth, FleetThreshold, Growth, Policy, SubnetEscalation};
use fleetban_proto::config::ConfigError;
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Networks never banned, fleet-wide.
    #[serde(default)]
    allowlist: Vec<String>,
    /// Networks never banned for one agent group's agents.
    #[serde(default)]
    group_allowlist: BTreeMap<String, Vec<String>>,
    /// Jails whose local bans become fleet decisions; default: every jail.
    shared_jails: Option<Vec<String>>,
    /// Decisions apply to the reporting agent's group only.
    #[serde(default)]
    group_scope: bool,
    threshold: Option<ThresholdFile>,
    recidive: Option<RecidiveFile>,
    subnet: Option<SubnetFile>,
    widest_v4: Option<u8>,
    widest_v6: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdFile {
    #[serde(default)]
    hosts: u32,
    #[serde(default)]
    failures: u32,
    window: String,
    bantime: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecidiveFile {
    #[serde(default = "two")]
    factor: f64,
    multipliers: Option<Vec<f64>>,
    maxtime: Option<String>,
}

fn two() -> f64 {
    2.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetFile {
    #[serde(default = "v4")]
    v4_prefix: u8,
    #[serde(default = "v6")]
    v6_prefix: u8,
    min_banned: u32,
    window: String,
    bantime: String,
}

fn v4() -> u8 {
    24
}

fn v6() -> u8 {
    64
}

fn duration(v: &str) -> Result<chrono::Duration, String> {
    humantime::parse_duration(v.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .filter(|d| *d > chrono::Duration::zero())
        .ok_or_else(|| format!("{v:?}: expected a duration such as 10m, 1h or 7d"))
}

fn networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| fleetban_proto::parse_target(s).map_err(|e| e.to_string()))
        .collect()
}

impl PolicyFile {
    /// The rules, checked; errors name the key.
    pub fn into_policy(self, path: &Path, source: &str) -> Result<Policy, ConfigError> {
        let err = |key: &str, m: String| ConfigError::key(path, source, key, m);
        let mut groups = BTreeMap::new();
        for (g, list) in &self.group_allowlist {
            groups.insert(
                g.clone(),
                networks(list).map_err(|e| err("policy.group_allowlist", format!("{g}: {e}")))?,
            );
        }
        let allowlist = Allowlist {
            global: networks(&self.allowlist).map_err(|e| err("policy.allowlist", e))?,
            groups,
        };
        let threshold = match self.threshold {
            Some(t) => {
                if t.hosts == 0 && t.failures == 0 {
                    return Err(err(
                        "policy.threshold.hosts",
                        "set hosts, failures or both above 0".into(),
                    ));
                }
                Some(FleetThreshold {
                    hosts: t.hosts,
                    failures: t.failures,
                    window: duration(&t.window).map_err(|e| err("policy.threshold.window", e))?,
                    bantime: duration(&t.bantime)
                        .map_err(|e| err("policy.threshold.bantime", e))?,
                })
            }
            None => None,
        };
        let recidive = match self.recidive {
            Some(r) => {
                if !(r.factor.is_finite() && r.factor >= 1.0) {
                    return Err(err(
                        "policy.recidive.factor",
                        format!("{}: expected 1 or more", r.factor),
                    ));
                }
                let growth = match r.multipliers {
                    Some(m) if !m.is_empty() => Growth::Multipliers {
                        multipliers: m,
                        factor: 1.0,
                    },
                    _ => Growth::Exponential { factor: r.factor },
                };
                let maxtime = r
                    .maxtime
                    .as_deref()
                    .map(duration)
                    .transpose()
                    .map_err(|e| err("policy.recidive.maxtime", e))?;
                Some(BanGrowth { growth, maxtime })
            }
            None => None,
        };
        let subnet = match self.subnet {
            Some(s) => {
                if s.v4_prefix > 32 || s.v6_prefix > 128 || s.min_banned < 2 {
                    return Err(err(
                        "policy.subnet.min_banned",
                        "prefixes up to /32 and /128, min_banned 2 or more".into(),
                    ));
                }
                Some(SubnetEscalation {
                    v4_prefix: s.v4_prefix,
                    v6_prefix: s.v6_prefix,
                    min_banned: s.min_banned,
                    window: duration(&s.window).map_err(|e| err("policy.subnet.window", e))?,
                    bantime: duration(&s.bantime).map_err(|e| err("policy.subnet.bantime", e))?,
                })
            }
            None => None,
        };
        let defaults = Policy::default();
        Ok(Policy {
            allowlist,
            shared_jails: self.shared_jails,
            group_scope: self.group_scope,
            threshold,
            recidive,
            subnet,
            widest_v4: self.widest_v4.unwrap_or(defaults.widest_v4).min(32),
            widest_v6: self.widest_v6.unwrap_or(defaults.widest_v6).min(128),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Policy, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            policy: PolicyFile,
        }
        let f: F = fleetban_proto::config::parse(Path::new("s.toml"), src)?;
        f.policy.into_policy(Path::new("s.toml"), src)
    }

    #[test]
    fn a_full_policy_loads() {
        let p = load(
            "[policy]\nallowlist = [\"10.0.0.0/8\"]\ngroup_allowlist = { office = [\"198.51.100.0/24\"] }\n\
             [policy.threshold]\nhosts = 3\nwindow = \"10m\"\nbantime = \"1h\"\n\
             [policy.recidive]\nfactor = 2\nmaxtime = \"1w\"\n\
             [policy.subnet]\nmin_banned = 5\nwindow = \"1h\"\nbantime = \"6h\"\n",
        )
        .unwrap();
        assert_eq!(p.allowlist.global.len(), 1);
        assert_eq!(p.threshold.unwrap().hosts, 3);
        assert_eq!(
            p.recidive.unwrap().maxtime,
            Some(chrono::Duration::weeks(1))
        );
        assert_eq!(p.subnet.unwrap().v4_prefix, 24);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("[policy]\nallowlist = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("policy.allowlist", 2));
        let e = load("[policy.threshold]\nwindow = \"soon\"\nbantime = \"1h\"\nhosts = 2\n")
            .unwrap_err();
        assert_eq!(e.key, "policy.threshold.window");
        let e = load("[policy.threshold]\nwindow = \"1m\"\nbantime = \"1h\"\n").unwrap_err();
        assert_eq!(e.key, "policy.threshold.hosts");
        let e = load("[policy.recidive]\nfactor = 0.5\n").unwrap_err();
        assert_eq!(e.key, "policy.recidive.factor");
        let e = load("[policy]\nthreshhold = 1\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
