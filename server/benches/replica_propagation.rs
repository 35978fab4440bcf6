//! How long a decision made on one replica takes to reach an agent
//! connected to another: replica A (a service in this process) records a
//! ban; replica B (a whole server on loopback) hears of it by Postgres
//! NOTIFY and pushes the delta to an agent stream. Prints p50/p99/max.
//!
//! `FLEETBAN_TEST_DATABASE_URL=postgres://… cargo bench -p fleetban-server --bench replica_propagation`

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fleetban_policy::LocalBan;
use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{AgentMessage, Hello};
use fleetban_server::metrics::Metrics;
use fleetban_server::service::{Service, SystemClock};
use fleetban_server::store::{self, AgentInfo};
use fleetban_server::{Listeners, RunOptions};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

const ROUNDS: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(url) = fleetban_tests::pg::fresh_database().await else {
        eprintln!("replica_propagation: set FLEETBAN_TEST_DATABASE_URL");
        return;
    };
    let a = Arc::new(
        Service::new(
            store::open(&url).await.expect("store"),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            &RunOptions::default().policy,
        )
        .await
        .expect("service"),
    );
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let b = tokio::spawn(fleetban_server::run(
        store::open(&url).await.expect("store"),
        Listeners { http, grpc },
        RunOptions::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_id: "on-b".into(),
            hostname: "on-b".into(),
            version: "bench".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    // The stream is ready once B sent its snapshot.
    loop {
        let m = inbound.message().await.expect("stream").expect("open");
        if matches!(m.msg, Some(ServerMsg::Snapshot(ref s)) if s.last) {
            break;
        }
    }
    a.agent_joined(&AgentInfo {
        id: "on-a".into(),
        hostname: "on-a".into(),
        version: "bench".into(),
        jails: vec!["sshd".into()],
        group: String::new(),
    })
    .await
    .expect("join");

    let mut took = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let target = format!("10.{}.{}.1/32", i / 250, i % 250);
        let ban = [LocalBan {
            agent_id: "on-a".into(),
            jail: "sshd".into(),
            target: target.parse().expect("net"),
            at: Utc::now(),
            duration: chrono::Duration::hours(1),
            failures: 3,
            ports: String::new(),
        }];
        let start = Instant::now();
        let made = a.report("on-a", "", &[], &ban).await.expect("report");
        assert_eq!(made.len(), 1);
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), inbound.message())
                .await
                .expect("a delta within 10 s")
                .expect("stream")
                .expect("open");
            if let Some(ServerMsg::Delta(d)) = m.msg {
                if d.added.iter().any(|x| x.target == target) {
                    break;
                }
            }
        }
        took.push(start.elapsed());
    }
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "decision on replica A -> delta on an agent of replica B ({ROUNDS} decisions): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3,
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), b).await;
}
