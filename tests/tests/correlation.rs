//! Fleet correlation with the real binaries: failures of one address on two
//! agents, each below its own jail's limit, reach the fleet threshold and
//! ban it on both; an allowlisted address is never banned.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{append, failed_login, server_addrs, Proc};
use fleetban_tests::bins::bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_across_agents_reach_the_fleet_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n\n[policy]\nallowlist = [\"198.51.100.0/24\"]\n\n[policy.threshold]\nhosts = 2\nwindow = \"10m\"\nbantime = \"1h\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("server.toml");
    let mut cmd = Command::new(bin("fleetban-server"));
    cmd.args(["serve", "--config"]).arg(&cfg);
    let mut server = Proc::spawn("server", dir.path(), cmd);
    let (_, grpc) = server_addrs(&mut server);
    let cfg_server = cfg.clone();

    let agent = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        // maxretry 3: one failure per agent bans nobody locally.
        let cfg = common::agent_config(dir.path(), name, Some(&grpc), "log", &log);
        common::enroll(
            &["--config".as_ref(), cfg_server.as_os_str()],
            Command::new(bin("fleetban-agent")),
            &cfg,
            &grpc,
        );
        let mut cmd = Command::new(bin("fleetban-agent"));
        cmd.args(["run", "--config"]).arg(&cfg);
        (Proc::spawn(name, dir.path(), cmd), log)
    };
    let (mut a, a_log) = agent("host-a");
    let (mut b, b_log) = agent("host-b");
    a.wait_for("connected to server", 1, Duration::from_secs(30));
    b.wait_for("connected to server", 1, Duration::from_secs(30));

    // An allowlisted address fails on both: never banned.
    append(&a_log, &[failed_login("198.51.100.20", 1)]);
    append(&b_log, &[failed_login("198.51.100.20", 2)]);
    // Another fails once on each.
    append(&a_log, &[failed_login("203.0.113.50", 3)]);
    a.wait_for("failure", 2, Duration::from_secs(10));
    append(&b_log, &[failed_login("203.0.113.50", 4)]);
    a.wait_for("blocked target=203.0.113.50/32", 1, Duration::from_secs(10));
    b.wait_for("blocked target=203.0.113.50/32", 1, Duration::from_secs(10));
    server.wait_for("origin=\"fleet\"", 1, Duration::from_secs(5));
    assert!(
        !a.output().contains("ban jail"),
        "no local ban: {}",
        a.output()
    );
    assert!(
        !a.output().contains("blocked target=198.51.100.20"),
        "{}",
        a.output()
    );
    assert!(
        !b.output().contains("blocked target=198.51.100.20"),
        "{}",
        b.output()
    );
    assert_eq!(
        server.output().matches("decision recorded").count(),
        1,
        "{}",
        server.output()
    );
    a.stop();
    b.stop();
    server.stop();
}

#[test]
fn a_bad_policy_is_refused_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        "[policy.threshold]\nhosts = 2\nwindow = \"whenever\"\nbantime = \"1h\"\n",
    )
    .expect("write");
    let out = Command::new(bin("fleetban-server"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: key `policy.threshold.window`",
            cfg.display()
        )),
        "{err}"
    );
}
