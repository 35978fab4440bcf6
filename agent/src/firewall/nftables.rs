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
//! concatenation needs) for prefixes. A port range is one element per port,
//! so a plain hash set serves single addresses; scopes are capped at
//! [`fleetban_proto::ports::MAX_PORTS`] ports. Port-scoped bans are few, so
//! their elements go through `nft -f` (in the same transaction as the rule
//! swap of a full sync), not netlink.
//!
//! An `input` chain (and a `forward` chain when asked) at priority -10,
//! ahead of the host's own filter, drops or rejects matching traffic.
//!
//! The table, chains, sets and rules are made with `nft -f`; elements go
//! over netlink ([`super::netlink`]), one batch per change: all of it
//! applies or none. A full sync flushes every set and refills it in one
//! batch, so the kernel goes from the old list to the new one at once; only
//! a damaged table (a rule or set deleted by hand) is rebuilt first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;

use super::command::Runner;
use super::netlink::{self, Verb};
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

/// A set of ours: IPv4 or not, the prefix length it holds (32 or 128: the
/// host set), and its generation. A full sync over an intact table fills a
/// new generation of sets (`host4_b` after `host4`, and back) while the old
/// one still filters, then points the rules at it and deletes the old one,
/// in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SetKey {
    v4: bool,
    len: u8,
    alt: bool,
}

impl SetKey {
    fn of(net: &IpNet, alt: bool) -> Self {
        SetKey {
            v4: matches!(net, IpNet::V4(_)),
            len: net.prefix_len(),
            alt,
        }
    }

    fn hosts(v4: bool, alt: bool) -> Self {
        SetKey {
            v4,
            len: if v4 { 32 } else { 128 },
            alt,
        }
    }

    fn is_host(self) -> bool {
        self.len == if self.v4 { 32 } else { 128 }
    }

    fn name(self) -> String {
        let f = if self.v4 { 4 } else { 6 };
        let gen = if self.alt { "_b" } else { "" };
        if self.is_host() {
            format!("host{f}{gen}")
        } else {
            format!("net{f}_{}{gen}", self.len)
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let (base, alt) = match name.strip_suffix("_b") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let k = match base {
            "host4" => Self::hosts(true, alt),
            "host6" => Self::hosts(false, alt),
            _ => {
                let (f, len) = base.strip_prefix("net")?.split_once('_')?;
                let v4 = match f {
                    "4" => true,
                    "6" => false,
                    _ => return None,
                };
                let len: u8 = len.parse().ok()?;
                let k = SetKey { v4, len, alt };
                if len < 1 || len >= Self::hosts(v4, alt).len {
                    return None;
                }
                k
            }
        };
        (k.name() == name).then_some(k)
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

    /// The set's declaration, sized for `elements` with room to grow.
    fn declaration(self, table: &str, elements: usize) -> String {
        let ty = if self.v4 { "ipv4_addr" } else { "ipv6_addr" };
        format!(
            "add set inet {table} {} {{ type {ty}; flags timeout; size {}; }}\n",
            self.name(),
            self.capacity(elements)
        )
    }

    /// A set's `size`: half as much again as it holds when made, and at
    /// least 65,536 hosts or 1,024 prefixes. The kernel sizes its hash table
    /// for it up front, so a big load neither rehashes on the way (a dump
    /// taken during a rehash can miss elements) nor pays for it; a set that
    /// fills up refuses more (ENFILE) and the agent's full sync, which
    /// follows a refused change, makes it bigger.
    fn capacity(self, elements: usize) -> usize {
        let floor = if self.is_host() { 65_536 } else { 1_024 };
        (elements + elements / 2).max(floor)
    }
}

/// Whether the sets are of one generation (a sync cut short leaves two)
/// and hold both host sets.
fn one_generation(sets: &BTreeSet<SetKey>) -> bool {
    sets.first().is_some_and(|first| {
        let alt = first.alt;
        sets.iter().all(|k| k.alt == alt)
            && sets.contains(&SetKey::hosts(true, alt))
            && sets.contains(&SetKey::hosts(false, alt))
    })
}

/// How many entries each set gets.
fn counts<'a>(keys: impl Iterator<Item = SetKey> + 'a) -> BTreeMap<SetKey, usize> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

pub struct NftablesFirewall {
    table: String,
    rules: Rules,
    runner: Runner,
    /// The sets the table holds, as last made or read back.
    sets: BTreeSet<SetKey>,
    /// The generation of sets the rules use.
    alt: bool,
    /// The network namespace the kernel side is in (`None`: ours).
    netns: Option<PathBuf>,
    /// Opened at the first change.
    socket: Option<Arc<netlink::Socket>>,
}

impl NftablesFirewall {
    pub fn new(table: String) -> Self {
        NftablesFirewall {
            table,
            rules: Rules::default(),
            runner: Runner::default(),
            sets: BTreeSet::new(),
            alt: false,
            netns: None,
            socket: None,
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

    /// Sends elements into this network namespace (e.g. `/run/netns/NS`),
    /// the one the wrapper runs nft in.
    pub fn with_netns(mut self, netns: PathBuf) -> Self {
        self.netns = Some(netns);
        self
    }

    fn socket(&mut self) -> Result<Arc<netlink::Socket>, FirewallError> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        let s = Arc::new(netlink::Socket::open(self.netns.as_deref())?);
        self.socket = Some(s.clone());
        Ok(s)
    }

    /// Commits a batch of element changes, built and sent off the async
    /// threads (a full list is a few hundred milliseconds of work).
    async fn commit<F>(&mut self, build: F) -> Result<(), FirewallError>
    where
        F: FnOnce(&mut netlink::Batch) + Send + 'static,
    {
        let socket = self.socket()?;
        let result = tokio::task::spawn_blocking(move || {
            let mut batch = socket.batch();
            build(&mut batch);
            socket.commit(batch)
        })
        .await;
        match result {
            Ok(r) => r.map_err(FirewallError::from),
            Err(e) => Err(FirewallError::Read {
                what: "the netlink batch".into(),
                detail: e.to_string(),
            }),
        }
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
    fn add_set(&self, script: &mut String, key: SetKey, elements: usize) {
        script.push_str(&key.declaration(&self.table, elements));
        for chain in self.chains() {
            self.rule(script, chain, key);
        }
    }

    fn rule(&self, script: &mut String, chain: &str, key: SetKey) {
        let _ = writeln!(
            script,
            "add rule inet {} {chain} {} {}",
            self.table,
            key.matcher(),
            self.verdict()
        );
    }

    /// The port sets (declarations only).
    fn declare_port_sets(&self, script: &mut String) {
        let t = &self.table;
        for (name, v4, interval) in PORT_SETS {
            let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
            let flags = if interval {
                "interval, timeout"
            } else {
                "timeout"
            };
            let _ = writeln!(
                script,
                "add set inet {t} {name} {{ type {ty} . inet_proto . inet_service; flags {flags}; }}"
            );
        }
    }

    /// The rules of the port sets in one chain.
    fn port_rules(&self, script: &mut String, chain: &str) {
        for (name, v4, _) in PORT_SETS {
            let proto = if v4 { "ip" } else { "ip6" };
            let _ = writeln!(
                script,
                "add rule inet {} {chain} {proto} saddr . meta l4proto . th dport @{name} {}",
                self.table,
                self.verdict()
            );
        }
    }

    fn port_elements(
        script: &mut String,
        table: &str,
        verb: &str,
        entries: &[PortEntry],
        timeouts: bool,
    ) {
        let mut by_set: BTreeMap<&str, Vec<&PortEntry>> = BTreeMap::new();
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

    /// Entries by the set that holds them, as (address, timeout ms).
    fn by_set(
        entries: &[Entry],
        alt: bool,
    ) -> BTreeMap<SetKey, Vec<(std::net::IpAddr, Option<u64>)>> {
        let mut by_set: BTreeMap<SetKey, Vec<_>> = BTreeMap::new();
        for (target, remaining) in entries {
            let timeout = remaining.map(|ms| ms.clamp(1_000, MAX_TIMEOUT_MS) as u64);
            by_set
                .entry(SetKey::of(target, alt))
                .or_default()
                .push((target.network(), timeout));
        }
        by_set
    }

    fn add_elements(
        batch: &mut netlink::Batch,
        table: &str,
        verb: Verb,
        by_set: BTreeMap<SetKey, Vec<(std::net::IpAddr, Option<u64>)>>,
    ) {
        for (key, items) in by_set {
            batch.elements(verb, table, &key.name(), items);
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

    /// The script that rebuilds the table whole, with empty sets for these
    /// entries (and the host sets); and the sets it makes.
    fn table_script(&self, entries: &[Entry]) -> (String, BTreeSet<SetKey>) {
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
        let sets = Self::needed(entries, false);
        let sizes = counts(entries.iter().map(|(n, _)| SetKey::of(n, false)));
        for key in &sets {
            self.add_set(&mut script, *key, sizes.get(key).copied().unwrap_or(0));
        }
        self.declare_port_sets(&mut script);
        for chain in self.chains() {
            self.port_rules(&mut script, chain);
        }
        (script, sets)
    }

    /// The sets a list needs: the host sets and one per prefix length.
    fn needed(entries: &[Entry], alt: bool) -> BTreeSet<SetKey> {
        [SetKey::hosts(true, alt), SetKey::hosts(false, alt)]
            .into_iter()
            .chain(entries.iter().map(|(n, _)| SetKey::of(n, alt)))
            .collect()
    }

    /// The table's sets, and whether a full sync can go by swapping set
    /// generations: one generation of sets with both host sets, and every
    /// chain there and hooked (the swap rewrites the rules). `None` when
    /// there is no table. Listing sets and chains, unlike rules, makes nft
    /// fetch no elements, so this stays quick with a million of them.
    async fn structure(&self) -> Result<Option<(bool, BTreeSet<SetKey>)>, FirewallError> {
        let json = match self
            .runner
            .run(
                "nft",
                &["-t", "-j", "list", "sets", "table", "inet", &self.table],
                None,
            )
            .await
        {
            Ok(j) => j,
            Err(FirewallError::Refused { stderr, .. }) if stderr.contains("No such file") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let names: Vec<String> = self
            .items(&json)?
            .iter()
            .filter_map(|i| i.get("set")?.get("name")?.as_str())
            .map(str::to_owned)
            .collect();
        let sets: BTreeSet<SetKey> = names.iter().filter_map(|n| SetKey::parse(n)).collect();
        let port_sets = PORT_SETS
            .iter()
            .all(|(name, _, _)| names.iter().any(|n| n == name));
        let json = self
            .runner
            .run("nft", &["-t", "-j", "list", "chains", "inet"], None)
            .await?;
        let chains = self.items(&json)?;
        let hooked = |chain: &str| {
            chains.iter().filter_map(|i| i.get("chain")).any(|c| {
                c.get("table").and_then(Value::as_str) == Some(self.table.as_str())
                    && c.get("name").and_then(Value::as_str) == Some(chain)
                    && c.get("hook").and_then(Value::as_str) == Some(chain)
            })
        };
        let ok = one_generation(&sets) && port_sets && self.chains().into_iter().all(hooked);
        Ok(Some((ok, sets)))
    }

    fn items(&self, json: &str) -> Result<Vec<Value>, FirewallError> {
        let read_err = |detail: String| FirewallError::Read {
            what: format!("nft table inet {}", self.table),
            detail,
        };
        let mut v: Value = serde_json::from_str(json).map_err(|e| read_err(e.to_string()))?;
        match v.get_mut("nftables").map(Value::take) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(read_err("no \"nftables\" array".into())),
        }
    }

    /// Whether the listing holds our host sets and, in each chain, exactly
    /// one rule per set of ours, with our verdict.
    fn intact(&self, items: &[Value], sets: &BTreeSet<SetKey>) -> bool {
        if !one_generation(sets) {
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
        port_sets && self.chains().into_iter().all(chain_ok)
    }
}

#[async_trait]
impl Firewall for NftablesFirewall {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn sync(&mut self, entries: &[Entry], ports: &[PortEntry]) -> Result<(), FirewallError> {
        let t = self.table.clone();
        let Some((true, old)) = self.structure().await? else {
            // No table, or a damaged one: rebuilt whole, then filled (the
            // port sets in the same transaction).
            let (mut script, sets) = self.table_script(entries);
            Self::port_elements(&mut script, &t, "add", ports, true);
            self.transaction(&script).await?;
            self.sets = sets;
            self.alt = false;
            let by_set = Self::by_set(entries, false);
            return self
                .commit(move |batch| Self::add_elements(batch, &t, Verb::Add, by_set))
                .await;
        };
        // The old generation filters while the new one is filled; then one
        // transaction points the rules at the new sets and drops the old.
        let alt = !old.first().is_some_and(|k| k.alt);
        let new = Self::needed(entries, alt);
        let sizes = counts(entries.iter().map(|(n, _)| SetKey::of(n, alt)));
        let mut script = String::new();
        for key in &new {
            script.push_str(&key.declaration(&t, sizes.get(key).copied().unwrap_or(0)));
        }
        self.transaction(&script).await?;
        let by_set = Self::by_set(entries, alt);
        let tt = t.clone();
        if let Err(e) = self
            .commit(move |batch| Self::add_elements(batch, &tt, Verb::Add, by_set))
            .await
        {
            let mut undo = String::new();
            for key in &new {
                let _ = writeln!(undo, "delete set inet {t} {}", key.name());
            }
            let _ = self.transaction(&undo).await;
            return Err(e);
        }
        let mut swap = String::new();
        for chain in self.chains() {
            let _ = writeln!(swap, "flush chain inet {t} {chain}");
            for key in &new {
                self.rule(&mut swap, chain, *key);
            }
            self.port_rules(&mut swap, chain);
        }
        // The port sets are refilled in the same transaction.
        for (name, _, _) in PORT_SETS {
            let _ = writeln!(swap, "flush set inet {t} {name}");
        }
        Self::port_elements(&mut swap, &t, "add", ports, true);
        for key in &old {
            let _ = writeln!(swap, "delete set inet {t} {}", key.name());
        }
        self.transaction(&swap).await?;
        self.sets = new;
        self.alt = alt;
        Ok(())
    }

    async fn apply(&mut self, changes: &Changes) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let alt = self.alt;
        let new: BTreeSet<SetKey> = changes
            .add
            .iter()
            .map(|(n, _)| SetKey::of(n, alt))
            .filter(|k| !self.sets.contains(k))
            .collect();
        if !new.is_empty() {
            let sizes = counts(changes.add.iter().map(|(n, _)| SetKey::of(n, alt)));
            let mut script = String::new();
            for key in &new {
                self.add_set(&mut script, *key, sizes.get(key).copied().unwrap_or(0));
            }
            self.transaction(&script).await?;
            self.sets.extend(new);
        }
        let table = self.table.clone();
        if !changes.add.is_empty() || !changes.remove.is_empty() {
            let removed: Vec<Entry> = changes.remove.iter().map(|t| (*t, None)).collect();
            let removed = Self::by_set(&removed, alt);
            let added = Self::by_set(&changes.add, alt);
            self.commit(move |batch| {
                Self::add_elements(batch, &table, Verb::Delete, removed);
                Self::add_elements(batch, &table, Verb::Add, added);
            })
            .await?;
        }
        if !changes.ports.is_empty() {
            let mut script = String::new();
            let removed: Vec<PortEntry> = changes.ports.remove.iter().map(|k| (*k, None)).collect();
            Self::port_elements(&mut script, &self.table, "delete", &removed, false);
            Self::port_elements(&mut script, &self.table, "add", &changes.ports.add, true);
            self.transaction(&script).await?;
        }
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
        let items = self.items(&json)?;
        let mut entries = std::collections::BTreeMap::new();
        let mut ports = std::collections::BTreeMap::new();
        let mut sets = BTreeSet::new();
        for item in &items {
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
        let intact = self.intact(&items, &sets);
        if let Some(k) = sets.first() {
            self.alt = k.alt;
        }
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
        let by_set = NftablesFirewall::by_set(
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
            false,
        );
        let shown: Vec<String> = by_set
            .iter()
            .map(|(k, items)| format!("{} {items:?}", k.name()))
            .collect();
        assert_eq!(
            shown,
            vec![
                "net6_64 [(2001:db8::, None)]",
                "host6 [(2001:db8::1, Some(1728000000))]",
                "net4_30 [(192.0.2.0, Some(1000)), (198.51.100.0, None)]",
                "host4 [(192.0.2.1, Some(5000))]",
            ]
        );
        for name in [
            "host4",
            "host6",
            "net4_24",
            "net6_48",
            "host4_b",
            "net6_48_b",
        ] {
            assert_eq!(SetKey::parse(name).map(SetKey::name).as_deref(), Some(name));
        }
        for bad in [
            "net4_32",
            "net4_0",
            "net6_128",
            "net5_8",
            "net4_024",
            "other",
            "host4_c",
            "net4_b",
            "host4_b_b",
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
        let (s, sets) = fw.table_script(&[("10.0.0.0/8".parse().expect("net"), None)]);
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
        let (s, _) = NftablesFirewall::new("fb".into()).table_script(&[]);
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

    /// A set made for a few prefixes refuses more than its size, with a
    /// clear error and nothing applied; the full sync that follows makes it
    /// big enough.
    #[tokio::test]
    async fn a_full_set_refuses_more_and_a_sync_resizes_it() {
        if !fleetban_tests::privileges::require_netns("nftables set size") {
            return;
        }
        let ns = crate::firewall::suite::Namespace::new("fbnftsz");
        let mut fw = NftablesFirewall::new("fleetban".into())
            .with_wrapper(ns.wrapper())
            .with_netns(ns.path());
        let prefix = |i: u32| {
            IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 12)).into(), 20).expect("net")
        };
        let first = vec![(prefix(0), Some(600_000))];
        fw.sync(&first, &[]).await.expect("sync");
        fw.apply(&Changes {
            add: vec![(prefix(1), Some(600_000))],
            ..Changes::default()
        })
        .await
        .expect("one more");
        let many: Vec<Entry> = (2..1_200).map(|i| (prefix(i), Some(600_000))).collect();
        let err = fw
            .apply(&Changes {
                add: many.clone(),
                ..Changes::default()
            })
            .await
            .expect_err("over the set's size");
        assert!(err.to_string().contains("the set is full"), "{err}");
        assert_eq!(fw.list().await.expect("list").len(), 2);
        let all: Vec<Entry> = first
            .into_iter()
            .chain([(prefix(1), Some(600_000))])
            .chain(many)
            .collect();
        fw.sync(&all, &[]).await.expect("sync resizes");
        assert_eq!(fw.list().await.expect("list").len(), 1_200);
        fw.flush().await.expect("flush");
    }

    /// The shared firewall suite against the real kernel, inside a network
    /// namespace of its own, with a foreign table beside fleetban's.
    #[tokio::test]
    async fn passes_the_firewall_suite_in_a_namespace() {
        if !fleetban_tests::privileges::require_netns("nftables firewall suite") {
            return;
        }
        let ns = crate::firewall::suite::Namespace::new("fbnft");
        let mut fw = NftablesFirewall::new("fleetban".into())
            .with_wrapper(ns.wrapper())
            .with_netns(ns.path());
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
        // A batch the kernel refuses (removing an element it does not hold)
        // is named in the error and applies nothing, not even its additions.
        let err = fw
            .apply(&Changes {
                add: vec![("192.0.2.77/32".parse().expect("net"), Some(60_000))],
                remove: vec!["203.0.113.200/32".parse().expect("net")],
                ..Changes::default()
            })
            .await
            .expect_err("absent element");
        assert!(
            err.to_string()
                .contains("refused to delete 1 elements in set host4"),
            "{err}"
        );
        let held = fw.list().await.expect("list");
        assert!(
            !held.contains(&"192.0.2.77/32".parse().expect("net")),
            "{held:?}"
        );
        assert!(
            held.contains(&"192.0.2.9/32".parse().expect("net")),
            "{held:?}"
        );
        // A full sync over the intact table fills the other generation of
        // sets and points the rules at it; the old sets are gone.
        let before = ns.sh("nft list ruleset");
        fw.sync(
            &[("203.0.113.8/32".parse().expect("net"), Some(60_000))],
            &[],
        )
        .await
        .expect("sync again");
        let after = ns.sh("nft list ruleset");
        let (old, new) = if before.contains("set host4_b") {
            ("host4_b", "host4 ")
        } else {
            ("host4 ", "host4_b")
        };
        assert!(after.contains(&format!("set {new}")), "{after}");
        assert!(!after.contains(&format!("set {old}")), "{after}");
        assert!(!after.contains("net4_24"), "{after}");
        assert_eq!(
            fw.list().await.expect("list"),
            vec!["203.0.113.8/32".parse::<IpNet>().expect("net")]
        );
        assert!(fw.read().await.expect("read").intact);
        // A rule deleted by hand makes the table not intact.
        assert!(fw.read().await.expect("read").intact);
        ns.sh("nft flush chain inet fleetban input");
        assert!(!fw.read().await.expect("read").intact);
        fw.flush().await.expect("flush");
        assert!(!ns.sh("nft list ruleset").contains("fleetban"));
    }
}
