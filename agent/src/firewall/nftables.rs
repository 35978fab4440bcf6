//! nftables: one table of fleetban's own (`inet <table>`) and nothing else.
//! Every set is a hash set with `flags timeout`, each element with its own
//! timeout, so a ban ends in the kernel even if the agent is gone: host
//! addresses in `host4`/`host6`, and prefixes in one set per prefix length
//! (`net4_24`, `net6_48`, ...) that a rule looks up with the source address
//! masked to that length (`ip saddr & 255.255.255.0 == @net4_24`).
//!
//! Why not interval sets: nft 1.0.6 fetches every element of every interval
//! set in the ruleset before any change, so with 5,000 prefixes loaded each
//! one-entry change took 40 ms instead of 4 ms; and loading an interval set
//! is several times slower. Prefixes are merged by the agent
//! ([`crate::ranges`]) before they get here, so a set per length holds what
//! an interval set would, and lookups stay O(1) per length in use.
//!
//! Port-scoped bans (a jail's `port = ssh`) live in concatenated sets of
//! `address . protocol . port` with per-element timeouts, looked up with
//! `ip saddr . meta l4proto . th dport`: `port4`/`port6` (hash sets) for
//! host addresses, and `pnet4`/`pnet6` (interval sets, as a prefix inside a
//! concatenation needs) for prefixes. A port range is one element per port:
//! a plain hash set keeps the single-address lookups and changes as fast as
//! the address-wide ones, and scopes are capped at
//! [`fleetban_proto::ports::MAX_PORTS`] ports.
//!
//! An `input` chain (and a `forward` chain when asked) at priority -10,
//! ahead of the host's own filter, drops or rejects matching traffic. Every
//! change is one `nft -f` transaction: all of it applies or none; a full
//! sync replaces the whole table in one transaction.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;

use super::command::Runner;
use super::{Entry, Firewall, FirewallError, PortEntry, Readback, Rules, Verdict, MAX_TIMEOUT_MS};
use crate::blocklist::{Changes, PortKey};

/// The sets of port-scoped bans: (name, IPv4, interval for prefixes).
const PORT_SETS: [(&str, bool, bool); 4] = [
    ("port4", true, false),
    ("port6", false, false),
    ("pnet4", true, true),
    ("pnet6", false, true),
];

fn port_set(k: &PortKey) -> &'static str {
    let v4 = matches!(k.target, IpNet::V4(_));
    let host = k.target.prefix_len() == k.target.max_prefix_len();
    match (v4, host) {
        (true, true) => "port4",
        (false, true) => "port6",
        (true, false) => "pnet4",
        (false, false) => "pnet6",
    }
}

/// Ahead of the usual `filter` priority (0), so a ban wins over the host's
/// own accept rules.
const PRIORITY: i32 = -10;

/// A set of ours: IPv4 or not, and the prefix length it holds (32 or 128:
/// the host set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SetKey {
    v4: bool,
    len: u8,
}

impl SetKey {
    fn of(net: &IpNet) -> Self {
        SetKey {
            v4: matches!(net, IpNet::V4(_)),
            len: net.prefix_len(),
        }
    }

    fn hosts(v4: bool) -> Self {
        SetKey {
            v4,
            len: if v4 { 32 } else { 128 },
        }
    }

    fn is_host(self) -> bool {
        self.len == if self.v4 { 32 } else { 128 }
    }

    fn name(self) -> String {
        let f = if self.v4 { 4 } else { 6 };
        if self.is_host() {
            format!("host{f}")
        } else {
            format!("net{f}_{}", self.len)
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "host4" => Some(Self::hosts(true)),
            "host6" => Some(Self::hosts(false)),
            _ => {
                let (f, len) = name.strip_prefix("net")?.split_once('_')?;
                let v4 = match f {
                    "4" => true,
                    "6" => false,
                    _ => return None,
                };
                let len: u8 = len.parse().ok()?;
                let k = SetKey { v4, len };
                (len >= 1 && len < Self::hosts(v4).len && k.name() == name).then_some(k)
            }
        }
    }

    /// What a rule matches: the source address, masked for prefixes.
    fn matcher(self) -> String {
        let proto = if self.v4 { "ip" } else { "ip6" };
        if self.is_host() {
            return format!("{proto} saddr @{}", self.name());
        }
        let mask = match IpNet::new(
            if self.v4 {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            self.len,
        ) {
            Ok(n) => n.netmask().to_string(),
            Err(_) => String::new(),
        };
        format!("{proto} saddr & {mask} == @{}", self.name())
    }

    fn declaration(self, table: &str) -> String {
        let ty = if self.v4 { "ipv4_addr" } else { "ipv6_addr" };
        format!(
            "add set inet {table} {} {{ type {ty}; flags timeout; }}\n",
            self.name()
        )
    }
}

pub struct NftablesFirewall {
    table: String,
    rules: Rules,
    runner: Runner,
    /// The sets the table holds, as last made or read back.
    sets: BTreeSet<SetKey>,
}

impl NftablesFirewall {
    pub fn new(table: String) -> Self {
        NftablesFirewall {
            table,
            rules: Rules::default(),
            runner: Runner::default(),
            sets: BTreeSet::new(),
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

    /// A set and its rule in every chain.
    fn add_set(&self, script: &mut String, key: SetKey) {
        script.push_str(&key.declaration(&self.table));
        for chain in self.chains() {
            let _ = writeln!(
                script,
                "add rule inet {} {chain} {} {}",
                self.table,
                key.matcher(),
                self.verdict()
            );
        }
    }

    /// The port sets and their rules.
    fn add_port_sets(&self, script: &mut String) {
        let t = &self.table;
        for (name, v4, interval) in PORT_SETS {
            let (ty, proto) = if v4 {
                ("ipv4_addr", "ip")
            } else {
                ("ipv6_addr", "ip6")
            };
            let flags = if interval {
                "interval, timeout"
            } else {
                "timeout"
            };
            let _ = writeln!(
                script,
                "add set inet {t} {name} {{ type {ty} . inet_proto . inet_service; flags {flags}; }}"
            );
            for chain in self.chains() {
                let _ = writeln!(
                    script,
                    "add rule inet {t} {chain} {proto} saddr . meta l4proto . th dport @{name} {}",
                    self.verdict()
                );
            }
        }
    }

    fn port_elements(
        script: &mut String,
        table: &str,
        verb: &str,
        entries: &[PortEntry],
        timeouts: bool,
    ) {
        let mut by_set: std::collections::BTreeMap<&str, Vec<&PortEntry>> = Default::default();
        for e in entries {
            by_set.entry(port_set(&e.0)).or_default().push(e);
        }
        for (set, items) in by_set {
            let _ = write!(script, "{verb} element inet {table} {set} {{ ");
            for (i, (k, remaining)) in items.into_iter().enumerate() {
                if i > 0 {
                    script.push_str(", ");
                }
                if k.target.prefix_len() == k.target.max_prefix_len() {
                    let _ = write!(script, "{}", k.target.addr());
                } else {
                    let _ = write!(script, "{}", k.target);
                }
                let _ = write!(script, " . {} . {}", k.proto_name(), k.port);
                if let (true, Some(ms)) = (timeouts, remaining) {
                    let _ = write!(script, " timeout {}ms", (*ms).clamp(1_000, MAX_TIMEOUT_MS));
                }
            }
            script.push_str(" }\n");
        }
    }

    fn elements(script: &mut String, table: &str, verb: &str, entries: &[Entry], timeouts: bool) {
        let mut by_set: std::collections::BTreeMap<SetKey, Vec<&Entry>> = Default::default();
        for e in entries {
            by_set.entry(SetKey::of(&e.0)).or_default().push(e);
        }
        for (key, items) in by_set {
            let _ = write!(script, "{verb} element inet {table} {} {{ ", key.name());
            for (i, (target, remaining)) in items.into_iter().enumerate() {
                if i > 0 {
                    script.push_str(", ");
                }
                let _ = write!(script, "{}", target.network());
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

    /// The script of a full sync: the table is replaced whole, in one
    /// transaction; and the sets it makes.
    fn sync_script(&self, entries: &[Entry], ports: &[PortEntry]) -> (String, BTreeSet<SetKey>) {
        let t = &self.table;
        let mut script = String::with_capacity(entries.len() * 40 + 1_024);
        // `add` first, so deleting a table that is not there is no error.
        let _ = writeln!(
            script,
            "add table inet {t}\ndelete table inet {t}\nadd table inet {t}"
        );
        for chain in self.chains() {
            let _ = writeln!(script, "add chain inet {t} {chain} {{ type filter hook {chain} priority {PRIORITY}; policy accept; }}");
        }
        let mut sets: BTreeSet<SetKey> = [SetKey::hosts(true), SetKey::hosts(false)].into();
        sets.extend(entries.iter().map(|(n, _)| SetKey::of(n)));
        for key in &sets {
            self.add_set(&mut script, *key);
        }
        self.add_port_sets(&mut script);
        Self::elements(&mut script, t, "add", entries, true);
        Self::port_elements(&mut script, t, "add", ports, true);
        (script, sets)
    }

    /// Whether the listing holds our host sets and, in each chain, exactly
    /// one rule per set of ours, with our verdict.
    fn intact(&self, items: &[Value], sets: &BTreeSet<SetKey>) -> bool {
        if !sets.contains(&SetKey::hosts(true)) || !sets.contains(&SetKey::hosts(false)) {
            return false;
        }
        let chain_ok = |chain: &str| {
            let hooked = items.iter().any(|i| {
                i.get("chain").is_some_and(|c| {
                    c.get("name").and_then(Value::as_str) == Some(chain)
                        && c.get("hook").and_then(Value::as_str) == Some(chain)
                })
            });
            let rules: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| r.get("chain").and_then(Value::as_str) == Some(chain))
                .map(|r| r.get("expr").map(Value::to_string).unwrap_or_default())
                .collect();
            let has = |name: &str| {
                let want = format!("\"@{name}\"");
                rules
                    .iter()
                    .any(|r| r.contains(&want) && r.contains(self.verdict()))
            };
            hooked
                && rules.len() == sets.len() + PORT_SETS.len()
                && sets.iter().all(|k| has(&k.name()))
                && PORT_SETS.iter().all(|(name, _, _)| has(name))
        };
        let port_sets = PORT_SETS.iter().all(|(name, _, _)| {
            items.iter().any(|i| {
                i.get("set")
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    == Some(name)
            })
        });
        if !port_sets {
            return false;
        }
        self.chains().into_iter().all(chain_ok)
    }
}

#[async_trait]
impl Firewall for NftablesFirewall {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn sync(&mut self, entries: &[Entry], ports: &[PortEntry]) -> Result<(), FirewallError> {
        let (script, sets) = self.sync_script(entries, ports);
        self.transaction(&script).await?;
        self.sets = sets;
        Ok(())
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        let new: BTreeSet<SetKey> = changes
            .add
            .iter()
            .map(|(n, _)| SetKey::of(n))
            .filter(|k| !self.sets.contains(k))
            .collect();
        for key in &new {
            self.add_set(&mut script, *key);
        }
        let removed: Vec<Entry> = changes.remove.iter().map(|t| (*t, None)).collect();
        Self::elements(&mut script, &self.table, "delete", &removed, false);
        Self::elements(&mut script, &self.table, "add", &changes.add, true);
        let removed: Vec<PortEntry> = changes.ports.remove.iter().map(|k| (*k, None)).collect();
        Self::port_elements(&mut script, &self.table, "delete", &removed, false);
        Self::port_elements(&mut script, &self.table, "add", &changes.ports.add, true);
        self.transaction(&script).await?;
        self.sets.extend(new);
        Ok(())
    }

    async fn read(&mut self) -> Result<Readback, FirewallError> {
        let json = match self
            .runner
            .run("nft", &["-j", "list", "table", "inet", &self.table], None)
            .await
        {
            Ok(j) => j,
            Err(FirewallError::Refused { stderr, .. }) if stderr.contains("No such file") => {
                self.sets.clear();
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
        let mut ports = std::collections::BTreeMap::new();
        let mut sets = BTreeSet::new();
        for item in items {
            let Some(set) = item.get("set") else { continue };
            let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
            if PORT_SETS.iter().any(|(n, _, _)| *n == name) {
                for (k, left) in parse_port_elements(set).map_err(read_err)? {
                    ports.insert(k, left);
                }
                continue;
            }
            let Some(key) = set
                .get("name")
                .and_then(Value::as_str)
                .and_then(SetKey::parse)
            else {
                continue;
            };
            sets.insert(key);
            for (net, left) in parse_elements(set).map_err(read_err)? {
                let net = IpNet::new(net.addr(), key.len)
                    .map_err(|e| read_err(e.to_string()))?
                    .trunc();
                entries.insert(net, left);
            }
        }
        let intact = self.intact(items, &sets);
        self.sets = sets;
        Ok(Readback {
            intact,
            entries,
            ports,
        })
    }

    async fn flush(&mut self) -> Result<(), FirewallError> {
        // `add` first, so deleting a table that is not there is no error.
        let t = &self.table;
        self.transaction(&format!("add table inet {t}\ndelete table inet {t}\n"))
            .await?;
        self.sets.clear();
        Ok(())
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

/// The elements of a port set (`address . protocol . port`, the address
/// possibly a prefix, the port possibly a range).
fn parse_port_elements(set: &Value) -> Result<Vec<(PortKey, Option<i64>)>, String> {
    let mut out = Vec::new();
    let Some(elems) = set.get("elem").and_then(Value::as_array) else {
        return Ok(out);
    };
    for e in elems {
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
        let parts = val
            .get("concat")
            .and_then(Value::as_array)
            .filter(|p| p.len() == 3)
            .ok_or_else(|| format!("unexpected port element {val}"))?;
        let targets = parse_val(&parts[0])?;
        let proto = match &parts[1] {
            Value::String(s) if s == "tcp" => 6,
            Value::String(s) if s == "udp" => 17,
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("protocol {n}"))?,
            other => return Err(format!("unexpected protocol {other}")),
        };
        let port = |v: &Value| -> Result<u16, String> {
            v.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("unexpected port {v}"))
        };
        let (from, to) = match parts[2].get("range").and_then(Value::as_array) {
            Some(r) if r.len() == 2 => (port(&r[0])?, port(&r[1])?),
            _ => {
                let p = port(&parts[2])?;
                (p, p)
            }
        };
        for target in targets {
            for p in from..=to {
                out.push((
                    PortKey {
                        target,
                        proto,
                        port: p,
                    },
                    left,
                ));
            }
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
    fn each_prefix_length_has_its_own_set() {
        let mut s = String::new();
        NftablesFirewall::elements(
            &mut s,
            "fleetban",
            "add",
            &[
                ("192.0.2.1/32".parse().expect("net"), Some(5_000)),
                ("2001:db8::/64".parse().expect("net"), None),
                ("192.0.2.0/30".parse().expect("net"), Some(10)),
                ("198.51.100.0/30".parse().expect("net"), None),
                (
                    "2001:db8::1/128".parse().expect("net"),
                    Some(MAX_TIMEOUT_MS * 2),
                ),
            ],
            true,
        );
        assert_eq!(
            s,
            "add element inet fleetban net6_64 { 2001:db8:: }\n\
             add element inet fleetban host6 { 2001:db8::1 timeout 1728000000ms }\n\
             add element inet fleetban net4_30 { 192.0.2.0 timeout 1000ms, 198.51.100.0 }\n\
             add element inet fleetban host4 { 192.0.2.1 timeout 5000ms }\n"
        );
        for name in ["host4", "host6", "net4_24", "net6_48"] {
            assert_eq!(SetKey::parse(name).map(SetKey::name).as_deref(), Some(name));
        }
        for bad in [
            "net4_32", "net4_0", "net6_128", "net5_8", "net4_024", "other",
        ] {
            assert_eq!(SetKey::parse(bad), None, "{bad}");
        }
        assert_eq!(
            SetKey::parse("net6_48").expect("key").matcher(),
            "ip6 saddr & ffff:ffff:ffff:: == @net6_48"
        );
    }

    #[test]
    fn rules_follow_the_verdict_and_chains_asked_for() {
        let fw = NftablesFirewall::new("fb".into()).with_rules(Rules {
            verdict: Verdict::Reject,
            forward: true,
        });
        let (s, sets) = fw.sync_script(&[("10.0.0.0/8".parse().expect("net"), None)], &[]);
        assert_eq!(sets.len(), 3);
        assert!(
            s.starts_with("add table inet fb\ndelete table inet fb\nadd table inet fb\n"),
            "{s}"
        );
        assert!(
            s.contains("add rule inet fb input ip saddr @host4 reject\n"),
            "{s}"
        );
        assert!(
            s.contains("add rule inet fb forward ip saddr & 255.0.0.0 == @net4_8 reject\n"),
            "{s}"
        );
        assert!(s.contains("hook input priority -10;"), "{s}");
        assert!(
            s.contains(
                "add rule inet fb forward ip6 saddr . meta l4proto . th dport @port6 reject\n"
            ),
            "{s}"
        );
        let (s, _) = NftablesFirewall::new("fb".into()).sync_script(&[], &[]);
        assert!(!s.contains("forward"), "{s}");
        assert!(
            s.contains("add rule inet fb input ip6 saddr @host6 drop\n"),
            "{s}"
        );
    }

    #[test]
    fn parses_listed_elements() {
        let json = r#"{"set": {"family": "inet", "name": "net4_24", "table": "fleetban", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": "192.0.2.1", "timeout": 60, "expires": 59}}, {"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60}}, "203.0.113.5", {"range": ["10.0.0.0", "10.0.0.3"]}]}}"#;
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

    #[test]
    fn port_elements_are_written_and_read_back() {
        let key = |t: &str, proto, port| PortKey {
            target: t.parse().expect("net"),
            proto,
            port,
        };
        let mut s = String::new();
        NftablesFirewall::port_elements(
            &mut s,
            "fb",
            "add",
            &[
                (key("192.0.2.1/32", 6, 22), Some(5_000)),
                (key("2001:db8::/64", 17, 53), None),
                (key("198.51.100.0/24", 6, 22), Some(60_000)),
            ],
            true,
        );
        assert_eq!(
            s,
            "add element inet fb pnet4 { 198.51.100.0/24 . tcp . 22 timeout 60000ms }\n\
             add element inet fb pnet6 { 2001:db8::/64 . udp . 53 }\n\
             add element inet fb port4 { 192.0.2.1 . tcp . 22 timeout 5000ms }\n"
        );
        let json = r#"{"set": {"name": "pnet4", "elem": [{"elem": {"val": {"concat": [{"prefix": {"addr": "198.51.100.0", "len": 24}}, "tcp", 22]}, "timeout": 60, "expires": 59}}, {"concat": ["192.0.2.1", "udp", {"range": [53, 54]}]}]}}"#;
        let v: Value = serde_json::from_str(json).expect("json");
        let got: Vec<String> = parse_port_elements(&v["set"])
            .expect("parses")
            .iter()
            .map(|(k, l)| format!("{k} {l:?}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "198.51.100.0/24 tcp/22 Some(59000)",
                "192.0.2.1/32 udp/53 None",
                "192.0.2.1/32 udp/54 None"
            ]
        );
        let bad: Value =
            serde_json::from_str(r#"{"elem": [{"concat": ["192.0.2.1", "icmp", 1]}]}"#)
                .expect("json");
        assert!(parse_port_elements(&bad).is_err());
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
        fw.sync(&[("192.0.2.9/32".parse().expect("net"), Some(60_000))], &[])
            .await
            .expect("sync");
        let ruleset = ns.sh("nft list ruleset");
        assert!(ruleset.contains("hook input priority"), "{ruleset}");
        assert!(ruleset.contains("ip saddr @host4 drop"), "{ruleset}");
        // A prefix gets its set and rule in the same transaction.
        fw.apply(&Changes {
            add: vec![("198.51.100.0/24".parse().expect("net"), Some(60_000))],
            ..Changes::default()
        })
        .await
        .expect("apply");
        let ruleset = ns.sh("nft list ruleset");
        assert!(
            ruleset.contains("ip saddr & 255.255.255.0 == @net4_24 drop"),
            "{ruleset}"
        );
        assert!(fw.read().await.expect("read").intact);
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
