//! Login throttling: after too many failed logins for one user name, or from
//! one source address, within a window, further attempts are refused for a
//! lockout period, right or wrong. Pure: time is passed in.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

/// Limits of one throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

/// Failure counts per key (a user name or an address). Bounded: beyond
/// `capacity` keys, stale ones are dropped, then the oldest windows.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    capacity: usize,
    entries: HashMap<String, Entry>,
}

impl Throttle {
    pub fn new(limits: Limits, capacity: usize) -> Self {
        Throttle {
            limits,
            capacity: capacity.max(1),
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` while `key` is locked out.
    pub fn check(&self, key: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt.
    pub fn failure(&mut self, key: &str, now: DateTime<Utc>) {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.prune(now);
        }
        let limits = self.limits;
        let e = self.entries.entry(key.to_owned()).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now - e.window_start >= limits.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= limits.max_failures {
            e.locked_until = Some(now + limits.lockout);
            e.window_start = now;
            e.failures = 0;
        }
    }

    /// A successful attempt clears the key's failures.
    pub fn success(&mut self, key: &str) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        let window = self.limits.window;
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now) || now - e.window_start < window
        });
        while self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| e.locked_until.is_none_or(|u| u <= now))
                .min_by_key(|(_, e)| e.window_start)
                .or_else(|| self.entries.iter().min_by_key(|(_, e)| e.window_start))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn limits() -> Limits {
        Limits {
            max_failures: 3,
            window: Duration::seconds(60),
            lockout: Duration::seconds(300),
        }
    }

    #[test]
    fn locks_after_max_failures_until_the_lockout_ends() {
        let mut th = Throttle::new(limits(), 100);
        th.failure("alice", t(0));
        th.failure("alice", t(1));
        assert_eq!(th.check("alice", t(2)), Ok(()));
        th.failure("alice", t(2));
        assert_eq!(th.check("alice", t(3)), Err(Duration::seconds(299)));
        assert_eq!(th.check("bob", t(3)), Ok(()));
        assert_eq!(th.check("alice", t(302)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut th = Throttle::new(limits(), 100);
        th.failure("a", t(0));
        th.failure("a", t(10));
        th.failure("a", t(70));
        assert_eq!(th.check("a", t(71)), Ok(()));
    }

    #[test]
    fn success_clears() {
        let mut th = Throttle::new(limits(), 100);
        th.failure("a", t(0));
        th.failure("a", t(1));
        th.success("a");
        th.failure("a", t(2));
        assert_eq!(th.check("a", t(3)), Ok(()));
    }

    #[test]
    fn memory_is_bounded_and_lockouts_survive_pruning() {
        let mut th = Throttle::new(limits(), 10);
        for _ in 0..3 {
            th.failure("victim", t(0));
        }
        for i in 0..1000 {
            th.failure(&format!("k{i}"), t(1));
        }
        assert!(th.len() <= 10, "{}", th.len());
        assert!(th.check("victim", t(2)).is_err());
    }
}
