//! Authenticated streams over real TLS sockets: enrollment through the
//! `Enroll` rpc, a stream with the agent's certificate, and the refusals: no
//! certificate, a certificate of another CA, another agent's id, a revoked
//! agent (whose open stream ends at once).

use std::sync::Arc;
use std::time::Duration;

use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::enroll_service_client::EnrollServiceClient;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{Ack, AgentMessage, EnrollRequest, EventBatch, Hello, ServerMessage};
use fleetban_server::grpc::{
    AgentEndpoint, AgentServiceServer, EnrollEndpoint, EnrollServiceServer,
};
use fleetban_server::identity::{tls::server_tls, Authority};
use fleetban_server::metrics::Metrics;
use fleetban_server::service::identity::{authority, Identities};
use fleetban_server::service::{Service, SystemClock};
use fleetban_server::store;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

struct Fleet {
    addr: std::net::SocketAddr,
    ca_pem: String,
    ids: Arc<Identities>,
    store: Arc<dyn fleetban_server::store::Store>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("fleetban.db").display());
    let store = store::open(&url).await.expect("store");
    let ca = Arc::new(authority(store.as_ref(), None).await.expect("ca"));
    let ids = Arc::new(
        Identities::new(store.clone(), Arc::new(SystemClock), Some(ca.clone()))
            .await
            .expect("identities"),
    );
    let service = Arc::new(
        Service::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            &Default::default(),
        )
        .await
        .expect("service"),
    );
    let tls = server_tls(&ca, &["127.0.0.1".into()]).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .tls_config(tls.config)
        .expect("tls config")
        .add_service(AgentServiceServer::new(
            AgentEndpoint::new(service, stop.clone()).with_identities(ids.clone()),
        ))
        .add_service(EnrollServiceServer::new(EnrollEndpoint::new(ids.clone())))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    Fleet {
        addr,
        ca_pem: ca.cert_pem().to_owned(),
        ids,
        store,
        stop,
        _dir: dir,
    }
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (csr, key.serialize_pem())
}

async fn channel(f: &Fleet, identity: Option<(&str, &str)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&f.ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", f.addr))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Enrolls `agent` with a new token: `(certificate, key)`.
async fn enroll(f: &Fleet, agent: &str) -> (String, String) {
    enroll_in(f, agent, None).await
}

/// Enrolls `agent` with a new token for `group`: `(certificate, key)`.
async fn enroll_in(f: &Fleet, agent: &str, group: Option<&str>) -> (String, String) {
    let token = f
        .ids
        .create_token(chrono::Duration::hours(1), 1, group.map(str::to_owned))
        .await
        .expect("token");
    let (csr_pem, key) = csr();
    let answer = EnrollServiceClient::new(channel(f, None).await.expect("channel"))
        .enroll(EnrollRequest {
            token: token.token.to_string(),
            agent_id: agent.into(),
            csr_pem,
            hostname: agent.into(),
        })
        .await
        .expect("enrolled")
        .into_inner();
    assert_eq!(answer.agent_id, agent);
    assert_eq!(answer.ca_pem, f.ca_pem);
    (answer.certificate_pem, key)
}

async fn open_stream(
    channel: Channel,
    id: &str,
) -> Result<(mpsc::Sender<AgentMessage>, Streaming<ServerMessage>), Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_id: id.into(),
            hostname: id.into(),
            version: "test".into(),
            jails: vec![],
            last_applied_version: 0,
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

async fn next(s: &mut Streaming<ServerMessage>) -> Result<Option<ServerMessage>, Status> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an answer within 10 s")
}

/// The error a stream ends with, after at most 10 other messages.
async fn end_of(s: &mut Streaming<ServerMessage>) -> Status {
    for _ in 0..10 {
        match next(s).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => return e,
        }
    }
    panic!("no end after 10 messages");
}

#[tokio::test]
async fn streams_need_an_enrolled_certificate_of_their_own_agent() {
    let f = fleet().await;
    let (cert, key) = enroll(&f, "web-1").await;

    // With its certificate, the agent is welcomed.
    let ch = channel(&f, Some((&cert, &key))).await.expect("channel");
    let (_tx, mut s) = open_stream(ch.clone(), "web-1").await.expect("stream");
    let first = next(&mut s).await.expect("ok").expect("message");
    assert!(
        matches!(first.msg, Some(ServerMsg::Welcome(_))),
        "{first:?}"
    );

    // Its certificate cannot speak for another agent.
    let e = open_stream(ch, "web-2").await.expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("belongs to agent \"web-1\""), "{e:?}");

    // Without a certificate, only enrollment is possible.
    let bare = channel(&f, None).await.expect("channel");
    let e = open_stream(bare.clone(), "web-1")
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("no client certificate"), "{e:?}");

    // A certificate from another CA fails the TLS handshake.
    let other = Authority::load(&Authority::generate().expect("ca")).expect("load");
    let (csr_pem, other_key) = csr();
    let foreign = other.sign_agent("web-1", &csr_pem).expect("sign");
    let refused = match channel(&f, Some((&foreign.pem, &other_key))).await {
        Err(e) => e,
        Ok(ch) => format!("{:?}", open_stream(ch, "web-1").await.expect_err("refused")),
    };
    // The server rejects the certificate during the handshake (a fatal
    // alert), before any rpc.
    assert!(refused.contains("fatal alert"), "{refused}");

    // Enrollment refusals, each with its reason.
    let mut client = EnrollServiceClient::new(bare);
    let token = f
        .ids
        .create_token(chrono::Duration::hours(1), 2, None)
        .await
        .expect("token")
        .token
        .to_string();
    let e = client
        .enroll(EnrollRequest {
            token: token.clone(),
            agent_id: "web-3".into(),
            csr_pem: "not a csr".into(),
            hostname: String::new(),
        })
        .await
        .expect_err("bad csr");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("certificate signing request"), "{e:?}");
    let e = client
        .enroll(EnrollRequest {
            token: token.clone(),
            agent_id: "web 3".into(),
            csr_pem: csr().0,
            hostname: String::new(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = client
        .enroll(EnrollRequest {
            token,
            agent_id: "web-1".into(),
            csr_pem: csr().0,
            hostname: String::new(),
        })
        .await
        .expect_err("taken");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = client
        .enroll(EnrollRequest {
            token: "fbt1_x".into(),
            agent_id: "web-3".into(),
            csr_pem: csr().0,
            hostname: String::new(),
        })
        .await
        .expect_err("malformed token");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    f.stop.cancel();
}

#[tokio::test]
async fn a_revoked_agent_is_cut_off_at_once_and_refused_after() {
    let f = fleet().await;
    let (cert, key) = enroll(&f, "web-1").await;
    let (cert2, key2) = enroll(&f, "web-2").await;
    let ch = channel(&f, Some((&cert, &key))).await.expect("channel");
    let (_tx, mut s) = open_stream(ch.clone(), "web-1").await.expect("stream");
    let (_tx2, mut s2) = open_stream(
        channel(&f, Some((&cert2, &key2))).await.expect("channel"),
        "web-2",
    )
    .await
    .expect("stream");
    // Welcome and the (empty) snapshot.
    for _ in 0..2 {
        next(&mut s).await.expect("ok").expect("message");
        next(&mut s2).await.expect("ok").expect("message");
    }

    f.ids.revoke_agent("web-1").await.expect("revoke");
    // Messages already queued (a policy) may come first; then the end.
    let e = end_of(&mut s).await;
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("agent \"web-1\" is revoked"), "{e:?}");

    let e = open_stream(ch, "web-1").await.expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("is revoked"), "{e:?}");

    // The other agent's stream goes on.
    f.ids
        .revoke_agent("web-1")
        .await
        .expect("revoking twice is harmless");
    let e = f.ids.revoke_agent("web-9").await.expect_err("unknown");
    assert!(e.to_string().contains("not enrolled"), "{e}");
    _tx2.send(AgentMessage {
        msg: Some(AgentMsg::Events(EventBatch {
            seq: 7,
            ..EventBatch::default()
        })),
    })
    .await
    .expect("send");
    let mut acked = false;
    for _ in 0..10 {
        let m = next(&mut s2).await.expect("ok").expect("message");
        if matches!(m.msg, Some(ServerMsg::Ack(Ack { seq: 7 }))) {
            acked = true;
            break;
        }
    }
    assert!(acked, "the other agent's batch is acknowledged");
    f.stop.cancel();
}

#[tokio::test]
async fn an_agent_gets_the_group_it_was_enrolled_in() {
    let f = fleet().await;
    let (cert, key) = enroll_in(&f, "web-9", Some("web")).await;
    let ch = channel(&f, Some((&cert, &key))).await.expect("channel");
    let (tx, rx) = mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_id: "web-9".into(),
            hostname: "web-9".into(),
            version: "test".into(),
            group: "db".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let mut s = AgentServiceClient::new(ch)
        .connect(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    next(&mut s).await.expect("ok").expect("welcome");
    let agents = f.store.agents().await.expect("agents");
    let me = agents
        .iter()
        .find(|a| a.info.id == "web-9")
        .expect("recorded");
    assert_eq!(me.info.group, "web", "the Hello's group does not win");
    f.stop.cancel();
}
