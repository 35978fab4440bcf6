//! Jails: count failures per address in a sliding window (`findtime`) and ban
//! an address that reaches `maxretry` for `bantime`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use ipnet::IpNet;

/// What a jail is configured with. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSettings {
    pub name: String,
    pub maxretry: u32,
    pub findtime_ms: i64,
    pub bantime_ms: i64,
    /// Addresses and networks that are never banned.
    pub ignoreip: Vec<IpNet>,
}

/// A jail decided to ban `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub jail: String,
    pub ip: IpAddr,
    pub at_ms: i64,
    pub duration_ms: i64,
    /// Failures within the window that led to the ban.
    pub failures: u32,
}

/// The state of one jail. Memory is bounded by the addresses that failed
/// within the last `findtime` plus those banned now; [`Jail::expire`] drops
/// everything older.
#[derive(Debug)]
pub struct Jail {
    settings: JailSettings,
    failures: HashMap<IpAddr, VecDeque<i64>>,
    banned_until: HashMap<IpAddr, i64>,
}

impl Jail {
    pub fn new(settings: JailSettings) -> Self {
        Jail {
            settings,
            failures: HashMap::new(),
            banned_until: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &JailSettings {
        &self.settings
    }

    /// Runs on with new settings (a policy from the server): failures
    /// counted so far stay, and count against the new `maxretry` and
    /// `findtime` from the next failure on; bans in force keep their end.
    pub fn set_settings(&mut self, settings: JailSettings) {
        self.settings = settings;
    }

    /// Whether `ip` is in the jail's ignore list.
    pub fn ignores(&self, ip: IpAddr) -> bool {
        self.settings.ignoreip.iter().any(|n| n.contains(&ip))
    }

    /// Records a failure of `ip` at `at_ms`; returns a ban when the address
    /// reached `maxretry` failures within `findtime`.
    pub fn on_failure(&mut self, ip: IpAddr, at_ms: i64) -> Option<Ban> {
        if self.ignores(ip) {
            return None;
        }
        if self
            .banned_until
            .get(&ip)
            .is_some_and(|&until| until > at_ms)
        {
            return None;
        }
        let window_start = at_ms.saturating_sub(self.settings.findtime_ms);
        let times = self.failures.entry(ip).or_default();
        times.push_back(at_ms);
        while times.front().is_some_and(|&t| t <= window_start) {
            times.pop_front();
        }
        let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
        if count < self.settings.maxretry.max(1) {
            return None;
        }
        self.failures.remove(&ip);
        let until = at_ms.saturating_add(self.settings.bantime_ms);
        self.banned_until.insert(ip, until);
        Some(Ban {
            jail: self.settings.name.clone(),
            ip,
            at_ms,
            duration_ms: self.settings.bantime_ms,
            failures: count,
        })
    }

    /// Forgets failures older than `findtime` and bans that ended.
    pub fn expire(&mut self, now_ms: i64) {
        let window_start = now_ms.saturating_sub(self.settings.findtime_ms);
        self.failures.retain(|_, times| {
            while times.front().is_some_and(|&t| t <= window_start) {
                times.pop_front();
            }
            !times.is_empty()
        });
        self.banned_until.retain(|_, &mut until| until > now_ms);
    }

    /// Addresses with failures or bans currently tracked.
    pub fn tracked(&self) -> usize {
        self.failures.len() + self.banned_until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jail(maxretry: u32) -> Jail {
        Jail::new(JailSettings {
            name: "sshd".into(),
            maxretry,
            findtime_ms: 600_000,
            bantime_ms: 3_600_000,
            ignoreip: vec!["10.0.0.0/8".parse().unwrap()],
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_at_maxretry_within_findtime() {
        let mut j = jail(3);
        assert_eq!(j.on_failure(ip("192.0.2.1"), 0), None);
        assert_eq!(j.on_failure(ip("192.0.2.1"), 1_000), None);
        let ban = j.on_failure(ip("192.0.2.1"), 2_000).unwrap();
        assert_eq!(ban.failures, 3);
        assert_eq!(ban.duration_ms, 3_600_000);
        // Banned: more failures do not ban again until the ban ends.
        assert_eq!(j.on_failure(ip("192.0.2.1"), 3_000), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut j = jail(2);
        assert_eq!(j.on_failure(ip("192.0.2.1"), 0), None);
        assert_eq!(j.on_failure(ip("192.0.2.1"), 600_000), None);
        assert!(j.on_failure(ip("192.0.2.1"), 600_001).is_some());
    }

    #[test]
    fn ignoreip_is_never_banned() {
        let mut j = jail(1);
        assert_eq!(j.on_failure(ip("10.1.2.3"), 0), None);
        assert!(j.on_failure(ip("192.0.2.1"), 0).is_some());
    }

    #[test]
    fn expire_bounds_state() {
        let mut j = jail(5);
        for i in 0..1000u32 {
            j.on_failure(IpAddr::from(i.to_be_bytes()), i64::from(i));
        }
        assert_eq!(j.tracked(), 1000);
        j.expire(600_000 + 500);
        assert_eq!(j.tracked(), 499);
        j.expire(10_000_000);
        assert_eq!(j.tracked(), 0);
    }

    proptest! {
        /// A ban happens exactly when the window holds maxretry failures.
        #[test]
        fn ban_matches_a_model(gaps in proptest::collection::vec(0i64..400_000, 1..40), maxretry in 1u32..6) {
            let mut j = jail(maxretry);
            let mut t = 0i64;
            let mut window: Vec<i64> = Vec::new();
            let mut banned_until = i64::MIN;
            for g in gaps {
                t += g;
                let got = j.on_failure(ip("192.0.2.9"), t);
                let expected = if banned_until > t {
                    false
                } else {
                    window.retain(|&w| w > t - 600_000);
                    window.push(t);
                    if window.len() >= maxretry as usize {
                        window.clear();
                        banned_until = t + 3_600_000;
                        true
                    } else {
                        false
                    }
                };
                prop_assert_eq!(got.is_some(), expected);
            }
        }
    }
}
