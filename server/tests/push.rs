//! The block list as agents receive it, over a real gRPC stream: a snapshot
//! for a new agent, a catch-up for one that applied an earlier version, and
//! the removal of bans as they expire.

use std::time::Duration;

use chrono::Utc;
use fleetban_policy::{NewDecision, Origin, SCOPE_FLEET};
use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{AgentMessage, Hello, ServerMessage};
use fleetban_server::{store, Listeners};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
    applied: u64,
) -> (mpsc::Sender<AgentMessage>, Streaming<ServerMessage>) {
    connect_in(addr, id, applied, "").await
}

async fn connect_in(
    addr: std::net::SocketAddr,
    id: &str,
    applied: u64,
    group: &str,
) -> (mpsc::Sender<AgentMessage>, Streaming<ServerMessage>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(8);
    let hello = Hello {
        agent_id: id.into(),
        hostname: id.into(),
        version: "test".into(),
        jails: vec![],
        last_applied_version: applied,
        group: group.into(),
    };
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(hello)),
    })
    .await
    .expect("hello");
    let inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    (tx, inbound)
}

/// The next block-list message (jail policies, tested elsewhere, skipped).
async fn next(s: &mut Streaming<ServerMessage>) -> ServerMsg {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("a message within 10 s")
            .expect("stream ok")
            .expect("stream open")
            .msg
            .expect("a message");
        if !matches!(m, ServerMsg::PolicyUpdate(_)) {
            return m;
        }
    }
}

#[tokio::test]
async fn snapshot_catch_up_and_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store::open(&format!("sqlite://{}", dir.path().join("fb.db").display()))
        .await
        .expect("store");
    let now = Utc::now();
    let decision = |target: &str, secs: i64| NewDecision {
        target: fleetban_proto::parse_target(target).expect("target"),
        origin: Origin::Manual,
        reason: "test".into(),
        creator: "test".into(),
        jail: String::new(),
        scope: SCOPE_FLEET.into(),
        expires_at: Some(now + chrono::Duration::seconds(secs)),
        ports: String::new(),
    };
    let short = db
        .record_decision(&decision("192.0.2.1", 2), now)
        .await
        .expect("record");
    let long = db
        .record_decision(&decision("192.0.2.2", 3_600), now)
        .await
        .expect("record");

    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fleetban_server::run(
        db,
        Listeners { http, grpc },
        fleetban_server::RunOptions::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

    // A new agent gets the whole list.
    let (_a_tx, mut a) = connect(addr, "new-agent", 0).await;
    assert!(matches!(next(&mut a).await, ServerMsg::Welcome(_)));
    match next(&mut a).await {
        ServerMsg::Snapshot(s) => {
            assert_eq!(s.version, long.version);
            assert_eq!(s.decisions.len(), 2);
            assert!(s.last);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // An agent that applied everything gets no snapshot again.
    let (_b_tx, mut b) = connect(addr, "old-agent", long.version).await;
    assert!(matches!(next(&mut b).await, ServerMsg::Welcome(_)));
    // Both learn of the expiry of the short ban from the server.
    for s in [&mut a, &mut b] {
        match next(s).await {
            ServerMsg::Delta(d) => {
                assert_eq!(d.removed, vec![u64::try_from(short.id).expect("id")]);
                assert!(d.added.is_empty());
            }
            other => panic!("expected the expiry delta, got {other:?}"),
        }
    }
    // An agent one version behind catches up with a delta, not a snapshot.
    let (_c_tx, mut c) = connect(addr, "behind", short.version).await;
    assert!(matches!(next(&mut c).await, ServerMsg::Welcome(_)));
    match next(&mut c).await {
        ServerMsg::Delta(d) => {
            assert_eq!(d.version, long.version);
            assert_eq!(d.added.len(), 1);
            assert_eq!(d.added[0].target, "192.0.2.2/32");
        }
        other => panic!("expected a catch-up delta, got {other:?}"),
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test]
async fn group_decisions_reach_their_group_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store::open(&format!("sqlite://{}", dir.path().join("fb.db").display()))
        .await
        .expect("store");
    let now = Utc::now();
    let decision = |target: &str, scope: &str| NewDecision {
        target: fleetban_proto::parse_target(target).expect("target"),
        origin: Origin::Manual,
        reason: "test".into(),
        creator: "test".into(),
        jail: String::new(),
        scope: scope.into(),
        expires_at: Some(now + chrono::Duration::hours(1)),
        ports: String::new(),
    };
    db.record_decision(&decision("192.0.2.1", SCOPE_FLEET), now)
        .await
        .expect("record");
    db.record_decision(&decision("192.0.2.2", "group:web"), now)
        .await
        .expect("record");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fleetban_server::run(
        db.clone(),
        Listeners { http, grpc },
        fleetban_server::RunOptions::default(),
        async {
            let _ = stop_rx.await;
        },
    ));
    for (group, want) in [
        ("web", vec!["192.0.2.1/32", "192.0.2.2/32"]),
        ("db", vec!["192.0.2.1/32"]),
        ("", vec!["192.0.2.1/32"]),
    ] {
        let (_tx, mut s) = connect_in(addr, &format!("agent-{group}"), 0, group).await;
        assert!(matches!(next(&mut s).await, ServerMsg::Welcome(_)));
        match next(&mut s).await {
            ServerMsg::Snapshot(snap) => {
                let got: Vec<_> = snap.decisions.iter().map(|d| d.target.as_str()).collect();
                assert_eq!(got, want, "group {group:?}");
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
