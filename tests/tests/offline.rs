//! An agent whose server is away keeps detecting and banning locally,
//! reconnects with backoff, and delivers what it saw exactly once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{agent_config, append, failed_login, server_addrs, wait_until, Proc};
use fleetban_tests::bins::bin;

fn server(dir: &Path, data: &Path, grpc: &str) -> Proc {
    let mut cmd = Command::new(bin("fleetban-server"));
    cmd.args(["serve", "--data-dir"]).arg(data).args([
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        grpc,
    ]);
    Proc::spawn("server", dir, cmd)
}

async fn count(db: &sqlx::SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_its_server_bans_locally_and_delivers_events_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut srv = server(dir.path(), &data, "127.0.0.1:0");
    let (_, grpc) = server_addrs(&mut srv);

    let log = dir.path().join("auth.log");
    let cfg = agent_config(dir.path(), "lonely", Some(&grpc), "log", &log);
    common::enroll(
        &["--data-dir".as_ref(), data.as_os_str()],
        Command::new(bin("fleetban-agent")),
        &cfg,
        &grpc,
    );
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut agent = Proc::spawn("agent", dir.path(), cmd);
    agent.wait_for("connected to server", 1, Duration::from_secs(30));

    srv.stop();
    agent.wait_for("server link down", 1, Duration::from_secs(10));

    // The server is down: detection and local bans go on.
    let lines: Vec<String> = (0..4)
        .map(|n| failed_login("192.0.2.50", n))
        .chain((4..6).map(|n| failed_login("192.0.2.51", n)))
        .collect();
    append(&log, &lines);
    agent.wait_for("failure", 6, Duration::from_secs(10));
    agent.wait_for("blocked target=192.0.2.50/32", 1, Duration::from_secs(10));
    assert!(
        !agent.output().contains("blocked target=192.0.2.51"),
        "{}",
        agent.output()
    );
    // It keeps retrying, with growing pauses.
    agent.wait_for("server link down", 3, Duration::from_secs(20));

    // The server is back on the same address and database.
    let mut srv = server(dir.path(), &data, &grpc);
    server_addrs(&mut srv);
    agent.wait_for("connected to server", 2, Duration::from_secs(30));

    let url = format!("sqlite://{}", data.join("fleetban.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
    let mut events = 0;
    for _ in 0..250 {
        events = count(&db, "SELECT count(*) FROM events").await;
        if events >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        events,
        6,
        "every event delivered\n{}\n{}",
        agent.output(),
        srv.output()
    );
    // The local ban reached the server late and still became a decision.
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(
            &srv.stderr
        )
        .unwrap_or_default()
        .contains("decision recorded")),
        "{}",
        srv.output()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM decisions WHERE target = '192.0.2.50/32'"
        )
        .await,
        1
    );

    // Once: another reconnect (the server restarts again) adds nothing.
    srv.stop();
    let mut srv = server(dir.path(), &data, &grpc);
    server_addrs(&mut srv);
    agent.wait_for("connected to server", 3, Duration::from_secs(30));
    append(&log, &[failed_login("192.0.2.52", 7)]);
    let mut total = 0;
    for _ in 0..250 {
        total = count(&db, "SELECT count(*) FROM events").await;
        if total >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total, 7, "{}", agent.output());
    assert_eq!(count(&db, "SELECT count(DISTINCT id) FROM events").await, 7);
    assert_eq!(count(&db, "SELECT count(*) FROM decisions").await, 1);
    assert!(agent.is_running());
    agent.stop();
    srv.stop();
}
