//! The block list an agent wants enforced: its own local bans and the fleet's
//! decisions, folded into one entry per target, and the difference between
//! that and what the firewall holds. Pure: time is an input (Unix ms).

use std::collections::{BTreeMap, HashMap, HashSet};

use fleetban_proto::{BlockEntry, PortScope};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ranges;

/// Expiry in Unix milliseconds; `None`: no expiry.
pub type Expiry = Option<i64>;

/// Target → expiry, as enforced or to enforce.
pub type Enforced = BTreeMap<IpNet, Expiry>;

/// One port of one protocol banned for one target: a firewall element of
/// a port-scoped ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub target: IpNet,
    /// IP protocol number: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub port: u16,
}

impl PortKey {
    /// `tcp` or `udp` (nftables, ipset and people all read these).
    pub fn proto_name(&self) -> &'static str {
        if self.proto == 17 {
            "udp"
        } else {
            "tcp"
        }
    }
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.target, self.proto_name(), self.port)
    }
}

/// Port element → expiry, as enforced or to enforce.
pub type PortsEnforced = BTreeMap<PortKey, Expiry>;

/// Two expiries closer than this are the same (the kernel counts in ms, the
/// agent's ticks are coarser).
const EXPIRY_SLACK_MS: i64 = 1_000;

/// A ban this agent made itself: by a jail, or by hand (`fleetban-agent ban`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalBan {
    pub target: IpNet,
    /// Unix ms; `None`: until unbanned.
    pub expires_ms: Expiry,
    /// `local` (a jail) or `manual`.
    pub origin: String,
    pub jail: String,
    pub reason: String,
    /// The ports banned (all traffic when empty).
    #[serde(default, skip_serializing_if = "PortScope::is_all")]
    pub ports: PortScope,
}

/// A fleet decision as kept by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetBan {
    pub id: u64,
    pub target: IpNet,
    pub expires_ms: Expiry,
    #[serde(default, skip_serializing_if = "PortScope::is_all")]
    pub ports: PortScope,
}

/// Everything the block list holds, for saving and for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub fleet_version: u64,
    pub local: Vec<LocalBan>,
    pub fleet: Vec<FleetBan>,
}

#[derive(Debug)]
pub struct BlockList {
    local: HashMap<IpNet, LocalBan>,
    fleet: HashMap<u64, (IpNet, Expiry)>,
    /// Fleet decision ids by target.
    fleet_by_target: HashMap<IpNet, Vec<u64>>,
    fleet_version: u64,
    /// Host targets changed since [`BlockList::take_touched`].
    touched: HashSet<IpNet>,
    /// A prefix changed, or everything did: only a full recomputation tells.
    all_touched: bool,
    /// Port-scoped bans, kept apart so address-wide ones keep their fast
    /// path: this agent's, by target and scope; the fleet's, by id.
    local_ports: HashMap<(IpNet, PortScope), LocalBan>,
    fleet_ports: HashMap<u64, (IpNet, PortScope, Expiry)>,
    /// A port-scoped ban changed since [`BlockList::take_ports_touched`].
    ports_touched: bool,
}

impl Default for BlockList {
    fn default() -> Self {
        BlockList {
            local_ports: HashMap::new(),
            fleet_ports: HashMap::new(),
            ports_touched: true,
            local: HashMap::new(),
            fleet: HashMap::new(),
            fleet_by_target: HashMap::new(),
            fleet_version: 0,
            touched: HashSet::new(),
            all_touched: true,
        }
    }
}

/// What changed since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These host addresses only.
    Hosts(Vec<IpNet>),
    /// Prefixes, or everything.
    All,
}

fn is_host(t: &IpNet) -> bool {
    t.prefix_len() == t.max_prefix_len()
}

/// Changes to one kind of firewall element, with remaining times in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta<K> {
    /// Elements to add, each with its remaining time (`None`: no expiry).
    pub add: Vec<(K, Option<i64>)>,
    pub remove: Vec<K>,
}

impl<K> Default for Delta<K> {
    fn default() -> Self {
        Delta {
            add: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl<K> Delta<K> {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Changes to make in the firewall, with remaining times in ms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Targets to add, each with its remaining time (`None`: no expiry).
    pub add: Vec<(IpNet, Option<i64>)>,
    pub remove: Vec<IpNet>,
    /// Port-scoped elements.
    pub ports: Delta<PortKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.ports.is_empty()
    }

    /// Address-wide changes only.
    pub fn nets(d: Delta<IpNet>) -> Self {
        Changes {
            add: d.add,
            remove: d.remove,
            ports: Delta::default(),
        }
    }
}

impl BlockList {
    fn touch(&mut self, target: IpNet) {
        if is_host(&target) {
            self.touched.insert(target);
        } else {
            self.all_touched = true;
        }
    }

    /// Makes the next [`BlockList::take_touched`] say everything changed.
    pub fn clear_touched_to_all(&mut self) {
        self.all_touched = true;
    }

    /// What changed since the last call.
    pub fn take_touched(&mut self) -> Touched {
        if std::mem::take(&mut self.all_touched) {
            self.touched.clear();
            return Touched::All;
        }
        Touched::Hosts(self.touched.drain().collect())
    }

    fn fleet_insert(&mut self, id: u64, target: IpNet, until: Expiry) {
        if let Some((old, _)) = self.fleet.insert(id, (target, until)) {
            self.fleet_unindex(id, old);
        }
        self.fleet_by_target.entry(target).or_default().push(id);
        self.touch(target);
    }

    fn fleet_unindex(&mut self, id: u64, target: IpNet) {
        if let Some(ids) = self.fleet_by_target.get_mut(&target) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.fleet_by_target.remove(&target);
            }
        }
        self.touch(target);
    }

    /// A ban by one of this agent's jails or by hand. A ban of a target
    /// already banned keeps the later expiry.
    pub fn add_local(&mut self, ban: LocalBan) {
        if !ban.ports.is_all() {
            self.ports_touched = true;
            let key = (ban.target, ban.ports.clone());
            match self.local_ports.get_mut(&key) {
                Some(old) if later(old.expires_ms, ban.expires_ms) != ban.expires_ms => {}
                Some(old) => *old = ban,
                None => {
                    self.local_ports.insert(key, ban);
                }
            }
            return;
        }
        let target = ban.target;
        match self.local.get_mut(&ban.target) {
            Some(old) => {
                if later(old.expires_ms, ban.expires_ms) == ban.expires_ms {
                    *old = ban;
                }
            }
            None => {
                self.local.insert(ban.target, ban);
            }
        }
        self.touch(target);
    }

    /// Lifts this agent's own ban of `target`; true when there was one.
    pub fn remove_local(&mut self, target: &IpNet) -> bool {
        let removed = self.local.remove(target).is_some();
        if removed {
            self.touch(*target);
        }
        let before = self.local_ports.len();
        self.local_ports.retain(|(t, _), _| t != target);
        if self.local_ports.len() != before {
            self.ports_touched = true;
            return true;
        }
        removed
    }

    /// Whether a port-scoped ban changed since the last call.
    pub fn take_ports_touched(&mut self) -> bool {
        std::mem::take(&mut self.ports_touched)
    }

    /// Makes the next [`BlockList::take_ports_touched`] say yes.
    pub fn touch_ports(&mut self) {
        self.ports_touched = true;
    }

    /// Fleet decisions on exactly `target`.
    pub fn fleet_ids(&self, target: &IpNet) -> Vec<u64> {
        let mut ids = self
            .fleet_by_target
            .get(target)
            .cloned()
            .unwrap_or_default();
        ids.extend(
            self.fleet_ports
                .iter()
                .filter(|(_, (t, _, _))| t == target)
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        ids
    }

    /// Forgets everything, local and fleet (the fleet's part comes back with
    /// the next snapshot).
    pub fn clear(&mut self) {
        self.local.clear();
        self.fleet.clear();
        self.fleet_by_target.clear();
        self.local_ports.clear();
        self.fleet_ports.clear();
        self.all_touched = true;
        self.ports_touched = true;
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
            && self.fleet.is_empty()
            && self.local_ports.is_empty()
            && self.fleet_ports.is_empty()
    }

    /// A fleet entry into the address-wide or the port-scoped part.
    fn fleet_entry(&mut self, e: &BlockEntry) {
        if e.ports.is_all() {
            self.fleet_insert(e.id, e.target, expiry(e));
        } else {
            if let Some((old, _)) = self.fleet.remove(&e.id) {
                self.fleet_unindex(e.id, old);
            }
            self.fleet_ports
                .insert(e.id, (e.target, e.ports.clone(), expiry(e)));
            self.ports_touched = true;
        }
    }

    fn fleet_remove(&mut self, id: u64) {
        if let Some((target, _)) = self.fleet.remove(&id) {
            self.fleet_unindex(id, target);
        }
        if self.fleet_ports.remove(&id).is_some() {
            self.ports_touched = true;
        }
    }

    /// Replaces the fleet's part with a snapshot.
    pub fn replace_fleet(&mut self, version: u64, entries: &[BlockEntry]) {
        self.fleet.clear();
        self.fleet_by_target.clear();
        self.fleet_ports.clear();
        for e in entries {
            self.fleet_entry(e);
        }
        self.fleet_version = version;
        self.all_touched = true;
        self.ports_touched = true;
    }

    /// Applies a delta. Returns false (and changes nothing) for a delta older
    /// than the current version.
    pub fn apply_delta(&mut self, version: u64, added: &[BlockEntry], removed: &[u64]) -> bool {
        if version < self.fleet_version {
            return false;
        }
        for e in added {
            if self.fleet_ports.remove(&e.id).is_some() {
                self.ports_touched = true;
            }
            self.fleet_entry(e);
        }
        for id in removed {
            self.fleet_remove(*id);
        }
        self.fleet_version = version;
        true
    }

    pub fn fleet_version(&self) -> u64 {
        self.fleet_version
    }

    /// Forgets entries that expired; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let live = |u: &Expiry| u.is_none_or(|u| u > now_ms);
        let gone_local: Vec<IpNet> = self
            .local
            .values()
            .filter(|b| !live(&b.expires_ms))
            .map(|b| b.target)
            .collect();
        let gone_fleet: Vec<(u64, IpNet)> = self
            .fleet
            .iter()
            .filter(|(_, (_, u))| !live(u))
            .map(|(id, (t, _))| (*id, *t))
            .collect();
        for t in &gone_local {
            self.local.remove(t);
            self.touch(*t);
        }
        for (id, t) in &gone_fleet {
            self.fleet.remove(id);
            self.fleet_unindex(*id, *t);
        }
        let ports_before = self.local_ports.len() + self.fleet_ports.len();
        self.local_ports.retain(|_, b| live(&b.expires_ms));
        self.fleet_ports.retain(|_, (_, _, u)| live(u));
        let gone_ports = ports_before - self.local_ports.len() - self.fleet_ports.len();
        if gone_ports > 0 {
            self.ports_touched = true;
        }
        gone_local.len() + gone_fleet.len() + gone_ports
    }

    /// The port elements to enforce: every (target, protocol, port) of the
    /// live port-scoped bans, with its latest expiry. An element whose
    /// target is also banned address-wide is left out when that ban lasts
    /// as long (it drops the traffic anyway).
    pub fn desired_ports(&self, now_ms: i64, nets: &Enforced) -> PortsEnforced {
        let live = self
            .local_ports
            .values()
            .map(|b| (b.target, &b.ports, b.expires_ms))
            .chain(self.fleet_ports.values().map(|(t, p, u)| (*t, p, *u)))
            .filter(|(_, _, u)| u.is_none_or(|u| u > now_ms));
        let mut out = PortsEnforced::new();
        for (target, scope, until) in live {
            if nets
                .get(&target)
                .is_some_and(|wide| later(*wide, until) == *wide)
            {
                continue;
            }
            for (proto, port) in scope.elements() {
                out.entry(PortKey {
                    target,
                    proto,
                    port,
                })
                .and_modify(|e| *e = later(*e, until))
                .or_insert(until);
            }
        }
        out
    }

    /// The prefixes to enforce, folded into disjoint ones
    /// ([`ranges::flatten`]).
    pub fn prefixes(&self, now_ms: i64) -> Vec<(IpNet, Expiry)> {
        let live = self
            .local
            .values()
            .map(|b| (b.target, b.expires_ms))
            .chain(self.fleet.values().copied())
            .filter(|(t, u)| !is_host(t) && u.is_none_or(|u| u > now_ms));
        ranges::flatten(live)
    }

    /// Whether host `target` is to be enforced and until when (`None`: not
    /// at all), given the enforced prefixes `nets`: the latest expiry of its
    /// bans, unless a prefix lasting as long covers it.
    pub fn host_wanted(
        &self,
        target: &IpNet,
        now_ms: i64,
        nets: &[(IpNet, Expiry)],
    ) -> Option<Expiry> {
        let local = self.local.get(target).map(|b| b.expires_ms);
        let fleet = self
            .fleet_by_target
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|id| self.fleet.get(id).map(|(_, u)| *u));
        let mut want: Option<Expiry> = None;
        for u in local.into_iter().chain(fleet) {
            if u.is_none_or(|u| u > now_ms) {
                want = Some(want.map_or(u, |w| later(w, u)));
            }
        }
        want.filter(|u| !ranges::covered(nets, target, *u))
    }

    /// What the kernel should hold: one entry per host address with its
    /// latest expiry, and the prefixes folded into disjoint ones
    /// ([`ranges::flatten`]); a host inside a prefix that lasts as long is
    /// left out. Expired entries are left out.
    pub fn desired(&self, now_ms: i64) -> Enforced {
        self.desired_with(now_ms, self.prefixes(now_ms))
    }

    /// [`BlockList::desired`] with the prefixes already computed.
    pub fn desired_with(&self, now_ms: i64, nets: Vec<(IpNet, Expiry)>) -> Enforced {
        let live = self
            .local
            .values()
            .map(|b| (b.target, b.expires_ms))
            .chain(self.fleet.values().copied())
            .filter(|(t, u)| is_host(t) && u.is_none_or(|u| u > now_ms));
        let mut hosts: HashMap<IpNet, Expiry> = HashMap::new();
        for (target, until) in live {
            hosts
                .entry(target)
                .and_modify(|e| *e = later(*e, until))
                .or_insert(until);
        }
        let mut out: Enforced = hosts
            .into_iter()
            .filter(|(h, u)| !ranges::covered(&nets, h, *u))
            .collect();
        out.extend(nets);
        out
    }

    /// Everything held, for saving or showing.
    pub fn save(&self) -> Saved {
        let mut local: Vec<LocalBan> = self
            .local
            .values()
            .chain(self.local_ports.values())
            .cloned()
            .collect();
        local.sort_by(|a, b| (a.target, &a.ports).cmp(&(b.target, &b.ports)));
        let mut fleet: Vec<FleetBan> = self
            .fleet
            .iter()
            .map(|(id, (target, expires_ms))| FleetBan {
                id: *id,
                target: *target,
                expires_ms: *expires_ms,
                ports: PortScope::all(),
            })
            .chain(
                self.fleet_ports
                    .iter()
                    .map(|(id, (target, ports, expires_ms))| FleetBan {
                        id: *id,
                        target: *target,
                        expires_ms: *expires_ms,
                        ports: ports.clone(),
                    }),
            )
            .collect();
        fleet.sort_by_key(|f| f.id);
        Saved {
            fleet_version: self.fleet_version,
            local,
            fleet,
        }
    }

    /// The block list as saved, less what expired by `now_ms`.
    pub fn restore(saved: Saved, now_ms: i64) -> Self {
        let mut b = BlockList::default();
        for l in saved.local {
            b.add_local(l);
        }
        for f in saved.fleet {
            if f.ports.is_all() {
                b.fleet_insert(f.id, f.target, f.expires_ms);
            } else {
                b.fleet_ports
                    .insert(f.id, (f.target, f.ports, f.expires_ms));
            }
        }
        b.fleet_version = saved.fleet_version;
        b.expire(now_ms);
        b.touched.clear();
        b.all_touched = true;
        b.ports_touched = true;
        b
    }
}

fn expiry(e: &BlockEntry) -> Expiry {
    e.expires_at.map(|t| t.timestamp_millis())
}

fn later(a: Expiry, b: Expiry) -> Expiry {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// What to change so the firewall, holding `applied`, holds `desired`.
/// Entries of `applied` that already expired are gone from the kernel (its
/// timeouts remove them), so they are not removed again.
pub fn diff<K: Ord + Copy>(
    applied: &BTreeMap<K, Expiry>,
    desired: &BTreeMap<K, Expiry>,
    now_ms: i64,
) -> Delta<K> {
    let mut changes = Delta::default();
    let remaining = |u: Expiry| u.map(|u| u - now_ms);
    for (target, &want) in desired {
        match applied.get(target) {
            Some(&have) if same(have, want) && have.is_none_or(|h| h > now_ms) => {}
            Some(&have) => {
                if have.is_none_or(|h| h > now_ms) {
                    changes.remove.push(*target);
                }
                changes.add.push((*target, remaining(want)));
            }
            None => changes.add.push((*target, remaining(want))),
        }
    }
    for (target, &have) in applied {
        if !desired.contains_key(target) && have.is_none_or(|h| h > now_ms + EXPIRY_SLACK_MS) {
            changes.remove.push(*target);
        }
    }
    changes
}

fn same(a: Expiry, b: Expiry) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() < EXPIRY_SLACK_MS,
        _ => false,
    }
}

/// Brings `applied` (what the firewall holds) up to date with what changed
/// in `list` since the last call, and returns the changes to make. When
/// only host addresses changed, only they are looked at, so one ban costs
/// the same with a million entries held; a changed prefix recomputes
/// everything (and refreshes `nets`, the enforced prefixes).
pub fn update(
    list: &mut BlockList,
    applied: &mut Enforced,
    nets: &mut Vec<(IpNet, Expiry)>,
    now_ms: i64,
) -> Changes {
    match list.take_touched() {
        Touched::All => {
            *nets = list.prefixes(now_ms);
            let desired = list.desired_with(now_ms, nets.clone());
            let changes = diff(applied, &desired, now_ms);
            *applied = desired;
            list.touch_ports();
            Changes::nets(changes)
        }
        Touched::Hosts(mut targets) => {
            targets.sort_unstable();
            let mut changes = Changes::default();
            let no_ports = list.local_ports.is_empty() && list.fleet_ports.is_empty();
            if !targets.is_empty() && !no_ports {
                // An address-wide ban may hide or reveal port elements.
                list.touch_ports();
            }
            for t in targets {
                let want = list.host_wanted(&t, now_ms, nets);
                let have = applied.get(&t).copied();
                let one =
                    |e: Option<Expiry>| -> Enforced { e.map(|e| (t, e)).into_iter().collect() };
                let c = diff(&one(have), &one(want), now_ms);
                changes.add.extend(c.add);
                changes.remove.extend(c.remove);
                match want {
                    Some(e) => applied.insert(t, e),
                    None => applied.remove(&t),
                };
            }
            changes
        }
    }
}

/// Brings `applied` (the port elements the firewall holds) up to date
/// with the port-scoped bans of `list`, given the address-wide entries
/// enforced (`nets`), and returns the changes to make. Port-scoped bans
/// are few (one element per port and address), so a change recomputes
/// them all.
pub fn update_ports(
    list: &mut BlockList,
    applied: &mut PortsEnforced,
    nets: &Enforced,
    now_ms: i64,
) -> Delta<PortKey> {
    if !list.take_ports_touched() {
        return Delta::default();
    }
    let desired = list.desired_ports(now_ms, nets);
    let changes = diff(applied, &desired, now_ms);
    *applied = desired;
    changes
}

/// How far what the kernel holds is from what it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift<K = IpNet> {
    /// Desired entries the kernel lacks (deleted by hand, set flushed).
    pub missing: usize,
    /// Entries in fleetban's sets that should not be there.
    pub extra: usize,
    /// Entries whose kernel timeout differs from the ban's remaining time.
    pub timeout: usize,
    /// What repairs it.
    pub repair: Delta<K>,
}

impl<K> Default for Drift<K> {
    fn default() -> Self {
        Drift {
            missing: 0,
            extra: 0,
            timeout: 0,
            repair: Delta::default(),
        }
    }
}

impl<K> Drift<K> {
    pub fn is_empty(&self) -> bool {
        self.repair.is_empty()
    }
}

/// A kernel timeout within this of the expected one is right (the kernel
/// reports whole seconds; reading takes time).
const DRIFT_SLACK_MS: i64 = 3_000;

/// Compares `kernel` (target → remaining ms as read back; `None`: no
/// timeout) with `desired`. Timeouts are capped at `max_timeout_ms` when
/// set, so a longer ban is fine while its kernel timeout is above half the
/// cap, and refreshed below it. Entries about to expire are left alone.
pub fn drift<K: Ord + Copy>(
    kernel: &BTreeMap<K, Option<i64>>,
    desired: &BTreeMap<K, Expiry>,
    now_ms: i64,
    max_timeout_ms: i64,
) -> Drift<K> {
    let mut d = Drift::default();
    for (target, &want) in desired {
        let Some(left) = want.map(|w| w - now_ms) else {
            match kernel.get(target) {
                Some(None) => {}
                Some(Some(_)) => {
                    d.timeout += 1;
                    d.repair.remove.push(*target);
                    d.repair.add.push((*target, None));
                }
                None => {
                    d.missing += 1;
                    d.repair.add.push((*target, None));
                }
            }
            continue;
        };
        if left <= DRIFT_SLACK_MS {
            continue;
        }
        match kernel.get(target) {
            None => {
                d.missing += 1;
                d.repair.add.push((*target, Some(left)));
            }
            Some(&have) => {
                let fine = match have {
                    None => false,
                    Some(have) if left >= max_timeout_ms => have >= max_timeout_ms / 2,
                    Some(have) => (have - left).abs() <= DRIFT_SLACK_MS,
                };
                if !fine {
                    d.timeout += 1;
                    d.repair.remove.push(*target);
                    d.repair.add.push((*target, Some(left)));
                }
            }
        }
    }
    for (target, &have) in kernel {
        if !desired.contains_key(target) && have.is_none_or(|h| h > DRIFT_SLACK_MS) {
            d.extra += 1;
            d.repair.remove.push(*target);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn net(s: &str) -> IpNet {
        fleetban_proto::parse_target(s).expect("target")
    }

    fn entry(id: u64, target: &str, until: Option<i64>) -> BlockEntry {
        BlockEntry {
            id,
            target: net(target),
            origin: "fleet".into(),
            reason: String::new(),
            jail: String::new(),
            expires_at: until.map(|u| chrono::Utc.timestamp_millis_opt(u).single().expect("time")),
            ports: PortScope::all(),
        }
    }

    fn scope(text: &str) -> PortScope {
        PortScope::from_text(text).expect("scope")
    }

    fn pk(target: &str, proto: u8, port: u16) -> PortKey {
        PortKey {
            target: net(target),
            proto,
            port,
        }
    }

    #[test]
    fn port_scoped_bans_are_kept_apart_and_expand_to_port_elements() {
        let mut b = BlockList::default();
        let mut sshd = local("192.0.2.1", Some(5_000));
        sshd.ports = scope("tcp/22");
        b.add_local(sshd.clone());
        let mut web = local("192.0.2.1", Some(9_000));
        web.ports = scope("tcp/80,443");
        b.add_local(web);
        b.replace_fleet(
            2,
            &[BlockEntry {
                ports: scope("all/53"),
                ..entry(7, "198.51.100.0/24", None)
            }],
        );
        // None of it is address-wide.
        assert!(b.desired(0).is_empty());
        let p = b.desired_ports(0, &Enforced::new());
        assert_eq!(
            p.keys().copied().collect::<Vec<_>>(),
            vec![
                pk("192.0.2.1", 6, 22),
                pk("192.0.2.1", 6, 80),
                pk("192.0.2.1", 6, 443),
                pk("198.51.100.0/24", 6, 53),
                pk("198.51.100.0/24", 17, 53),
            ]
        );
        assert_eq!(p[&pk("192.0.2.1", 6, 22)], Some(5_000));
        assert_eq!(b.fleet_ids(&net("198.51.100.0/24")), vec![7]);
        // An address-wide ban lasting as long makes the port elements moot.
        let wide: Enforced = [(net("192.0.2.1"), Some(9_000))].into_iter().collect();
        assert_eq!(b.desired_ports(0, &wide).len(), 2);

        // Saved and restored with their scopes.
        let r = BlockList::restore(b.save(), 0);
        assert_eq!(r.desired_ports(0, &Enforced::new()), p);
        let json = serde_json::to_string(&b.save()).expect("json");
        assert!(json.contains("\"protocol\":\"tcp\""), "{json}");

        // Expiry, revocation and unban each reach the port elements.
        let mut applied = PortsEnforced::new();
        let first = update_ports(&mut b, &mut applied, &Enforced::new(), 0);
        assert_eq!(first.add.len(), 5);
        assert!(update_ports(&mut b, &mut applied, &Enforced::new(), 0).is_empty());
        assert_eq!(b.expire(6_000), 1);
        // The kernel's own timeout removes the expired element.
        let c = update_ports(&mut b, &mut applied, &Enforced::new(), 6_000);
        assert!(c.is_empty() && !applied.contains_key(&pk("192.0.2.1", 6, 22)));
        assert!(b.apply_delta(3, &[], &[7]));
        let c = update_ports(&mut b, &mut applied, &Enforced::new(), 6_000);
        assert_eq!(c.remove.len(), 2);
        assert!(b.remove_local(&net("192.0.2.1")));
        let c = update_ports(&mut b, &mut applied, &Enforced::new(), 6_000);
        assert_eq!(c.remove.len(), 2);
        assert!(b.is_empty() && applied.is_empty());
    }

    #[test]
    fn local_and_fleet_fold_into_one_entry_per_target() {
        let mut b = BlockList::default();
        b.add_local(local("192.0.2.1", Some(5_000)));
        b.replace_fleet(
            3,
            &[
                entry(1, "192.0.2.1", Some(9_000)),
                entry(2, "2001:db8::1", None),
            ],
        );
        let d = b.desired(0);
        assert_eq!(d.get(&net("192.0.2.1")), Some(&Some(9_000)));
        assert_eq!(d.get(&net("2001:db8::1")), Some(&None));
        assert_eq!(d.len(), 2);
        // Revoking the fleet ban leaves the local one.
        assert!(b.apply_delta(4, &[], &[1]));
        assert_eq!(b.desired(0).get(&net("192.0.2.1")), Some(&Some(5_000)));
        assert!(!b.apply_delta(2, &[entry(7, "192.0.2.7", None)], &[]));
        assert_eq!(b.fleet_version(), 4);
        // Expired entries are not desired, and expire() forgets them.
        assert_eq!(b.desired(5_000).len(), 1);
        b.expire(5_000);
        assert!(b.local.is_empty());
    }

    fn local(target: &str, until: Expiry) -> LocalBan {
        LocalBan {
            target: net(target),
            expires_ms: until,
            origin: "manual".into(),
            jail: String::new(),
            reason: "test".into(),
            ports: PortScope::all(),
        }
    }

    #[test]
    fn local_bans_keep_the_later_expiry_and_can_be_lifted() {
        let mut b = BlockList::default();
        b.add_local(local("192.0.2.1", Some(5_000)));
        b.add_local(local("192.0.2.1", Some(3_000)));
        assert_eq!(b.desired(0).get(&net("192.0.2.1")), Some(&Some(5_000)));
        b.add_local(local("192.0.2.1", None));
        assert_eq!(b.desired(0).get(&net("192.0.2.1")), Some(&None));
        assert!(b.remove_local(&net("192.0.2.1")));
        assert!(!b.remove_local(&net("192.0.2.1")));
        assert!(b.is_empty());
    }

    #[test]
    fn saved_lists_restore_without_what_expired() {
        let mut b = BlockList::default();
        b.add_local(local("192.0.2.1", Some(5_000)));
        b.add_local(local("192.0.2.2", Some(50_000)));
        b.replace_fleet(9, &[entry(1, "2001:db8::/48", None)]);
        let saved = b.save();
        let json = serde_json::to_string(&saved).expect("json");
        let back: Saved = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, saved);
        let r = BlockList::restore(back, 10_000);
        assert_eq!(r.fleet_version(), 9);
        let d: Vec<String> = r.desired(10_000).keys().map(ToString::to_string).collect();
        assert_eq!(d, vec!["192.0.2.2/32", "2001:db8::/48"]);
    }

    #[test]
    fn drift_finds_missing_extra_and_wrong_timeouts() {
        let now = 1_000_000;
        let desired: Enforced = [
            (net("192.0.2.1"), Some(now + 60_000)),
            (net("192.0.2.2"), Some(now + 60_000)),
            (net("192.0.2.3"), None),
            (net("192.0.2.4"), Some(now + 100 * 86_400_000)),
            (net("192.0.2.5"), Some(now + 1_000)),
        ]
        .into_iter()
        .collect();
        let max = 20 * 86_400_000;
        let kernel: BTreeMap<IpNet, Option<i64>> = [
            (net("192.0.2.1"), Some(59_000)),
            (net("192.0.2.2"), Some(5_000)),
            (net("192.0.2.4"), Some(max - 3_600_000)),
            (net("198.51.100.1"), None),
        ]
        .into_iter()
        .collect();
        let d = drift(&kernel, &desired, now, max);
        assert_eq!((d.missing, d.extra, d.timeout), (1, 1, 1));
        assert_eq!(
            d.repair.add,
            vec![(net("192.0.2.2"), Some(60_000)), (net("192.0.2.3"), None)]
        );
        assert_eq!(d.repair.remove, vec![net("192.0.2.2"), net("198.51.100.1")]);
        // A capped ban whose kernel timeout ran below half the cap is renewed.
        let low: BTreeMap<IpNet, Option<i64>> =
            [(net("192.0.2.4"), Some(max / 3))].into_iter().collect();
        let only4: Enforced = [(net("192.0.2.4"), Some(now + 100 * 86_400_000))]
            .into_iter()
            .collect();
        assert_eq!(drift(&low, &only4, now, max).timeout, 1);
        let d = drift(&kernel, &Enforced::new(), now, max);
        assert_eq!(d.extra, 4);
    }

    #[test]
    fn covered_targets_are_left_out() {
        let mut b = BlockList::default();
        b.replace_fleet(
            1,
            &[
                entry(1, "192.0.2.0/24", None),
                entry(2, "192.0.2.9", None),
                entry(3, "192.0.3.1", None),
                entry(4, "::/0", None),
                entry(5, "2001:db8::1", None),
            ],
        );
        let d: Vec<String> = b.desired(0).keys().map(ToString::to_string).collect();
        assert_eq!(d, vec!["192.0.2.0/24", "192.0.3.1/32", "::/0"]);
        // A host outliving the prefix around it stays.
        b.add_local(local("192.0.2.77", None));
        b.replace_fleet(2, &[entry(1, "192.0.2.0/24", Some(9_000))]);
        let d: Vec<String> = b.desired(0).keys().map(ToString::to_string).collect();
        assert_eq!(d, vec!["192.0.2.0/24", "192.0.2.77/32"]);
    }

    #[test]
    fn diff_adds_removes_and_refreshes() {
        let applied: Enforced = [
            (net("192.0.2.1"), Some(10_000)),
            (net("192.0.2.2"), Some(10_000)),
            (net("192.0.2.3"), Some(500)),
        ]
        .into_iter()
        .collect();
        let desired: Enforced = [
            (net("192.0.2.1"), Some(10_400)),
            (net("192.0.2.2"), Some(20_000)),
            (net("192.0.2.4"), None),
        ]
        .into_iter()
        .collect();
        let c = diff(&applied, &desired, 1_000);
        assert_eq!(
            c.add,
            vec![(net("192.0.2.2"), Some(19_000)), (net("192.0.2.4"), None)]
        );
        // .2 is refreshed (removed, then added); .3 already expired in the kernel.
        assert_eq!(c.remove, vec![net("192.0.2.2")]);
        assert!(diff(&desired, &desired, 1_000).is_empty());
    }

    /// One step of a random history of the block list.
    #[derive(Debug, Clone)]
    enum Op {
        Local(u8, u8, Option<i64>),
        Unban(u8, u8),
        Fleet(u64, u8, u8, Option<i64>),
        Revoke(u64),
        Expire(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let len = prop_oneof![Just(32u8), Just(32u8), Just(30u8), Just(28u8)];
        // Seconds apart: expiries closer than EXPIRY_SLACK_MS count as one.
        let until = proptest::option::of((1i64..100).prop_map(|s| s * 1_000));
        prop_oneof![
            (0u8..40, len.clone(), until.clone()).prop_map(|(a, l, u)| Op::Local(a, l, u)),
            (0u8..40, len.clone()).prop_map(|(a, l)| Op::Unban(a, l)),
            (0u64..8, 0u8..40, len, until).prop_map(|(i, a, l, u)| Op::Fleet(i, a, l, u)),
            (0u64..8).prop_map(Op::Revoke),
            (1i64..10).prop_map(|s| Op::Expire(s * 1_000)),
        ]
    }

    fn target(a: u8, len: u8) -> IpNet {
        IpNet::new(std::net::Ipv4Addr::new(192, 0, 2, a).into(), len)
            .expect("net")
            .trunc()
    }

    proptest::proptest! {
        /// Incremental updates end where a full recomputation does, and the
        /// changes they return take the kernel there too.
        #[test]
        fn incremental_updates_match_a_full_recomputation(ops in proptest::collection::vec(op(), 1..40)) {
            let mut list = BlockList::default();
            let mut applied = Enforced::new();
            let mut nets = Vec::new();
            let mut kernel = Enforced::new();
            let mut now = 0;
            let mut version = 0;
            for op in ops {
                match op {
                    Op::Local(a, l, u) => list.add_local(LocalBan {
                        target: target(a, l),
                        expires_ms: u.map(|u| now + u),
                        origin: "local".into(),
                        jail: String::new(),
                        reason: String::new(),
                        ports: PortScope::all(),
                    }),
                    Op::Unban(a, l) => {
                        list.remove_local(&target(a, l));
                    }
                    Op::Fleet(id, a, l, u) => {
                        version += 1;
                        let e = entry(id, &target(a, l).to_string(), u.map(|u| now + u));
                        list.apply_delta(version, &[e], &[]);
                    }
                    Op::Revoke(id) => {
                        version += 1;
                        list.apply_delta(version, &[], &[id]);
                    }
                    Op::Expire(d) => {
                        now += d;
                        list.expire(now);
                    }
                }
                let c = update(&mut list, &mut applied, &mut nets, now);
                kernel.retain(|_, u| u.is_none_or(|u| u > now));
                for r in &c.remove { kernel.remove(r); }
                for (t, rem) in &c.add { kernel.insert(*t, rem.map(|r| r + now)); }
                let full = list.desired(now);
                let live: Enforced = applied.iter().filter(|(_, u)| u.is_none_or(|u| u > now)).map(|(t, u)| (*t, *u)).collect();
                proptest::prop_assert_eq!(&live, &full);
                for (t, u) in &full {
                    proptest::prop_assert!(kernel.get(t).is_some_and(|k| same(*k, *u)), "{} missing", t);
                }
            }
        }

        /// Applying the diff to `applied` yields `desired` (live entries).
        #[test]
        fn diff_converges(a in proptest::collection::btree_map(0u8..20, proptest::option::of(0i64..20_000), 0..15),
                          d in proptest::collection::btree_map(0u8..20, proptest::option::of(2_001i64..20_000), 0..15)) {
            let key = |i: u8| net(&format!("192.0.2.{i}"));
            let now = 2_000;
            let applied: Enforced = a.into_iter().map(|(k, v)| (key(k), v)).collect();
            let desired: Enforced = d.into_iter().map(|(k, v)| (key(k), v)).collect();
            let c = diff(&applied, &desired, now);
            let mut kernel: Enforced = applied.into_iter().filter(|(_, u)| u.is_none_or(|u| u > now)).collect();
            for r in &c.remove { kernel.remove(r); }
            for (t, rem) in &c.add { kernel.insert(*t, rem.map(|r| r + now)); }
            for (t, u) in &desired {
                proptest::prop_assert!(kernel.get(t).is_some_and(|k| same(*k, *u)));
            }
            // Anything else left in the kernel is about to expire there.
            for (t, u) in &kernel {
                proptest::prop_assert!(desired.contains_key(t) || u.is_some_and(|u| u <= now + EXPIRY_SLACK_MS));
            }
        }
    }
}
