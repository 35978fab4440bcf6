//! `fleetban-agent unban` reaches the whole fleet: agent A's manual ban is
//! pushed to agent B through the server; A's unban, made while the server
//! is away, is queued, and once the server is back it revokes A's decision
//! with A as the actor, and B lifts the ban. A port-scoped ban keeps its
//! ports all the way to B. Real binaries, real gRPC over TLS, SQLite.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{agent_config, server_addrs, wait_until, Proc};
use fleetban_tests::bins::bin;

/// The running agent's status as JSON.
fn status(cfg: &Path) -> serde_json::Value {
    let out = Command::new(bin("fleetban-agent"))
        .args(["firewall", "status", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status json")
}

/// The ban of `target` that the agent holds from the fleet, if any.
fn fleet_ban(cfg: &Path, target: &str) -> Option<serde_json::Value> {
    status(cfg)["bans"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| {
            b["target"] == target && b["origin"].as_str().is_some_and(|o| o.starts_with("fleet"))
        })
        .cloned()
}

fn cli(cfg: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("fleetban-agent"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run fleetban-agent");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unban_on_one_agent_is_revoked_fleet_wide_even_when_made_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = |grpc: &str| {
        let mut cmd = Command::new(bin("fleetban-server"));
        cmd.args(["serve", "--data-dir"]).arg(&data).args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            grpc,
        ]);
        Proc::spawn("server", dir.path(), cmd)
    };
    let mut srv = server("127.0.0.1:0");
    let (_, grpc) = server_addrs(&mut srv);
    let agent = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let cfg = agent_config(dir.path(), name, Some(&grpc), "log", &log);
        common::enroll(
            &["--data-dir".as_ref(), data.as_os_str()],
            Command::new(bin("fleetban-agent")),
            &cfg,
            &grpc,
        );
        let mut cmd = Command::new(bin("fleetban-agent"));
        cmd.args(["run", "--config"]).arg(&cfg);
        (Proc::spawn(name, dir.path(), cmd), cfg)
    };
    let (mut a, a_cfg) = agent("unban-a");
    let (mut b, b_cfg) = agent("unban-b");
    a.wait_for("connected to server", 1, Duration::from_secs(60));
    b.wait_for("connected to server", 1, Duration::from_secs(60));

    // A's manual bans reach B: one of all traffic, one of tcp/22 only.
    cli(
        &a_cfg,
        &["ban", "192.0.2.77", "--for", "2h", "--reason", "scanner"],
    );
    let out = cli(
        &a_cfg,
        &["ban", "192.0.2.78", "--for", "2h", "--port", "ssh"],
    );
    assert!(out.contains("banned 192.0.2.78/32 on tcp/22"), "{out}");
    assert!(
        wait_until(Duration::from_secs(15), || fleet_ban(
            &b_cfg,
            "192.0.2.77/32"
        )
        .is_some()
            && fleet_ban(&b_cfg, "192.0.2.78/32").is_some()),
        "B never got A's bans\n{}\n{}",
        b.output(),
        srv.output()
    );
    let scoped = fleet_ban(&b_cfg, "192.0.2.78/32").expect("scoped");
    assert_eq!(scoped["ports"], "tcp/22", "{scoped}");
    assert_eq!(
        fleet_ban(&b_cfg, "192.0.2.77/32")
            .expect("wide")
            .get("ports"),
        None
    );
    assert_eq!(status(&b_cfg)["desired_ports"], 1);

    // The server goes away; A unbans by hand: lifted on A at once, queued
    // for the server.
    srv.stop();
    a.wait_for("server link down", 1, Duration::from_secs(30));
    let out = cli(&a_cfg, &["unban", "192.0.2.77"]);
    assert!(out.contains("reported to the server"), "{out}");
    // B still holds the fleet's decision while the server is away.
    assert!(fleet_ban(&b_cfg, "192.0.2.77/32").is_some());

    // The server is back: the unban revokes A's decision, and B lifts it.
    let mut srv = server(&grpc);
    server_addrs(&mut srv);
    assert!(
        wait_until(Duration::from_secs(30), || fleet_ban(
            &b_cfg,
            "192.0.2.77/32"
        )
        .is_none()),
        "B still bans 192.0.2.77\n{}\n{}\n{}",
        a.output(),
        b.output(),
        srv.output()
    );
    // A's other ban is untouched.
    assert!(fleet_ban(&b_cfg, "192.0.2.78/32").is_some());
    assert!(wait_until(Duration::from_secs(10), || !status(&a_cfg)
        ["bans"]
        .as_array()
        .expect("bans")
        .iter()
        .any(|x| x["target"] == "192.0.2.77/32")));

    // The history: A's ban, revoked by A, once (a resent report changes
    // nothing); the scoped ban stored with its ports.
    let url = format!("sqlite://{}", data.join("fleetban.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
    let rows = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT kind, target, creator, ports FROM decisions ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .expect("query");
    assert_eq!(
        rows,
        vec![
            (
                "ban".into(),
                "192.0.2.77/32".into(),
                "agent:unban-a".into(),
                String::new()
            ),
            (
                "ban".into(),
                "192.0.2.78/32".into(),
                "agent:unban-a".into(),
                "tcp/22".into()
            ),
            (
                "revoke".into(),
                "192.0.2.77/32".into(),
                "agent:unban-a".into(),
                String::new()
            ),
        ],
        "{}",
        srv.output()
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM decisions WHERE kind = 'revoke'")
        .fetch_one(&db)
        .await
        .expect("reason");
    assert_eq!(reason, "unbanned by hand on agent unban-a");
    a.stop();
    b.stop();
    srv.stop();
}
