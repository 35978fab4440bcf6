//! Revoking an agent through the REST API ends its open gRPC stream at
//! once: a real TLS server, a token made through the API, enrollment
//! through the `Enroll` rpc, an authenticated stream, then
//! `POST /api/v1/agents/{id}/revoke`.

#[macro_use]
mod common;

use std::time::Duration;

use common::Api;
use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::enroll_service_client::EnrollServiceClient;
use fleetban_proto::pb::{AgentMessage, EnrollRequest, Hello, ServerMessage};
use fleetban_server::auth::Role;
use fleetban_server::grpc::{
    AgentEndpoint, AgentServiceServer, EnrollEndpoint, EnrollServiceServer,
};
use fleetban_server::identity::tls::server_tls;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

async fn channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
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

/// The next message; a stream that says nothing for 10 s fails the test
/// (a bound against hanging, not a timing assertion).
async fn next(s: &mut Streaming<ServerMessage>) -> Result<Option<ServerMessage>, Status> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an answer within 10 s")
}

async fn revoke_through_the_api_ends_the_stream(api: Api) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let tls = server_tls(&api.ca, &["127.0.0.1".into()]).expect("tls");
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls.config)
            .expect("tls config")
            .add_service(AgentServiceServer::new(
                AgentEndpoint::new(api.service.clone(), stop.clone())
                    .with_identities(api.identities.clone()),
            ))
            .add_service(EnrollServiceServer::new(EnrollEndpoint::new(
                api.identities.clone(),
            )))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let ca_pem = api.ca.cert_pem().to_owned();

    let admin = api.user("root", Role::Admin).await;
    let r = api
        .post("/api/v1/enrollment-tokens", &admin, json!({"uses": 1}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let key = rcgen::KeyPair::generate().expect("key");
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let enrolled = EnrollServiceClient::new(channel(addr, &ca_pem, None).await)
        .enroll(EnrollRequest {
            token,
            agent_id: "web-1".into(),
            csr_pem,
            hostname: "web-1".into(),
        })
        .await
        .expect("enrolled with the API's token")
        .into_inner();
    let key_pem = key.serialize_pem();
    let ch = channel(addr, &ca_pem, Some((&enrolled.certificate_pem, &key_pem))).await;
    let (_tx, mut s) = open_stream(ch.clone(), "web-1").await.expect("stream");
    // The welcome and the (empty) snapshot: the stream is open.
    for _ in 0..2 {
        next(&mut s).await.expect("ok").expect("message");
    }

    let r = api
        .post("/api/v1/agents/web-1/revoke", &admin, json!({}))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    // Messages already queued may come first; then the stream ends.
    let mut end = None;
    for _ in 0..10 {
        match next(&mut s).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    let e = end.expect("the stream ends");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("agent \"web-1\" is revoked"), "{e:?}");
    let e = open_stream(ch, "web-1").await.expect_err("refused after");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    stop.cancel();
}

on_both!(revoke_through_the_api_ends_the_stream);
