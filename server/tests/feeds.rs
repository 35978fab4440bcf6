//! Block-list feeds from a local file and from an HTTP server on loopback:
//! listed entries become decisions of origin `feed`, removed ones are
//! revoked, and a feed that cannot be fetched or is garbage changes nothing
//! and is reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use fleetban_server::feeds::{self, FeedConfig, FeedSource};
use fleetban_server::metrics::Metrics;
use fleetban_server::policy_config::{parse_rules, PolicySeed};
use fleetban_server::service::{Service, ServiceError, SystemClock};
use fleetban_server::store;

const RULES: &str = "[policy]\nallowlist = [\"10.0.0.0/8\"]\n";

async fn service(dir: &std::path::Path) -> Arc<Service> {
    let url = format!("sqlite://{}", dir.join("fb.db").display());
    let seed = PolicySeed {
        policy: parse_rules(RULES).expect("rules"),
        rules_toml: RULES.into(),
        jails: Vec::new(),
    };
    Arc::new(
        Service::new(
            store::open(&url).await.expect("store"),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            &seed,
        )
        .await
        .expect("service"),
    )
}

fn feed(name: &str, source: FeedSource) -> FeedConfig {
    FeedConfig {
        name: name.into(),
        source,
        interval: Duration::from_secs(3600),
        bantime: None,
        max_invalid_percent: 10,
        allow_empty: false,
    }
}

async fn listed(s: &Service, feed: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .snapshot()
        .await
        .expect("snapshot")
        .bans
        .into_iter()
        .filter(|d| d.creator == format!("feed:{feed}"))
        .map(|d| d.target.to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_file_feed_is_followed_and_bad_files_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = service(dir.path()).await;
    let path = dir.path().join("block.txt");
    let cfg = feed("local", FeedSource::File(path.clone()));
    let client = feeds::client().expect("client");
    let import = |s: Arc<Service>, cfg: FeedConfig, client: reqwest::Client| async move {
        let fetched = feeds::fetch(&client, &cfg.source).await;
        s.import_feed(&cfg, fetched).await
    };

    std::fs::write(
        &path,
        "# list\n192.0.2.1\n198.51.100.0/24 ; net\n10.1.2.3\n",
    )
    .expect("write");
    let r = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect("import");
    assert_eq!((r.entries, r.added, r.revoked, r.refused), (3, 2, 0, 1));
    assert_eq!(
        listed(&s, "local").await,
        ["192.0.2.1/32", "198.51.100.0/24"]
    );
    let again = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect("import");
    assert_eq!(
        (again.added, again.revoked),
        (0, 0),
        "unchanged feed, no decision"
    );

    std::fs::write(&path, "198.51.100.0/24\n203.0.113.9\n").expect("write");
    let r = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect("import");
    assert_eq!((r.added, r.revoked), (1, 1));
    assert_eq!(
        listed(&s, "local").await,
        ["198.51.100.0/24", "203.0.113.9/32"]
    );

    // Garbage, an empty file, a missing file: refused, bans kept, reported.
    std::fs::write(&path, "<html>\n<h1>502 Bad Gateway</h1>\n</html>\n").expect("write");
    let e = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect_err("garbage");
    assert!(
        matches!(&e, ServiceError::Feed { feed, .. } if feed == "local"),
        "{e}"
    );
    assert!(
        e.to_string().contains("3 of 3 lines are not addresses"),
        "{e}"
    );
    std::fs::write(&path, "").expect("write");
    let e = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect_err("empty");
    assert!(e.to_string().contains("lists nothing"), "{e}");
    std::fs::remove_file(&path).expect("rm");
    let e = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("cannot read"), "{e}");
    assert_eq!(
        listed(&s, "local").await,
        ["198.51.100.0/24", "203.0.113.9/32"]
    );
    let status = s.feed_statuses().await.expect("status");
    assert_eq!(status.len(), 1);
    assert!(status[0].last_error.contains("cannot read"), "{status:?}");
    assert!(status[0].last_success.is_some());
    assert_eq!(status[0].entries, 2);

    // A few bad lines in a long list are skipped and counted.
    let mut text: String = (1..=30).map(|i| format!("192.0.2.{i}\n")).collect();
    text.push_str("not-an-address\n");
    std::fs::write(&path, text).expect("write");
    let r = import(s.clone(), cfg.clone(), client.clone())
        .await
        .expect("import");
    assert_eq!(
        (r.entries, r.invalid_lines, r.added, r.revoked),
        (30, 1, 30, 2)
    );
}

/// A loopback HTTP server answering with whatever `reply` holds.
async fn http_feed(
    reply: Arc<Mutex<(StatusCode, String)>>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/list.txt",
        axum::routing::get(move || {
            let reply = reply.clone();
            async move { reply.lock().expect("reply").clone() }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/list.txt"), task)
}

#[tokio::test]
async fn an_http_feed_survives_errors_and_outages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = service(dir.path()).await;
    let reply = Arc::new(Mutex::new((
        StatusCode::OK,
        "192.0.2.7\n2001:db8::/48\n".to_owned(),
    )));
    let (url, server) = http_feed(reply.clone()).await;
    let cfg = feed("remote", FeedSource::Url(url));
    let client = feeds::client().expect("client");

    let r = s
        .import_feed(&cfg, feeds::fetch(&client, &cfg.source).await)
        .await
        .expect("import");
    assert_eq!(r.added, 2);
    assert_eq!(
        listed(&s, "remote").await,
        ["192.0.2.7/32", "2001:db8::/48"]
    );

    *reply.lock().expect("reply") = (StatusCode::INTERNAL_SERVER_ERROR, "oops".into());
    let e = s
        .import_feed(&cfg, feeds::fetch(&client, &cfg.source).await)
        .await
        .expect_err("500");
    assert!(e.to_string().contains("answered 500"), "{e}");

    server.abort();
    let _ = server.await;
    let e = s
        .import_feed(&cfg, feeds::fetch(&client, &cfg.source).await)
        .await
        .expect_err("unreachable");
    assert!(e.to_string().contains("cannot fetch"), "{e}");
    assert_eq!(
        listed(&s, "remote").await,
        ["192.0.2.7/32", "2001:db8::/48"]
    );
    let status = s.feed_statuses().await.expect("status");
    assert!(status[0].last_error.contains("cannot fetch"), "{status:?}");
}

/// The server imports its feeds on their schedule and follows changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_imported_on_their_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("block.txt");
    std::fs::write(&path, "192.0.2.10\n192.0.2.11\n").expect("write");
    let url = format!("sqlite://{}", dir.path().join("fb.db").display());
    let db = store::open(&url).await.expect("store");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let options = fleetban_server::RunOptions {
        feeds: vec![FeedConfig {
            interval: Duration::from_millis(200),
            ..feed("local", FeedSource::File(path.clone()))
        }],
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fleetban_server::run(
        db.clone(),
        fleetban_server::Listeners { http, grpc },
        options,
        async {
            let _ = stop_rx.await;
        },
    ));
    let targets = |db: Arc<dyn store::Store>| async move {
        let mut t: Vec<String> = db
            .active_bans(chrono::Utc::now())
            .await
            .expect("bans")
            .into_iter()
            .map(|d| d.target.to_string())
            .collect();
        t.sort();
        t
    };
    let until = |want: Vec<&'static str>| {
        let db = db.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                while targets(db.clone()).await != want {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .is_ok()
        }
    };
    assert!(until(vec!["192.0.2.10/32", "192.0.2.11/32"]).await);
    std::fs::write(&path, "192.0.2.11\n192.0.2.12\n").expect("write");
    assert!(until(vec!["192.0.2.11/32", "192.0.2.12/32"]).await);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test]
async fn an_endless_file_is_refused_without_being_read_whole() {
    let client = feeds::client().expect("client");
    let err = feeds::fetch(&client, &FeedSource::File("/dev/zero".into()))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, feeds::FetchError::TooLarge(_)),
        "expected too large, got {err}"
    );
}
