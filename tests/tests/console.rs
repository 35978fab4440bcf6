//! The web console in headless Chromium, for real: a fleetban-server on a
//! fresh Postgres serving its embedded console, two agents with nftables in
//! network namespaces, and the browser tests of `web/tests/` (`npm test`,
//! Debian's Chromium driven by playwright-core). They sign in, watch a brute
//! force on agent A appear live, revoke it from the table and check that
//! agent B's firewall lets the address go, check what a viewer may do, edit
//! jail rules and correlation rules, add, comment and remove allowlist
//! entries, read the feeds' status, add a feed from a file (imported, its
//! entries banned), refresh and remove it (its bans revoked), enroll a third
//! agent with the command the agents page shows, revoke that token (enrolling
//! with it is refused), revoke agent B from the console (its stream is
//! closed), and write
//! a screenshot of each page to `target/console-screenshots/`.
//!
//! Needs `scripts/build-web` to have run before the server was built (so the
//! server embeds the console), Node.js and `/usr/bin/chromium`;
//! `scripts/test` sees to all three.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{agent_config, server_addrs, Proc};
use fleetban_tests::bins::bin;
use fleetban_tests::netns::{Host, Lab, ROOT_A_ADDR, X_ADDRS};
use fleetban_tests::{pg, privileges, skip};

const TEST: &str = "console browser tests";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// What the browser tests need that this machine may lack.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).is_file() {
        return Some(format!("{chromium} not found (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node not found".into());
    }
    if !web_dir().join("node_modules/playwright-core").is_dir() {
        return Some("web/node_modules is missing (run scripts/build-web)".into());
    }
    None
}

fn add_user(url: &str, role: &str, name: &str, password: &str) {
    let mut child = Command::new(bin("fleetban-server"))
        .args(["user", "add", "--role", role, name, "--database-url", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fleetban-server user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("wait for user add");
    assert!(
        out.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_in_a_browser() {
    if let Some(reason) = missing_tools() {
        skip(TEST, &reason);
        return;
    }
    if !privileges::require_netns(TEST) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(url) = rt.block_on(pg::fresh_database()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::new();

    // Two feeds for the feeds page: one imported, one that cannot be read.
    let feed = dir.path().join("soc-feed.txt");
    std::fs::write(&feed, "203.0.113.77\n203.0.113.78\n").expect("write feed");
    // A list the browser tests add as a feed from the console.
    let ui_feed = dir.path().join("ui-feed.txt");
    std::fs::write(&ui_feed, "").expect("write ui feed");
    let server_toml = dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[[feed]]\nname = \"soc\"\npath = \"{}\"\ninterval = \"1h\"\n\n[[feed]]\nname = \"gone\"\npath = \"{}\"\ninterval = \"1h\"\n",
            feed.display(),
            dir.path().join("no-such-feed.txt").display()
        ),
    )
    .expect("write server.toml");
    let mut server = Proc::spawn("server", dir.path(), {
        let mut c = Command::new(bin("fleetban-server"));
        c.args(["serve", "--config"])
            .arg(&server_toml)
            .args(["--database-url", &url])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", &format!("{ROOT_A_ADDR}:0")]);
        c
    });
    let (http, grpc) = server_addrs(&mut server);
    let index = common::http_get(&http, "/");
    assert!(
        index.contains("<div id=\"app\">"),
        "the server was built without the console: run scripts/build-web, then test again\n{index}"
    );

    let admin = ("ada", "correct horse battery staple");
    let viewer = ("vic", "viewer password 1234");
    add_user(&url, "admin", admin.0, admin.1);
    add_user(&url, "viewer", viewer.0, viewer.1);

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

    let firewall_b = serde_json::json!([
        "ip",
        "netns",
        "exec",
        lab.ns_name(Host::B),
        "nft",
        "list",
        "ruleset"
    ]);
    // The enroll command the console shows is run for real, in namespace a,
    // with this agent's configuration instead of /etc/fleetban/agent.toml.
    let c_log = dir.path().join("host-c-auth.log");
    let c_cfg = agent_config(dir.path(), "host-c", Some(&grpc), "log", &c_log);
    let enroll = serde_json::json!({
        "argv": ["ip", "netns", "exec", lab.ns_name(Host::A), bin("fleetban-agent")],
        "config": c_cfg,
    });
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let out = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(web_dir())
        .env("FLEETBAN_CONSOLE_URL", format!("http://{http}"))
        .env("FLEETBAN_CONSOLE_ADMIN", format!("{}:{}", admin.0, admin.1))
        .env(
            "FLEETBAN_CONSOLE_VIEWER",
            format!("{}:{}", viewer.0, viewer.1),
        )
        .env("FLEETBAN_CONSOLE_ATTACK_LOG", &a_log)
        .env("FLEETBAN_CONSOLE_ATTACKER", X_ADDRS[0].to_string())
        .env("FLEETBAN_CONSOLE_FIREWALL", firewall_b.to_string())
        .env("FLEETBAN_CONSOLE_SCREENSHOTS", &screenshots)
        .env("FLEETBAN_CONSOLE_ENROLL", enroll.to_string())
        .env("FLEETBAN_CONSOLE_FEED_FILE", &ui_feed)
        .env("FLEETBAN_CONSOLE_REVOKE", "host-b")
        .output()
        .expect("run npm test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser tests failed\n{}\n{}\n{}",
        server.output(),
        a.output(),
        b.output()
    );
    // node's runner ends with its counts: make sure the tests ran.
    assert!(
        stdout.contains("# pass 10"),
        "expected 10 passing browser tests:\n{stdout}"
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    for shot in [
        "03-overview",
        "14-policies",
        "16-allowlists",
        "17-feeds",
        "18-agents-enroll",
        "19-agents-revoked",
        "22-feeds-added",
        "23-agents-token-revoked",
    ] {
        assert!(
            screenshots.join(format!("{shot}.png")).is_file(),
            "{shot}.png"
        );
    }
    // The agent revoked from the console was cut off.
    b.wait_for("agent \"host-b\" is revoked", 1, Duration::from_secs(30));
    server.wait_for("agent revoked: stream closed", 1, Duration::from_secs(5));
    assert!(
        !a.output().contains("is revoked"),
        "only host-b is revoked\n{}",
        a.output()
    );

    b.stop();
    a.stop();
    server.stop();
}
