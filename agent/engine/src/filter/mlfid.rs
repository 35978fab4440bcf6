//! Multi-line failures: lines sharing an id (`<F-MLFID>`, e.g. a connection)
//! are merged into one failure, as fail2ban does: a success (`mlfgained`)
//! or a no-failure line (`nofail`) holds the failure back, a disconnect
//! (`mlfforget`) ends the id's record, pending lines wait for an address.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::groups::Groups;

/// What is known about one failure being assembled.
#[derive(Debug, Clone, Default)]
pub struct FailData {
    pub groups: Groups,
    /// Lines that make up the failure.
    pub matches: usize,
    /// Lines held back while the failure was not (yet) one.
    pub nofail_matches: usize,
    /// Distinct users seen, sorted.
    pub users: Vec<String>,
    pub pending: bool,
    /// The address, when the failure id is something else (`<F-ID>`).
    pub ip: Option<String>,
}

impl FailData {
    pub fn truthy(&self, k: &str) -> bool {
        self.groups.truthy(k)
    }

    fn update_users(&mut self) -> &[String] {
        if let Some(u) = self.groups.get("user").filter(|u| !u.is_empty()) {
            add_user(&mut self.users, u);
        }
        &self.users
    }

    /// The user, or all users when several tried within one connection.
    pub fn all_users(&self) -> Vec<String> {
        self.users.clone()
    }
}

/// Adds `user` to the sorted, distinct `users`.
fn add_user(users: &mut Vec<String>, user: &str) {
    if let Err(at) = users.binary_search_by(|u| u.as_str().cmp(user)) {
        users.insert(at, user.to_owned());
    }
}

/// Where the merged failure lives.
#[derive(Debug)]
pub enum Merged {
    /// In the cache under the id merged; later lines see later changes.
    Cached,
    Owned(FailData),
}

/// Recent multi-line failures by id (at most 100, each for 5 minutes).
#[derive(Debug, Default)]
pub struct MlfidCache {
    /// Id → (when set, insertion number, data).
    entries: HashMap<Arc<str>, (i64, u64, FailData), foldhash::fast::RandomState>,
    /// Ids in insertion order. Entries removed meanwhile stay here until
    /// they reach the front (their insertion number no longer matches), so
    /// removing never scans the queue.
    order: VecDeque<(u64, Arc<str>)>,
    next: u64,
    /// When entries were last checked for age (once a second at most).
    expired_at: i64,
}

const MAX_ENTRIES: usize = 100;
const MAX_AGE_S: i64 = 300;

impl MlfidCache {
    pub fn get_mut(&mut self, id: &str) -> Option<&mut FailData> {
        self.entries.get_mut(id).map(|(_, _, d)| d)
    }

    fn set(&mut self, id: &str, data: FailData, now: i64) {
        self.expire(now);
        let seq = self.next;
        self.next += 1;
        if let Some(e) = self.entries.get_mut(id) {
            *e = (now, e.1, data);
        } else {
            let key: Arc<str> = Arc::from(id);
            self.entries.insert(Arc::clone(&key), (now, seq, data));
            self.order.push_back((seq, key));
        }
        while self.entries.len() > MAX_ENTRIES {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&*old).is_some_and(|e| e.1 == seq) {
                self.entries.remove(&*old);
            }
        }
        // Keep the queue of stale ids from growing past a few times the cap.
        if self.order.len() > 4 * MAX_ENTRIES {
            let entries = &self.entries;
            self.order
                .retain(|(seq, id)| entries.get(&**id).is_some_and(|e| e.1 == *seq));
        }
    }

    fn remove(&mut self, id: &str) -> Option<FailData> {
        self.entries.remove(id).map(|(_, _, d)| d)
    }

    fn expire(&mut self, now: i64) {
        if now == self.expired_at {
            return;
        }
        self.expired_at = now;
        self.entries.retain(|_, (t, _, _)| now - *t <= MAX_AGE_S);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Merges a new line's failure `fail` for `id` with what is known.
    pub fn merge(&mut self, id: &str, mut fail: FailData, matched: usize, now: i64) -> Merged {
        const NOFAIL: u8 = 1;
        const FORGET: u8 = 2;
        const WAS_NOFAIL: u8 = 4;
        const GAINED: u8 = 8;
        let mut flags = 0u8;
        if fail.truthy("mlfgained") {
            flags |= GAINED | NOFAIL;
            if !fail.truthy("nofail") {
                let g = fail.groups.get("mlfgained").cloned().unwrap_or_default();
                fail.groups.insert("nofail", g);
            }
        } else if fail.truthy("nofail") {
            flags |= NOFAIL;
        }
        if fail
            .groups
            .remove("mlfforget")
            .is_some_and(|v| !v.is_empty())
        {
            flags |= FORGET;
        }
        self.expire(now);
        let users_many;
        let target = if let Some((_, _, known)) = self.entries.get_mut(id) {
            if let Some(u) = fail.groups.get("user").filter(|u| !u.is_empty()) {
                add_user(&mut known.users, u);
            }
            users_many = known.users.len() > 1;
            if known.groups.remove("nofail").is_some_and(|v| !v.is_empty()) {
                flags |= WAS_NOFAIL;
            }
            if known
                .groups
                .remove("mlfgained")
                .is_some_and(|v| !v.is_empty())
            {
                flags |= WAS_NOFAIL;
            }
            if flags & GAINED != 0 {
                known.pending = false;
            }
            if flags & WAS_NOFAIL == 0 && !known.pending {
                known.matches = 0;
            }
            known.groups.extend(fail.groups);
            known.matches += fail.matches;
            known.nofail_matches += fail.nofail_matches;
            if fail.ip.is_some() {
                known.ip = fail.ip;
            }
            if flags & FORGET != 0 {
                Merged::Owned(self.remove(id).unwrap_or_default())
            } else {
                Merged::Cached
            }
        } else if flags & FORGET == 0 {
            users_many = fail.update_users().len() > 1;
            self.set(id, fail, now);
            Merged::Cached
        } else {
            users_many = false;
            Merged::Owned(fail)
        };
        let mut merged = target;
        let data = match &mut merged {
            Merged::Cached => match self.get_mut(id) {
                Some(d) => d,
                None => return Merged::Owned(FailData::default()),
            },
            Merged::Owned(d) => d,
        };
        if std::mem::take(&mut data.pending) || users_many {
            data.groups.remove("nofail");
            data.groups.remove("mlfgained");
            flags &= !(GAINED | NOFAIL);
        }
        if flags & NOFAIL == 0 {
            let mut m = std::mem::take(&mut data.nofail_matches) + data.matches;
            if flags & GAINED == 0 {
                m += matched;
            }
            data.matches = m;
        } else if flags & (NOFAIL | FORGET) == NOFAIL {
            data.nofail_matches += matched;
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(user: &str, forget: bool) -> FailData {
        let mut f = FailData::default();
        f.groups.insert("user", user.to_owned());
        if forget {
            f.groups.insert("mlfforget", "bye".to_owned());
        }
        f
    }

    #[test]
    fn bounded_oldest_out_and_forgotten_ids_leave() {
        let mut c = MlfidCache::default();
        for i in 0..1_000 {
            c.merge(&format!("id{i}"), fail("u", false), 1, 0);
            if i % 3 == 0 {
                c.merge(&format!("id{i}"), fail("u", true), 1, 0);
            }
        }
        // The last id was forgotten after it made room for itself.
        assert_eq!(c.len(), MAX_ENTRIES - 1);
        assert!(c.order.len() <= 4 * MAX_ENTRIES + 1);
        assert!(c.get_mut("id999").is_none());
        assert!(c.get_mut("id0").is_none());
        assert!(c.get_mut("id998").is_some() && c.get_mut("id996").is_none());
        // Entries older than five minutes are gone.
        c.merge("late", fail("u", false), 1, 1_000);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn users_of_one_connection_accumulate() {
        let mut c = MlfidCache::default();
        c.merge("c1", fail("alice", false), 1, 0);
        c.merge("c1", fail("bob", false), 1, 0);
        let d = c.get_mut("c1").expect("cached");
        assert_eq!(d.all_users(), vec!["alice".to_owned(), "bob".to_owned()]);
        // As in fail2ban: lines already reported are not counted again.
        assert_eq!(d.matches, 1);
    }
}
