//! The block list an agent wants enforced: its own local bans and the fleet's
//! decisions, folded into one entry per target, and the difference between
//! that and what the firewall holds. Pure: time is an input (Unix ms).

use std::collections::{BTreeMap, HashMap};

use fleetban_proto::BlockEntry;
use ipnet::IpNet;

/// Expiry in Unix milliseconds; `None`: no expiry.
pub type Expiry = Option<i64>;

/// Target → expiry, as enforced or to enforce.
pub type Enforced = BTreeMap<IpNet, Expiry>;

/// Two expiries closer than this are the same (the kernel counts in ms, the
/// agent's ticks are coarser).
const EXPIRY_SLACK_MS: i64 = 1_000;

#[derive(Debug, Default)]
pub struct BlockList {
    local: HashMap<IpNet, i64>,
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
    /// A ban by one of this agent's jails, until `until_ms`.
    pub fn add_local(&mut self, target: IpNet, until_ms: i64) {
        let e = self.local.entry(target).or_insert(until_ms);
        *e = (*e).max(until_ms);
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

    /// Forgets entries that expired.
    pub fn expire(&mut self, now_ms: i64) {
        self.local.retain(|_, &mut until| until > now_ms);
        self.fleet
            .retain(|_, (_, until)| until.is_none_or(|u| u > now_ms));
    }

    /// One entry per target, the longest expiry winning; expired entries and
    /// targets inside another enforced prefix are left out (an interval set
    /// holds no overlapping ranges).
    pub fn desired(&self, now_ms: i64) -> Enforced {
        let mut all: BTreeMap<IpNet, Expiry> = BTreeMap::new();
        let live = self
            .local
            .iter()
            .map(|(t, &u)| (*t, Some(u)))
            .chain(self.fleet.values().copied())
            .filter(|(_, u)| u.is_none_or(|u| u > now_ms));
        for (target, until) in live {
            all.entry(target)
                .and_modify(|e| *e = later(*e, until))
                .or_insert(until);
        }
        drop_covered(all)
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

/// Leaves out every target contained in an earlier, wider one. Sorted by
/// network address then prefix length, a containing prefix comes before all
/// it contains, so one sweep per address family suffices.
fn drop_covered(all: BTreeMap<IpNet, Expiry>) -> Enforced {
    let mut sorted: Vec<(IpNet, Expiry)> = all.into_iter().collect();
    sorted.sort_by_key(|(n, _)| (n.network(), n.prefix_len()));
    let mut out = Enforced::new();
    let mut cover: Option<IpNet> = None;
    for (net, until) in sorted {
        if cover.is_some_and(|c| c.contains(&net)) {
            continue;
        }
        cover = Some(net);
        out.insert(net, until);
    }
    out
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
        b.add_local(net("192.0.2.1"), 5_000);
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
