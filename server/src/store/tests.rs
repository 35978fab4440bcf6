//! One behaviour, two databases: every test here runs on SQLite and, when a
//! test Postgres is configured, on Postgres.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use fleetban_policy::{Facts, JailRule, NewDecision, Origin, SCOPE_FLEET};
use uuid::Uuid;

use super::*;

mod feeds;
mod identity;
use feeds::*;
use identity::*;
mod queries;
use queries::*;

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
        ports: String::new(),
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
    assert_eq!(all[0].firewall, None, "no firewall state before a report");
    assert!(matches!(
        s.touch_agent("nobody", t(9), None).await,
        Err(StoreError::UnknownAgent(_))
    ));
}

pub(crate) async fn agent_firewall_state_is_recorded(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("upsert");
    let state = FirewallState {
        enforced: 12,
        drift_total: 3,
        backend: "nftables".into(),
    };
    s.record_firewall("a", t(4), &state)
        .await
        .expect("record firewall");
    // A plain heartbeat or an applied version keeps the last report.
    s.touch_agent("a", t(6), Some(0)).await.expect("touch");
    let all = s.agents().await.expect("agents");
    assert_eq!(all[0].firewall.as_ref(), Some(&state));
    assert_eq!(all[0].last_seen, t(6));
    assert!(matches!(
        s.record_firewall("nobody", t(9), &state).await,
        Err(StoreError::UnknownAgent(_))
    ));
}

pub(crate) async fn agents_behind_say_since_when(s: Arc<dyn Store>) {
    s.upsert_agent(&agent("a"), t(0)).await.expect("upsert");
    assert_eq!(s.agents().await.expect("agents")[0].behind_since, None);
    let first = s
        .record_decision(&ban("192.0.2.1", None), t(10))
        .await
        .expect("first");
    s.record_decision(&ban("192.0.2.2", None), t(20))
        .await
        .expect("second");
    // Behind both: since the first was made.
    assert_eq!(
        s.agents().await.expect("agents")[0].behind_since,
        Some(t(10))
    );
    s.touch_agent("a", t(21), Some(first.version))
        .await
        .expect("applied the first");
    assert_eq!(
        s.agents().await.expect("agents")[0].behind_since,
        Some(t(20))
    );
    let now = s.block_list_version().await.expect("version");
    s.touch_agent("a", t(22), Some(now))
        .await
        .expect("applied all");
    assert_eq!(s.agents().await.expect("agents")[0].behind_since, None);
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

pub(crate) async fn users_sessions_and_tokens(s: Arc<dyn Store>) {
    use super::api::{ApiTokenRecord, Refresh, SessionRecord};
    let u = s
        .create_user("alice", "$argon2id$x", "admin", t(0))
        .await
        .expect("user");
    assert!(matches!(
        s.create_user("alice", "h", "viewer", t(1)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.user_by_name("alice").await.expect("get"), Some(u.clone()));
    assert_eq!(
        s.user_by_id(u.id).await.expect("get").map(|u| u.name),
        Some("alice".into())
    );
    assert_eq!(s.user_by_name("bob").await.expect("get"), None);
    s.set_password("alice", "$argon2id$y")
        .await
        .expect("passwd");
    assert!(matches!(
        s.set_password("bob", "h").await,
        Err(StoreError::NotFound(_))
    ));

    let session = SessionRecord {
        id: Uuid::new_v4(),
        user_id: u.id,
        created_at: t(0),
        expires_at: t(100),
        revoked_at: None,
    };
    s.create_session(&session, "r1").await.expect("session");
    assert_eq!(
        s.session(session.id).await.expect("get"),
        Some(session.clone())
    );
    // Rotation: r1 -> r2; r1 again is a replay and revokes the session.
    assert_eq!(
        s.rotate_refresh("r1", "r2", t(1)).await.expect("rotate"),
        Refresh::Rotated(session.clone())
    );
    assert!(matches!(
        s.rotate_refresh("r1", "r3", t(2)).await.expect("replay"),
        Refresh::Reused(_)
    ));
    assert!(s
        .session(session.id)
        .await
        .expect("get")
        .expect("some")
        .revoked_at
        .is_some());
    assert_eq!(
        s.rotate_refresh("r2", "r4", t(3)).await.expect("revoked"),
        Refresh::Unknown
    );
    assert_eq!(
        s.rotate_refresh("nope", "r5", t(3)).await.expect("unknown"),
        Refresh::Unknown
    );
    // An expired session does not rotate.
    let old = SessionRecord {
        id: Uuid::new_v4(),
        expires_at: t(10),
        ..session.clone()
    };
    s.create_session(&old, "o1").await.expect("session");
    assert_eq!(
        s.rotate_refresh("o1", "o2", t(10)).await.expect("expired"),
        Refresh::Unknown
    );
    // Disabling a user revokes their live sessions.
    let live = SessionRecord {
        id: Uuid::new_v4(),
        ..session.clone()
    };
    s.create_session(&live, "l1").await.expect("session");
    s.disable_user("alice", t(5)).await.expect("disable");
    assert_eq!(
        s.session(live.id)
            .await
            .expect("get")
            .expect("some")
            .revoked_at,
        Some(t(5))
    );
    assert!(matches!(
        s.disable_user("alice", t(6)).await,
        Err(StoreError::NotFound(_))
    ));

    let tok = ApiTokenRecord {
        id: Uuid::new_v4(),
        name: "soc".into(),
        scopes: vec!["decisions:read".into(), "events:read".into()],
        created_by: "user:alice".into(),
        created_at: t(0),
        expires_at: Some(t(50)),
        revoked_at: None,
        last_used_at: None,
    };
    s.create_api_token(&tok, "h1").await.expect("token");
    assert_eq!(
        s.api_token_by_hash("h1").await.expect("get"),
        Some(tok.clone())
    );
    assert_eq!(s.api_token_by_hash("h2").await.expect("get"), None);
    s.api_token_used(tok.id, t(3)).await.expect("used");
    s.revoke_api_token(tok.id, t(4)).await.expect("revoke");
    let listed = s.api_tokens().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].last_used_at, listed[0].revoked_at),
        (Some(t(3)), Some(t(4)))
    );
    assert!(matches!(
        s.revoke_api_token(tok.id, t(5)).await,
        Err(StoreError::NotFound(_))
    ));

    let b = s.create_bouncer("fw", "k1", t(0)).await.expect("bouncer");
    assert!(matches!(
        s.create_bouncer("fw", "k2", t(0)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.bouncer_by_key_hash("k1").await.expect("get"), Some(b));
    s.bouncer_pulled("fw", 7, t(2)).await.expect("pulled");
    let b = s.bouncers().await.expect("list").remove(0);
    assert_eq!((b.last_version, b.last_pull_at), (7, Some(t(2))));
    s.revoke_bouncer("fw", t(3)).await.expect("revoke");
    assert_eq!(s.bouncer_by_key_hash("k1").await.expect("get"), None);
    assert!(matches!(
        s.revoke_bouncer("fw", t(4)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn audit_log_and_secrets(s: Arc<dyn Store>) {
    use super::api::{AuditEntry, Order, Page};
    for i in 0..5 {
        s.append_audit(&AuditEntry {
            id: 0,
            at: t(i),
            actor: if i % 2 == 0 {
                "user:a".into()
            } else {
                "cli".into()
            },
            action: "decision.create".into(),
            target: i.to_string(),
            detail: "{}".into(),
            source: Some("192.0.2.9".into()),
        })
        .await
        .expect("append");
    }
    let page = |after, limit| Page {
        after,
        limit,
        order: Order::Desc,
    };
    let first = s.audit_log(None, None, &page(None, 3)).await.expect("page");
    assert_eq!(
        first.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["4", "3", "2"]
    );
    let last = first.last().expect("last");
    let cursor = super::api::Cursor {
        at: last.at,
        id: last.id.to_string(),
    };
    let rest = s
        .audit_log(None, None, &page(Some(cursor), 3))
        .await
        .expect("page");
    assert_eq!(
        rest.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["1", "0"]
    );
    let by_cli = s
        .audit_log(Some("cli"), None, &page(None, 10))
        .await
        .expect("filter");
    assert_eq!(by_cli.len(), 2);
    assert_eq!(
        s.audit_log(None, Some("user.create"), &page(None, 10))
            .await
            .expect("filter")
            .len(),
        0
    );

    assert_eq!(
        s.secret_or_init("k", "first", t(0)).await.expect("init"),
        "first"
    );
    assert_eq!(
        s.secret_or_init("k", "second", t(1)).await.expect("again"),
        "first"
    );
}

pub(crate) async fn decision_and_event_queries(s: Arc<dyn Store>) {
    use super::api::{
        Cursor, DecisionFilter, DecisionStatus, EventFilter, EventKey, Order, Page, Series,
    };
    s.upsert_agent(&agent("a"), t(0)).await.expect("agent");
    s.upsert_agent(&agent("b"), t(0)).await.expect("agent");
    let mut ids = Vec::new();
    for (i, (target, expires)) in [
        ("192.0.2.1", Some(100)),
        ("192.0.2.0/24", None),
        ("198.51.100.7", Some(5)),
        ("2001:db8::1", Some(100)),
        ("203.0.113.9", Some(100)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = ban(target, expires);
        if i == 4 {
            d.origin = Origin::Manual;
            d.creator = "user:alice".into();
            d.jail = String::new();
        }
        ids.push(s.record_decision(&d, t(i as i64)).await.expect("record").id);
    }
    s.revoke_decision(ids[4], "user:alice", "oops", t(6))
        .await
        .expect("revoke");
    let now = t(10);
    let all = |f: DecisionFilter| {
        let s = s.clone();
        async move {
            s.list_decisions(
                &f,
                now,
                &Page {
                    after: None,
                    limit: 100,
                    order: Order::Desc,
                },
            )
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.decision.target.to_string())
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all(DecisionFilter::default()).await.len(),
        5,
        "revocations are not listed"
    );
    // Overlap: the address and the /24 that contains it; the /24 and the address inside it.
    let net = |x: &str| Some(fleetban_proto::parse_target(x).expect("net"));
    assert_eq!(
        all(DecisionFilter {
            target: net("192.0.2.1"),
            ..Default::default()
        })
        .await,
        ["192.0.2.0/24", "192.0.2.1/32"]
    );
    assert_eq!(
        all(DecisionFilter {
            target: net("192.0.2.0/25"),
            ..Default::default()
        })
        .await,
        ["192.0.2.0/24", "192.0.2.1/32"]
    );
    assert_eq!(
        all(DecisionFilter {
            target: net("2001:db8::/32"),
            ..Default::default()
        })
        .await,
        ["2001:db8::1/128"]
    );
    assert_eq!(
        all(DecisionFilter {
            status: Some(DecisionStatus::Expired),
            ..Default::default()
        })
        .await,
        ["198.51.100.7/32"]
    );
    assert_eq!(
        all(DecisionFilter {
            status: Some(DecisionStatus::Revoked),
            ..Default::default()
        })
        .await,
        ["203.0.113.9/32"]
    );
    assert_eq!(
        all(DecisionFilter {
            status: Some(DecisionStatus::Active),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        all(DecisionFilter {
            origin: Some(Origin::Manual),
            ..Default::default()
        })
        .await,
        ["203.0.113.9/32"]
    );
    assert_eq!(
        all(DecisionFilter {
            agent: Some("a".into()),
            jail: Some("sshd".into()),
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        all(DecisionFilter {
            since: Some(t(1)),
            until: Some(t(3)),
            ..Default::default()
        })
        .await,
        ["198.51.100.7/32", "192.0.2.0/24"]
    );
    let row = s.decision(ids[4]).await.expect("get").expect("some");
    assert_eq!(row.status(now), DecisionStatus::Revoked);
    assert_eq!(
        row.revocation.as_ref().map(|r| r.reason.as_str()),
        Some("oops")
    );
    assert_eq!(s.decision(9999).await.expect("get"), None);

    // Pages in both orders cover everything once.
    for order in [Order::Desc, Order::Asc] {
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = s
                .list_decisions(
                    &DecisionFilter::default(),
                    now,
                    &Page {
                        after: after.clone(),
                        limit: 2,
                        order,
                    },
                )
                .await
                .expect("page");
            seen.extend(page.iter().map(|r| r.decision.id));
            match page.last() {
                Some(l) if page.len() == 2 => {
                    after = Some(Cursor {
                        at: l.decision.created_at,
                        id: l.decision.id.to_string(),
                    })
                }
                _ => break,
            }
        }
        let mut want = ids.clone();
        if order == Order::Desc {
            want.reverse();
        }
        assert_eq!(seen, want, "{order:?}");
    }

    let mut events = Vec::new();
    for (i, (a, ip, jail)) in [
        ("a", "192.0.2.1", "sshd"),
        ("a", "192.0.2.1", "nginx"),
        ("b", "192.0.2.1", "sshd"),
        ("b", "192.0.2.200", "sshd"),
        ("b", "2001:db8::5", "sshd"),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(NewEvent {
            jail: jail.into(),
            occurred_at: t(i as i64 * 10),
            ..event(a, ip)
        });
    }
    s.insert_events(&events, t(60)).await.expect("events");
    let page = Page {
        after: None,
        limit: 100,
        order: Order::Desc,
    };
    let list = |f: EventFilter| {
        let s = s.clone();
        let page = page.clone();
        async move { s.list_events(&f, &page).await.expect("events") }
    };
    assert_eq!(list(EventFilter::default()).await.len(), 5);
    assert_eq!(
        list(EventFilter {
            ip: net("192.0.2.1"),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        list(EventFilter {
            ip: net("192.0.2.0/24"),
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        list(EventFilter {
            agent: Some("b".into()),
            jail: Some("sshd".into()),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    let timed = list(EventFilter {
        since: Some(t(10)),
        until: Some(t(30)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        timed.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
        [t(20), t(10)]
    );
    let small = s
        .list_events(
            &EventFilter::default(),
            &Page {
                after: None,
                limit: 2,
                order: Order::Asc,
            },
        )
        .await
        .expect("page");
    let c = Cursor {
        at: small[1].occurred_at,
        id: small[1].id.to_string(),
    };
    let next = s
        .list_events(
            &EventFilter::default(),
            &Page {
                after: Some(c),
                limit: 10,
                order: Order::Asc,
            },
        )
        .await
        .expect("page");
    assert_eq!(next.len(), 3);
    assert_eq!(next[0].occurred_at, t(20));

    let groups = s
        .event_groups(&EventFilter::default(), EventKey::Ip, 10)
        .await
        .expect("groups");
    assert_eq!((groups[0].key.as_str(), groups[0].count), ("192.0.2.1", 3));
    assert_eq!((groups[0].first, groups[0].last), (t(0), t(20)));
    let by_agent = s
        .event_groups(
            &EventFilter {
                ip: net("192.0.2.0/24"),
                ..Default::default()
            },
            EventKey::Agent,
            10,
        )
        .await
        .expect("groups");
    assert_eq!(
        by_agent
            .iter()
            .map(|g| (g.key.as_str(), g.count))
            .collect::<Vec<_>>(),
        [("a", 2), ("b", 2)]
    );
    assert_eq!(
        s.event_groups(&EventFilter::default(), EventKey::Jail, 1)
            .await
            .expect("groups")
            .len(),
        1
    );

    let series = s
        .series(Series::Events, t(0), t(50), 20)
        .await
        .expect("series");
    let counts: Vec<u64> = series.iter().map(|b| b.count).collect();
    assert_eq!(counts.iter().sum::<u64>(), 5);
    assert!(series.windows(2).all(|w| w[0].start < w[1].start));
    assert_eq!(
        series
            .iter()
            .map(|b| b.start.timestamp() % 20)
            .collect::<Vec<_>>(),
        vec![0; series.len()]
    );
    let bans = s
        .series(Series::Decisions, t(0), t(100), 100)
        .await
        .expect("series");
    assert_eq!(
        bans.iter().map(|b| b.count).sum::<u64>(),
        5,
        "revocations are not counted"
    );
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

/// A port scope is stored with its ban, kept by its revocation, and seen
/// by correlation among the active bans.
pub(crate) async fn port_scopes_are_kept(s: Arc<dyn Store>) {
    let d = s
        .record_decision(
            &NewDecision {
                ports: "tcp/22,8000:8100".into(),
                ..ban("192.0.2.1", Some(600))
            },
            t(0),
        )
        .await
        .expect("record");
    assert_eq!(d.ports, "tcp/22,8000:8100");
    let wide = s
        .record_decision(&ban("192.0.2.2", Some(600)), t(0))
        .await
        .expect("record");
    assert_eq!(wide.ports, "");
    let active = s.active_bans(t(1)).await.expect("active");
    assert_eq!(
        active
            .iter()
            .find(|a| a.id == d.id)
            .map(|a| a.ports.as_str()),
        Some("tcp/22,8000:8100")
    );
    assert_eq!(
        s.decisions_since(0).await.expect("since")[0].ports,
        "tcp/22,8000:8100"
    );
    let r = s
        .revoke_decision(d.id, "agent:a", "unbanned", t(2))
        .await
        .expect("revoke");
    assert_eq!(r.ports, "tcp/22,8000:8100");
    let row = s.decision(d.id).await.expect("read").expect("there");
    assert_eq!(row.decision.ports, "tcp/22,8000:8100");
    assert_eq!(
        row.revocation.map(|r| r.ports),
        Some("tcp/22,8000:8100".into())
    );
}

store_suite!(
    port_scopes_are_kept,
    decide_records_under_facts,
    feeds_sync_and_report,
    policies_are_seeded_once_and_versioned,
    agents_are_recorded,
    agent_firewall_state_is_recorded,
    agents_behind_say_since_when,
    events_are_stored_once,
    decisions_are_versioned_and_revoked,
    expired_bans_are_not_active,
    expiries_and_pruning,
    facts_for_correlation,
    one_certificate_authority,
    tokens_are_used_up_and_expire,
    revoked_tokens_enroll_no_more,
    feeds_are_added_and_removed_with_their_bans,
    a_removed_feed_gets_no_status,
    revoked_agents_may_enroll_again,
    users_sessions_and_tokens,
    audit_log_and_secrets,
    decision_and_event_queries,
    stats_count_stored_events_only,
    prefix_events_newest_first,
    active_bans_of_one_origin,
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
