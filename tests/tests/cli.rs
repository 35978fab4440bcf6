//! Bad input at the command line gets a clear error and a non-zero exit.

use std::process::Command;

use fleetban_tests::bins::bin;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn agent_config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "[agent]\nid = \"a\"\n\n[[jail]]\nname = \"sshd\"\nlogpath = [\"/var/log/auth.log\"]\nfailregex = [\"<HOST>\"]\nmaxrety = 3\n")
        .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-agent"))
        .args(["run", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    let want = format!(
        "{}:8: key `jail.maxrety`: unknown field `maxrety`",
        cfg.display()
    );
    assert!(out.contains(&want), "{out}");

    std::fs::write(&cfg, "[agent]\nid = \"a\"\n[[jail]]\nname = \"sshd\"\nlogpath = [\"/l\"]\nfailregex = [\"<HOST>\"]\nbantime = \"forever-ish\"\n")
        .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}:7: key `jail.bantime`: jail \"sshd\": invalid duration",
            cfg.display()
        )),
        "{out}"
    );

    let (ok, out) = run(Command::new(bin("fleetban-agent")).args([
        "run",
        "--config",
        "/nonexistent/agent.toml",
    ]));
    assert!(!ok);
    assert!(
        out.contains("/nonexistent/agent.toml: cannot read"),
        "{out}"
    );
}

#[test]
fn agent_refuses_unusable_log_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    let logdir = dir.path().join("logs");
    std::fs::create_dir(&logdir).expect("mkdir");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nid = \"a\"\n[firewall]\nbackend = \"log\"\n[[jail]]\nname = \"sshd\"\nlogpath = [\"{}\"]\nfailregex = [\"<HOST>\"]\n",
            logdir.display()
        ),
    )
    .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-agent"))
        .args(["run", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "jail sshd: log path {}: is a directory",
            logdir.display()
        )),
        "{out}"
    );

    let missing = dir.path().join("missing.log");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).expect("read").replace(
            &logdir.display().to_string(),
            &missing.display().to_string(),
        ),
    )
    .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-agent"))
        .args(["run", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("log path {}: does not exist", missing.display())),
        "{out}"
    );
}

#[test]
fn server_refuses_bad_database_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out) = run(Command::new(bin("fleetban-server")).args([
        "serve",
        "--database-url",
        "mysql://root:hunter2@db/fleet",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("unsupported database URL \"mysql://root:***@db/fleet\""),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    let (ok, out) = run(Command::new(bin("fleetban-server"))
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .env(
            "FLEETBAN_DATABASE_URL",
            "postgres://fleet:hunter2@127.0.0.1:1/fleet",
        ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("cannot open database postgres://fleet:***@127.0.0.1:1/fleet"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, "data_dir = \"/tmp\"\ngrpc_listen = \"everywhere\"\n").expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-server"))
        .args(["serve", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}:2: key `grpc_listen`", cfg.display())),
        "{out}"
    );
}

#[test]
fn shipped_agent_example_is_valid() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
    let (ok, out) = run(Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&example));
    assert!(ok, "{out}");
    assert!(out.contains("ok (1 jails)"), "{out}");
}

#[test]
fn help_documents_every_option() {
    let (ok, out) = run(Command::new(bin("fleetban-server")).args(["serve", "--help"]));
    assert!(ok, "{out}");
    for opt in [
        "--config",
        "--data-dir",
        "--database-url",
        "--http-listen",
        "--grpc-listen",
        "FLEETBAN_DATABASE_URL",
    ] {
        assert!(out.contains(opt), "{opt} missing from:\n{out}");
    }
    let (ok, out) = run(Command::new(bin("fleetban-agent")).args(["run", "--help"]));
    assert!(ok, "{out}");
    assert!(out.contains("--config"), "{out}");
    let (ok, out) = run(Command::new(bin("fleetban-server")).args(["token", "create", "--help"]));
    assert!(ok, "{out}");
    for opt in ["--ttl", "--uses", "--group", "--database-url"] {
        assert!(out.contains(opt), "{opt} missing from:\n{out}");
    }
    let (ok, out) = run(Command::new(bin("fleetban-agent")).args(["enroll", "--help"]));
    assert!(ok, "{out}");
    for opt in [
        "--server",
        "--token",
        "--ca-fingerprint",
        "FLEETBAN_ENROLL_TOKEN",
    ] {
        assert!(out.contains(opt), "{opt} missing from:\n{out}");
    }
}

#[test]
fn identity_commands_refuse_bad_input_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = |args: &[&str]| {
        run(Command::new(bin("fleetban-server"))
            .args(args)
            .arg("--data-dir")
            .arg(&data))
    };
    let (ok, out) = server(&["token", "create", "--uses", "0"]);
    assert!(!ok, "{out}");
    assert!(out.contains("a token needs at least one use"), "{out}");
    let (ok, out) = server(&["token", "create", "--ttl", "soon"]);
    assert!(!ok, "{out}");
    assert!(out.contains("--ttl"), "{out}");
    let (ok, out) = server(&["token", "create", "--group", "web servers"]);
    assert!(!ok, "{out}");
    assert!(out.contains("group \"web servers\""), "{out}");
    let (ok, out) = server(&[
        "token", "create", "--uses", "3", "--ttl", "2h", "--group", "web",
    ]);
    assert!(ok, "{out}");
    assert!(out.starts_with("fbt1_"), "{out}");
    assert!(
        out.contains("3 use(s)") && out.contains("group web"),
        "{out}"
    );
    let (ok, out) = server(&["token", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("web") && out.contains("0/3") && out.contains("valid"),
        "{out}"
    );
    assert!(!out.contains("fbt1_"), "no secret listed: {out}");
    let (ok, out) = server(&["agent", "list"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("AGENT"), "{out}");
    let (ok, out) = server(&["agent", "revoke", "nobody"]);
    assert!(!ok, "{out}");
    assert!(out.contains("agent \"nobody\" is not enrolled"), "{out}");

    // Plaintext is for loopback only, and has no enrollment.
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        "grpc_listen = \"0.0.0.0:50051\"\n[tls]\nplaintext = true\n",
    )
    .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-server"))
        .args(["serve", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(out.contains(":3: key `tls.plaintext`"), "{out}");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[tls]\nplaintext = true\n",
            data.display()
        ),
    )
    .expect("write");
    let (ok, out) = run(Command::new(bin("fleetban-server"))
        .args(["token", "create", "--config"])
        .arg(&cfg));
    assert!(!ok, "{out}");
    assert!(out.contains("enrollment needs TLS"), "{out}");

    // The agent: no server to enroll with, a plaintext URL, an unreachable one.
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "[agent]\nid = \"a\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write");
    let token = format!("fbt1_{}_{}", "ab".repeat(32), "cd".repeat(32));
    let enroll = |extra: &[&str]| {
        run(Command::new(bin("fleetban-agent"))
            .args(["enroll", "--config"])
            .arg(&agent_cfg)
            .args(["--token", &token])
            .args(extra))
    };
    let (ok, out) = enroll(&[]);
    assert!(!ok, "{out}");
    assert!(out.contains("no server"), "{out}");
    let (ok, out) = enroll(&["--server", "http://127.0.0.1:1"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("enrollment needs an https:// server URL"),
        "{out}"
    );
    let (ok, out) = enroll(&["--server", "https://127.0.0.1:1"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("cannot reach the server at 127.0.0.1:1"),
        "{out}"
    );
    let (ok, out) = enroll(&["--server", "https://127.0.0.1:1", "--ca-fingerprint", "xyz"]);
    assert!(!ok, "{out}");
    assert!(out.contains("malformed CA fingerprint \"xyz\""), "{out}");
    assert!(!dir.path().join("state").exists(), "nothing saved");
}
