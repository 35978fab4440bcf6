//! Agent identity with the real binaries over real TLS, on a real Postgres:
//! an agent enrolls with a token and connects; an unenrolled agent cannot;
//! tokens run out and expire; a token for another fleet's CA, a wrong CA
//! fingerprint and an agent id already taken are refused; a revoked agent's
//! stream is closed at once and it cannot come back.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    agent_config, create_token, enroll, http_get, server_addrs, try_enroll, wait_until, Proc,
};
use fleetban_tests::bins::bin;
use fleetban_tests::pg;

fn agent_cmd() -> Command {
    Command::new(bin("fleetban-agent"))
}

fn run_agent(dir: &Path, name: &str, cfg: &Path) -> Proc {
    let mut cmd = agent_cmd();
    cmd.args(["run", "--config"]).arg(cfg);
    Proc::spawn(name, dir, cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enroll_connect_and_are_cut_off_when_revoked() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let Some(other_fleet) = pg::fresh_database().await else {
        return;
    };
    let db: [&OsStr; 2] = ["--database-url".as_ref(), url.as_ref()];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = Command::new(bin("fleetban-server"));
        c.args(["serve", "--database-url", &url]).args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ]);
        c
    });
    let (http, grpc) = server_addrs(&mut server);
    let listening = std::fs::read_to_string(&server.stdout).expect("stdout");
    assert!(listening.contains("grpc=https://"), "{listening}");
    assert!(listening.contains("CA fingerprint: sha256:"), "{listening}");

    // Unenrolled: the agent runs (and would ban locally) but cannot connect.
    let log_u = dir.path().join("u.log");
    let cfg_u = agent_config(dir.path(), "host-u", Some(&grpc), "log", &log_u);
    let mut unenrolled = run_agent(dir.path(), "host-u", &cfg_u);
    unenrolled.wait_for("not enrolled", 1, Duration::from_secs(30));
    unenrolled.stop();
    assert!(!unenrolled.output().contains("connected to server"));

    // A one-use token enrolls one agent, which connects.
    let log_a = dir.path().join("a.log");
    let cfg_a = agent_config(dir.path(), "host-a", Some(&grpc), "log", &log_a);
    let token = create_token(&db, &["--uses", "1", "--group", "web"]);
    assert!(token.starts_with("fbt1_"), "{token}");
    let (ok, out) = try_enroll(agent_cmd(), &cfg_a, &grpc, &token, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("enrolled as agent host-a (group web)"),
        "{out}"
    );
    let key = dir.path().join("host-a-state/identity/agent.key");
    assert!(key.is_file(), "the key is saved");
    let check = Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&cfg_a)
        .output()
        .expect("check-config");
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok (1 jails); enrolled"));
    let check = Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&cfg_u)
        .output()
        .expect("check-config");
    assert!(String::from_utf8_lossy(&check.stdout).contains("; not enrolled"));
    let mut a = run_agent(dir.path(), "host-a", &cfg_a);
    a.wait_for("connected to server", 1, Duration::from_secs(30));

    // The token is used up now.
    let log_b = dir.path().join("b.log");
    let cfg_b = agent_config(dir.path(), "host-b", Some(&grpc), "log", &log_b);
    let (ok, out) = try_enroll(agent_cmd(), &cfg_b, &grpc, &token, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("is used up"), "{out}");
    assert!(
        !dir.path().join("host-b-state/identity").exists(),
        "nothing saved on refusal"
    );

    // An expired token.
    let short = create_token(&db, &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out) = try_enroll(agent_cmd(), &cfg_b, &grpc, &short, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("has expired"), "{out}");

    // A well-formed token the fleet never made.
    let fingerprint = token.rsplit('_').next().expect("fingerprint");
    let forged = format!("fbt1_{}_{fingerprint}", "ab".repeat(32));
    let (ok, out) = try_enroll(agent_cmd(), &cfg_b, &grpc, &forged, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("unknown enrollment token"), "{out}");

    // A malformed one.
    let (ok, out) = try_enroll(agent_cmd(), &cfg_b, &grpc, "hunter2", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("malformed enrollment token"), "{out}");

    // A token of another fleet names another CA: the agent will not talk to
    // this server.
    let foreign = create_token(&["--database-url".as_ref(), other_fleet.as_ref()], &[]);
    let (ok, out) = try_enroll(agent_cmd(), &cfg_b, &grpc, &foreign, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the server's CA is not the expected one"),
        "{out}"
    );

    // A fingerprint flag that disagrees with the token.
    let good = create_token(&db, &[]);
    let zeros = "00".repeat(32);
    let (ok, out) = try_enroll(
        agent_cmd(),
        &cfg_b,
        &grpc,
        &good,
        &["--ca-fingerprint", &zeros],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("--ca-fingerprint gives"), "{out}");

    // Another host claiming an enrolled id is refused.
    let impostor = dir.path().join("impostor.toml");
    std::fs::write(
        &impostor,
        std::fs::read_to_string(&cfg_a)
            .expect("cfg")
            .replace("host-a-state", "impostor-state"),
    )
    .expect("write");
    let (ok, out) = try_enroll(agent_cmd(), &impostor, &grpc, &good, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("already enrolled"), "{out}");

    // With the right fingerprint given too (the same token, unused so far).
    let (ok, out) = try_enroll(
        agent_cmd(),
        &cfg_b,
        &grpc,
        &good,
        &["--ca-fingerprint", &fingerprint.to_uppercase()],
    );
    assert!(ok, "{out}");
    let mut b = run_agent(dir.path(), "host-b", &cfg_b);
    b.wait_for("connected to server", 1, Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(20), || {
        http_get(&http, "/metrics").contains("fleetban_server_agents_connected 2")
    }));

    // Revoked from the command line: A's stream closes, and it is refused
    // when it tries again; B stays.
    let out = Command::new(bin("fleetban-server"))
        .args(["agent", "revoke", "host-a"])
        .args(db)
        .output()
        .expect("revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent host-a revoked"));
    a.wait_for("agent \"host-a\" is revoked", 2, Duration::from_secs(30));
    server.wait_for("agent revoked: stream closed", 1, Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(20), || {
        http_get(&http, "/metrics").contains("fleetban_server_agents_connected 1")
    }));
    assert_eq!(a.output().matches("connected to server").count(), 1);
    assert!(b.is_running());
    assert!(!b.output().contains("is revoked"), "{}", b.output());

    let out = Command::new(bin("fleetban-server"))
        .args(["agent", "list"])
        .args(db)
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&out.stdout);
    let row = |id: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{listing}"))
            .to_owned()
    };
    assert!(row("host-a ").contains(" web "), "{listing}");
    // Enrolled and revoked times for A; B has no revocation.
    assert_eq!(row("host-a ").matches("Z ").count(), 2, "{listing}");
    assert_eq!(row("host-b ").matches("Z ").count(), 1, "{listing}");

    // Revoking an agent that never enrolled says so.
    let out = Command::new(bin("fleetban-server"))
        .args(["agent", "revoke", "host-z"])
        .args(db)
        .output()
        .expect("revoke");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent \"host-z\" is not enrolled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Enrolled again with a new token, A is back without a restart.
    enroll(&db, agent_cmd(), &cfg_a, &grpc);
    a.wait_for("connected to server", 2, Duration::from_secs(30));
    a.stop();
    b.stop();
    server.stop();
}

/// An operator's own CA, made with openssl: the server signs with it, tokens
/// carry its fingerprint, and an agent enrolled with it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ca_from_files_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Example Ops CA",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl (Debian's openssl package) is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .expect("openssl");
    // "sha256 Fingerprint=AB:CD:…"
    let fingerprint = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");

    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            dir.path().join("data").display(),
            ca.display(),
            key.display()
        ),
    )
    .expect("server.toml");
    let server_db: [&OsStr; 2] = ["--config".as_ref(), cfg.as_os_str()];
    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = Command::new(bin("fleetban-server"));
        c.args(["serve", "--config"]).arg(&cfg);
        c
    });
    let (_, grpc) = server_addrs(&mut server);
    assert!(
        std::fs::read_to_string(&server.stdout)
            .expect("stdout")
            .contains(&format!("CA fingerprint: sha256:{fingerprint}")),
        "{}",
        server.output()
    );
    let token = create_token(&server_db, &[]);
    assert!(token.ends_with(&fingerprint), "{token}");
    let log = dir.path().join("a.log");
    let agent_cfg = agent_config(dir.path(), "ops-1", Some(&grpc), "log", &log);
    let (ok, out) = try_enroll(agent_cmd(), &agent_cfg, &grpc, &token, &[]);
    assert!(ok, "{out}\nserver:\n{}", server.output());
    let mut agent = run_agent(dir.path(), "ops-1", &agent_cfg);
    agent.wait_for("connected to server", 1, Duration::from_secs(30));
    agent.stop();
    server.stop();

    // A key that does not belong to the certificate is refused at start.
    let other = dir.path().join("other.key");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace(&key.display().to_string(), &other.display().to_string()),
    )
    .expect("rewrite");
    let out = Command::new(bin("fleetban-server"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the private key does not belong to the certificate"),
        "{err}"
    );
}

/// The command line writes to the embedded database while the server starts
/// and runs (a fresh CA, policies seeded): neither side fails with
/// `database is locked`, and the server keeps running.
#[test]
fn the_cli_and_a_starting_server_share_the_embedded_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..4 {
        let here = dir.path().join(format!("round{round}"));
        std::fs::create_dir_all(&here).expect("round dir");
        let data = here.join("data");
        let mut server = Proc::spawn("server", &here, {
            let mut c = Command::new(bin("fleetban-server"));
            c.args(["serve", "--data-dir"]).arg(&data).args([
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ]);
            c
        });
        common::server_addrs(&mut server);
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let data = data.clone();
                std::thread::spawn(move || {
                    create_token(&["--data-dir".as_ref(), data.as_os_str()], &[])
                })
            })
            .collect();
        for w in writers {
            let token = w.join().expect("token create");
            assert!(
                !token.is_empty() && !token.contains(char::is_whitespace),
                "{token}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(server.is_running(), "{}", server.output());
        server.stop();
    }
}
