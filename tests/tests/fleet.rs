//! The whole path, for real: failed logins in agent A's log ban the address
//! on A at once and, through the server and Postgres, on agent B; packets
//! from that address to B are dropped by B's nftables while another address
//! still connects.

mod common;

use std::time::Duration;

use common::{agent_config, append, failed_login, server_addrs, wait_until, Proc};
use fleetban_tests::bins::bin;
use fleetban_tests::netns::{Host, Lab, ROOT_A_ADDR, X_ADDRS};
use fleetban_tests::{pg, privileges};
use sqlx::Row;

fn banned_in(lab: &Lab, host: Host, ip: &str) -> bool {
    lab.nft_list_ruleset(host).contains(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_agent_is_enforced_on_every_agent() {
    if !privileges::require_netns("fleet end-to-end") {
        return;
    }
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::new();

    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = std::process::Command::new(bin("fleetban-server"));
        c.args([
            "serve",
            "--database-url",
            &url,
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--grpc-listen", &format!("{ROOT_A_ADDR}:0")]);
        c
    });
    let (http, grpc) = server_addrs(&mut server);

    let agent = |name: &str, host: Host| {
        let log = dir.path().join(format!("{name}-auth.log"));
        let cfg = agent_config(dir.path(), name, Some(&grpc), "nftables", &log);
        common::enroll(
            &["--database-url".as_ref(), url.as_ref()],
            lab.command(host, bin("fleetban-agent")),
            &cfg,
            &grpc,
        );
        let mut cmd = lab.command(host, bin("fleetban-agent"));
        cmd.args(["run", "--config"]).arg(&cfg);
        (Proc::spawn(name, dir.path(), cmd), log)
    };
    let (mut a, a_log) = agent("host-a", Host::A);
    let (mut b, _b_log) = agent("host-b", Host::B);
    a.wait_for("connected to server", 1, Duration::from_secs(60));
    b.wait_for("connected to server", 1, Duration::from_secs(60));

    let service = lab.service_in_b();
    let (attacker, bystander) = (X_ADDRS[0].to_string(), X_ADDRS[1].to_string());
    assert!(
        lab.connects(&service, &attacker),
        "before any ban the attacker's address connects"
    );

    // Two failures: below maxretry, nothing is banned.
    append(
        &a_log,
        &[failed_login(&attacker, 1), failed_login(&attacker, 2)],
    );
    a.wait_for("failure", 2, Duration::from_secs(10));
    assert!(!banned_in(&lab, Host::A, &attacker));

    // The third bans locally on A, then fleet-wide on B.
    append(&a_log, &[failed_login(&attacker, 3)]);
    assert!(
        wait_until(Duration::from_secs(10), || banned_in(
            &lab,
            Host::A,
            &attacker
        )),
        "A did not ban {attacker}\n{}\n{}",
        lab.nft_list_ruleset(Host::A),
        a.output()
    );
    assert!(
        wait_until(Duration::from_secs(10), || banned_in(
            &lab,
            Host::B,
            &attacker
        )),
        "B did not receive the ban of {attacker}\n{}\n{}\n{}",
        lab.nft_list_ruleset(Host::B),
        b.output(),
        server.output()
    );
    let ruleset = lab.nft_list_ruleset(Host::B);
    assert!(ruleset.contains("table inet fleetban"), "{ruleset}");
    assert!(ruleset.contains("ip saddr @host4 drop"), "{ruleset}");
    assert!(!ruleset.contains(&bystander), "{ruleset}");

    // B's kernel drops the attacker and lets the bystander through.
    assert!(
        !lab.connects(&service, &attacker),
        "the banned address still reaches B"
    );
    assert!(
        lab.connects(&service, &bystander),
        "an address never banned must still reach B"
    );

    // The server stored three events and one fleet decision from A's ban.
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE host(ip) = $1")
        .bind(&attacker)
        .fetch_one(&db)
        .await
        .expect("count events");
    assert_eq!(events, 3);
    let rows =
        sqlx::query("SELECT kind, target::text AS target, origin, creator, jail FROM decisions")
            .fetch_all(&db)
            .await
            .expect("decisions");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("kind"), "ban");
    assert_eq!(row.get::<String, _>("target"), format!("{attacker}/32"));
    assert_eq!(row.get::<String, _>("origin"), "local");
    assert_eq!(row.get::<String, _>("creator"), "agent:host-a");
    assert_eq!(row.get::<String, _>("jail"), "sshd");

    // Both agents report the version they enforce; metrics show both streams.
    assert!(wait_until(Duration::from_secs(20), || {
        common::http_get(&http, "/metrics").contains("fleetban_server_agents_connected 2")
    }));
    assert!(common::http_get(&http, "/healthz").starts_with("ok"));
    b.stop();
    a.stop();
    server.stop();
}
