//! Host names in failures: banned by their addresses only in a jail that
//! asks (`usedns`); elsewhere a name is never banned.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{append, Proc};
use fleetban_tests::bins::bin;

fn agent(dir: &std::path::Path, usedns: &str) -> (Proc, std::path::PathBuf) {
    let log = dir.join(format!("app-{usedns}.log"));
    std::fs::write(&log, "").expect("log");
    let cfg = dir.join(format!("agent-{usedns}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nid = \"dns-{usedns}\"\nstate_dir = \"{state}\"\n[firewall]\nbackend = \"log\"\n[[jail]]\nname = \"app\"\nlogpath = [\"{log}\"]\nfailregex = ['login failed from <HOST>$']\nmaxretry = 2\nusedns = \"{usedns}\"\n",
            state = dir.join(format!("state-{usedns}")).display(),
            log = log.display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    (Proc::spawn(&format!("agent-{usedns}"), dir, cmd), log)
}

#[test]
fn names_are_resolved_only_when_the_jail_asks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut yes, yes_log) = agent(dir.path(), "yes");
    let (mut no, no_log) = agent(dir.path(), "no");
    yes.wait_for("agent running", 1, Duration::from_secs(30));
    no.wait_for("agent running", 1, Duration::from_secs(30));
    let lines = vec![
        "login failed from localhost".to_owned(),
        "login failed from localhost".to_owned(),
    ];
    append(&yes_log, &lines);
    append(&no_log, &lines);
    // The name is banned by its address (which the firewall then refuses:
    // the agent never blocks loopback).
    yes.wait_for("ban jail=app ip=127.0.0.1", 1, Duration::from_secs(10));
    yes.wait_for("would block loopback", 1, Duration::from_secs(10));
    // The other jail saw the same lines: no ban, and no lookup either.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!no.output().contains("ban jail="), "{}", no.output());
    yes.stop();
    no.stop();
}

#[test]
fn a_bad_usedns_value_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "[agent]\nid = \"a\"\n[[jail]]\nname = \"x\"\nlogpath = [\"/l\"]\nfailregex = [\"<HOST>\"]\nusedns = \"maybe\"\n").expect("write");
    let out = Command::new(bin("fleetban-agent"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key `jail.usedns`") && err.contains("usedns \"maybe\""),
        "{err}"
    );
}
