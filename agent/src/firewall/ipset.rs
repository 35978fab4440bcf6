//! ipset + iptables/ip6tables, for hosts without nftables: two `hash:net`
//! sets of fleetban's own (`<prefix>4`, `<prefix>6`, created with
//! `timeout 0` so each element has its own timeout and `maxelem` sized for
//! the list), and a chain `<prefix>` in the filter table with one rule per
//! set, jumped to first thing from INPUT (and FORWARD when asked). Port-
//! scoped bans go into two `hash:net,port` sets (`<prefix>p4`,
//! `<prefix>p6`, elements `192.0.2.1,tcp:22`) matched with `src,dst`. Changes
//! go through `ipset restore` in one batch; a full sync fills a fresh set
//! and swaps it with the live one (`ipset swap`, atomic).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::IpNet;

use super::command::Runner;
use super::{Entry, Firewall, FirewallError, PortEntry, Readback, Rules, Verdict, MAX_TIMEOUT_MS};
use crate::blocklist::{Changes, PortKey};

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

    fn port_set(&self, f: &Family) -> String {
        format!("{}p{}", self.prefix, if f.v4 { 4 } else { 6 })
    }

    fn hooks(&self) -> Vec<&'static str> {
        let mut h = vec!["INPUT"];
        if self.rules.forward {
            h.push("FORWARD");
        }
        h
    }

    /// The chain's rules for one family: the address set, the port set.
    fn rules(&self, f: &Family) -> [String; 2] {
        let target = match self.rules.verdict {
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        };
        [
            format!(
                "-A {} -m set --match-set {} src -j {target}",
                self.prefix,
                self.set(f)
            ),
            format!(
                "-A {} -m set --match-set {} src,dst -j {target}",
                self.prefix,
                self.port_set(f)
            ),
        ]
    }

    async fn set_names(&self) -> Result<Vec<String>, FirewallError> {
        let out = self.runner.run("ipset", &["list", "-n"], None).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The chain with its rule (rewritten), and the jumps to it.
    async fn chains(&self) -> Result<(), FirewallError> {
        for f in &FAMILIES {
            let script = format!(
                "*filter\n:{chain} - [0:0]\n{rules}\nCOMMIT\n",
                chain = self.prefix,
                rules = self.rules(f).join("\n")
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
    pub fn sync_script(
        &self,
        entries: &[Entry],
        ports: &[PortEntry],
        existing: &[String],
    ) -> String {
        let mut s = String::with_capacity(entries.len() * 40 + 512);
        for f in &FAMILIES {
            let mine: Vec<&Entry> = entries
                .iter()
                .filter(|(t, _)| matches!(t, IpNet::V4(_)) == f.v4)
                .collect();
            let body: String = mine.iter().fold(String::new(), |mut b, (t, left)| {
                add_line(&mut b, "{SET}", &t.to_string(), *left);
                b
            });
            swap_in(
                &mut s,
                &self.set(f),
                "hash:net",
                f,
                mine.len(),
                &body,
                existing,
            );
        }
        for f in &FAMILIES {
            let mine: Vec<&PortEntry> = ports
                .iter()
                .filter(|(k, _)| matches!(k.target, IpNet::V4(_)) == f.v4)
                .collect();
            let body: String = mine.iter().fold(String::new(), |mut b, (k, left)| {
                add_line(&mut b, "{SET}", &port_element(k), *left);
                b
            });
            swap_in(
                &mut s,
                &self.port_set(f),
                "hash:net,port",
                f,
                mine.len(),
                &body,
                existing,
            );
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

/// Fills a fresh copy of set `live` with `body` (lines naming the set
/// `{SET}`) and swaps it in.
fn swap_in(
    s: &mut String,
    live: &str,
    kind: &str,
    f: &Family,
    len: usize,
    body: &str,
    existing: &[String],
) {
    let tmp = format!("{live}t");
    let maxelem = (len * 2).next_power_of_two().max(MIN_MAXELEM);
    let create = |name: &str| {
        format!(
            "create {name} {kind} family {} timeout 0 maxelem {maxelem}\n",
            f.name
        )
    };
    if existing.contains(&tmp) {
        let _ = writeln!(s, "destroy {tmp}");
    }
    if !existing.iter().any(|e| e == live) {
        s.push_str(&create(live));
    }
    s.push_str(&create(&tmp));
    s.push_str(&body.replace("{SET}", &tmp));
    let _ = writeln!(s, "swap {tmp} {live}");
    let _ = writeln!(s, "destroy {tmp}");
}

/// A `hash:net,port` element: `192.0.2.1/32,tcp:22`.
fn port_element(k: &PortKey) -> String {
    format!("{},{}:{}", k.target, k.proto_name(), k.port)
}

fn add_line(s: &mut String, set: &str, target: &str, left: Option<i64>) {
    // ipset counts whole seconds; 0 means no timeout.
    let secs = left.map_or(0, |ms| (ms.clamp(1_000, MAX_TIMEOUT_MS) + 999) / 1_000);
    let _ = writeln!(s, "add {set} {target} timeout {secs}");
}

#[async_trait]
impl Firewall for IpsetFirewall {
    fn name(&self) -> &'static str {
        "ipset"
    }

    async fn sync(&mut self, entries: &[Entry], ports: &[PortEntry]) -> Result<(), FirewallError> {
        let existing = self.set_names().await?;
        self.restore(&self.sync_script(entries, ports, &existing))
            .await?;
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
            add_line(&mut s, &self.set(f), &target.to_string(), *left);
        }
        for k in &changes.ports.remove {
            let f = &FAMILIES[usize::from(!matches!(k.target, IpNet::V4(_)))];
            let _ = writeln!(s, "del {} {}", self.port_set(f), port_element(k));
        }
        for (k, left) in &changes.ports.add {
            let f = &FAMILIES[usize::from(!matches!(k.target, IpNet::V4(_)))];
            add_line(&mut s, &self.port_set(f), &port_element(k), *left);
        }
        self.restore(&s).await
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let existing = self.set_names().await?;
        let mut entries = BTreeMap::new();
        let mut ports = BTreeMap::new();
        let mut intact = true;
        for f in &FAMILIES {
            let set = self.set(f);
            let pset = self.port_set(f);
            if !existing.contains(&set) || !existing.contains(&pset) {
                intact = false;
                continue;
            }
            let saved = self.runner.run("ipset", &["save", &pset], None).await?;
            for (k, left) in
                parse_port_save(&saved, &pset).map_err(|detail| FirewallError::Read {
                    what: format!("ipset {pset}"),
                    detail,
                })?
            {
                ports.insert(k, left);
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
            let rule_ok = self.rules(f).iter().all(|rule| {
                rules.lines().any(|l| {
                    l.starts_with(rule.as_str())
                        && l[rule.len()..].chars().next().is_none_or(|c| c == ' ')
                })
            });
            intact &= jumps_ok && rule_ok;
        }
        Ok(Readback {
            intact,
            entries,
            ports,
        })
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
            for name in [
                self.set(f),
                format!("{}t", self.set(f)),
                self.port_set(f),
                format!("{}t", self.port_set(f)),
            ] {
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

/// The elements of `ipset save SET` of a `hash:net,port` set:
/// `add SET 192.0.2.1,tcp:22 timeout 59`.
fn parse_port_save(saved: &str, set: &str) -> Result<Vec<(PortKey, Option<i64>)>, String> {
    let mut out = Vec::new();
    for line in saved.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") || words.next() != Some(set) {
            continue;
        }
        let elem = words
            .next()
            .ok_or_else(|| format!("no element in {line:?}"))?;
        let bad = || format!("unexpected element {elem:?}");
        let (net, rest) = elem.split_once(',').ok_or_else(bad)?;
        let (proto, port) = rest.split_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => 6,
            "udp" => 17,
            _ => return Err(bad()),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let target = fleetban_proto::parse_target(net).map_err(|e| e.to_string())?;
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
        out.push((
            PortKey {
                target,
                proto,
                port,
            },
            left,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_are_filled_and_read_back() {
        let fw = IpsetFirewall::new("fb".into());
        let k = PortKey {
            target: "192.0.2.1/32".parse().expect("net"),
            proto: 6,
            port: 22,
        };
        let s = fw.sync_script(&[], &[(k, Some(60_000))], &[]);
        assert!(
            s.contains("create fbp4t hash:net,port family inet timeout 0 maxelem 65536\nadd fbp4t 192.0.2.1/32,tcp:22 timeout 60\nswap fbp4t fbp4\n"),
            "{s}"
        );
        let saved = "create fbp4 hash:net,port family inet hashsize 1024 maxelem 65536 timeout 0\nadd fbp4 192.0.2.1,tcp:22 timeout 59\nadd fbp4 198.51.100.0/24,udp:53 timeout 0\n";
        let got: Vec<String> = parse_port_save(saved, "fbp4")
            .expect("parses")
            .iter()
            .map(|(k, l)| format!("{k} {l:?}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "192.0.2.1/32 tcp/22 Some(59000)",
                "198.51.100.0/24 udp/53 None"
            ]
        );
        assert!(parse_port_save("add fbp4 192.0.2.1,icmp:8 timeout 1\n", "fbp4").is_err());
        assert!(parse_port_save("add fbp4 192.0.2.1 timeout 1\n", "fbp4").is_err());
    }

    #[test]
    fn a_full_sync_fills_a_fresh_set_and_swaps_it_in() {
        let fw = IpsetFirewall::new("fleetban".into());
        let s = fw.sync_script(
            &[
                ("192.0.2.1/32".parse().expect("net"), Some(5_500)),
                ("2001:db8::/64".parse().expect("net"), None),
            ],
            &[],
            &[
                "fleetban4".into(),
                "fleetban4t".into(),
                "fleetbanp4".into(),
                "fleetbanp6".into(),
            ],
        );
        let s = s.split("create fleetbanp4t").next().unwrap_or_default();
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
            .sync_script(&many, &[], &[])
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

        fw.sync(&[("192.0.2.9/32".parse().expect("net"), Some(60_000))], &[])
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
        fw.sync(&[], &[]).await.expect("repair");
        assert!(fw.read().await.expect("read").intact);
        fw.flush().await.expect("flush");
        let rules = ns.sh("iptables -S; ip6tables -S; ipset list -n");
        assert!(!rules.contains("fleetban"), "{rules}");
    }
}
