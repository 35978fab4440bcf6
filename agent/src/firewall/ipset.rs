//! ipset + iptables/ip6tables, for hosts without nftables: two `hash:net`
//! sets of fleetban's own (`<prefix>4`, `<prefix>6`, created with
//! `timeout 0` so each element has its own timeout and `maxelem` sized for
//! the list), and a chain `<prefix>` in the filter table with one rule per
//! set, jumped to first thing from INPUT (and FORWARD when asked). Changes
//! go through `ipset restore` in one batch; a full sync fills a fresh set
//! and swaps it with the live one (`ipset swap`, atomic).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::IpNet;

use super::command::Runner;
use super::{Entry, Firewall, FirewallError, Readback, Rules, Verdict, MAX_TIMEOUT_MS};
use crate::blocklist::Changes;

/// hash:net's default; sets grow past it when the list needs.
const MIN_MAXELEM: usize = 65_536;

pub struct IpsetFirewall {
    prefix: String,
    rules: Rules,
    runner: Runner,
}

/// One address family's set and tools.
struct Family {
    v4: bool,
    iptables: &'static str,
    restore: &'static str,
    name: &'static str,
}

const FAMILIES: [Family; 2] = [
    Family {
        v4: true,
        iptables: "iptables",
        restore: "iptables-restore",
        name: "inet",
    },
    Family {
        v4: false,
        iptables: "ip6tables",
        restore: "ip6tables-restore",
        name: "inet6",
    },
];

impl IpsetFirewall {
    pub fn new(prefix: String) -> Self {
        IpsetFirewall {
            prefix,
            rules: Rules::default(),
            runner: Runner::default(),
        }
    }

    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Runs the tools through a wrapper, e.g. `ip netns exec NS`.
    pub fn with_wrapper(mut self, wrapper: Vec<String>) -> Self {
        self.runner = Runner::wrapped(wrapper);
        self
    }

    fn set(&self, f: &Family) -> String {
        format!("{}{}", self.prefix, if f.v4 { 4 } else { 6 })
    }

    fn hooks(&self) -> Vec<&'static str> {
        let mut h = vec!["INPUT"];
        if self.rules.forward {
            h.push("FORWARD");
        }
        h
    }

    fn rule(&self, f: &Family) -> String {
        let target = match self.rules.verdict {
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        };
        format!(
            "-A {} -m set --match-set {} src -j {target}",
            self.prefix,
            self.set(f)
        )
    }

    async fn set_names(&self) -> Result<Vec<String>, FirewallError> {
        let out = self.runner.run("ipset", &["list", "-n"], None).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The chain with its rule (rewritten), and the jumps to it.
    async fn chains(&self) -> Result<(), FirewallError> {
        for f in &FAMILIES {
            let script = format!(
                "*filter\n:{chain} - [0:0]\n{rule}\nCOMMIT\n",
                chain = self.prefix,
                rule = self.rule(f)
            );
            self.runner
                .run(f.restore, &["--noflush"], Some(&script))
                .await?;
            for hook in ["INPUT", "FORWARD"] {
                let jump = ["-C", hook, "-j", &self.prefix];
                let present = self.runner.run(f.iptables, &jump, None).await.is_ok();
                let wanted = self.hooks().contains(&hook);
                if wanted && !present {
                    self.runner
                        .run(f.iptables, &["-I", hook, "1", "-j", &self.prefix], None)
                        .await?;
                } else if !wanted && present {
                    self.runner
                        .run(f.iptables, &["-D", hook, "-j", &self.prefix], None)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The `ipset restore` script of a full sync, given the sets that exist.
    pub fn sync_script(&self, entries: &[Entry], existing: &[String]) -> String {
        let mut s = String::with_capacity(entries.len() * 40 + 512);
        for f in &FAMILIES {
            let live = self.set(f);
            let tmp = format!("{live}t");
            let mine: Vec<&Entry> = entries
                .iter()
                .filter(|(t, _)| matches!(t, IpNet::V4(_)) == f.v4)
                .collect();
            let maxelem = (mine.len() * 2).next_power_of_two().max(MIN_MAXELEM);
            let create = |name: &str| {
                format!(
                    "create {name} hash:net family {} timeout 0 maxelem {maxelem}\n",
                    f.name
                )
            };
            if existing.contains(&tmp) {
                let _ = writeln!(s, "destroy {tmp}");
            }
            if !existing.contains(&live) {
                s.push_str(&create(&live));
            }
            s.push_str(&create(&tmp));
            for (target, left) in mine {
                add_line(&mut s, &tmp, target, *left);
            }
            let _ = writeln!(s, "swap {tmp} {live}");
            let _ = writeln!(s, "destroy {tmp}");
        }
        s
    }

    async fn restore(&self, script: &str) -> Result<(), FirewallError> {
        if script.len() < 4_096 {
            tracing::debug!(prefix = %self.prefix, script, "ipset restore");
        }
        self.runner
            .run("ipset", &["-exist", "restore"], Some(script))
            .await
            .map(drop)
    }
}

fn add_line(s: &mut String, set: &str, target: &IpNet, left: Option<i64>) {
    // ipset counts whole seconds; 0 means no timeout.
    let secs = left.map_or(0, |ms| (ms.clamp(1_000, MAX_TIMEOUT_MS) + 999) / 1_000);
    let _ = writeln!(s, "add {set} {target} timeout {secs}");
}

#[async_trait]
impl Firewall for IpsetFirewall {
    fn name(&self) -> &'static str {
        "ipset"
    }

    async fn sync(&mut self, entries: &[Entry]) -> Result<(), FirewallError> {
        let existing = self.set_names().await?;
        self.restore(&self.sync_script(entries, &existing)).await?;
        self.chains().await
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut s = String::new();
        for target in &changes.remove {
            let f = &FAMILIES[usize::from(!matches!(target, IpNet::V4(_)))];
            let _ = writeln!(s, "del {} {target}", self.set(f));
        }
        for (target, left) in &changes.add {
            let f = &FAMILIES[usize::from(!matches!(target, IpNet::V4(_)))];
            add_line(&mut s, &self.set(f), target, *left);
        }
        self.restore(&s).await
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let existing = self.set_names().await?;
        let mut entries = BTreeMap::new();
        let mut intact = true;
        for f in &FAMILIES {
            let set = self.set(f);
            if !existing.contains(&set) {
                intact = false;
                continue;
            }
            let saved = self.runner.run("ipset", &["save", &set], None).await?;
            for (net, left) in parse_save(&saved, &set).map_err(|detail| FirewallError::Read {
                what: format!("ipset {set}"),
                detail,
            })? {
                entries.insert(net, left);
            }
            let rules = self
                .runner
                .run(f.iptables, &["-S"], None)
                .await
                .unwrap_or_default();
            let jumps_ok = self
                .hooks()
                .iter()
                .all(|h| rules.contains(&format!("-A {h} -j {}\n", self.prefix)));
            let rule_ok = rules.lines().any(|l| {
                l.starts_with(&self.rule(f))
                    && l[self.rule(f).len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == ' ')
            });
            intact &= jumps_ok && rule_ok;
        }
        Ok(Readback { intact, entries })
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        for f in &FAMILIES {
            for hook in ["INPUT", "FORWARD"] {
                while self
                    .runner
                    .run(f.iptables, &["-D", hook, "-j", &self.prefix], None)
                    .await
                    .is_ok()
                {}
            }
            if self
                .runner
                .run(f.iptables, &["-S", &self.prefix], None)
                .await
                .is_ok()
            {
                self.runner
                    .run(f.iptables, &["-F", &self.prefix], None)
                    .await?;
                self.runner
                    .run(f.iptables, &["-X", &self.prefix], None)
                    .await?;
            }
        }
        let existing = self.set_names().await?;
        let mut s = String::new();
        for f in &FAMILIES {
            for name in [self.set(f), format!("{}t", self.set(f))] {
                if existing.contains(&name) {
                    let _ = writeln!(s, "destroy {name}");
                }
            }
        }
        if s.is_empty() {
            return Ok(());
        }
        self.restore(&s).await
    }
}

/// The elements of `ipset save SET`: `add SET 192.0.2.1 timeout 59`.
fn parse_save(saved: &str, set: &str) -> Result<Vec<(IpNet, Option<i64>)>, String> {
    let mut out = Vec::new();
    for line in saved.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") || words.next() != Some(set) {
            continue;
        }
        let target = words
            .next()
            .ok_or_else(|| format!("no element in {line:?}"))?;
        let net = fleetban_proto::parse_target(target).map_err(|e| e.to_string())?;
        let mut left = None;
        while let Some(w) = words.next() {
            if w == "timeout" {
                let secs: i64 = words
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("bad timeout in {line:?}"))?;
                left = (secs > 0).then_some(secs * 1_000);
            }
        }
        out.push((net, left));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sync_fills_a_fresh_set_and_swaps_it_in() {
        let fw = IpsetFirewall::new("fleetban".into());
        let s = fw.sync_script(
            &[
                ("192.0.2.1/32".parse().expect("net"), Some(5_500)),
                ("2001:db8::/64".parse().expect("net"), None),
            ],
            &["fleetban4".into(), "fleetban4t".into()],
        );
        assert_eq!(
            s,
            "destroy fleetban4t\n\
             create fleetban4t hash:net family inet timeout 0 maxelem 65536\n\
             add fleetban4t 192.0.2.1/32 timeout 6\n\
             swap fleetban4t fleetban4\n\
             destroy fleetban4t\n\
             create fleetban6 hash:net family inet6 timeout 0 maxelem 65536\n\
             create fleetban6t hash:net family inet6 timeout 0 maxelem 65536\n\
             add fleetban6t 2001:db8::/64 timeout 0\n\
             swap fleetban6t fleetban6\n\
             destroy fleetban6t\n"
        );
        let many: Vec<Entry> = (0..100_000u32)
            .map(|i| {
                (
                    IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i))),
                    None,
                )
            })
            .collect();
        assert!(fw
            .sync_script(&many, &[])
            .contains("create fleetban4t hash:net family inet timeout 0 maxelem 262144\n"));
    }

    #[test]
    fn parses_saved_sets() {
        let saved = "create fb4 hash:net family inet hashsize 1024 maxelem 65536 timeout 0\nadd fb4 10.0.0.0/8 timeout 0\nadd fb4 1.2.3.4 timeout 99\n";
        let got = parse_save(saved, "fb4").expect("parses");
        assert_eq!(
            got,
            vec![
                ("10.0.0.0/8".parse().expect("net"), None),
                ("1.2.3.4/32".parse().expect("net"), Some(99_000)),
            ]
        );
        assert!(parse_save("add fb4 nonsense timeout 1\n", "fb4").is_err());
        assert!(parse_save("add fb4 1.2.3.4 timeout x\n", "fb4").is_err());
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_firewall_suite_in_a_namespace() {
        if !fleetban_tests::privileges::require_netns("ipset firewall suite") {
            return;
        }
        let ns = crate::firewall::suite::Namespace::new("fbips");
        let mut fw = IpsetFirewall::new("fleetban".into()).with_wrapper(ns.wrapper());
        crate::firewall::suite::run(&mut fw, &ns).await;

        fw.sync(&[("192.0.2.9/32".parse().expect("net"), Some(60_000))])
            .await
            .expect("sync");
        let rules = ns.sh("iptables -S");
        assert!(rules.contains("-A INPUT -j fleetban"), "{rules}");
        assert!(
            rules.contains("-A fleetban -m set --match-set fleetban4 src -j DROP"),
            "{rules}"
        );
        assert!(fw.read().await.expect("read").intact);
        ns.sh("iptables -D INPUT -j fleetban");
        assert!(!fw.read().await.expect("read").intact);
        fw.sync(&[]).await.expect("repair");
        assert!(fw.read().await.expect("read").intact);
        fw.flush().await.expect("flush");
        let rules = ns.sh("iptables -S; ip6tables -S; ipset list -n");
        assert!(!rules.contains("fleetban"), "{rules}");
    }
}
