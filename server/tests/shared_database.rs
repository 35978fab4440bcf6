//! Two server processes' services on one Postgres, in one test process:
//! events for one address reported to both at once make exactly one
//! decision; a decision or a policy change made by one reaches the other by
//! notification; bad policies are refused with the key at fault; a feed
//! added on one is run by the other, imports racing on both apply a list
//! once, and a feed removed on one is imported by none.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fleetban_policy::{JailRule, LocalBan};
use fleetban_server::metrics::Metrics;
use fleetban_server::policy_config::PolicySeed;
use fleetban_server::service::{Service, ServiceError, SystemClock};
use fleetban_server::store::{self, AgentInfo, NewEvent};
use tokio_util::sync::CancellationToken;

fn seed(rules: &str) -> PolicySeed {
    PolicySeed {
        policy: fleetban_server::policy_config::parse_rules(rules).expect("rules"),
        rules_toml: rules.to_owned(),
        jails: Vec::new(),
    }
}

async fn replica(url: &str, rules: &str) -> Arc<Service> {
    let store = store::open(url).await.expect("open");
    Arc::new(
        Service::new(
            store,
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            &seed(rules),
        )
        .await
        .expect("service"),
    )
}

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        hostname: id.into(),
        version: "test".into(),
        jails: vec!["sshd".into()],
        group: String::new(),
    }
}

fn event(agent: &str, ip: IpAddr) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        agent_id: agent.into(),
        jail: "sshd".into(),
        ip,
        user: None,
        occurred_at: Utc::now(),
    }
}

const THRESHOLD: &str = "[policy.threshold]\nfailures = 4\nwindow = \"10m\"\nbantime = \"1h\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_decide_once_per_address() {
    let Some(url) = fleetban_tests::pg::fresh_database().await else {
        return;
    };
    let a = replica(&url, THRESHOLD).await;
    let b = replica(&url, THRESHOLD).await;
    let agents: Vec<String> = (0..8).map(|i| format!("agent-{i}")).collect();
    for (i, id) in agents.iter().enumerate() {
        let s = if i % 2 == 0 { &a } else { &b };
        s.agent_joined(&agent(id)).await.expect("join");
    }
    // 20 addresses; for each, 8 agents (half on each replica) report one
    // failure at the same moment: the threshold (4) is crossed by whichever
    // report comes 4th, and every later one sees the ban.
    let ips: Vec<IpAddr> = (1..=20u8).map(|i| IpAddr::from([203, 0, 113, i])).collect();
    let mut tasks = Vec::new();
    for (i, id) in agents.iter().enumerate() {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = id.clone();
        let ips = ips.clone();
        tasks.push(tokio::spawn(async move {
            let events: Vec<NewEvent> = ips.iter().map(|ip| event(&id, *ip)).collect();
            s.report(&id, "", &events, &[]).await.expect("report")
        }));
    }
    let mut decided = Vec::new();
    for t in tasks {
        decided.extend(t.await.expect("task"));
    }
    assert_eq!(
        decided.len(),
        ips.len(),
        "one decision per address: {decided:#?}"
    );
    let mut targets: Vec<_> = decided.iter().map(|d| d.target.addr()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), ips.len());
    let active = a.snapshot().await.expect("snapshot").bans;
    assert_eq!(active.len(), ips.len());
    assert!(active.iter().all(|d| d.origin.as_str() == "fleet"));

    // Local bans of one address on both replicas at once: one echo.
    let ban = |agent: &str| LocalBan {
        agent_id: agent.into(),
        jail: "sshd".into(),
        target: "198.51.100.7/32".parse().expect("net"),
        at: Utc::now(),
        duration: chrono::Duration::hours(1),
        failures: 5,
        ports: String::new(),
    };
    let (b0, b1) = ([ban("agent-0")], [ban("agent-1")]);
    let (ra, rb) = tokio::join!(
        a.report("agent-0", "", &[], &b0),
        b.report("agent-1", "", &[], &b1),
    );
    assert_eq!(ra.expect("a").len() + rb.expect("b").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_policies_reach_the_other_replica() {
    let Some(url) = fleetban_tests::pg::fresh_database().await else {
        return;
    };
    let a = replica(&url, "").await;
    let b = replica(&url, "[policy]\ngroup_scope = true\n").await;
    assert!(
        !b.policy().group_scope,
        "the first replica seeded the rules"
    );
    let stop = CancellationToken::new();
    tokio::spawn(b.clone().follow(stop.clone()));
    let mut versions = b.subscribe();
    let mut policies = b.subscribe_policies();

    a.agent_joined(&agent("x")).await.expect("join");
    let ban = LocalBan {
        agent_id: "x".into(),
        jail: "sshd".into(),
        target: "192.0.2.50/32".parse().expect("net"),
        at: Utc::now(),
        duration: chrono::Duration::hours(1),
        failures: 3,
        ports: String::new(),
    };
    let d = a.report("x", "", &[], &[ban]).await.expect("report");
    assert_eq!(d.len(), 1);
    tokio::time::timeout(
        Duration::from_secs(10),
        versions.wait_for(|v| *v >= d[0].version),
    )
    .await
    .expect("b hears of the decision")
    .expect("watch");

    let rule = JailRule {
        group: "web".into(),
        jail: "sshd".into(),
        enabled: false,
        maxretry: None,
        findtime: None,
        bantime: None,
    };
    let v = a.set_jail_rule(&rule, "test").await.expect("set");
    tokio::time::timeout(Duration::from_secs(10), policies.wait_for(|p| *p >= v))
        .await
        .expect("b hears of the policy")
        .expect("watch");
    assert_eq!(b.jail_policy_for("web").jails, vec![rule]);
    assert!(b.jail_policy_for("db").jails.is_empty());

    let v = a
        .set_fleet_rules("[policy]\ngroup_scope = true\n", "test")
        .await
        .expect("rules");
    tokio::time::timeout(Duration::from_secs(10), policies.wait_for(|p| *p >= v))
        .await
        .expect("b hears of the rules")
        .expect("watch");
    assert!(b.policy().group_scope);

    // A short ban decided on A: B tells its own agents when it expires, and
    // an agent catching up on B from before it gets it from the table.
    let mut expired = b.subscribe_expired();
    let since = Utc::now();
    let short = LocalBan {
        agent_id: "x".into(),
        jail: "sshd".into(),
        target: "192.0.2.51/32".parse().expect("net"),
        at: Utc::now(),
        duration: chrono::Duration::seconds(1),
        failures: 3,
        ports: String::new(),
    };
    let d2 = a.report("x", "web", &[], &[short]).await.expect("report");
    assert_eq!(d2.len(), 1);
    let caught_up = b.changes_since(d[0].version).await.expect("catch up");
    assert!(
        caught_up.added.iter().any(|x| x.id == d2[0].id),
        "{caught_up:?}"
    );
    let ids = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            b.announce_expired(since).await.expect("expiry");
            if let Ok(ids) = expired.try_recv() {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the expiry is announced on b");
    assert_eq!(*ids, vec![d2[0].id]);
    stop.cancel();
}

#[tokio::test]
async fn bad_policies_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("fb.db").display());
    let s = replica(&url, THRESHOLD).await;
    let before = s.policy_version();
    let bad = JailRule {
        group: "*".into(),
        jail: "sshd".into(),
        enabled: true,
        maxretry: Some(0),
        findtime: None,
        bantime: None,
    };
    match s.set_jail_rule(&bad, "op").await {
        Err(ServiceError::Invalid(m)) => assert_eq!(m, "jail rule: maxretry 0: expected 1 or more"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let bad = JailRule {
        maxretry: Some(3),
        bantime: Some(chrono::Duration::seconds(0)),
        ..bad
    };
    assert!(
        matches!(s.set_jail_rule(&bad, "op").await, Err(ServiceError::Invalid(m)) if m.contains("bantime 0 s"))
    );
    match s
        .set_fleet_rules(
            "[policy.threshold]\nhosts = 2\nwindow = \"soon\"\nbantime = \"1h\"\n",
            "op",
        )
        .await
    {
        Err(ServiceError::Invalid(m)) => {
            assert!(m.contains("policy.threshold.window"), "{m}");
            assert!(m.contains(":3: key"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        s.set_fleet_rules("[policy]\nthreshhold = 1\n", "op").await,
        Err(ServiceError::Invalid(m)) if m.contains("unknown field")
    ));
    assert!(matches!(
        s.remove_jail_rule("*", "nginx", "op").await,
        Err(ServiceError::Store(store::StoreError::NotFound(_)))
    ));
    let bad_group = AgentInfo {
        group: "web servers".into(),
        ..agent("x")
    };
    assert!(matches!(
        s.agent_joined(&bad_group).await,
        Err(ServiceError::Invalid(m)) if m.contains("agent group \"web servers\"")
    ));
    assert_eq!(s.policy_version(), before);
    assert_eq!(s.fleet_rules().await.expect("rules"), THRESHOLD);
    assert_eq!(s.policy().threshold.as_ref().map(|t| t.failures), Some(4));
}

/// Ban decisions ever made by feed `name` (active or not).
async fn feed_bans_ever(s: &Service, name: &str) -> usize {
    s.store()
        .decisions_since(0)
        .await
        .expect("decisions")
        .iter()
        .filter(|d| d.kind == store::DecisionKind::Ban && d.creator == format!("feed:{name}"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feeds_apply_once_across_replicas_and_a_removal_holds_everywhere() {
    use fleetban_server::feeds::{self, FeedConfig, FeedSource};
    let Some(url) = fleetban_tests::pg::fresh_database().await else {
        return;
    };
    let a = replica(&url, "").await;
    let b = replica(&url, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("shared.txt");
    std::fs::write(&list, "192.0.2.1\n192.0.2.2\n198.51.100.0/24\n").expect("write");
    let cfg = FeedConfig {
        name: "shared".into(),
        source: FeedSource::File(list.clone()),
        interval: Duration::from_secs(3600),
        bantime: None,
        max_invalid_percent: 10,
        allow_empty: false,
    };
    a.add_feed(&cfg, "user:ada").await.expect("add on a");

    // Imports of one list racing on both replicas apply it once (a feed
    // of the file, never imported before).
    let client = feeds::client().expect("client");
    let race = FeedConfig {
        name: "race".into(),
        ..cfg.clone()
    };
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (cfg, client) = (race.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let fetched = feeds::fetch(&client, &cfg.source).await;
            s.import_feed(&cfg, fetched).await.expect("import");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(feed_bans_ever(&a, "race").await, 3, "one ban per entry");

    // Only B runs feeds here: it learns of the one A added from the
    // database, and imports it.
    let stop = CancellationToken::new();
    tokio::spawn(feeds::supervise(
        b.clone(),
        client.clone(),
        Vec::new(),
        Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !b
        .feed_statuses()
        .await
        .expect("statuses")
        .iter()
        .any(|s| s.name == "shared" && s.last_success.is_some())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed was never imported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(feed_bans_ever(&a, "shared").await, 3);

    // Removed on B: its bans are revoked, and a late import on A records
    // nothing.
    let revoked = b.remove_feed("shared", "user:ada").await.expect("remove");
    assert_eq!(revoked.len(), 3);
    let fetched = feeds::fetch(&client, &cfg.source).await;
    assert!(a.import_feed(&cfg, fetched).await.is_err());
    assert_eq!(feed_bans_ever(&a, "shared").await, 3);
    let active = a.snapshot().await.expect("snapshot").bans;
    assert!(
        active.iter().all(|d| d.creator != "feed:shared"),
        "{active:?}"
    );
    assert!(a.stored_feeds().await.expect("feeds").is_empty());
    assert!(b
        .feed_statuses()
        .await
        .expect("statuses")
        .iter()
        .all(|s| s.name != "shared"));
    stop.cancel();
}
