//! nftables: one table of fleetban's own (`inet <table>`), with an IPv4 and
//! an IPv6 set (`flags interval, timeout`, so each element carries its own
//! timeout and a ban ends in the kernel even if the agent is gone) and an
//! input chain that drops traffic from their members. Every change is one
//! `nft -f` transaction: all of it applies or none.

use std::fmt::Write as _;
use std::process::Stdio;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Entry, Firewall, FirewallError};
use crate::blocklist::Changes;

/// The kernel rejects very long element timeouts on some versions; longer
/// bans are refreshed by the agent before this runs out.
const MAX_TIMEOUT_MS: i64 = 20 * 86_400 * 1_000;
/// Ahead of the usual `filter` priority (0), so a ban wins over the host's
/// own accept rules.
const PRIORITY: i32 = -10;

pub struct NftablesFirewall {
    table: String,
    /// Program and leading arguments; `["nft"]` unless a test runs it inside
    /// a network namespace.
    command: Vec<String>,
}

impl NftablesFirewall {
    pub fn new(table: String) -> Self {
        NftablesFirewall {
            table,
            command: vec!["nft".into()],
        }
    }

    /// Runs nft through a wrapper, e.g. `ip netns exec NS nft`.
    pub fn with_command(mut self, command: Vec<String>) -> Self {
        self.command = command;
        self
    }

    fn setup(&self, script: &mut String) {
        let t = &self.table;
        let _ = writeln!(script, "add table inet {t}");
        let _ = writeln!(
            script,
            "add set inet {t} ban4 {{ type ipv4_addr; flags interval, timeout; }}"
        );
        let _ = writeln!(
            script,
            "add set inet {t} ban6 {{ type ipv6_addr; flags interval, timeout; }}"
        );
        let _ = writeln!(script, "add chain inet {t} input {{ type filter hook input priority {PRIORITY}; policy accept; }}");
        let _ = writeln!(script, "flush chain inet {t} input");
        let _ = writeln!(script, "add rule inet {t} input ip saddr @ban4 drop");
        let _ = writeln!(script, "add rule inet {t} input ip6 saddr @ban6 drop");
    }

    fn elements(&self, script: &mut String, verb: &str, entries: &[Entry]) {
        for (set, v4) in [("ban4", true), ("ban6", false)] {
            let mut items = entries
                .iter()
                .filter(|(t, _)| matches!(t, IpNet::V4(_)) == v4)
                .peekable();
            if items.peek().is_none() {
                continue;
            }
            let _ = write!(script, "{verb} element inet {} {set} {{ ", self.table);
            for (i, (target, remaining)) in items.enumerate() {
                if i > 0 {
                    script.push_str(", ");
                }
                let _ = write!(script, "{target}");
                if let Some(ms) = remaining {
                    let _ = write!(script, " timeout {}ms", (*ms).clamp(1_000, MAX_TIMEOUT_MS));
                }
            }
            script.push_str(" }\n");
        }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
        let (program, lead) = self
            .command
            .split_first()
            .map_or(("nft", &[][..]), |(p, l)| (p.as_str(), l));
        let mut child = Command::new(program)
            .args(lead)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FirewallError::Spawn {
                program: self.command.join(" "),
                source,
            })?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(script.as_bytes())
                .await
                .map_err(|source| FirewallError::Spawn {
                    program: self.command.join(" "),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| FirewallError::Spawn {
                program: self.command.join(" "),
                source,
            })?;
        if !out.status.success() {
            return Err(FirewallError::Refused {
                program: self.command.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(2_000)
                    .collect(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn transaction(&self, script: &str) -> Result<(), FirewallError> {
        tracing::debug!(table = %self.table, script, "nft transaction");
        self.run(&["-f", "-"], Some(script)).await.map(drop)
    }
}

#[async_trait]
impl Firewall for NftablesFirewall {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError> {
        let mut script = String::new();
        self.setup(&mut script);
        let _ = writeln!(script, "flush set inet {} ban4", self.table);
        let _ = writeln!(script, "flush set inet {} ban6", self.table);
        self.elements(&mut script, "add", entries);
        self.transaction(&script).await
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        let removed: Vec<Entry> = changes.remove.iter().map(|t| (*t, None)).collect();
        self.elements(&mut script, "delete", &removed);
        self.elements(&mut script, "add", &changes.add);
        self.transaction(&script).await
    }

    async fn list(&mut self) -> Result<Vec<IpNet>, FirewallError> {
        let mut out = Vec::new();
        for set in ["ban4", "ban6"] {
            let json = self
                .run(&["-j", "list", "set", "inet", &self.table, set], None)
                .await?;
            out.extend(parse_set(&json).map_err(|detail| FirewallError::Read {
                what: format!("nft set inet {} {set}", self.table),
                detail,
            })?);
        }
        out.sort();
        Ok(out)
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        // `add` first, so deleting a table that is not there is no error.
        let t = &self.table;
        self.transaction(&format!("add table inet {t}\ndelete table inet {t}\n"))
            .await
    }
}

/// The elements of `nft -j list set …` output.
fn parse_set(json: &str) -> Result<Vec<IpNet>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let mut out = Vec::new();
    for item in items {
        let Some(set) = item.get("set") else { continue };
        let Some(elems) = set.get("elem").and_then(Value::as_array) else {
            continue;
        };
        for e in elems {
            // An element with a timeout is {"elem": {"val": V, ...}}; V is an
            // address string, {"prefix": {...}} or {"range": [a, b]}.
            let val = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
            out.extend(parse_val(val)?);
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
    fn script_is_one_transaction_per_change() {
        let fw = NftablesFirewall::new("fleetban".into());
        let mut s = String::new();
        fw.elements(
            &mut s,
            "add",
            &[
                ("192.0.2.1/32".parse().expect("net"), Some(5_000)),
                ("2001:db8::/64".parse().expect("net"), None),
                ("192.0.2.0/30".parse().expect("net"), Some(10)),
            ],
        );
        assert_eq!(
            s,
            "add element inet fleetban ban4 { 192.0.2.1/32 timeout 5000ms, 192.0.2.0/30 timeout 1000ms }\n\
             add element inet fleetban ban6 { 2001:db8::/64 }\n"
        );
    }

    #[test]
    fn parses_listed_elements() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "ban4", "table": "fleetban", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": "192.0.2.1", "timeout": 60, "expires": 59}}, {"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60}}, "203.0.113.5", {"range": ["10.0.0.0", "10.0.0.3"]}]}}]}"#;
        let got: Vec<String> = parse_set(json)
            .expect("parses")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            vec![
                "192.0.2.1/32",
                "198.51.100.0/24",
                "203.0.113.5/32",
                "10.0.0.0/30"
            ]
        );
        assert!(parse_set("{}").is_err());
        assert!(parse_set("not json").is_err());
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// The shared firewall suite against the real kernel, inside a network
    /// namespace of its own.
    #[tokio::test]
    async fn passes_the_firewall_suite_in_a_namespace() {
        if !fleetban_tests::privileges::require_netns("nftables firewall suite") {
            return;
        }
        let ns = format!("fbfw{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip runs")
        };
        ip(&["netns", "del", &ns]);
        assert!(ip(&["netns", "add", &ns]).success());
        let wrapper = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.clone(),
            "nft".into(),
        ];
        let mut fw = NftablesFirewall::new("fleetban".into()).with_command(wrapper.clone());
        crate::firewall::suite::run(&mut fw).await;

        // The rule really is there, hooked on input, and flush removes it.
        fw.sync(&[("192.0.2.9/32".parse().expect("net"), Some(60_000))])
            .await
            .expect("sync");
        let ruleset = fw
            .run(&["list", "ruleset"], None)
            .await
            .expect("list ruleset");
        assert!(ruleset.contains("hook input priority"), "{ruleset}");
        assert!(ruleset.contains("ip saddr @ban4 drop"), "{ruleset}");
        assert!(
            ruleset.contains("192.0.2.9 timeout 1m") || ruleset.contains("192.0.2.9 timeout 60s"),
            "{ruleset}"
        );
        fw.flush().await.expect("flush");
        assert!(!fw
            .run(&["list", "ruleset"], None)
            .await
            .expect("list")
            .contains("fleetban"));

        // A table of someone else's is left alone.
        let other = NftablesFirewall::new("someone_else".into()).with_command(wrapper);
        other
            .transaction("add table inet someone_else\n")
            .await
            .expect("other table");
        fw.sync(&[]).await.expect("sync");
        fw.flush().await.expect("flush");
        assert!(other
            .run(&["list", "tables"], None)
            .await
            .expect("tables")
            .contains("someone_else"));
        ip(&["netns", "del", &ns]);
    }
}
