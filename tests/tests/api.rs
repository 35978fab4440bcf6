//! The REST API against real enforcement in network namespaces:
//! - a ban made through the API reaches a fleetban agent over gRPC and is
//!   enforced in namespace b's nftables; its revocation lifts it;
//! - a real CrowdSec firewall bouncer (Debian's `crowdsec-firewall-bouncer`),
//!   pointed at fleetban's `/v1/decisions/stream` with a key from
//!   `fleetban-server bouncer add`, does the same.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{agent_config, server_addrs, wait_until, Proc};
use fleetban_tests::bins::bin;
use fleetban_tests::netns::{Host, Lab, ROOT_B_ADDR, X_ADDRS};
use fleetban_tests::pg;
use fleetban_tests::privileges;

const BOUNCER: &str = "/usr/bin/crowdsec-firewall-bouncer";

/// One HTTP/1.1 request over TCP; returns the status and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_field(body: &str, key: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v[key].clone()
}

fn server_cli(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(bin("fleetban-server"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fleetban-server");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn bouncer_config(dir: &Path, api: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join("crowdsec-firewall-bouncer.yaml");
    let text = format!(
        "mode: nftables
pid_dir: {dir}
update_frequency: 1s
daemonize: false
log_mode: stdout
log_level: info
api_url: http://{api}/
api_key: {key}
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types:
  - ban
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: crowdsec
    chain: crowdsec-chain
  ipv6:
    enabled: true
    set-only: false
    table: crowdsec6
    chain: crowdsec6-chain
prometheus:
  enabled: false
  listen_addr: 127.0.0.1
  listen_port: 60601
",
        dir = dir.display()
    );
    std::fs::write(&path, text).expect("write bouncer config");
    path
}

#[test]
fn a_crowdsec_firewall_bouncer_enforces_fleetban_decisions() {
    if !privileges::require_netns("crowdsec bouncer end-to-end") {
        return;
    }
    if !Path::new(BOUNCER).exists() {
        fleetban_tests::skip(
            "crowdsec bouncer end-to-end",
            "crowdsec-firewall-bouncer is not installed (Debian package crowdsec-firewall-bouncer)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = server_cli(&data, &["bouncer", "add", "fw-b"], "");
    assert!(key.starts_with("fbb_"), "{key}");
    server_cli(
        &data,
        &["user", "add", "--role", "operator", "soc"],
        "correct horse battery\n",
    );

    let lab = Lab::new();
    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = Command::new(bin("fleetban-server"));
        c.args([
            "serve",
            "--http-listen",
            &format!("{ROOT_B_ADDR}:0"),
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data);
        c
    });
    let (api, _) = server_addrs(&mut server);
    let cfg = bouncer_config(dir.path(), &api, &key);
    let mut bouncer = Proc::spawn("bouncer", dir.path(), {
        let mut c = lab.command(Host::B, BOUNCER);
        c.arg("-c").arg(&cfg);
        c
    });
    bouncer.wait_for(
        "Processing new and deleted decisions",
        1,
        Duration::from_secs(30),
    );

    let service = lab.service_in_b();
    let (attacker, bystander) = (X_ADDRS[0].to_string(), X_ADDRS[1].to_string());
    assert!(
        lab.connects(&service, &attacker),
        "before the ban the attacker connects"
    );

    let (status, body) = http(
        &api,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(r#"{"username": "soc", "password": "correct horse battery"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let token = json_field(&body, "access_token")
        .as_str()
        .expect("token")
        .to_owned();
    let (status, body) = http(
        &api,
        "POST",
        "/api/v1/decisions",
        Some(&token),
        Some(&format!(
            r#"{{"target": "{attacker}", "reason": "seen by the SOC", "duration": "1h"}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let id = json_field(&body, "id");

    assert!(
        wait_until(Duration::from_secs(20), || lab
            .nft_list_ruleset(Host::B)
            .contains(&attacker)),
        "the bouncer puts the address in b's nftables\n{}\n{}",
        lab.nft_list_ruleset(Host::B),
        bouncer.output()
    );
    assert!(
        !lab.connects(&service, &attacker),
        "the banned address is dropped"
    );
    assert!(
        lab.connects(&service, &bystander),
        "another address still connects"
    );

    let (status, body) = http(
        &api,
        "POST",
        &format!("/api/v1/decisions/{id}/revoke"),
        Some(&token),
        Some("{}"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(20), || !lab
            .nft_list_ruleset(Host::B)
            .contains(&attacker)),
        "the revocation reaches the bouncer\n{}",
        bouncer.output()
    );
    assert!(
        lab.connects(&service, &attacker),
        "after the revocation the address connects"
    );
    bouncer.stop();
    server.stop();
}

/// Logs `user` in; returns the access token.
fn login(api: &str, user: &str) -> String {
    let (status, body) = http(
        api,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&format!(
            r#"{{"username": "{user}", "password": "correct horse battery"}}"#
        )),
    );
    assert_eq!(status, 200, "{body}");
    json_field(&body, "access_token")
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_through_the_api_is_enforced_by_agents() {
    if !privileges::require_netns("api ban end-to-end") {
        return;
    }
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("fleetban-server"))
        .args([
            "user",
            "add",
            "--role",
            "operator",
            "soc",
            "--database-url",
            &url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"correct horse battery\n")?;
            c.wait_with_output()
        })
        .expect("user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lab = Lab::new();
    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = Command::new(bin("fleetban-server"));
        c.args([
            "serve",
            "--database-url",
            &url,
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--grpc-listen", &format!("{ROOT_B_ADDR}:0")]);
        c
    });
    let (api, grpc) = server_addrs(&mut server);
    let log = dir.path().join("auth.log");
    let cfg = agent_config(dir.path(), "host-b", Some(&grpc), "nftables", &log);
    // Read the kernel back every second, so drift made below is found soon.
    let text = std::fs::read_to_string(&cfg).expect("agent config");
    std::fs::write(
        &cfg,
        text.replace(
            "backend = \"nftables\"",
            "backend = \"nftables\"\nreconcile_interval = \"1s\"",
        ),
    )
    .expect("agent config");
    common::enroll(
        &["--database-url".as_ref(), url.as_ref()],
        lab.command(Host::B, bin("fleetban-agent")),
        &cfg,
        &grpc,
    );
    let mut agent = Proc::spawn("host-b", dir.path(), {
        let mut c = lab.command(Host::B, bin("fleetban-agent"));
        c.args(["run", "--config"]).arg(&cfg);
        c
    });
    agent.wait_for("connected to server", 1, Duration::from_secs(60));

    let service = lab.service_in_b();
    let (attacker, bystander) = (X_ADDRS[0].to_string(), X_ADDRS[1].to_string());
    assert!(
        lab.connects(&service, &attacker),
        "before the ban the attacker connects"
    );

    let token = login(&api, "soc");
    let (status, body) = http(
        &api,
        "POST",
        "/api/v1/decisions",
        Some(&token),
        Some(&format!(
            r#"{{"target": "{attacker}", "reason": "SOC ticket 1", "duration": "1h"}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let id = json_field(&body, "id");
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .nft_list_ruleset(Host::B)
            .contains(&attacker)),
        "the agent enforces the API's ban\n{}",
        agent.output()
    );
    assert!(
        !lab.connects(&service, &attacker),
        "the banned address is dropped"
    );
    assert!(
        lab.connects(&service, &bystander),
        "another address still connects"
    );

    // The agent's heartbeat reports what its firewall holds; the API shows it.
    let firewall = || {
        let (status, body) = http(&api, "GET", "/api/v1/agents/host-b", Some(&token), None);
        assert_eq!(status, 200, "{body}");
        json_field(&body, "firewall")
    };
    assert!(
        wait_until(Duration::from_secs(10), || firewall()["enforced"] == 1),
        "the API shows the agent enforcing one entry: {}\n{}",
        firewall(),
        agent.output()
    );
    assert_eq!(firewall()["backend"], "nftables");
    assert_eq!(firewall()["drift_total"], 0);
    // Someone deletes fleetban's table by hand: the agent finds the drift,
    // repairs it and reports it.
    let (ok, _, err) = common::run(
        lab.command(Host::B, "nft")
            .args(["delete", "table", "inet", "fleetban"]),
    );
    assert!(ok, "nft delete table: {err}");
    assert!(
        wait_until(Duration::from_secs(20), || firewall()["drift_total"]
            .as_u64()
            .is_some_and(|n| n >= 1)),
        "the API shows the drift the agent repaired: {}\n{}",
        firewall(),
        agent.output()
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .nft_list_ruleset(Host::B)
            .contains(&attacker)),
        "the agent restores the ban after the drift"
    );
    assert_eq!(firewall()["enforced"], 1);

    let (status, body) = http(
        &api,
        "POST",
        &format!("/api/v1/decisions/{id}/revoke"),
        Some(&token),
        Some("{}"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(10), || !lab
            .nft_list_ruleset(Host::B)
            .contains(&attacker)),
        "the revocation reaches the agent\n{}",
        agent.output()
    );
    assert!(
        lab.connects(&service, &attacker),
        "after the revocation the address connects"
    );

    // The agent is listed, healthy and caught up.
    let (status, body) = http(&api, "GET", "/api/v1/agents/host-b", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_field(&body, "health"), "online");
    agent.stop();
    server.stop();
}
