//! The control plane under fleet load: a real `fleetban-server` process on a
//! real Postgres, and simulated agents speaking the agent protocol over
//! real gRPC connections on loopback (one HTTP/2 connection each).
//!
//! 1. Propagation: with 1,000 agents connected, one agent reports a local
//!    ban; the time until every agent has received the resulting fleet
//!    decision is measured, over 100 bans (p50, p99, max).
//! 2. Ingest: 8 agents send 1,000,000 failure events in batches of 1,000;
//!    events per second until the server acknowledged them all (each ack
//!    means the batch is stored), checked against the rows in Postgres.
//! 3. Streams: 10,000 agents connected at once; the server's resident
//!    memory.
//!
//! The gRPC port runs in its plaintext development mode here, so TLS
//! handshakes and record encryption are not part of these figures (the
//! `identity` bench of `fleetban-server` measures those).
//!
//! Run: `FLEETBAN_TEST_DATABASE_URL=postgres://… cargo bench -p fleetban-tests
//! --bench control_plane` (`FLEETBAN_BENCH_AGENTS`, `FLEETBAN_BENCH_EVENTS`
//! and `FLEETBAN_BENCH_STREAMS` change the sizes).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{AgentMessage, Event, EventBatch, Hello, LocalBan};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What the simulated agents' readers report.
enum Seen {
    /// Agent `agent` received a decision for `target`.
    Decision {
        agent: usize,
        target: String,
        at: Instant,
    },
    /// One of agent `agent`'s batches is stored.
    Ack { agent: usize },
}

struct Agent {
    tx: mpsc::Sender<AgentMessage>,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Connects agent `index`, waits for its welcome, and forwards what it
/// receives to `seen`.
async fn connect(
    grpc: &str,
    index: usize,
    prefix: &str,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<Agent> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await
        .with_context(|| format!("agent {index}: connect"))?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_id: format!("{prefix}-{index}"),
            hostname: format!("{prefix}-{index}"),
            version: "bench".into(),
            jails: vec!["sshd".into()],
            last_applied_version: 0,
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("agent {index}: stream"))?
        .into_inner();
    match inbound.message().await? {
        Some(m) if matches!(m.msg, Some(ServerMsg::Welcome(_))) => {}
        other => bail!("agent {index}: expected a welcome, got {other:?}"),
    }
    // A new agent gets the block list first: wait for its last chunk, so
    // the measured bans arrive as deltas.
    loop {
        match inbound.message().await? {
            Some(m) => {
                if let Some(ServerMsg::Snapshot(s)) = m.msg {
                    if s.last {
                        break;
                    }
                }
            }
            None => bail!("agent {index}: the stream ended before the snapshot"),
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            let at = Instant::now();
            match m.msg {
                Some(ServerMsg::Delta(d)) => {
                    for dec in d.added {
                        let _ = seen.send(Seen::Decision {
                            agent: index,
                            target: dec.target,
                            at,
                        });
                    }
                }
                Some(ServerMsg::Ack(_)) => {
                    let _ = seen.send(Seen::Ack { agent: index });
                }
                _ => {}
            }
        }
    });
    Ok(Agent { tx })
}

async fn connect_many(
    grpc: &str,
    range: std::ops::Range<usize>,
    prefix: &str,
    seen: &mpsc::UnboundedSender<Seen>,
) -> Result<Vec<Agent>> {
    let mut agents = Vec::with_capacity(range.len());
    // A few hundred handshakes at a time.
    let indices: Vec<usize> = range.collect();
    for chunk in indices.chunks(200) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (grpc, prefix, seen) = (grpc.to_owned(), prefix.to_owned(), seen.clone());
            set.spawn(async move { (i, connect(&grpc, i, &prefix, seen).await) });
        }
        let mut got: Vec<(usize, Agent)> = Vec::new();
        while let Some(r) = set.join_next().await {
            let (i, a) = r?;
            got.push((i, a?));
        }
        got.sort_by_key(|(i, _)| *i);
        agents.extend(got.into_iter().map(|(_, a)| a));
    }
    Ok(agents)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0)
}

async fn propagation(grpc: &str, agents: usize) -> Result<()> {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let fleet = connect_many(grpc, 0..agents, "prop", &seen_tx).await?;
    let rounds = 100;
    let mut last_agent = Vec::with_capacity(rounds);
    let mut every = Vec::with_capacity(rounds * agents);
    for round in 0..rounds {
        let target = format!("198.18.{}.{}", 100 + round / 250, 1 + round % 250);
        let reporter = &fleet[round % fleet.len()];
        let sent = Instant::now();
        reporter
            .tx
            .send(AgentMessage {
                msg: Some(AgentMsg::Events(EventBatch {
                    seq: round as u64 + 1,
                    events: vec![],
                    bans: vec![LocalBan {
                        id: uuid::Uuid::now_v7().to_string(),
                        jail: "sshd".into(),
                        target: target.clone(),
                        time_ms: now_ms(),
                        duration_s: 3_600,
                        failures: 5,
                        ..Default::default()
                    }],
                    unbans: vec![],
                })),
            })
            .await?;
        let mut got = vec![false; agents];
        let mut count = 0;
        let mut slowest = Duration::ZERO;
        while count < agents {
            let next = tokio::time::timeout(Duration::from_secs(30), seen.recv())
                .await
                .context("a decision did not reach every agent within 30 s")?;
            let Some(Seen::Decision {
                agent,
                target: t,
                at,
            }) = next
            else {
                continue;
            };
            if t.trim_end_matches("/32") != target || got[agent] {
                continue;
            }
            got[agent] = true;
            count += 1;
            let d = at.duration_since(sent);
            every.push(d);
            slowest = slowest.max(d);
        }
        last_agent.push(slowest);
    }
    last_agent.sort();
    every.sort();
    println!(
        "propagation, {agents} agents, {rounds} local bans: until the last agent has it p50 {}, p99 {}, max {}; per agent p50 {}, p99 {}",
        ms(percentile(&last_agent, 0.5)),
        ms(percentile(&last_agent, 0.99)),
        ms(percentile(&last_agent, 1.0)),
        ms(percentile(&every, 0.5)),
        ms(percentile(&every, 0.99)),
    );
    Ok(())
}

async fn ingest(grpc: &str, db_url: &str, total: usize) -> Result<()> {
    const SENDERS: usize = 8;
    const BATCH: usize = 1_000;
    const IN_FLIGHT: usize = 4;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let senders = connect_many(grpc, 0..SENDERS, "ingest", &seen_tx).await?;
    let batches = total.div_ceil(BATCH);
    // Events built before the clock starts.
    let mut work: Vec<Vec<EventBatch>> = vec![Vec::new(); SENDERS];
    for b in 0..batches {
        let events = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                Event {
                    id: uuid::Uuid::now_v7().to_string(),
                    jail: "sshd".into(),
                    ip: format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
                    time_ms: now_ms(),
                    user: "root".into(),
                }
            })
            .collect();
        work[b % SENDERS].push(EventBatch {
            seq: (b / SENDERS) as u64 + 1,
            events,
            bans: vec![],
            unbans: vec![],
        });
    }
    let started = Instant::now();
    let mut next: Vec<usize> = vec![0; SENDERS];
    let mut acked = 0usize;
    for (s, agent) in senders.iter().enumerate() {
        for _ in 0..IN_FLIGHT.min(work[s].len()) {
            let batch = std::mem::take(&mut work[s][next[s]]);
            next[s] += 1;
            agent.tx.send(msg(batch)).await?;
        }
    }
    while acked < batches {
        let got = tokio::time::timeout(Duration::from_secs(60), seen.recv())
            .await
            .context("no ack within 60 s")?;
        let Some(Seen::Ack { agent, .. }) = got else {
            continue;
        };
        acked += 1;
        if next[agent] < work[agent].len() {
            let batch = std::mem::take(&mut work[agent][next[agent]]);
            next[agent] += 1;
            senders[agent].tx.send(msg(batch)).await?;
        }
    }
    let elapsed = started.elapsed();
    let pool = sqlx::PgPool::connect(db_url).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    println!(
        "ingest: {} events from {SENDERS} agents in batches of {BATCH} stored in {:.2} s = {:.0} events/s; {stored} rows in Postgres",
        batches * BATCH,
        elapsed.as_secs_f64(),
        (batches * BATCH) as f64 / elapsed.as_secs_f64(),
    );
    if usize::try_from(stored).unwrap_or(0) < batches * BATCH {
        bail!("only {stored} of {} events stored", batches * BATCH);
    }
    Ok(())
}

fn msg(batch: EventBatch) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::Events(batch)),
    }
}

fn rss_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn streams(grpc: &str, server: u32, count: usize) -> Result<()> {
    let before = rss_kb(server, "VmRSS:");
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let started = Instant::now();
    let fleet = connect_many(grpc, 0..count, "stream", &seen_tx).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "streams: {} agents connected in {:.1} s; server RSS {} MB before, {} MB with them all (peak {} MB)",
        fleet.len(),
        took.as_secs_f64(),
        before / 1024,
        rss_kb(server, "VmRSS:") / 1024,
        rss_kb(server, "VmHWM:") / 1024,
    );
    Ok(())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server and returns it with its gRPC address.
fn start_server(db_url: &str, dir: &std::path::Path) -> Result<(Server, String)> {
    let out = dir.join("server.out");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{db_url}\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\n\
             grpc_listen = \"127.0.0.1:0\"\n\n[tls]\nplaintext = true\n",
            dir.display()
        ),
    )?;
    let child = Command::new(fleetban_tests::bins::bin("fleetban-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(dir.join("server.err"))?)
        .stdin(Stdio::null())
        .spawn()
        .context("start fleetban-server")?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("fleetban-server listening:"))
        {
            let grpc = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("grpc="))
                .map(|v| v.trim_start_matches("http://").to_owned())
                .context("no grpc= in the listening line")?;
            return Ok((server, grpc));
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not start: {}",
                std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let Some(db_url) = fleetban_tests::pg::fresh_database().await else {
            println!("skipped: set FLEETBAN_TEST_DATABASE_URL to a Postgres admin URL");
            return Ok(());
        };
        let dir = tempfile::tempdir()?;
        let (server, grpc) = start_server(&db_url, dir.path())?;
        println!("server: pid {}, gRPC {grpc}, Postgres", server.0.id());
        let result = async {
            propagation(&grpc, env_usize("FLEETBAN_BENCH_AGENTS", 1_000)).await?;
            ingest(
                &grpc,
                &db_url,
                env_usize("FLEETBAN_BENCH_EVENTS", 1_000_000),
            )
            .await?;
            streams(
                &grpc,
                server.0.id(),
                env_usize("FLEETBAN_BENCH_STREAMS", 10_000),
            )
            .await
        }
        .await;
        if result.is_err() {
            let log = std::fs::read_to_string(dir.path().join("server.err")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("server log, last lines:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
        drop(server);
        result
    })
}
