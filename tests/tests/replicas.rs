//! Two server replicas on one Postgres, with real processes over real gRPC
//! (agents on loopback with the `log` firewall: kernel enforcement is shown
//! by `fleet.rs`; here the point is the control plane):
//!
//! - failures of one address spread over agents on both replicas make
//!   exactly one fleet decision, enforced on every agent;
//! - a jail policy changed in the database reaches the agents of its group,
//!   which apply it without a restart;
//! - killing one replica moves its agents to the other, with nothing lost;
//! - stopping Postgres for 30 s loses no event, bans stay enforced (and new
//!   local bans are made), and the servers recover without a restart: the
//!   replica that stored the reports decides, the other one listens again
//!   and passes the decisions on to its agent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{append, enroll, failed_login, server_addrs, Proc};
use fleetban_tests::bins::bin;

/// A Postgres cluster of its own (this test stops it), deleted on drop.
struct Cluster {
    dir: PathBuf,
    url: String,
}

fn pg_throwaway(cmd: &str, dir: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-throwaway");
    let out = Command::new("bash")
        .arg(script)
        .arg(cmd)
        .arg(dir)
        .env("TMPDIR", "/tmp")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let dir = PathBuf::from(format!("/tmp/fleetban-replicas-pg-{}", std::process::id()));
        let url = pg_throwaway("start", &dir)?;
        Ok(Cluster { dir, url })
    }

    fn halt(&self) {
        pg_throwaway("halt", &self.dir).expect("halt postgres");
    }

    fn resume(&self) {
        let url = pg_throwaway("start", &self.dir).expect("start postgres again");
        assert_eq!(url, self.url, "postgres came back on another port");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_throwaway("stop", &self.dir);
    }
}

fn server(name: &str, dir: &Path, url: &str) -> (Proc, String) {
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "database_url = \"{url}\"\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n\n\
             [policy.threshold]\nhosts = 3\nwindow = \"10m\"\nbantime = \"1h\"\n"
        ),
    )
    .expect("server.toml");
    let mut cmd = Command::new(bin("fleetban-server"));
    cmd.args(["serve", "--config"]).arg(&cfg);
    let mut p = Proc::spawn(name, dir, cmd);
    let (_, grpc) = server_addrs(&mut p);
    (p, grpc)
}

/// An agent of `group` with one sshd jail (maxretry 3), enrolled on the
/// database `db` and connecting to `servers` in that order.
fn agent(name: &str, dir: &Path, db: &str, group: &str, servers: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    std::fs::write(&log, "").expect("log");
    let urls: Vec<String> = servers.iter().map(|s| format!("\"https://{s}\"")).collect();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
id = "{name}"
group = "{group}"
state_dir = "{state}"

[server]
url = [{urls}]

[firewall]
backend = "log"

[[jail]]
name = "sshd"
logpath = ["{log}"]
failregex = ['Failed password for (?:invalid user )?\S+ from <HOST> port \d+']
maxretry = 3
findtime = "10m"
bantime = "1h"
"#,
            state = dir.join(format!("{name}-state")).display(),
            urls = urls.join(", "),
            log = log.display(),
        ),
    )
    .expect("agent config");
    enroll(
        &["--database-url".as_ref(), db.as_ref()],
        Command::new(bin("fleetban-agent")),
        &cfg,
        servers[0],
    );
    let mut cmd = Command::new(bin("fleetban-agent"));
    cmd.args(["run", "--config"]).arg(&cfg);
    (Proc::spawn(name, dir, cmd), log)
}

/// Waits until `sql` counts `want` for `ip` (reports may still be on their
/// way after the ban they contributed to is enforced); returns the count.
async fn settles(db: &sqlx::PgPool, sql: &str, ip: &str, want: i64) -> i64 {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(db, sql, ip).await;
        if n >= want || std::time::Instant::now() > end {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn blocked(p: &mut Proc, ip: &str, within: Duration) {
    p.wait_for(&format!("blocked target={ip}/32"), 1, within);
}

async fn count(db: &sqlx::PgPool, sql: &str, ip: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(ip)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql} ({ip}): {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_decisions_fail_over_and_survive_a_database_outage() {
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            fleetban_tests::skip("replicas", &format!("no throw-away Postgres: {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s1, g1) = server("server-1", dir.path(), &cluster.url);
    let (mut s2, g2) = server("server-2", dir.path(), &cluster.url);
    let (mut a1, a1_log) = agent("a1", dir.path(), &cluster.url, "web", &[&g1, &g2]);
    let (mut a2, a2_log) = agent("a2", dir.path(), &cluster.url, "web", &[&g1, &g2]);
    let (mut b1, b1_log) = agent("b1", dir.path(), &cluster.url, "db", &[&g2, &g1]);
    for (p, server) in [(&mut a1, &g1), (&mut a2, &g1), (&mut b1, &g2)] {
        p.wait_for(
            &format!("connected to server server=https://{server}"),
            1,
            Duration::from_secs(60),
        );
    }
    let db = sqlx::PgPool::connect(&cluster.url).await.expect("connect");
    let mut n = 0;
    let mut fail = |log: &Path, ip: &str| {
        n += 1;
        append(log, &[failed_login(ip, n)]);
    };

    // One failure on each of three agents, two replicas: the fleet
    // threshold (3 hosts) is met once, and all three agents enforce it.
    let ip1 = "203.0.113.1";
    fail(&a1_log, ip1);
    fail(&b1_log, ip1);
    fail(&a2_log, ip1);
    for p in [&mut a1, &mut a2, &mut b1] {
        blocked(p, ip1, Duration::from_secs(20));
    }
    let decisions_of = "SELECT count(*) FROM decisions WHERE kind = 'ban' AND host(target) = $1";
    let events_of = "SELECT count(*) FROM events WHERE host(ip) = $1";
    assert_eq!(count(&db, decisions_of, ip1).await, 1);
    assert_eq!(count(&db, events_of, ip1).await, 3);
    assert!(
        !a1.output().contains(": ban jail="),
        "no local ban: one failure each"
    );

    // An operator sets sshd to ban at the first failure for group "db"
    // (standing in for the API: straight into the policy tables). Only b1
    // applies it, without a restart.
    sqlx::query(
        "INSERT INTO jail_policies (agent_group, jail, enabled, maxretry, updated_at, updated_by)
         VALUES ('db', 'sshd', TRUE, 1, now(), 'test')",
    )
    .execute(&db)
    .await
    .expect("jail rule");
    sqlx::query("UPDATE policy_state SET version = version + 1")
        .execute(&db)
        .await
        .expect("policy version");
    b1.wait_for(
        "jail policy applied jail=sshd enabled=true maxretry=1",
        1,
        Duration::from_secs(20),
    );
    let ip5 = "203.0.113.5";
    fail(&b1_log, ip5);
    for p in [&mut b1, &mut a1, &mut a2] {
        blocked(p, ip5, Duration::from_secs(20));
    }
    assert!(
        !a1.output().contains("jail policy applied"),
        "a1 is not in group db"
    );

    // Replica 1 dies: its agents move to replica 2; a failure written
    // meanwhile is delivered there.
    let ip2 = "203.0.113.2";
    s1.kill();
    fail(&a1_log, ip2);
    for p in [&mut a1, &mut a2] {
        p.wait_for(
            &format!("connected to server server=https://{g2}"),
            1,
            Duration::from_secs(30),
        );
    }
    fail(&a2_log, ip2);
    fail(&b1_log, ip2);
    for p in [&mut a1, &mut a2, &mut b1] {
        blocked(p, ip2, Duration::from_secs(20));
    }
    // b1 bans at the first failure now, so its echo may be enforced before
    // a2's report is in: wait for it.
    assert_eq!(settles(&db, events_of, ip2, 3).await, 3);
    assert_eq!(count(&db, decisions_of, ip2).await, 1);
    db.close().await;

    // A third replica with an agent of its own: it must follow replica 2
    // again after the outage below, without a restart.
    let (mut s3, g3) = server("server-3", dir.path(), &cluster.url);
    let (mut c1, _c1_log) = agent("c1", dir.path(), &cluster.url, "web", &[&g3]);
    c1.wait_for("connected to server", 1, Duration::from_secs(60));
    blocked(&mut c1, ip1, Duration::from_secs(20));

    // Postgres stops for 30 s. Failures go on; a local ban is still made
    // and enforced; nothing is unblocked.
    let ip3 = "203.0.113.3";
    let ip4 = "203.0.113.4";
    cluster.halt();
    fail(&a1_log, ip3);
    fail(&a2_log, ip3);
    fail(&b1_log, ip3);
    for _ in 0..3 {
        fail(&a1_log, ip4);
    }
    blocked(&mut a1, ip4, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(30));
    for p in [&a1, &a2, &b1, &c1] {
        assert!(!p.output().contains("unblocked"), "{}", p.output());
    }
    cluster.resume();

    // The replicas recover on their own: the reports kept by the agents are
    // stored (on replica 2), the threshold of ip3 is met, a1's local ban of
    // ip4 is echoed, and replica 3 listens again and passes both on to c1.
    for p in [&mut a1, &mut a2, &mut b1, &mut c1] {
        blocked(p, ip3, Duration::from_secs(90));
    }
    for p in [&mut b1, &mut c1] {
        blocked(p, ip4, Duration::from_secs(30));
    }
    s3.wait_for("listening for changes again", 1, Duration::from_secs(30));
    assert!(s2.is_running(), "replica 2 recovered without a restart");
    assert!(s3.is_running(), "replica 3 recovered without a restart");
    let db = sqlx::PgPool::connect(&cluster.url).await.expect("connect");
    assert_eq!(settles(&db, events_of, ip3, 3).await, 3);
    assert_eq!(settles(&db, events_of, ip4, 3).await, 3);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db)
        .await
        .expect("events");
    assert_eq!(total, n as i64, "every failure written is stored once");
    let per_target: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host(target), count(*) FROM decisions WHERE kind = 'ban' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .expect("decisions");
    assert_eq!(
        per_target,
        [ip1, ip2, ip3, ip4, ip5]
            .iter()
            .map(|ip| (ip.to_string(), 1))
            .collect::<Vec<_>>(),
        "one decision per address"
    );
    for p in [&mut a1, &mut a2, &mut b1, &mut c1, &mut s2, &mut s3] {
        p.stop();
    }
}
