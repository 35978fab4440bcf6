//! Log sources end to end: the agent binary follows real files and real
//! journal files, stops and starts again in the middle of a rotation, and
//! delivers every line once.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{append, failed_login, http_get, wait_until, Proc};
use fleetban_tests::bins::bin;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// How many failures the agent logged for `ip`.
fn failures(agent: &Proc, ip: &str) -> usize {
    let needle = format!("ip={ip}");
    agent
        .output()
        .lines()
        .filter(|l| l.contains("failure") && l.split_whitespace().any(|w| w == needle))
        .count()
}

fn start_agent(dir: &Path, cfg: &Path) -> Proc {
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(cfg);
    Proc::spawn("agent", dir, cmd)
}

fn config(dir: &Path, jail: &str) -> PathBuf {
    let text = format!(
        "[agent]\nid = \"src\"\nstate_dir = \"{}\"\n[firewall]\nbackend = \"log\"\n{jail}failregex = ['Failed password for \\S+ from <HOST> port \\d+']\nmaxretry = 1000\n",
        dir.join("state").display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn a_restart_in_the_middle_of_a_rotation_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("create log");
    let cfg = config(
        dir.path(),
        &format!(
            "[[jail]]\nname = \"sshd\"\nlogpath = [\"{}\"]\n",
            log.display()
        ),
    );
    let mut agent = start_agent(dir.path(), &cfg);
    agent.wait_for("following log path", 1, Duration::from_secs(60));
    append(&log, &[failed_login("192.0.2.1", 1)]);
    agent.wait_for("ip=192.0.2.1", 1, Duration::from_secs(10));
    agent.stop();

    // While the agent is down: a line, a rotation, a line in the new file.
    append(&log, &[failed_login("192.0.2.2", 2)]);
    std::fs::rename(&log, dir.path().join("auth.log.1")).expect("rotate");
    append(&log, &[failed_login("192.0.2.3", 3)]);

    let mut agent = start_agent(dir.path(), &cfg);
    agent.wait_for("ip=192.0.2.3", 1, Duration::from_secs(60));
    append(&log, &[failed_login("192.0.2.4", 4)]);
    agent.wait_for("ip=192.0.2.4", 1, Duration::from_secs(10));
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"] {
        assert_eq!(failures(&agent, ip), 1, "{ip}\n{}", agent.output());
    }
}

/// Writes entries to a journal file with systemd-journal-remote.
fn write_journal(file: &Path, entries: &[(&str, &str, &str)]) {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    // Monotonic time follows real time, so that files written one after
    // the other interleave in order (one boot id for all).
    let mut export = String::new();
    for (i, (comm, unit, message)) in entries.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web1\nSYSLOG_IDENTIFIER={comm}\n_COMM={comm}\n_PID=42\n_SYSTEMD_UNIT={unit}\nMESSAGE={message}\n\n",
            now_us + i as u128,
            now_us + i as u128,
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(export.as_bytes())
        .expect("export");
    let out = child.wait_with_output().expect("journal-remote");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn journal_entries_are_matched_and_resumed_from_the_cursor() {
    let test = "journal_entries_are_matched_and_resumed_from_the_cursor";
    if !Path::new(JOURNAL_REMOTE).exists() {
        return fleetban_tests::skip(test, "systemd-journal-remote is not installed");
    }
    if Command::new("journalctl")
        .arg("--version")
        .output()
        .is_err()
    {
        return fleetban_tests::skip(test, "journalctl is not installed");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let journals = dir.path().join("journal");
    std::fs::create_dir(&journals).expect("mkdir");
    let fail = |ip: &str| format!("Failed password for root from {ip} port 22 ssh2");
    write_journal(
        &journals.join("a.journal"),
        &[
            ("sshd", "sshd.service", &fail("192.0.2.11")),
            ("cron", "cron.service", &fail("192.0.2.99")),
            ("sshd", "sshd.service", &fail("192.0.2.12")),
        ],
    );
    let cfg = config(
        dir.path(),
        &format!(
            "[[jail]]\nname = \"sshd\"\nbackend = \"systemd\"\nstart = \"beginning\"\nlogpath = [\"{}\"]\njournalmatch = \"_SYSTEMD_UNIT=sshd.service + _COMM=sshd\"\n",
            journals.display()
        ),
    );
    let mut agent = start_agent(dir.path(), &cfg);
    agent.wait_for("ip=192.0.2.12", 1, Duration::from_secs(60));
    agent.stop();
    write_journal(
        &journals.join("b.journal"),
        &[("sshd", "sshd.service", &fail("192.0.2.13"))],
    );
    let mut agent = start_agent(dir.path(), &cfg);
    agent.wait_for("ip=192.0.2.13", 1, Duration::from_secs(60));
    // While following: a new journal file appears.
    write_journal(
        &journals.join("c.journal"),
        &[("sshd", "sshd.service", &fail("192.0.2.14"))],
    );
    agent.wait_for("ip=192.0.2.14", 1, Duration::from_secs(30));
    for ip in ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"] {
        assert_eq!(failures(&agent, ip), 1, "{ip}\n{}", agent.output());
    }
    assert_eq!(failures(&agent, "192.0.2.99"), 0, "{}", agent.output());
}

/// A metric's value for `source` in Prometheus text, or 0.
fn metric(text: &str, name: &str, source: &Path) -> u64 {
    let key = format!("{name}{{source=\"{}\"}} ", source.display());
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_input_is_reported_counted_and_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("create log");
    let globbed = dir.path().join("logs");
    std::fs::create_dir(&globbed).expect("mkdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = config(
        dir.path(),
        &format!(
            "[[jail]]\nname = \"sshd\"\nlogpath = [\"{}\", \"{}/*.log\"]\n",
            log.display(),
            globbed.display()
        ),
    );
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "[firewall]",
        &format!("metrics_listen = \"{addr}\"\n[firewall]"),
    );
    std::fs::write(&cfg, text).expect("config");
    let mut agent = start_agent(dir.path(), &cfg);
    agent.wait_for("agent running", 1, Duration::from_secs(60));

    // A 100 MB line: cut at 64 KiB, counted; the next line is read.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b"\n").expect("write");
    }
    append(&log, &[failed_login("192.0.2.21", 1)]);
    agent.wait_for("ip=192.0.2.21", 1, Duration::from_secs(30));
    let metrics = http_get(&addr, "/metrics");
    assert_eq!(
        metric(&metrics, "fleetban_agent_source_lines_cut_total", &log),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "fleetban_agent_source_lines_read_total", &log),
        2,
        "{metrics}"
    );

    // A directory and a FIFO among the glob's matches: warned about, counted.
    std::fs::create_dir(globbed.join("dir.log")).expect("mkdir");
    let fifo = globbed.join("pipe.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    agent.wait_for("glob match skipped", 2, Duration::from_secs(30));

    // The log vanishes, then is replaced by a directory: warned, retried.
    std::fs::remove_file(&log).expect("rm log");
    std::fs::create_dir(&log).expect("directory in its place");
    agent.wait_for(
        &format!(
            "retrying path={} reason=is a directory, not a log file",
            log.display()
        ),
        1,
        Duration::from_secs(30),
    );
    std::fs::remove_dir(&log).expect("rmdir");
    append(&log, &[failed_login("192.0.2.22", 2)]);
    agent.wait_for("ip=192.0.2.22", 1, Duration::from_secs(30));
    assert!(agent.is_running(), "{}", agent.output());
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metric(&metrics, "fleetban_agent_source_errors_total", &log) >= 1,
        "{metrics}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .output()
            .contains("log source usable again")),
        "{}",
        agent.output()
    );
    for ip in ["192.0.2.21", "192.0.2.22"] {
        assert_eq!(failures(&agent, ip), 1, "{ip}\n{}", agent.output());
    }
}
