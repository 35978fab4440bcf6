//! nftables: one table of fleetban's own (`inet <table>`) and nothing else.
//! Host addresses go into hash sets (`host4`, `host6`: `flags timeout`),
//! prefixes into interval sets (`net4`, `net6`: `flags interval, timeout`),
//! each element with its own timeout, so a ban ends in the kernel even if
//! the agent is gone. Hash sets load several times faster than interval
//! sets, and most bans are single addresses. An `input` chain (and a
//! `forward` chain when asked) at priority -10, ahead of the host's own
//! filter, drops or rejects traffic from their members. Every change is one
//! `nft -f` transaction: all of it applies or none.

use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;

use super::command::Runner;
use super::{Entry, Firewall, FirewallError, Readback, Rules, Verdict, MAX_TIMEOUT_MS};
use crate::blocklist::Changes;

/// Ahead of the usual `filter` priority (0), so a ban wins over the host's
/// own accept rules.
const PRIORITY: i32 = -10;

/// The sets: name, match, whether it holds host addresses (else prefixes),
/// whether it is IPv4.
const SETS: [(&str, &str, bool, bool); 4] = [
    ("host4", "ip saddr", true, true),
    ("net4", "ip saddr", false, true),
    ("host6", "ip6 saddr", true, false),
    ("net6", "ip6 saddr", false, false),
];

pub struct NftablesFirewall {
    table: String,
    rules: Rules,
    runner: Runner,
}

impl NftablesFirewall {
    pub fn new(table: String) -> Self {
        NftablesFirewall {
            table,
            rules: Rules::default(),
            runner: Runner::default(),
        }
    }

    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Runs nft through a wrapper, e.g. `ip netns exec NS`.
    pub fn with_wrapper(mut self, wrapper: Vec<String>) -> Self {
        self.runner = Runner::wrapped(wrapper);
        self
    }

    fn chains(&self) -> Vec<&'static str> {
        let mut c = vec!["input"];
        if self.rules.forward {
            c.push("forward");
        }
        c
    }

    fn verdict(&self) -> &'static str {
        match self.rules.verdict {
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        }
    }

    /// Creates what is missing and rewrites the chains' rules.
    fn setup(&self, script: &mut String) {
        let t = &self.table;
        let _ = writeln!(script, "add table inet {t}");
        for (set, _, host, v4) in SETS {
            let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
            let flags = if host { "timeout" } else { "interval, timeout" };
            let _ = writeln!(
                script,
                "add set inet {t} {set} {{ type {ty}; flags {flags}; }}"
            );
        }
        for hook in ["input", "forward"] {
            let _ = writeln!(script, "add chain inet {t} {hook} {{ type filter hook {hook} priority {PRIORITY}; policy accept; }}");
            let _ = writeln!(script, "flush chain inet {t} {hook}");
            if !self.chains().contains(&hook) {
                let _ = writeln!(script, "delete chain inet {t} {hook}");
                continue;
            }
            for (set, matcher, _, _) in SETS {
                let _ = writeln!(
                    script,
                    "add rule inet {t} {hook} {matcher} @{set} {}",
                    self.verdict()
                );
            }
        }
    }

    fn elements(&self, script: &mut String, verb: &str, entries: &[Entry], timeouts: bool) {
        for (set, _, host, v4) in SETS {
            let mut items = entries
                .iter()
                .filter(|(t, _)| {
                    matches!(t, IpNet::V4(_)) == v4
                        && (t.prefix_len() == t.max_prefix_len()) == host
                })
                .peekable();
            if items.peek().is_none() {
                continue;
            }
            let _ = write!(script, "{verb} element inet {} {set} {{ ", self.table);
            for (i, (target, remaining)) in items.enumerate() {
                if i > 0 {
                    script.push_str(", ");
                }
                if host {
                    let _ = write!(script, "{}", target.addr());
                } else {
                    let _ = write!(script, "{target}");
                }
                if let (true, Some(ms)) = (timeouts, remaining) {
                    let _ = write!(script, " timeout {}ms", (*ms).clamp(1_000, MAX_TIMEOUT_MS));
                }
            }
            script.push_str(" }\n");
        }
    }

    async fn transaction(&self, script: &str) -> Result<(), FirewallError> {
        if script.len() < 4_096 {
            tracing::debug!(table = %self.table, script, "nft transaction");
        }
        self.runner
            .run("nft", &["-f", "-"], Some(script))
            .await
            .map(drop)
    }

    /// The script of a full sync (for the benchmark, which times nft alone).
    pub fn sync_script(&self, entries: &[Entry]) -> String {
        let mut script = String::with_capacity(entries.len() * 40 + 1_024);
        self.setup(&mut script);
        for (set, ..) in SETS {
            let _ = writeln!(script, "flush set inet {} {set}", self.table);
        }
        self.elements(&mut script, "add", entries, true);
        script
    }

    /// Whether the listing holds our sets and, in each chain, one rule per
    /// set with our verdict.
    fn intact(&self, items: &[Value]) -> bool {
        let sets_ok = SETS.iter().all(|(name, ..)| {
            items.iter().any(|i| {
                i.get("set")
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    == Some(name)
            })
        });
        let chain_ok = |chain: &str| {
            let hooked = items.iter().any(|i| {
                i.get("chain").is_some_and(|c| {
                    c.get("name").and_then(Value::as_str) == Some(chain)
                        && c.get("hook").and_then(Value::as_str) == Some(chain)
                })
            });
            let rules: Vec<&Value> = items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| r.get("chain").and_then(Value::as_str) == Some(chain))
                .collect();
            hooked
                && rules.len() == SETS.len()
                && SETS.iter().all(|(name, ..)| {
                    let want = format!("@{name}");
                    rules.iter().any(|r| {
                        let text = r.get("expr").map(Value::to_string).unwrap_or_default();
                        text.contains(&format!("\"{want}\"")) && text.contains(self.verdict())
                    })
                })
        };
        sets_ok && self.chains().into_iter().all(chain_ok)
    }
}

#[async_trait]
impl Firewall for NftablesFirewall {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError> {
        let script = self.sync_script(entries);
        self.transaction(&script).await
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        let removed: Vec<Entry> = changes.remove.iter().map(|t| (*t, None)).collect();
        self.elements(&mut script, "delete", &removed, false);
        self.elements(&mut script, "add", &changes.add, true);
        self.transaction(&script).await
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let json = match self
            .runner
            .run("nft", &["-j", "list", "table", "inet", &self.table], None)
            .await
        {
            Ok(j) => j,
            Err(FirewallError::Refused { stderr, .. }) if stderr.contains("No such file") => {
                return Ok(Readback::default());
            }
            Err(e) => return Err(e),
        };
        let read_err = |detail: String| FirewallError::Read {
            what: format!("nft table inet {}", self.table),
            detail,
        };
        let v: Value = serde_json::from_str(&json).map_err(|e| read_err(e.to_string()))?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| read_err("no \"nftables\" array".into()))?;
        let mut entries = std::collections::BTreeMap::new();
        for item in items {
            let Some(set) = item.get("set") else { continue };
            let named = set.get("name").and_then(Value::as_str);
            if !SETS.iter().any(|(n, ..)| Some(*n) == named) {
                continue;
            }
            for (net, left) in parse_elements(set).map_err(read_err)? {
                entries.insert(net, left);
            }
        }
        Ok(Readback {
            intact: self.intact(items),
            entries,
        })
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        // `add` first, so deleting a table that is not there is no error.
        let t = &self.table;
        self.transaction(&format!("add table inet {t}\ndelete table inet {t}\n"))
            .await
    }
}

/// The elements of one set of `nft -j list …` output, with their remaining
/// time in ms (`None`: no timeout).
fn parse_elements(set: &Value) -> Result<Vec<(IpNet, Option<i64>)>, String> {
    let mut out = Vec::new();
    let Some(elems) = set.get("elem").and_then(Value::as_array) else {
        return Ok(out);
    };
    for e in elems {
        // An element with a timeout is {"elem": {"val": V, "expires": S}};
        // V is an address string, {"prefix": {...}} or {"range": [a, b]}.
        let (val, left) = match e.get("elem") {
            Some(inner) => (
                inner.get("val").unwrap_or(inner),
                inner
                    .get("expires")
                    .or_else(|| inner.get("timeout"))
                    .and_then(Value::as_i64)
                    .map(|s| s * 1_000),
            ),
            None => (e, None),
        };
        for net in parse_val(val)? {
            out.push((net, left));
        }
    }
    Ok(out)
}

fn parse_val(val: &Value) -> Result<Vec<IpNet>, String> {
    if let Some(s) = val.as_str() {
        return fleetban_proto::parse_target(s)
            .map(|n| vec![n])
            .map_err(|e| e.to_string());
    }
    if let Some(p) = val.get("prefix") {
        let addr = p
            .get("addr")
            .and_then(Value::as_str)
            .ok_or("prefix without addr")?;
        let len = p
            .get("len")
            .and_then(Value::as_u64)
            .ok_or("prefix without len")?;
        return fleetban_proto::parse_target(&format!("{addr}/{len}"))
            .map(|n| vec![n])
            .map_err(|e| e.to_string());
    }
    if let Some(r) = val.get("range").and_then(Value::as_array) {
        let bound = |i: usize| -> Result<std::net::IpAddr, String> {
            let s = r
                .get(i)
                .and_then(Value::as_str)
                .ok_or("range without bounds")?;
            s.parse().map_err(|_| format!("range bound {s:?}"))
        };
        let (from, to) = (bound(0)?, bound(1)?);
        return match (from, to) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                Ok(ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect())
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
                Ok(ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect())
            }
            _ => Err("range mixes address families".into()),
        };
    }
    Err(format!("unexpected element {val}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_prefixes_go_to_their_own_sets() {
        let fw = NftablesFirewall::new("fleetban".into());
        let mut s = String::new();
        fw.elements(
            &mut s,
            "add",
            &[
                ("192.0.2.1/32".parse().expect("net"), Some(5_000)),
                ("2001:db8::/64".parse().expect("net"), None),
                ("192.0.2.0/30".parse().expect("net"), Some(10)),
                (
                    "2001:db8::1/128".parse().expect("net"),
                    Some(MAX_TIMEOUT_MS * 2),
                ),
            ],
            true,
        );
        assert_eq!(
            s,
            "add element inet fleetban host4 { 192.0.2.1 timeout 5000ms }\n\
             add element inet fleetban net4 { 192.0.2.0/30 timeout 1000ms }\n\
             add element inet fleetban host6 { 2001:db8::1 timeout 1728000000ms }\n\
             add element inet fleetban net6 { 2001:db8::/64 }\n"
        );
    }

    #[test]
    fn rules_follow_the_verdict_and_chains_asked_for() {
        let fw = NftablesFirewall::new("fb".into()).with_rules(Rules {
            verdict: Verdict::Reject,
            forward: true,
        });
        let s = fw.sync_script(&[]);
        assert!(
            s.contains("add rule inet fb input ip saddr @host4 reject\n"),
            "{s}"
        );
        assert!(
            s.contains("add rule inet fb forward ip6 saddr @net6 reject\n"),
            "{s}"
        );
        assert!(s.contains("hook input priority -10;"), "{s}");
        assert!(s.contains("flush set inet fb net4\n"), "{s}");
        let s = NftablesFirewall::new("fb".into()).sync_script(&[]);
        assert!(s.contains("delete chain inet fb forward\n"), "{s}");
        assert!(
            s.contains("add rule inet fb input ip saddr @host4 drop\n"),
            "{s}"
        );
    }

    #[test]
    fn parses_listed_elements() {
        let json = r#"{"set": {"family": "inet", "name": "net4", "table": "fleetban", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": "192.0.2.1", "timeout": 60, "expires": 59}}, {"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60}}, "203.0.113.5", {"range": ["10.0.0.0", "10.0.0.3"]}]}}"#;
        let v: Value = serde_json::from_str(json).expect("json");
        let got: Vec<String> = parse_elements(&v["set"])
            .expect("parses")
            .iter()
            .map(|(n, l)| format!("{n} {l:?}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "192.0.2.1/32 Some(59000)",
                "198.51.100.0/24 Some(60000)",
                "203.0.113.5/32 None",
                "10.0.0.0/30 None"
            ]
        );
        let bad: Value = serde_json::from_str(r#"{"elem": [{"weird": 1}]}"#).expect("json");
        assert!(parse_elements(&bad).is_err());
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// The shared firewall suite against the real kernel, inside a network
    /// namespace of its own, with a foreign table beside fleetban's.
    #[tokio::test]
    async fn passes_the_firewall_suite_in_a_namespace() {
        if !fleetban_tests::privileges::require_netns("nftables firewall suite") {
            return;
        }
        let ns = crate::firewall::suite::Namespace::new("fbnft");
        let mut fw = NftablesFirewall::new("fleetban".into()).with_wrapper(ns.wrapper());
        crate::firewall::suite::run(&mut fw, &ns).await;

        // The rules really are there, hooked on input; flush removes them.
        fw.sync(&[("192.0.2.9/32".parse().expect("net"), Some(60_000))])
            .await
            .expect("sync");
        let ruleset = ns.sh("nft list ruleset");
        assert!(ruleset.contains("hook input priority"), "{ruleset}");
        assert!(ruleset.contains("ip saddr @host4 drop"), "{ruleset}");
        assert!(
            ruleset.contains("192.0.2.9 timeout 1m") || ruleset.contains("192.0.2.9 timeout 60s"),
            "{ruleset}"
        );
        // A rule deleted by hand makes the table not intact.
        assert!(fw.read().await.expect("read").intact);
        ns.sh("nft flush chain inet fleetban input");
        assert!(!fw.read().await.expect("read").intact);
        fw.flush().await.expect("flush");
        assert!(!ns.sh("nft list ruleset").contains("fleetban"));
    }
}
