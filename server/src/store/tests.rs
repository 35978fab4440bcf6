//! One behaviour, two databases: every test here runs on SQLite and, when a
//! test Postgres is configured, on Postgres.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use fleetban_policy::{Facts, JailRule, NewDecision, Origin, SCOPE_FLEET};
use uuid::Uuid;

use super::*;

mod identity;
use identity::*;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0)
        .single()
        .expect("valid time")
}

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        hostname: format!("{id}.example"),
        version: "0.1.0".into(),
        jails: vec!["sshd".into()],
        group: "web".into(),
    }
}

fn ban(target: &str, expires: Option<i64>) -> NewDecision {
    NewDecision {
        target: fleetban_proto::parse_target(target).expect("target"),
        origin: Origin::Local,
        reason: "5 failures".into(),
        creator: "agent:a".into(),
        jail: "sshd".into(),
        scope: SCOPE_FLEET.into(),
        expires_at: expires.map(t),
    }
}

fn event(agent: &str, ip: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        agent_id: agent.into(),
        jail: "sshd".into(),
        ip: ip.parse().expect("ip"),
        user: Some("root".into()),
        occurred_at: t(0),
    }
}

pub(crate) async fn agents_are_recorded(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("upsert");
    s.upsert_agent(
        &AgentInfo {
            version: "0.2.0".into(),
            ..agent("a")
        },
        t(5),
    )
    .await
    .expect("upsert again");
    s.touch_agent("a", t(9), Some(7)).await.expect("touch");
    let all = s.agents().await.expect("agents");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].info.version, "0.2.0");
    assert_eq!(all[0].info.jails, vec!["sshd".to_owned()]);
    assert_eq!(all[0].first_seen, t(0));
    assert_eq!(all[0].last_seen, t(9));
    assert_eq!(all[0].applied_version, 7);
    assert!(matches!(
        s.touch_agent("nobody", t(9), None).await,
        Err(StoreError::UnknownAgent(_))
    ));
}

pub(crate) async fn events_are_stored_once(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("upsert");
    let batch = vec![
        event("a", "192.0.2.1"),
        event("a", "2001:db8::1"),
        NewEvent {
            user: None,
            ..event("a", "192.0.2.2")
        },
    ];
    assert_eq!(s.insert_events(&batch, t(1)).await.expect("insert"), 3);
    // The same batch again (a resend after a reconnect) adds nothing.
    assert_eq!(s.insert_events(&batch, t(2)).await.expect("resend"), 0);
    assert_eq!(s.insert_events(&[], t(2)).await.expect("empty"), 0);
    assert_eq!(s.event_count().await.expect("count"), 3);
    let err = s.insert_events(&[event("ghost", "192.0.2.1")], t(3)).await;
    assert!(matches!(err, Err(StoreError::UnknownAgent(_))), "{err:?}");
    assert_eq!(s.event_count().await.expect("count"), 3);
}

pub(crate) async fn decisions_are_versioned_and_revoked(s: Arc<dyn Store>) {
    assert_eq!(s.block_list_version().await.expect("version"), 0);
    let d1 = s
        .record_decision(&ban("192.0.2.1", Some(600)), t(0))
        .await
        .expect("record");
    let d2 = s
        .record_decision(&ban("2001:db8::/64", None), t(1))
        .await
        .expect("record");
    assert_eq!((d1.version, d2.version), (1, 2));
    assert_eq!(d1.kind, DecisionKind::Ban);
    assert_eq!(d1.target.to_string(), "192.0.2.1/32");
    assert_eq!(d2.target.to_string(), "2001:db8::/64");
    assert_eq!(d1.expires_at, Some(t(600)));
    assert_eq!(d2.expires_at, None);
    assert_eq!(s.active_bans(t(2)).await.expect("active").len(), 2);

    let r = s
        .revoke_decision(d1.id, "user:admin", "false positive", t(3))
        .await
        .expect("revoke");
    assert_eq!(r.kind, DecisionKind::Revoke);
    assert_eq!(r.revokes, Some(d1.id));
    assert_eq!(r.target, d1.target);
    assert_eq!(r.version, 3);
    assert_eq!(s.block_list_version().await.expect("version"), 3);
    let active = s.active_bans(t(4)).await.expect("active");
    assert_eq!(active.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d2.id]);

    assert!(matches!(
        s.revoke_decision(d1.id, "u", "again", t(5)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.revoke_decision(r.id, "u", "a revocation", t(5)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.revoke_decision(9999, "u", "missing", t(5)).await,
        Err(StoreError::NotFound(_))
    ));
    // Failed revocations did not consume a version.
    assert_eq!(s.block_list_version().await.expect("version"), 3);

    // History is kept: everything since version 1, in order.
    let since = s.decisions_since(1).await.expect("since");
    assert_eq!(
        since.iter().map(|d| d.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(s.decisions_since(0).await.expect("since").len(), 3);
}

pub(crate) async fn expired_bans_are_not_active(s: Arc<dyn Store>) {
    let d = s
        .record_decision(&ban("192.0.2.9", Some(60)), t(0))
        .await
        .expect("record");
    let target = d.target;
    assert_eq!(
        s.active_bans_for(target, t(59)).await.expect("for").len(),
        1
    );
    assert!(s
        .active_bans_for(target, t(60))
        .await
        .expect("for")
        .is_empty());
    assert!(s.active_bans(t(61)).await.expect("active").is_empty());
    let other = fleetban_proto::parse_target("192.0.2.10").expect("target");
    assert!(s
        .active_bans_for(other, t(0))
        .await
        .expect("for")
        .is_empty());
    // Expired, yet still in the history.
    assert_eq!(s.decisions_since(0).await.expect("since").len(), 1);
}

pub(crate) async fn expiries_and_pruning(s: Arc<dyn Store>) {
    let a = s
        .record_decision(&ban("192.0.2.1", Some(60)), t(0))
        .await
        .expect("record");
    let b = s
        .record_decision(&ban("192.0.2.2", Some(120)), t(0))
        .await
        .expect("record");
    let c = s
        .record_decision(&ban("192.0.2.3", Some(90)), t(0))
        .await
        .expect("record");
    s.record_decision(&ban("192.0.2.4", None), t(0))
        .await
        .expect("record");
    s.revoke_decision(c.id, "u", "x", t(1))
        .await
        .expect("revoke");
    assert_eq!(
        s.expired_between(t(0), t(59)).await.expect("expired"),
        Vec::<i64>::new()
    );
    assert_eq!(
        s.expired_between(t(0), t(60)).await.expect("expired"),
        vec![a.id]
    );
    assert_eq!(
        s.expired_between(t(60), t(200)).await.expect("expired"),
        vec![b.id]
    );

    s.upsert_agent(&agent("a"), t(0)).await.expect("agent");
    let old = NewEvent {
        occurred_at: t(-1000),
        ..event("a", "192.0.2.1")
    };
    s.insert_events(&[old, event("a", "192.0.2.2")], t(0))
        .await
        .expect("events");
    assert_eq!(s.prune_events(t(-10)).await.expect("prune"), 1);
    assert_eq!(s.event_count().await.expect("count"), 1);
}

pub(crate) async fn facts_for_correlation(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("agent");
    s.upsert_agent(&agent("b"), t(0)).await.expect("agent");
    let at = |agent: &str, ip: &str, when: i64| NewEvent {
        occurred_at: t(when),
        ..event(agent, ip)
    };
    let batch = [
        at("a", "192.0.2.1", 0),
        at("a", "192.0.2.1", 10),
        at("b", "192.0.2.1", 20),
        at("b", "192.0.2.2", 20),
    ];
    s.insert_events(&batch, t(30)).await.expect("events");
    let ip: IpAddr = "192.0.2.1".parse().expect("ip");
    assert_eq!(s.failure_stats(ip, t(0)).await.expect("stats"), (2, 3));
    assert_eq!(s.failure_stats(ip, t(15)).await.expect("stats"), (1, 1));

    let prefix = fleetban_proto::parse_target("192.0.2.0/24").expect("prefix");
    s.record_decision(&ban("192.0.2.1", Some(600)), t(0))
        .await
        .expect("ban");
    s.record_decision(&ban("192.0.2.1", Some(600)), t(100))
        .await
        .expect("ban");
    s.record_decision(&ban("192.0.2.7", Some(600)), t(100))
        .await
        .expect("ban");
    s.record_decision(&ban("198.51.100.1", Some(600)), t(100))
        .await
        .expect("ban");
    assert_eq!(
        s.ban_count(fleetban_proto::parse_target("192.0.2.1").expect("t"))
            .await
            .expect("count"),
        2
    );
    assert_eq!(s.banned_in_prefix(prefix, t(0)).await.expect("prefix"), 2);
    assert_eq!(s.banned_in_prefix(prefix, t(50)).await.expect("prefix"), 2);
    let wide = s
        .record_decision(&ban("192.0.2.0/24", None), t(200))
        .await
        .expect("ban");
    let covering = s
        .active_bans_covering(
            fleetban_proto::parse_target("192.0.2.9").expect("t"),
            t(300),
        )
        .await
        .expect("covering");
    assert_eq!(
        covering.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![wide.id]
    );
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("fleetban.db").display());
    let store = open(&url).await.expect("open sqlite");
    (dir, store)
}

async fn postgres() -> Option<Arc<dyn Store>> {
    let url = fleetban_tests::pg::fresh_database().await?;
    Some(open(&url).await.expect("open postgres"))
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(store) = super::postgres().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
    };
}

pub(crate) async fn decide_records_under_facts(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("agent");
    s.upsert_agent(&agent("b"), t(0)).await.expect("agent");
    s.insert_events(&[event("a", "192.0.2.9"), event("b", "192.0.2.9")], t(1))
        .await
        .expect("events");
    let target = fleetban_proto::parse_target("192.0.2.9").expect("target");
    let q = FactsQuery {
        lock: "correlate:192.0.2.9/32".into(),
        target,
        failures: Some((target.addr(), t(-10))),
        history: true,
        prefix: Some((
            fleetban_proto::parse_target("192.0.2.0/24").expect("p"),
            t(-10),
        )),
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let decide = |f: &Facts| {
        seen.lock().expect("lock").push(f.clone());
        if f.active.is_empty() {
            vec![ban("192.0.2.9", Some(100))]
        } else {
            Vec::new()
        }
    };
    let first = s.decide(&q, t(2), &decide).await.expect("decide");
    assert_eq!(first.len(), 1);
    let second = s.decide(&q, t(3), &decide).await.expect("decide again");
    assert!(second.is_empty(), "the first ban covers it: {second:?}");
    let seen = seen.into_inner().expect("facts");
    assert_eq!((seen[0].hosts, seen[0].failures), (2, 2));
    assert_eq!(seen[0].previous_bans, 0);
    assert_eq!(seen[0].banned_in_prefix, 1, "the ban being decided counts");
    assert_eq!(seen[1].active.len(), 1);
    assert_eq!(seen[1].previous_bans, 1);
    assert_eq!(seen[1].banned_in_prefix, 2);
    assert_eq!(s.agents().await.expect("agents")[0].info.group, "web");
}

pub(crate) async fn feeds_sync_and_report(s: Arc<dyn Store>) {
    let feed_ban = |target: &str| NewDecision {
        creator: feed_creator("spam"),
        origin: Origin::Feed,
        ..ban(target, None)
    };
    let plan_a = |_: &[Decision]| FeedPlan {
        add: vec![feed_ban("192.0.2.1"), feed_ban("198.51.100.0/24")],
        revoke: Vec::new(),
    };
    let added = s.sync_feed("spam", t(0), &plan_a).await.expect("sync");
    assert_eq!(added.len(), 2);
    // Another feed's and others' bans are not the feed's.
    s.record_decision(&ban("192.0.2.1", None), t(0))
        .await
        .expect("ban");
    let seen = std::sync::Mutex::new(0);
    let revoke_first = |current: &[Decision]| {
        *seen.lock().expect("lock") = current.len();
        FeedPlan {
            add: Vec::new(),
            revoke: vec![current[0].id],
        }
    };
    let changed = s
        .sync_feed("spam", t(1), &revoke_first)
        .await
        .expect("sync");
    assert_eq!(*seen.lock().expect("lock"), 2);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].kind, DecisionKind::Revoke);
    assert_eq!(changed[0].origin, Origin::Feed);
    assert_eq!(changed[0].creator, "feed:spam");
    assert_eq!(s.active_bans(t(2)).await.expect("active").len(), 2);
    // A plan naming a decision that is not there fails as a whole.
    let bad = |_: &[Decision]| FeedPlan {
        add: vec![feed_ban("203.0.113.1")],
        revoke: vec![9_999],
    };
    assert!(matches!(
        s.sync_feed("spam", t(3), &bad).await,
        Err(StoreError::NotFound(_))
    ));
    if s.changes().await.expect("changes").is_some() {
        // Postgres: the failed import left nothing behind.
        assert_eq!(s.active_bans(t(4)).await.expect("active").len(), 2);
    }
    let status = FeedStatus {
        name: "spam".into(),
        last_attempt: t(5),
        last_success: Some(t(4)),
        entries: 2,
        invalid_lines: 1,
        last_error: String::new(),
    };
    s.put_feed_status(&status).await.expect("status");
    let failed = FeedStatus {
        last_attempt: t(6),
        last_error: "unreachable".into(),
        ..status.clone()
    };
    s.put_feed_status(&failed).await.expect("status");
    assert_eq!(s.feed_statuses().await.expect("statuses"), vec![failed]);
}

pub(crate) async fn policies_are_seeded_once_and_versioned(s: Arc<dyn Store>) {
    assert_eq!(s.fleet_rules().await.expect("rules"), None);
    assert_eq!(s.policy_version().await.expect("version"), 0);
    let rule = JailRule {
        group: "*".into(),
        jail: "sshd".into(),
        enabled: true,
        maxretry: Some(3),
        findtime: Some(chrono::Duration::minutes(10)),
        bantime: None,
    };
    assert!(s
        .seed_policies("[policy]\n", std::slice::from_ref(&rule), t(0))
        .await
        .expect("seed"));
    assert!(!s
        .seed_policies("[policy.threshold]\n", &[], t(1))
        .await
        .expect("seed again"));
    assert_eq!(
        s.fleet_rules().await.expect("rules").as_deref(),
        Some("[policy]\n")
    );
    assert_eq!(s.policy_version().await.expect("version"), 1);
    assert_eq!(s.jail_rules().await.expect("rules"), vec![rule.clone()]);
    let web = JailRule {
        group: "web".into(),
        enabled: false,
        maxretry: None,
        ..rule.clone()
    };
    assert_eq!(s.put_jail_rule(&web, "op", t(2)).await.expect("put"), 2);
    let again = JailRule {
        bantime: Some(chrono::Duration::hours(2)),
        ..web.clone()
    };
    assert_eq!(s.put_jail_rule(&again, "op", t(3)).await.expect("put"), 3);
    assert_eq!(
        s.jail_rules().await.expect("rules"),
        vec![rule.clone(), again.clone()]
    );
    assert_eq!(
        s.delete_jail_rule("web", "sshd", "op", t(4))
            .await
            .expect("delete"),
        4
    );
    assert!(matches!(
        s.delete_jail_rule("web", "sshd", "op", t(5)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.set_fleet_rules("[policy]\ngroup_scope = true\n", "op", t(6))
            .await
            .expect("set"),
        5
    );
    assert_eq!(s.policy_version().await.expect("version"), 5);
}

store_suite!(
    decide_records_under_facts,
    feeds_sync_and_report,
    policies_are_seeded_once_and_versioned,
    agents_are_recorded,
    events_are_stored_once,
    decisions_are_versioned_and_revoked,
    expired_bans_are_not_active,
    expiries_and_pruning,
    facts_for_correlation,
    one_certificate_authority,
    tokens_are_used_up_and_expire,
    revoked_agents_may_enroll_again,
);

#[tokio::test]
async fn bad_urls_are_refused_clearly() {
    let err = open("mysql://u:pw@h/db").await.err().expect("refused");
    assert_eq!(
        err.to_string(),
        "unsupported database URL \"mysql://u:***@h/db\": expected postgres://… or sqlite://…"
    );
    let err = open("postgres://u:pw@127.0.0.1:1/db")
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot open database postgres://u:***@127.0.0.1:1/db"),
        "{msg}"
    );
    assert!(!msg.contains("pw"), "{msg}");
}
