//! Smoke tests of the test infrastructure itself: the netns lab routes and
//! filters as the end-to-end tests expect, and Postgres databases are fresh.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use fleetban_tests::netns::{
    Host, Lab, A_ADDR, B_ADDR, B_X_ADDR, ROOT_A_ADDR, ROOT_B_ADDR, X_ADDRS,
};
use fleetban_tests::{bins, pg, privileges};
use sqlx::{Connection, PgConnection};

/// A `netcheck listen` process, killed when the test ends however it ends.
struct Listener {
    child: Child,
    addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Listener {
    fn start(mut cmd: Command, addr: &str) -> Listener {
        let mut child = cmd
            .args(["listen", addr, "--for", "30"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start netcheck listen");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read netcheck's first line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("netcheck listen printed {line:?}"))
            .parse()
            .expect("netcheck prints the bound address");
        Listener {
            child,
            addr,
            _stdout: stdout,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn netcheck() -> PathBuf {
    bins::bin("fleetban-netcheck")
}

/// Runs `netcheck connect` and returns whether it got through, with its output.
fn connects(mut cmd: Command, to: SocketAddr, from: &str, timeout_ms: u32) -> (bool, String) {
    let out = cmd
        .args(["connect", &to.to_string(), "--from", from])
        .args(["--timeout", &timeout_ms.to_string()])
        .output()
        .expect("run netcheck connect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        _ => panic!("netcheck connect failed to run ({}): {text}", out.status),
    }
}

#[test]
fn bin_finds_this_packages_netcheck() {
    let found = netcheck().canonicalize().expect("netcheck path exists");
    let cargo_says = Path::new(env!("CARGO_BIN_EXE_fleetban-netcheck"))
        .canonicalize()
        .expect("cargo's netcheck path exists");
    assert_eq!(found, cargo_says);
}

#[test]
fn lab_routes_agents_to_the_root_namespace() {
    if !privileges::require_netns("lab_routes_agents_to_the_root_namespace") {
        return;
    }
    let lab = Lab::new();
    for (host, root_addr, host_addr) in [
        (Host::A, ROOT_A_ADDR, A_ADDR),
        (Host::B, ROOT_B_ADDR, B_ADDR),
    ] {
        let listener = Listener::start(Command::new(netcheck()), &format!("{root_addr}:0"));
        let (ok, out) = connects(
            lab.command(host, netcheck()),
            listener.addr,
            &host_addr.to_string(),
            3000,
        );
        assert!(
            ok,
            "{host:?} cannot reach the root at {}: {out}",
            listener.addr
        );
    }
}

#[test]
fn lab_attacker_reaches_b_until_nft_drops_it() {
    if !privileges::require_netns("lab_attacker_reaches_b_until_nft_drops_it") {
        return;
    }
    let lab = Lab::new();
    let listener = Listener::start(lab.command(Host::B, netcheck()), &format!("{B_X_ADDR}:0"));
    let [banned, other] = X_ADDRS.map(|a| a.to_string());
    for from in [&banned, &other] {
        let (ok, out) = connects(lab.command(Host::X, netcheck()), listener.addr, from, 3000);
        assert!(ok, "x cannot reach b from {from}: {out}");
    }

    let status = lab
        .command(Host::B, "nft")
        .arg(format!(
            "add table inet harness; \
             add chain inet harness input {{ type filter hook input priority 0; policy accept; }}; \
             add rule inet harness input ip saddr {banned} drop"
        ))
        .status()
        .expect("run nft");
    assert!(status.success(), "nft failed: {status}");
    assert!(lab
        .nft_list_ruleset(Host::B)
        .contains(&format!("ip saddr {banned} drop")));
    assert!(
        !lab.nft_list_ruleset(Host::A).contains("harness"),
        "namespaces must not share rulesets"
    );

    let (ok, out) = connects(
        lab.command(Host::X, netcheck()),
        listener.addr,
        &banned,
        500,
    );
    assert!(!ok, "a dropped source got through: {out}");
    assert!(
        out.contains("timeout"),
        "a drop shows as a timeout, got: {out}"
    );
    let (ok, out) = connects(
        lab.command(Host::X, netcheck()),
        listener.addr,
        &other,
        3000,
    );
    assert!(ok, "the other source must still pass: {out}");
}

#[test]
fn lab_link_can_be_cut_and_restored() {
    if !privileges::require_netns("lab_link_can_be_cut_and_restored") {
        return;
    }
    let lab = Lab::new();
    let listener = Listener::start(lab.command(Host::B, netcheck()), &format!("{B_X_ADDR}:0"));
    let from = X_ADDRS[0].to_string();
    lab.set_link_up(Host::X, false);
    let (ok, out) = connects(lab.command(Host::X, netcheck()), listener.addr, &from, 500);
    assert!(!ok, "a cut link let a connection through: {out}");
    lab.set_link_up(Host::X, true);
    let (ok, out) = connects(lab.command(Host::X, netcheck()), listener.addr, &from, 5000);
    assert!(ok, "the restored link does not pass: {out}");
}

#[test]
fn netcheck_reports_refused_connections() {
    if !privileges::require_netns("netcheck_reports_refused_connections") {
        return;
    }
    let lab = Lab::new();
    let nobody = SocketAddr::from((B_X_ADDR, 9));
    let (ok, out) = connects(
        lab.command(Host::X, netcheck()),
        nobody,
        &X_ADDRS[0].to_string(),
        3000,
    );
    assert!(
        !ok && out.contains("refused"),
        "expected refused, got: {out}"
    );
}

#[tokio::test]
async fn fresh_database_answers_select_1() {
    let Some(url) = pg::fresh_database().await else {
        return;
    };
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("connect to the fresh database");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database()");
    assert!(name.starts_with("fleetban_test_"), "connected to {name}");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count tables");
    assert_eq!(tables, 0, "a fresh database is empty");

    let other = pg::fresh_database().await.expect("a second database");
    assert_ne!(other, url, "each call makes its own database");
}
