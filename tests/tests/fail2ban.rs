//! fleetban against fail2ban itself: the agent runs a fail2ban jail with
//! fail2ban's own sshd filter, read unchanged from /etc/fail2ban, and
//! `test-filter` counts lines as `fail2ban-regex` does (the oracle).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{append, failed_login, Proc};
use fleetban_tests::bins::bin;

const FILTERS: &str = "/etc/fail2ban/filter.d";
const LOGS: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";

fn fail2ban_installed(test: &str) -> bool {
    let ok = Path::new(FILTERS).join("sshd.conf").is_file()
        && Path::new(LOGS).is_dir()
        && which("fail2ban-regex");
    if !ok {
        fleetban_tests::skip(test, "Debian's fail2ban package is not installed");
    }
    ok
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `Lines: N lines, I ignored, M matched, X missed` from fail2ban-regex.
fn fail2ban_counts(log: &Path, filter: &str) -> (u64, u64, u64, u64) {
    let out = Command::new("fail2ban-regex")
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_else(|| panic!("no Lines: in\n{text}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    (n[0], n[1], n[2], n[3])
}

#[test]
fn test_filter_counts_lines_as_fail2ban_regex_does() {
    if !fail2ban_installed("test_filter_counts_lines_as_fail2ban_regex_does") {
        return;
    }
    for filter in [
        "apache-auth",
        "nginx-http-auth",
        "postfix",
        "dovecot",
        "named-refused",
        "exim",
        "vsftpd",
        "courier-smtp",
    ] {
        let log = Path::new(LOGS).join(filter);
        let (lines, ignored, matched, missed) = fail2ban_counts(&log, filter);
        let out = Command::new(bin("fleetban-agent"))
            .args(["test-filter", "--json"])
            .arg(&log)
            .arg(filter)
            .output()
            .expect("test-filter runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("summary")).expect("json");
        let ours = (
            summary["lines"].as_u64(),
            summary["ignored"].as_u64(),
            summary["matched"].as_u64(),
            summary["missed"].as_u64(),
        );
        assert_eq!(
            ours,
            (Some(lines), Some(ignored), Some(matched), Some(missed)),
            "{filter}: fleetban vs fail2ban-regex"
        );
        for l in text.lines().rev().skip(1) {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            assert!(
                v["line"].as_u64().is_some() && v["host"].as_str().is_some(),
                "{filter}: {l}"
            );
        }
    }
}

#[test]
fn test_filter_reports_bad_filters_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("x.log");
    std::fs::write(&log, "x\n").expect("log");
    let f = dir.path().join("broken.conf");
    std::fs::write(
        &f,
        "[Definition]\n\nfailregex = ^ok <HOST>$\n            ^bad (<HOST>\n",
    )
    .expect("filter");
    let out = Command::new(bin("fleetban-agent"))
        .args(["test-filter"])
        .arg(&log)
        .arg(&f)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3: failregex #2: missing closing parenthesis at position",
        f.display()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn an_agent_runs_a_fail2ban_jail_with_fail2bans_own_filter() {
    if !fail2ban_installed("an_agent_runs_a_fail2ban_jail_with_fail2bans_own_filter") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let f2b = dir.path().join("fail2ban");
    std::fs::create_dir_all(&f2b).expect("mkdir");
    // fail2ban's filters, unchanged, beside a jail configuration of the test's own.
    std::os::unix::fs::symlink(FILTERS, f2b.join("filter.d")).expect("symlink");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    std::fs::write(
        f2b.join("jail.conf"),
        format!(
            "[DEFAULT]\nfilter = %(__name__)s[mode=%(mode)s]\nmode = normal\nbantime = 1h\nfindtime = 10m\nmaxretry = 3\n\n[sshd]\nenabled = true\nlogpath = {}\n\n[apache-auth]\nlogpath = /nonexistent\n",
            log.display()
        ),
    )
    .expect("jail.conf");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nid = \"f2b\"\n[firewall]\nbackend = \"log\"\n[fail2ban]\ndir = \"{}\"\n",
            f2b.display()
        ),
    )
    .expect("agent.toml");
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut agent = Proc::spawn("agent", dir.path(), cmd);
    agent.wait_for("agent running", 1, Duration::from_secs(30));
    let now = chrono_like_stamp();
    let lines: Vec<String> = (0..3).map(|n| format!("{now} host sshd[{}]: Failed password for invalid user admin from 203.0.113.9 port {} ssh2", 100 + n, 4000 + n)).collect();
    append(&log, &lines);
    agent.wait_for("blocked target=203.0.113.9/32", 1, Duration::from_secs(10));
    // A line of another daemon is no sshd failure.
    append(
        &log,
        &[failed_login("203.0.113.10", 1).replace("sshd[", "ftpd[")],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !agent.output().contains("203.0.113.10"),
        "{}",
        agent.output()
    );
    agent.stop();
}

/// fail2ban's own jail.conf, read unchanged: its sshd jail (default
/// `banaction`, `port = ssh`) bans TCP port 22 only, and its recidive jail
/// (`banaction_allports`) bans all traffic, as fail2ban's actions would.
#[test]
fn fail2bans_jail_conf_bans_the_ports_its_actions_would() {
    if !fail2ban_installed("fail2bans_jail_conf_bans_the_ports_its_actions_would") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let f2b = dir.path().join("fail2ban");
    std::fs::create_dir_all(&f2b).expect("mkdir");
    for name in [
        "jail.conf",
        "paths-common.conf",
        "paths-debian.conf",
        "filter.d",
        "action.d",
    ] {
        std::os::unix::fs::symlink(Path::new("/etc/fail2ban").join(name), f2b.join(name))
            .expect("symlink");
    }
    let (auth, f2b_log) = (dir.path().join("auth.log"), dir.path().join("fail2ban.log"));
    std::fs::write(&auth, "").expect("log");
    std::fs::write(&f2b_log, "").expect("log");
    std::fs::write(
        f2b.join("jail.local"),
        format!(
            "[sshd]\nenabled = true\nbackend = auto\nlogpath = {}\n\n[recidive]\nenabled = true\nbackend = auto\nlogpath = {}\n",
            auth.display(),
            f2b_log.display()
        ),
    )
    .expect("jail.local");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nid = \"f2b-ports\"\nstate_dir = \"{}\"\n[firewall]\nbackend = \"log\"\n[fail2ban]\ndir = \"{}\"\n",
            dir.path().join("state").display(),
            f2b.display()
        ),
    )
    .expect("agent.toml");
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut agent = Proc::spawn("agent", dir.path(), cmd);
    agent.wait_for("agent running", 1, Duration::from_secs(30));

    let now = chrono_like_stamp();
    let lines: Vec<String> = (0..5).map(|n| format!("{now} host sshd[{}]: Failed password for invalid user admin from 203.0.113.19 port {} ssh2", 100 + n, 4000 + n)).collect();
    append(&auth, &lines);
    agent.wait_for(
        "blocked port target=203.0.113.19/32 protocol=\"tcp\" port=22",
        1,
        Duration::from_secs(10),
    );
    let stamp = Command::new("date")
        .arg("+%Y-%m-%d %H:%M:%S,000")
        .output()
        .expect("date");
    let stamp = String::from_utf8_lossy(&stamp.stdout).trim().to_owned();
    let bans: Vec<String> = (0..5)
        .map(|n| {
            format!(
                "{stamp} fail2ban.actions        [{}]: NOTICE  [sshd] Ban 203.0.113.20",
                900 + n
            )
        })
        .collect();
    append(&f2b_log, &bans);
    agent.wait_for("blocked target=203.0.113.20/32", 1, Duration::from_secs(10));
    let out = agent.output();
    assert!(!out.contains("blocked target=203.0.113.19/32"), "{out}");
    assert!(!out.contains("blocked port target=203.0.113.20"), "{out}");
    agent.stop();
}

/// The current local time as syslog writes it (`Nov 25 10:00:00`).
fn chrono_like_stamp() -> String {
    let out = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
