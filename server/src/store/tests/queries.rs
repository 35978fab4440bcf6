//! The fast paths of the REST API's slow queries (migration 0006) give the
//! same answers as counting and sorting the events themselves: stats from
//! the per-minute counts, and events inside a prefix in index order.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Duration;
use ipnet::IpNet;

use super::super::api::{Cursor, EventFilter, Order, Page, Series};
use super::*;

/// `n` events over about three hours, 37.25 s apart, from three agents (so
/// several shards of a minute), some a fraction of a second off the second.
fn spread(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            occurred_at: t(i as i64 * 37) + Duration::milliseconds((i as i64 % 4) * 250),
            ..event(["a", "b", "c"][i % 3], &format!("192.0.2.{}", i % 250))
        })
        .collect()
}

/// Events per bucket of `step` inside `[since, until)`, counted from the
/// events the test knows are stored.
fn expected(
    stored: &BTreeMap<Uuid, DateTime<Utc>>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    step: i64,
) -> Vec<(i64, u64)> {
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for at in stored.values().filter(|at| **at >= since && **at < until) {
        *counts
            .entry(at.timestamp().div_euclid(step) * step)
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

async fn check_series(s: &Arc<dyn Store>, stored: &BTreeMap<Uuid, DateTime<Utc>>, when: &str) {
    let ranges = [
        // Whole hours, minutes and days, with partial minutes at both ends.
        (t(-5), t(12_000), 3_600),
        (t(0), t(11_137), 60),
        (t(13), t(5_000), 600),
        (t(-100_000), t(100_000), 86_400),
        // Steps that are not whole minutes, and a range inside one minute.
        (t(0), t(12_000), 90),
        (t(100), t(400), 1),
        (t(5_551), t(5_580), 60),
    ];
    for (since, until, step) in ranges {
        let got: Vec<(i64, u64)> = s
            .series(Series::Events, since, until, step)
            .await
            .expect("series")
            .iter()
            .map(|b| (b.start.timestamp(), b.count))
            .collect();
        assert_eq!(
            got,
            expected(stored, since, until, step),
            "{when}: {since}..{until} step {step}"
        );
    }
}

pub(crate) async fn stats_count_stored_events_only(s: Arc<dyn Store>) {
    for a in ["a", "b", "c"] {
        s.upsert_agent(&agent(a), t(0)).await.expect("agent");
    }
    let events = spread(300);
    let mut stored = BTreeMap::new();
    assert_eq!(
        s.insert_events(&events[..200], t(0)).await.expect("insert"),
        200
    );
    stored.extend(events[..200].iter().map(|e| (e.id, e.occurred_at)));
    check_series(&s, &stored, "first batch").await;

    // A resent batch overlapping the first: only the new half is stored and
    // counted.
    assert_eq!(
        s.insert_events(&events[100..], t(1)).await.expect("insert"),
        100
    );
    stored.extend(events[100..].iter().map(|e| (e.id, e.occurred_at)));
    assert_eq!(
        s.insert_events(&events[..10], t(2)).await.expect("insert"),
        0
    );
    check_series(&s, &stored, "after duplicates").await;

    // Retention removes whole and partial minutes alike.
    let cutoff = t(5_000) + Duration::milliseconds(250);
    let before = stored.len();
    stored.retain(|_, at| *at >= cutoff);
    assert_eq!(
        s.prune_events(cutoff).await.expect("prune"),
        (before - stored.len()) as u64
    );
    check_series(&s, &stored, "after pruning").await;

    // Events that arrive late, into minutes already counted.
    let late: Vec<NewEvent> = spread(40).into_iter().skip(20).collect();
    s.insert_events(&late, t(3)).await.expect("insert");
    stored.extend(late.iter().map(|e| (e.id, e.occurred_at)));
    check_series(&s, &stored, "after late events").await;
    s.prune_events(t(1_000_000)).await.expect("prune all");
    check_series(&s, &BTreeMap::new(), "after pruning all").await;
}

/// Every page of events matching `f`, `limit` at a time, newest first.
async fn all_pages(s: &Arc<dyn Store>, f: &EventFilter, limit: u32) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = s
            .list_events(
                f,
                &Page {
                    after: after.clone(),
                    limit,
                    order: Order::Desc,
                },
            )
            .await
            .expect("page");
        assert!(page.len() <= limit as usize);
        out.extend(page.iter().map(|e| e.id));
        match page.last() {
            Some(last) if page.len() == limit as usize => {
                after = Some(Cursor {
                    at: last.occurred_at,
                    id: last.id.to_string(),
                })
            }
            _ => return out,
        }
    }
}

pub(crate) async fn prefix_events_newest_first(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("agent");
    let addrs = [
        "198.51.100.1",
        "198.51.100.77",
        "198.51.100.200",
        "198.51.100.255",
        "198.51.99.255",
        "198.51.101.0",
        "203.0.113.9",
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff::9",
        "2001:db8:1:3::1",
        "2001:db8:1:1:ffff:ffff:ffff:ffff",
    ];
    // Several events per second, so pages also break ties on the id.
    let events: Vec<NewEvent> = (0..220)
        .map(|i| NewEvent {
            occurred_at: t((i as i64 * 7) % 60),
            ..event("a", addrs[i % addrs.len()])
        })
        .collect();
    s.insert_events(&events, t(100)).await.expect("insert");

    for prefix in [
        "198.51.100.0/24",
        "198.51.100.0/25",
        "198.51.100.192/26",
        "198.51.100.0/16",
        "198.51.100.77/32",
        "2001:db8:1:2::/64",
        "2001:db8:1:2::/80",
        "2001:db8:1::/48",
    ] {
        let net: IpNet = prefix.parse().expect("prefix");
        let mut want: Vec<&NewEvent> = events.iter().filter(|e| net.contains(&e.ip)).collect();
        want.sort_by_key(|e| std::cmp::Reverse((e.occurred_at, e.id)));
        let want: Vec<Uuid> = want.iter().map(|e| e.id).collect();
        assert!(!want.is_empty(), "{prefix} has events");
        let f = EventFilter {
            ip: Some(net),
            ..Default::default()
        };
        for limit in [7, 100] {
            assert_eq!(all_pages(&s, &f, limit).await, want, "{prefix} by {limit}");
        }
    }
}

/// Writes the first five migrations of `db` to a directory, to build a
/// database as it was before migration 0006.
fn migrations_before_0006(db: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(db);
    for entry in std::fs::read_dir(&src).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < "0006" {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    dir
}

const OLD_EVENTS: i64 = 500;

/// Events of the database before the upgrade, written as SQL the way the
/// previous version stored them.
fn old_event_times() -> BTreeMap<Uuid, DateTime<Utc>> {
    (0..OLD_EVENTS)
        .map(|i| (Uuid::new_v4(), t(i * 41)))
        .collect()
}

#[tokio::test]
async fn the_upgrade_counts_events_already_stored_on_sqlite() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("fleetban.db").display());
    let old = migrations_before_0006("sqlite");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::from_str(&url)
                .expect("url")
                .create_if_missing(true),
        )
        .await
        .expect("connect");
    sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("migrate to 0005");
    sqlx::query("INSERT INTO agents (id, hostname, version, first_seen, last_seen) VALUES ('a', 'h', '0', 0, 0)")
        .execute(&pool)
        .await
        .expect("agent");
    let stored = old_event_times();
    for (id, at) in &stored {
        sqlx::query("INSERT INTO events (id, agent_id, jail, ip, occurred_at, received_at) VALUES (?1, 'a', 'sshd', '192.0.2.1', ?2, ?2)")
            .bind(id.to_string())
            .bind(at.timestamp_millis())
            .execute(&pool)
            .await
            .expect("event");
    }
    pool.close().await;

    let s = open(&url).await.expect("upgrade");
    check_series(&s, &stored, "after the upgrade").await;
}

#[tokio::test]
async fn the_upgrade_counts_events_already_stored_on_postgres() {
    let Some(url) = fleetban_tests::pg::fresh_database().await else {
        return;
    };
    let old = migrations_before_0006("postgres");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("migrate to 0005");
    for a in ["a", "b", "c"] {
        sqlx::query("INSERT INTO agents (id, hostname, version, first_seen, last_seen) VALUES ($1, 'h', '0', now(), now())")
            .bind(a)
            .execute(&pool)
            .await
            .expect("agent");
    }
    let stored = old_event_times();
    let ids: Vec<Uuid> = stored.keys().copied().collect();
    let times: Vec<DateTime<Utc>> = stored.values().copied().collect();
    sqlx::query(
        "INSERT INTO events (id, agent_id, jail, ip, occurred_at, received_at)
         SELECT id, (ARRAY['a','b','c'])[1 + (ord % 3)::int], 'sshd', '192.0.2.1', at, at
         FROM UNNEST($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS e(id, at, ord)",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&pool)
    .await
    .expect("events");
    pool.close().await;

    let s = open(&url).await.expect("upgrade");
    check_series(&s, &stored, "after the upgrade").await;
}

pub(crate) async fn active_bans_of_one_origin(s: Arc<dyn Store>) {
    use super::super::api::{DecisionFilter, DecisionStatus};
    let origins = [Origin::Fleet, Origin::Local, Origin::Manual];
    let mut ids = Vec::new();
    for i in 0..60i64 {
        let d = s
            .record_decision(
                &NewDecision {
                    origin: origins[i as usize % 3],
                    // Permanent, expiring after the check, or expired by then.
                    ..ban(
                        &format!("198.51.100.{i}"),
                        [None, Some(1_000), Some(50)][i as usize % 5 % 3],
                    )
                },
                t(i),
            )
            .await
            .expect("ban");
        ids.push(d.id);
    }
    for id in ids.iter().step_by(4) {
        s.revoke_decision(*id, "user:op", "mistake", t(70))
            .await
            .expect("revoke");
    }
    let now = t(100);
    let everything = s
        .list_decisions(
            &DecisionFilter::default(),
            now,
            &Page {
                after: None,
                limit: 1_000,
                order: Order::Desc,
            },
        )
        .await
        .expect("all");
    assert_eq!(everything.len(), 60);
    for origin in origins {
        for status in [
            DecisionStatus::Active,
            DecisionStatus::Expired,
            DecisionStatus::Revoked,
        ] {
            let want: Vec<i64> = everything
                .iter()
                .filter(|r| r.decision.origin == origin && r.status(now) == status)
                .map(|r| r.decision.id)
                .collect();
            assert!(!want.is_empty(), "{origin:?} {status:?}");
            let f = DecisionFilter {
                origin: Some(origin),
                status: Some(status),
                ..Default::default()
            };
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = s
                    .list_decisions(
                        &f,
                        now,
                        &Page {
                            after: after.clone(),
                            limit: 3,
                            order: Order::Desc,
                        },
                    )
                    .await
                    .expect("page");
                got.extend(page.iter().map(|r| r.decision.id));
                match page.last() {
                    Some(l) if page.len() == 3 => {
                        after = Some(Cursor {
                            at: l.decision.created_at,
                            id: l.decision.id.to_string(),
                        })
                    }
                    _ => break,
                }
            }
            assert_eq!(got, want, "{origin:?} {status:?}");
        }
    }
}
