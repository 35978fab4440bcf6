//! Identity costs over real TLS on loopback:
//! `cargo bench -p fleetban-server --bench identity`.
//!
//! Printed, each as p50/p99 over many tries: an `Enroll` rpc (a CSR signed,
//! the token used, the credential stored), opening an authenticated stream
//! on a new connection (TCP, TLS handshake with client certificate, the
//! certificate looked up, Hello, Welcome), and the time from revoking an
//! agent to its open stream's end, through the server's own call and
//! through the database (as `fleetban-server agent revoke` does, read by the
//! once-a-second poll). The database is SQLite in a temp dir, or Postgres
//! when `FLEETBAN_BENCH_DATABASE_URL` names one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::enroll_service_client::EnrollServiceClient;
use fleetban_proto::pb::{AgentMessage, EnrollRequest, Hello, ServerMessage};
use fleetban_server::grpc::{
    AgentEndpoint, AgentServiceServer, EnrollEndpoint, EnrollServiceServer,
};
use fleetban_server::identity::tls::server_tls;
use fleetban_server::metrics::Metrics;
use fleetban_server::service::identity::{authority, Identities};
use fleetban_server::service::{Service, SystemClock};
use fleetban_server::store::{self, Store};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Streaming;

const ENROLLMENTS: usize = 300;
const CONNECTS: usize = 300;
const REVOCATIONS: usize = 40;

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms (n = {})",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v.len()
    )
}

async fn channel(addr: std::net::SocketAddr, ca: &str, id: Option<&(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = id {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

async fn open(ch: Channel, id: &str) -> (mpsc::Sender<AgentMessage>, Streaming<ServerMessage>) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_id: id.into(),
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
    s.message().await.expect("welcome").expect("open");
    (tx, s)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = std::env::var("FLEETBAN_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("fleetban.db").display()));
    let store: Arc<dyn Store> = store::open(&url).await.expect("store");
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let tls = server_tls(&ca, &["127.0.0.1".into()]).expect("tls");
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls.config)
            .expect("tls")
            .add_service(AgentServiceServer::new(
                AgentEndpoint::new(service, stop.clone()).with_identities(ids.clone()),
            ))
            .add_service(EnrollServiceServer::new(EnrollEndpoint::new(ids.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    // The once-a-second poll of `fleetban_server::run`.
    let poller = ids.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let _ = poller.refresh_revocations().await;
        }
    });
    let ca_pem = ca.cert_pem().to_owned();
    println!("database: {}", store::redact(&url));

    // Enrollment.
    let token = ids
        .create_token(chrono::Duration::hours(1), u32::MAX / 2, None)
        .await
        .expect("token")
        .token
        .to_string();
    let mut client = EnrollServiceClient::new(channel(addr, &ca_pem, None).await);
    let mut creds = Vec::new();
    let mut times = Vec::new();
    for i in 0..ENROLLMENTS {
        let key = rcgen::KeyPair::generate().expect("key");
        let csr_pem = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .expect("csr");
        let t = Instant::now();
        let answer = client
            .enroll(EnrollRequest {
                token: token.clone(),
                agent_id: format!("bench-{i}"),
                csr_pem,
                hostname: String::new(),
            })
            .await
            .expect("enroll")
            .into_inner();
        times.push(t.elapsed());
        creds.push((answer.certificate_pem, key.serialize_pem()));
    }
    println!("enroll rpc: {}", percentiles(times));

    // Authenticated stream on a new connection.
    let mut times = Vec::new();
    for i in 0..CONNECTS {
        let n = i % creds.len();
        let t = Instant::now();
        let ch = channel(addr, &ca_pem, Some(&creds[n])).await;
        let stream = open(ch, &format!("bench-{n}")).await;
        times.push(t.elapsed());
        drop(stream);
    }
    println!(
        "connect (TCP + TLS with client certificate + Hello/Welcome): {}",
        percentiles(times)
    );

    // Revocation, through the server's own call, then through the database.
    for (label, through_db) in [
        ("revoke (server call) to stream closed", false),
        ("revoke (database, as the CLI) to stream closed", true),
    ] {
        let mut times = Vec::new();
        for i in 0..REVOCATIONS {
            let n = if through_db { REVOCATIONS + i } else { i };
            let ch = channel(addr, &ca_pem, Some(&creds[n])).await;
            let (_tx, mut s) = open(ch, &format!("bench-{n}")).await;
            s.message().await.expect("snapshot");
            let t = Instant::now();
            if through_db {
                store
                    .revoke_agent(&format!("bench-{n}"), chrono::Utc::now())
                    .await
                    .expect("revoke");
            } else {
                ids.revoke_agent(&format!("bench-{n}"))
                    .await
                    .expect("revoke");
            }
            let end = s.message().await;
            times.push(t.elapsed());
            assert!(end.is_err(), "the stream ends with an error");
        }
        println!("{label}: {}", percentiles(times));
    }
    stop.cancel();
}
