//! The block list an agent wants enforced: its own local bans and the fleet's
//! decisions, folded into one entry per target, and the difference between
//! that and what the firewall holds. Pure: time is an input (Unix ms).

use std::collections::{BTreeMap, HashMap};

use fleetban_proto::BlockEntry;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ranges;

/// Expiry in Unix milliseconds; `None`: no expiry.
pub type Expiry = Option<i64>;

/// Target → expiry, as enforced or to enforce.
pub type Enforced = BTreeMap<IpNet, Expiry>;

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
}

/// A fleet decision as kept by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetBan {
    pub id: u64,
    pub target: IpNet,
    pub expires_ms: Expiry,
}

/// Everything the block list holds, for saving and for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub fleet_version: u64,
    pub local: Vec<LocalBan>,
    pub fleet: Vec<FleetBan>,
}

#[derive(Debug, Default)]
pub struct BlockList {
    local: HashMap<IpNet, LocalBan>,
    fleet: HashMap<u64, (IpNet, Expiry)>,
    fleet_version: u64,
}

/// Changes to make in the firewall, with remaining times in ms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Targets to add, each with its remaining time (`None`: no expiry).
    pub add: Vec<(IpNet, Option<i64>)>,
    pub remove: Vec<IpNet>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

impl BlockList {
    /// A ban by one of this agent's jails or by hand. A ban of a target
    /// already banned keeps the later expiry.
    pub fn add_local(&mut self, ban: LocalBan) {
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
    }

    /// Lifts this agent's own ban of `target`; true when there was one.
    pub fn remove_local(&mut self, target: &IpNet) -> bool {
        self.local.remove(target).is_some()
    }

    /// Fleet decisions on exactly `target`.
    pub fn fleet_ids(&self, target: &IpNet) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .fleet
            .iter()
            .filter(|(_, (t, _))| t == target)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Forgets everything, local and fleet (the fleet's part comes back with
    /// the next snapshot).
    pub fn clear(&mut self) {
        self.local.clear();
        self.fleet.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.fleet.is_empty()
    }

    /// Replaces the fleet's part with a snapshot.
    pub fn replace_fleet(&mut self, version: u64, entries: &[BlockEntry]) {
        self.fleet = entries
            .iter()
            .map(|e| (e.id, (e.target, expiry(e))))
            .collect();
        self.fleet_version = version;
    }

    /// Applies a delta. Returns false (and changes nothing) for a delta older
    /// than the current version.
    pub fn apply_delta(&mut self, version: u64, added: &[BlockEntry], removed: &[u64]) -> bool {
        if version < self.fleet_version {
            return false;
        }
        for e in added {
            self.fleet.insert(e.id, (e.target, expiry(e)));
        }
        for id in removed {
            self.fleet.remove(id);
        }
        self.fleet_version = version;
        true
    }

    pub fn fleet_version(&self) -> u64 {
        self.fleet_version
    }

    /// Forgets entries that expired; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let before = self.local.len() + self.fleet.len();
        self.local
            .retain(|_, b| b.expires_ms.is_none_or(|u| u > now_ms));
        self.fleet
            .retain(|_, (_, until)| until.is_none_or(|u| u > now_ms));
        before - self.local.len() - self.fleet.len()
    }

    /// What the kernel should hold: one entry per host address with its
    /// latest expiry, and the prefixes folded into disjoint ones
    /// ([`ranges::flatten`]); a host inside a prefix that lasts as long is
    /// left out. Expired entries are left out.
    pub fn desired(&self, now_ms: i64) -> Enforced {
        let live = self
            .local
            .values()
            .map(|b| (b.target, b.expires_ms))
            .chain(self.fleet.values().copied())
            .filter(|(_, u)| u.is_none_or(|u| u > now_ms));
        let mut hosts: HashMap<IpNet, Expiry> = HashMap::new();
        let mut prefixes = Vec::new();
        for (target, until) in live {
            if target.prefix_len() == target.max_prefix_len() {
                hosts
                    .entry(target)
                    .and_modify(|e| *e = later(*e, until))
                    .or_insert(until);
            } else {
                prefixes.push((target, until));
            }
        }
        let nets = ranges::flatten(prefixes);
        let mut out: Enforced = hosts
            .into_iter()
            .filter(|(h, u)| !ranges::covered(&nets, h, *u))
            .collect();
        out.extend(nets);
        out
    }

    /// Everything held, for saving or showing.
    pub fn save(&self) -> Saved {
        let mut local: Vec<LocalBan> = self.local.values().cloned().collect();
        local.sort_by_key(|b| b.target);
        let mut fleet: Vec<FleetBan> = self
            .fleet
            .iter()
            .map(|(id, (target, expires_ms))| FleetBan {
                id: *id,
                target: *target,
                expires_ms: *expires_ms,
            })
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
        let mut b = BlockList {
            local: saved.local.into_iter().map(|l| (l.target, l)).collect(),
            fleet: saved
                .fleet
                .into_iter()
                .map(|f| (f.id, (f.target, f.expires_ms)))
                .collect(),
            fleet_version: saved.fleet_version,
        };
        b.expire(now_ms);
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
pub fn diff(applied: &Enforced, desired: &Enforced, now_ms: i64) -> Changes {
    let mut changes = Changes::default();
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

/// How far what the kernel holds is from what it should hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Desired entries the kernel lacks (deleted by hand, set flushed).
    pub missing: usize,
    /// Entries in fleetban's sets that should not be there.
    pub extra: usize,
    /// Entries whose kernel timeout differs from the ban's remaining time.
    pub timeout: usize,
    /// What repairs it.
    pub repair: Changes,
}

impl Drift {
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
pub fn drift(
    kernel: &BTreeMap<IpNet, Option<i64>>,
    desired: &Enforced,
    now_ms: i64,
    max_timeout_ms: i64,
) -> Drift {
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
        }
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

    proptest::proptest! {
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
