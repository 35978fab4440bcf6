//! Filtered, paginated REST API queries on a large Postgres database:
//! 1,000,000 decisions (50,000 of them revoked) and 10,000,000 events from
//! 1,000 agents over 30 days, 200,000 distinct addresses. Every query goes
//! through the real router (auth, parsing, SQL, JSON); each is run many
//! times and its p50 and p99 printed.
//!
//! ```sh
//! FLEETBAN_TEST_DATABASE_URL=postgres://… cargo bench -p fleetban-server --bench api_queries
//! ```
//!
//! `FLEETBAN_BENCH_EVENTS` and `FLEETBAN_BENCH_DECISIONS` change the sizes;
//! `FLEETBAN_BENCH_RUNS` the runs per query (default 200). With
//! `FLEETBAN_BENCH_DATABASE_URL`, an existing database is used and only what
//! it lacks is loaded (loading 10,000,000 events takes about ten minutes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use fleetban_server::auth::{Accounts, AuthConfig, Scope};
use fleetban_server::http::api::ApiState;
use fleetban_server::metrics::Metrics;
use fleetban_server::service::{Service, SystemClock};
use fleetban_server::store;
use http_body_util::BodyExt;
use sqlx::{Connection, Executor, PgConnection};
use tower::ServiceExt;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn load(url: &str, events: u64, decisions: u64) {
    let mut c = PgConnection::connect(url).await.expect("connect");
    let t = Instant::now();
    let count = |table: &'static str| format!("SELECT count(*) FROM {table}");
    let have_agents: i64 = sqlx::query_scalar(&count("agents"))
        .fetch_one(&mut c)
        .await
        .expect("count");
    let have_events: i64 = sqlx::query_scalar(&count("events"))
        .fetch_one(&mut c)
        .await
        .expect("count");
    let have_decisions: i64 = sqlx::query_scalar(&count("decisions"))
        .fetch_one(&mut c)
        .await
        .expect("count");
    if have_agents == 0 {
        c.execute(
        "INSERT INTO agents (id, hostname, version, jails, first_seen, last_seen, applied_version)
         SELECT 'agent-' || g, 'host-' || g || '.example', '0.1.0', 'sshd,nginx', now() - interval '30 days', now(), 0
         FROM generate_series(0, 999) g",
    )
    .await
    .expect("agents");
    }
    let chunk = 1_000_000u64;
    let mut done = u64::try_from(have_events).unwrap_or(0);
    while done < events {
        let n = chunk.min(events - done);
        c.execute(
            format!(
                "INSERT INTO events (id, agent_id, jail, ip, username, occurred_at, received_at)
                 SELECT gen_random_uuid(), 'agent-' || (g % 1000),
                        (ARRAY['sshd','nginx','postfix','dovecot','apache'])[1 + (g / 7) % 5],
                        '100.64.0.0'::inet + ((g * 2654435761) % 200000),
                        'root',
                        now() - ((g * 7) % 2592000) * interval '1 second',
                        now()
                 FROM generate_series({done}::bigint, {end}::bigint) g",
                end = done + n - 1
            )
            .as_str(),
        )
        .await
        .expect("events");
        done += n;
        eprintln!("  {done} events ({:.0} s)", t.elapsed().as_secs_f64());
    }
    if have_decisions > 0 {
        c.execute("ANALYZE").await.expect("analyze");
        eprintln!("reusing {have_events} events and {have_decisions} decisions");
        return;
    }
    c.execute(
        format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, expires_at)
             SELECT g, 'ban', set_masklen('100.64.0.0'::inet + ((g * 40503) % 4000000), 32)::cidr,
                    (ARRAY['local','fleet','recidive','manual','feed'])[1 + g % 5],
                    'bench', 'agent:agent-' || (g % 1000),
                    (ARRAY['sshd','nginx','postfix','dovecot','apache'])[1 + (g / 3) % 5], 'fleet',
                    now() - ({decisions} - g) * interval '2 seconds',
                    now() - ({decisions} - g) * interval '2 seconds' + (1 + g % 48) * interval '1 hour'
             FROM generate_series(1::bigint, {decisions}::bigint) g"
        )
        .as_str(),
    )
    .await
    .expect("decisions");
    let revoked = decisions / 20;
    if have_decisions > 0 {
        c.execute("ANALYZE").await.expect("analyze");
        eprintln!("reusing {have_events} events and {have_decisions} decisions");
        return;
    }
    c.execute(
        format!(
            "INSERT INTO decisions (version, kind, target, origin, reason, creator, jail, scope, created_at, revokes)
             SELECT {decisions} + g, 'revoke', d.target, 'manual', 'bench', 'user:bench', d.jail, d.scope,
                    d.created_at + interval '1 minute', d.id
             FROM generate_series(1::bigint, {revoked}::bigint) g JOIN decisions d ON d.version = g * 20"
        )
        .as_str(),
    )
    .await
    .expect("revocations");
    c.execute(
        format!(
            "UPDATE block_list_version SET version = {}",
            decisions + revoked
        )
        .as_str(),
    )
    .await
    .expect("version");
    c.execute("ANALYZE").await.expect("analyze");
    eprintln!(
        "loaded {events} events, {decisions} decisions ({revoked} revoked) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = match std::env::var("FLEETBAN_BENCH_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => match fleetban_tests::pg::fresh_database().await {
            Some(url) => url,
            None => {
                eprintln!("api_queries needs FLEETBAN_TEST_DATABASE_URL");
                return;
            }
        },
    };
    let events = env_or("FLEETBAN_BENCH_EVENTS", 10_000_000);
    let decisions = env_or("FLEETBAN_BENCH_DECISIONS", 1_000_000);
    let runs = env_or("FLEETBAN_BENCH_RUNS", 200) as usize;
    let store = store::open(&url).await.expect("open");
    load(&url, events, decisions).await;

    let clock = Arc::new(SystemClock);
    let identities = Arc::new(
        fleetban_server::service::identity::Identities::new(store.clone(), clock.clone(), None)
            .await
            .expect("identities"),
    );
    let accounts = Arc::new(
        Accounts::new(store.clone(), clock.clone(), AuthConfig::default())
            .await
            .expect("accounts"),
    );
    let service = Arc::new(
        Service::new(
            store.clone(),
            clock,
            Arc::new(Metrics::new()),
            &Default::default(),
        )
        .await
        .expect("service"),
    );
    let token = accounts
        .create_token(
            "bench",
            &[Scope::DecisionsRead, Scope::EventsRead, Scope::StatsRead],
            None,
            "bench",
            None,
        )
        .await
        .expect("token")
        .secret;
    let router = fleetban_server::http::router(
        service.clone(),
        Arc::new(ApiState {
            service,
            accounts,
            identities,
            feeds: Arc::new(Vec::new()),
            feed_client: fleetban_server::feeds::client().expect("feed client"),
            feeds_changed: Arc::new(tokio::sync::Notify::new()),
            agent_url: None,
        }),
    );
    let get = |path: String| {
        let router = router.clone();
        let token = token.clone();
        async move {
            let req = Request::builder()
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let res = router.oneshot(req).await.expect("response");
            let status = res.status();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(
                status,
                StatusCode::OK,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
            serde_json::from_slice::<serde_json::Value>(&body).expect("json")
        }
    };

    // A cursor deep into the decisions and the events, for later pages.
    let mut deep = "/api/v1/decisions?limit=1000".to_owned();
    for _ in 0..20 {
        let c = get(deep.clone()).await["next_cursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        deep = format!("/api/v1/decisions?limit=100&cursor={c}");
    }
    let ev_cursor = get("/api/v1/events?limit=1000".to_owned()).await["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let since = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Addresses that exist, varied per run.
    let ip = |i: usize| {
        let n = (i as u64 * 2654435761) % 200_000;
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + n as u32)
    };
    type Query = (&'static str, Box<dyn Fn(usize) -> String>);
    let queries: Vec<Query> = vec![
        (
            "decisions, newest 100",
            Box::new(|_| "/api/v1/decisions".into()),
        ),
        (
            "decisions, page 21 by cursor",
            Box::new(move |_| deep.clone()),
        ),
        (
            "decisions covering an address",
            Box::new(move |i| format!("/api/v1/decisions?ip={}", ip(i))),
        ),
        (
            "decisions inside a /16",
            Box::new(move |i| format!("/api/v1/decisions?ip={}/16", ip(i))),
        ),
        (
            "decisions active, origin fleet",
            Box::new(|_| "/api/v1/decisions?status=active&origin=fleet".into()),
        ),
        (
            "decisions revoked",
            Box::new(|_| "/api/v1/decisions?status=revoked".into()),
        ),
        (
            "decisions by agent and jail",
            Box::new(|i| format!("/api/v1/decisions?agent=agent-{}&jail=sshd", i % 1000)),
        ),
        ("events, newest 100", Box::new(|_| "/api/v1/events".into())),
        (
            "events, page 11 by cursor",
            Box::new(move |_| format!("/api/v1/events?limit=100&cursor={ev_cursor}")),
        ),
        (
            "events of an address",
            Box::new(move |i| format!("/api/v1/events?ip={}", ip(i))),
        ),
        (
            "events inside a /24",
            Box::new(move |i| format!("/api/v1/events?ip={}/24", ip(i))),
        ),
        ("events by agent, jail, last day", {
            let since = since.clone();
            Box::new(move |i| {
                format!(
                    "/api/v1/events?agent=agent-{}&jail=nginx&since={since}",
                    i % 1000
                )
            })
        }),
        (
            "events aggregate by agent, one address",
            Box::new(move |i| format!("/api/v1/events/aggregate?by=agent&ip={}", ip(i))),
        ),
        (
            "IP lookup",
            Box::new(move |i| format!("/api/v1/ips/{}", ip(i))),
        ),
        (
            "stats, events per hour, last day",
            Box::new(|_| "/api/v1/stats?series=events&step=1h".into()),
        ),
    ];
    println!("| query | p50 | p99 |");
    println!("| --- | ---: | ---: |");
    for (name, path) in &queries {
        // Warm-up, then the runs.
        for i in 0..5 {
            get(path(i + 1_000_000)).await;
        }
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let p = path(i);
            let t = Instant::now();
            get(p).await;
            times.push(t.elapsed());
        }
        times.sort_unstable();
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
}
