//! Enforcement in the kernel, for both backends (nftables; ipset +
//! iptables), with a standalone agent in namespace b and the attacker x:
//! a jail's ban drops TCP and ICMP from the banned address while the other
//! address still gets through; an element deleted by hand comes back; a
//! CIDR ban covers its range and expires in the kernel; ban, unban, status
//! and flush work through the control socket; a restarted agent enforces
//! its saved bans before it reaches the server; foreign tables stay as
//! they were. Bad input is refused with a clear error. Port-scoped bans
//! (a jail's `port`, `ban --port`) drop only those ports: the banned
//! address still reaches the host's other ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{append, failed_login, wait_until, Proc};
use fleetban_tests::bins::bin;
use fleetban_tests::netns::{Host, Lab, B_X_ADDR, ROOT_B_ADDR, X_ADDRS};
use fleetban_tests::privileges;

/// Whether one ping from `from` to b gets an answer.
fn pings(lab: &Lab, from: &str) -> bool {
    lab.command(Host::X, "ping")
        .args(["-c", "1", "-W", "1", "-I", from, &B_X_ADDR.to_string()])
        .output()
        .expect("ping runs (install iputils-ping)")
        .status
        .success()
}

fn sh(lab: &Lab, host: Host, script: &str) -> String {
    let out = lab
        .command(host, "sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path, backend: &str, log: &Path, server: Option<&str>) -> PathBuf {
    let server = server
        .map(|s| format!("[server]\nurl = \"https://{s}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[agent]
id = "fw-{backend}"
state_dir = "{state}"

{server}
[firewall]
backend = "{backend}"
reconcile_interval = "1s"

[[jail]]
name = "sshd"
logpath = ["{log}"]
failregex = ['Failed password for (?:invalid user )?\S+ from <HOST> port \d+']
maxretry = 3
bantime = "1h"
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    let path = dir.join(format!("{backend}.toml"));
    std::fs::write(&path, text).expect("write config");
    if !log.exists() {
        std::fs::write(log, "").expect("create log");
    }
    path
}

/// `fleetban-agent ARGS --config CFG`, on the agent's host when there is a
/// lab (as an operator runs it).
fn cli(lab: Option<&Lab>, cfg: &Path, args: &[&str]) -> Output {
    let mut cmd = match lab {
        Some(lab) => lab.command(Host::B, bin("fleetban-agent")),
        None => Command::new(bin("fleetban-agent")),
    };
    cmd.args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run fleetban-agent")
}

fn cli_ok(lab: &Lab, cfg: &Path, args: &[&str]) -> String {
    let out = cli(Some(lab), cfg, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_err(lab: Option<&Lab>, cfg: &Path, args: &[&str]) -> String {
    let out = cli(lab, cfg, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What fleetban holds in b's kernel, as text.
fn held(lab: &Lab, backend: &str) -> String {
    match backend {
        "nftables" => sh(
            lab,
            Host::B,
            "nft list table inet fleetban 2>/dev/null || true",
        ),
        _ => sh(
            lab,
            Host::B,
            "ipset save fleetban4 2>/dev/null; ipset save fleetban6 2>/dev/null; iptables -S; true",
        ),
    }
}

fn start_agent(lab: &Lab, dir: &Path, cfg: &Path) -> Proc {
    let mut cmd = lab.command(Host::B, bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(cfg);
    Proc::spawn("agent", dir, cmd)
}

fn enforcement(backend: &str) {
    if !privileges::require_netns(&format!("firewall end-to-end ({backend})")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::new();
    let log = dir.path().join("auth.log");
    let cfg = config(dir.path(), backend, &log, None);
    // Another program's table, set and chain: fleetban must leave them be.
    sh(
        &lab,
        Host::B,
        "nft add table inet foreign && nft add set inet foreign keep '{ type ipv4_addr; }' \
         && nft add element inet foreign keep '{ 203.0.113.9 }' \
         && nft add chain inet foreign input '{ type filter hook input priority 0; policy accept; }' \
         && ipset create foreign hash:ip && ipset add foreign 203.0.113.9",
    );
    let foreign = || {
        sh(
            &lab,
            Host::B,
            "nft list table inet foreign; ipset save foreign",
        )
    };
    let foreign_before = foreign();

    let service = lab.service_in_b();
    let (attacker, bystander) = (X_ADDRS[0].to_string(), X_ADDRS[1].to_string());
    let mut agent = start_agent(&lab, dir.path(), &cfg);
    agent.wait_for("agent running", 1, Duration::from_secs(60));
    assert!(lab.connects(&service, &attacker));
    assert!(pings(&lab, &attacker));

    // A jail's ban: TCP and ICMP from the attacker are dropped, not the rest.
    append(
        &log,
        &(1..=3)
            .map(|n| failed_login(&attacker, n))
            .collect::<Vec<_>>(),
    );
    agent.wait_for(
        &format!("blocked target={attacker}/32"),
        1,
        Duration::from_secs(10),
    );
    assert!(
        !lab.connects(&service, &attacker),
        "{}",
        held(&lab, backend)
    );
    assert!(!pings(&lab, &attacker));
    assert!(lab.connects(&service, &bystander));
    assert!(pings(&lab, &bystander));

    // An element deleted by hand is restored by reconciliation.
    let delete = match backend {
        "nftables" => format!("nft delete element inet fleetban host4 '{{ {attacker} }}'"),
        _ => format!("ipset del fleetban4 {attacker}"),
    };
    sh(&lab, Host::B, &delete);
    agent.wait_for(
        "the kernel drifted from the block list; repairing",
        1,
        Duration::from_secs(10),
    );
    assert!(held(&lab, backend).contains(&attacker));
    assert!(!lab.connects(&service, &attacker));
    let status = cli_ok(&lab, &cfg, &["firewall", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status["backend"], backend);
    assert!(
        status["drift_repaired"]["missing"].as_u64() >= Some(1),
        "{status}"
    );
    assert_eq!(status["intact"], true, "{status}");
    assert_eq!(status["bans"][0]["target"], format!("{attacker}/32"));

    // A CIDR ban by hand covers its range, and expires in the kernel.
    let refused = cli_err(Some(&lab), &cfg, &["ban", "198.19.0.0/24", "--for", "1h"]);
    assert!(refused.contains("this host's address"), "{refused}");
    let out = cli_ok(
        &lab,
        &cfg,
        &["ban", "198.19.0.8/29", "--for", "4s", "--reason", "test"],
    );
    assert!(out.contains("banned 198.19.0.8/29"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || held(&lab, backend)
        .contains("198.19.0.8")));
    assert!(!lab.connects(&service, &bystander));
    assert!(
        wait_until(Duration::from_secs(15), || lab
            .connects(&service, &bystander)),
        "the prefix ban did not expire\n{}",
        held(&lab, backend)
    );

    // Unban by hand lifts the jail's ban.
    let out = cli_ok(&lab, &cfg, &["unban", &attacker]);
    assert!(out.contains("unbanned"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || lab.connects(&service, &attacker)));
    let again = cli_err(Some(&lab), &cfg, &["unban", &attacker]);
    assert!(again.contains("not banned by this agent"), "{again}");

    // A manual ban survives a restart and a reboot-like loss of the kernel
    // state, and is enforced before the server is reached.
    cli_ok(&lab, &cfg, &["ban", &attacker, "--for", "1h"]);
    assert!(wait_until(Duration::from_secs(5), || !lab
        .connects(&service, &attacker)));
    agent.stop();
    // With the agent stopped, status reads the kernel directly.
    let out = cli_ok(&lab, &cfg, &["firewall", "status"]);
    assert!(
        out.contains("no running agent") && out.contains(&format!("{attacker}/32")),
        "{out}"
    );
    let out = cli_ok(&lab, &cfg, &["firewall", "flush"]);
    assert!(out.contains("no running agent"), "{out}");
    assert!(!held(&lab, backend).contains(&attacker));
    assert!(lab.connects(&service, &attacker));
    // A server that is not there: the agent must not wait for it.
    let cfg = config(dir.path(), backend, &log, Some(&format!("{ROOT_B_ADDR}:9")));
    let mut agent = start_agent(&lab, dir.path(), &cfg);
    agent.wait_for("server link down", 2, Duration::from_secs(30));
    let output = agent.output();
    let ready = output.rfind("firewall ready").expect("ready");
    assert!(output[ready..].contains("restored=1"), "{output}");
    let down = output.find("server link down").expect("link down");
    assert!(ready < down);
    assert!(!lab.connects(&service, &attacker));

    // Flush through the running agent removes everything fleetban added.
    let out = cli_ok(&lab, &cfg, &["firewall", "flush"]);
    assert!(out.contains("removed"), "{out}");
    let after = sh(
        &lab,
        Host::B,
        "nft list ruleset; ipset list -n; iptables -S",
    );
    assert!(!after.contains("fleetban"), "{after}");
    assert!(lab.connects(&service, &attacker));
    assert_eq!(
        foreign(),
        foreign_before,
        "the foreign table or set changed"
    );
    assert!(agent.is_running());
    agent.stop();
}

#[test]
fn nftables_enforcement() {
    enforcement("nftables");
}

/// A standalone agent whose `sshd` jail bans the port of `service` only.
fn port_config(dir: &Path, backend: &str, log: &Path, port: &str) -> PathBuf {
    let cfg = config(dir, backend, log, None);
    let text = std::fs::read_to_string(&cfg).expect("read config");
    let text = text.replace(
        "maxretry = 3\n",
        &format!("maxretry = 3\nport = \"{port}\"\n"),
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

fn port_of(service: &fleetban_tests::netns::Service) -> String {
    service
        .addr
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .expect("host:port")
}

fn port_scoped_enforcement(backend: &str) {
    if !privileges::require_netns(&format!("port-scoped bans end-to-end ({backend})")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::new();
    let log = dir.path().join("auth.log");
    let (guarded, other) = (lab.service_in_b(), lab.service_in_b());
    let (guarded_port, other_port) = (port_of(&guarded), port_of(&other));
    let cfg = port_config(dir.path(), backend, &log, &guarded_port);
    let (attacker, bystander) = (X_ADDRS[0].to_string(), X_ADDRS[1].to_string());
    let mut agent = start_agent(&lab, dir.path(), &cfg);
    agent.wait_for("agent running", 1, Duration::from_secs(60));

    // The jail's ban covers its port only: the attacker's other traffic
    // (another port, ICMP) still gets through, as does the bystander.
    append(
        &log,
        &(1..=3)
            .map(|n| failed_login(&attacker, n))
            .collect::<Vec<_>>(),
    );
    agent.wait_for(
        &format!("blocked port target={attacker}/32 protocol=\"tcp\" port={guarded_port}"),
        1,
        Duration::from_secs(10),
    );
    assert!(
        !lab.connects(&guarded, &attacker),
        "{}",
        held(&lab, backend)
    );
    assert!(lab.connects(&other, &attacker), "{}", held(&lab, backend));
    assert!(pings(&lab, &attacker));
    assert!(lab.connects(&guarded, &bystander));
    let status = cli_ok(&lab, &cfg, &["firewall", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status["desired"], 0, "{status}");
    assert_eq!(status["desired_ports"], 1, "{status}");
    assert_eq!(status["kernel_ports"], 1, "{status}");
    assert_eq!(status["bans"][0]["ports"], format!("tcp/{guarded_port}"));
    assert_eq!(status["bans"][0]["jail"], "sshd");
    let text = cli_ok(&lab, &cfg, &["firewall", "status"]);
    assert!(
        text.contains(&format!("ports=tcp/{guarded_port}")) && text.contains("port elements: 1"),
        "{text}"
    );

    // A port element deleted by hand is restored by reconciliation.
    let delete = match backend {
        "nftables" => format!(
            "nft delete element inet fleetban port4 '{{ {attacker} . tcp . {guarded_port} }}'"
        ),
        _ => format!("ipset del fleetbanp4 {attacker},tcp:{guarded_port}"),
    };
    sh(&lab, Host::B, &delete);
    assert!(lab.connects(&guarded, &attacker));
    agent.wait_for(
        "the kernel drifted from the block list; repairing",
        1,
        Duration::from_secs(10),
    );
    assert!(!lab.connects(&guarded, &attacker));

    // A port-scoped ban by hand: the bystander loses the other port only.
    let out = cli_ok(
        &lab,
        &cfg,
        &["ban", &bystander, "--for", "1h", "--port", &other_port],
    );
    assert!(out.contains(&format!("on tcp/{other_port}")), "{out}");
    assert!(wait_until(Duration::from_secs(5), || !lab.connects(&other, &bystander)));
    assert!(lab.connects(&guarded, &bystander));
    assert!(pings(&lab, &bystander));
    // A bad port list is refused, and nothing is banned.
    let e = cli_err(Some(&lab), &cfg, &["ban", "198.19.0.99", "--port", "sshh"]);
    assert!(
        e.contains("--port \"sshh\"") && e.contains("unknown service"),
        "{e}"
    );
    let e = cli_err(
        Some(&lab),
        &cfg,
        &["ban", "198.19.0.99", "--port", "22", "--protocol", "icmp"],
    );
    assert!(e.contains("unknown protocol \"icmp\""), "{e}");
    assert!(!held(&lab, backend).contains("198.19.0.99"));

    // Unban lifts the port-scoped ban.
    let out = cli_ok(&lab, &cfg, &["unban", &attacker]);
    assert!(out.contains("unbanned"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || lab.connects(&guarded, &attacker)));
    agent.stop();
    cli_ok(&lab, &cfg, &["firewall", "flush"]);
    assert!(lab.connects(&other, &bystander));
}

#[test]
fn nftables_port_scoped_bans() {
    port_scoped_enforcement("nftables");
}

#[test]
fn ipset_port_scoped_bans() {
    port_scoped_enforcement("ipset");
}

#[test]
fn ipset_enforcement() {
    enforcement("ipset");
}

/// Bad input from the command line: a clear error, nothing sent.
#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    let cfg = config(dir.path(), "log", &log, None);
    let e = cli_err(None, &cfg, &["ban", "300.1.2.3"]);
    assert!(e.contains("300.1.2.3"), "{e}");
    let e = cli_err(None, &cfg, &["ban", "192.0.2.1", "--for", "soon"]);
    assert!(e.contains("invalid duration \"soon\""), "{e}");
    let e = cli_err(None, &cfg, &["unban", "192.0.2.1/40"]);
    assert!(e.contains("192.0.2.1/40"), "{e}");
    let e = cli_err(None, &cfg, &["firewall", "status"]);
    assert!(
        e.contains("control.sock") && e.contains("is fleetban-agent running?"),
        "{e}"
    );
    let e = cli_err(None, &cfg, &["ban", "192.0.2.1", "--port", "70000"]);
    assert!(e.contains("invalid port \"70000\""), "{e}");
    // A jail's bad port list: the configuration is refused, naming the key.
    let bad = port_config(dir.path(), "log", &log, "sshh");
    let out = Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("check-config");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("key `jail.port`") && e.contains("unknown service \"sshh\""),
        "{e}"
    );

    // A host without nftables: the agent says so at start and names the
    // fallback.
    let mut cmd = Command::new(bin("fleetban-agent"));
    let cfg = config(dir.path(), "nftables", &log, None);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("PATH", dir.path());
    let out = cmd.output().expect("run agent");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot run nft") && e.contains("backend = \"ipset\""),
        "{e}"
    );
}

/// A manual ban made while the server is away is enforced at once and
/// reaches the server, as a local ban of jail `manual`, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_ban_made_offline_reaches_the_server_later() {
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
    // The agent enrolls, then the server goes away.
    let mut srv = server("127.0.0.1:0");
    let (_, grpc) = common::server_addrs(&mut srv);
    let log = dir.path().join("auth.log");
    let cfg = config(dir.path(), "log", &log, Some(&grpc));
    common::enroll(
        &["--data-dir".as_ref(), data.as_os_str()],
        Command::new(bin("fleetban-agent")),
        &cfg,
        &grpc,
    );
    srv.stop();
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut agent = Proc::spawn("agent", dir.path(), cmd);
    agent.wait_for("server link down", 1, Duration::from_secs(30));

    let out = cli(
        None,
        &cfg,
        &["ban", "192.0.2.77", "--for", "2h", "--reason", "scanner"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for("blocked target=192.0.2.77/32", 1, Duration::from_secs(10));

    let mut srv = server(&grpc);
    common::server_addrs(&mut srv);
    agent.wait_for("connected to server", 1, Duration::from_secs(30));
    let url = format!("sqlite://{}", data.join("fleetban.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
    let mut found = Vec::new();
    for _ in 0..250 {
        found = sqlx::query_as::<_, (String, String)>(
            "SELECT target, jail FROM decisions WHERE target = '192.0.2.77/32'",
        )
        .fetch_all(&db)
        .await
        .expect("query");
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        found,
        vec![("192.0.2.77/32".to_owned(), "manual".to_owned())],
        "{}\n{}",
        agent.output(),
        srv.output()
    );
    agent.stop();
    srv.stop();
}
