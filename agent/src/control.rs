//! The agent's control socket, as `fail2ban-client` talks to fail2ban: a
//! Unix socket (mode 0600, in the state directory by default) where
//! `fleetban-agent ban`, `unban` and `firewall status|flush` send one JSON
//! request per connection and read one JSON response. It works with or
//! without a server; manual bans and unbans are reported to the server when
//! there is one (queued while it is away).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fleetban_proto::{pb, PortScope};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::enforce::{EnforceCmd, Status};
use crate::link::Report;

/// A request: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Ban {
        target: String,
        /// Seconds; `None`: until unbanned.
        for_s: Option<u64>,
        #[serde(default)]
        reason: String,
        /// The caller's SSH client (from `SSH_CONNECTION`), never blocked
        /// when `[firewall] protect_ssh_client` is on.
        #[serde(default)]
        ssh_client: Option<String>,
        /// Only these ports (`22`, `http,https`, `8000:8100`); `None`: all
        /// traffic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        /// `tcp` (default with `port`), `udp` or `all`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
    },
    Unban {
        target: String,
    },
    Status,
    Flush,
}

/// The answer: `ok` with a message (and a status for `status`), or not ok
/// with the reason in `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    fn err(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            message: message.into(),
            status: None,
        }
    }

    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(message) => Response {
                ok: true,
                message,
                status: None,
            },
            Err(message) => Response::err(message),
        }
    }
}

/// Talking to the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the agent at {path}: {source} (is fleetban-agent running?)")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("control socket {path} is in use by a running agent")]
    InUse { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Longest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// Longest ban reported to the server for a ban "until unbanned" (the
/// server takes bans of up to 100 years).
const FOREVER_S: i64 = 100 * 365 * 86_400;

/// Binds the socket: a stale file left by a dead agent is replaced, a live
/// agent's socket is not.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Answers requests until `stop`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    enforce: mpsc::Sender<EnforceCmd>,
    reports: Option<mpsc::Sender<Report>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let enforce = enforce.clone();
                    let reports = reports.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &enforce, reports.as_ref()).await {
                            debug!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = stop.cancelled() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(
    stream: UnixStream,
    enforce: &mpsc::Sender<EnforceCmd>,
    reports: Option<&mpsc::Sender<Report>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(BufReader::new(read), MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req, enforce, reports).await,
        Err(e) => Response::err(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn ask<T>(
    enforce: &mpsc::Sender<EnforceCmd>,
    cmd: impl FnOnce(oneshot::Sender<T>) -> EnforceCmd,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    enforce.send(cmd(tx)).await.ok()?;
    rx.await.ok()
}

const STOPPING: &str = "the agent is stopping";

async fn handle(
    req: Request,
    enforce: &mpsc::Sender<EnforceCmd>,
    reports: Option<&mpsc::Sender<Report>>,
) -> Response {
    match req {
        Request::Ban {
            target,
            for_s,
            reason,
            ssh_client,
            port,
            protocol,
        } => {
            let target = match fleetban_proto::parse_target(&target) {
                Ok(t) => t,
                Err(e) => return Response::err(e.to_string()),
            };
            let ports = match (&port, &protocol) {
                (None, None) => PortScope::all(),
                (None, Some(_)) => {
                    return Response::err("--protocol needs --port (the ports to ban)")
                }
                (Some(p), _) => match crate::services::jail_scope(p, protocol.as_deref()) {
                    Ok(s) => s,
                    Err(e) => return Response::err(format!("port {p:?}: {e}")),
                },
            };
            let ssh_client = match ssh_client.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => Some(ip),
                Some(Err(_)) | None => None,
            };
            let now = chrono::Utc::now().timestamp_millis();
            let millis = for_s.map(|s| i64::try_from(s.saturating_mul(1_000)).unwrap_or(i64::MAX));
            if millis == Some(0) {
                return Response::err("a ban must last longer than 0 s");
            }
            let expires_ms = millis.map(|ms| now.saturating_add(ms));
            let reason2 = reason.clone();
            let scope = ports.clone();
            let answer = ask(enforce, |reply| EnforceCmd::Manual {
                target,
                expires_ms,
                ports: scope,
                reason: reason2,
                ssh_client,
                reply,
            })
            .await;
            let Some(answer) = answer else {
                return Response::err(STOPPING);
            };
            if answer.is_ok() {
                if let Some(r) = reports {
                    let ban = pb::LocalBan {
                        id: uuid::Uuid::now_v7().to_string(),
                        jail: "manual".into(),
                        target: target.to_string(),
                        time_ms: now,
                        duration_s: millis.map_or(FOREVER_S, |ms| (ms / 1_000).clamp(1, FOREVER_S)),
                        failures: 0,
                        origin: "manual".into(),
                        reason,
                        ports: (&ports).into(),
                    };
                    if r.send(Report::Ban(ban)).await.is_err() {
                        warn!("server link gone; manual ban not reported");
                    }
                }
            }
            Response::from(answer)
        }
        Request::Unban { target } => {
            let target = match fleetban_proto::parse_target(&target) {
                Ok(t) => t,
                Err(e) => return Response::err(e.to_string()),
            };
            let now = chrono::Utc::now().timestamp_millis();
            let answer = match ask(enforce, |reply| EnforceCmd::Unban { target, reply }).await {
                Some(a) => a,
                None => return Response::err(STOPPING),
            };
            // Lifted here: the server revokes what this agent's bans of the
            // target made, for the whole fleet.
            match (answer, reports) {
                (Ok(msg), Some(r)) => {
                    let unban = pb::Unban {
                        id: uuid::Uuid::now_v7().to_string(),
                        target: target.to_string(),
                        time_ms: now,
                    };
                    if r.send(Report::Unban(unban)).await.is_err() {
                        warn!("server link gone; unban not reported");
                        return Response::from(Ok(msg));
                    }
                    Response::from(Ok(format!(
                        "{msg}; reported to the server, which revokes this agent's decisions on it"
                    )))
                }
                (answer, _) => Response::from(answer),
            }
        }
        Request::Flush => match ask(enforce, |reply| EnforceCmd::Flush { reply }).await {
            Some(a) => Response::from(a),
            None => Response::err(STOPPING),
        },
        Request::Status => match ask(enforce, |reply| EnforceCmd::Status { reply }).await {
            Some(s) => Response {
                ok: true,
                message: String::new(),
                status: Some(s),
            },
            None => Response::err(STOPPING),
        },
    }
}

/// Sends one request to the agent at `path` and returns its answer.
pub async fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let unreachable = |source| ControlError::Unreachable {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(unreachable)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        detail: format!("unreadable answer {:?}: {e}", answer.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Ban {
            target: "192.0.2.1".into(),
            for_s: Some(60),
            reason: "r".into(),
            ssh_client: None,
            port: None,
            protocol: None,
        };
        let s = serde_json::to_string(&r).expect("json");
        assert_eq!(
            s,
            r#"{"cmd":"ban","target":"192.0.2.1","for_s":60,"reason":"r","ssh_client":null}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).expect("parse"), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).expect("parse"),
            Request::Status
        );
    }

    #[tokio::test]
    async fn bad_requests_get_clear_answers_and_a_missing_socket_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("control.sock");
        let err = request(&path, &Request::Status)
            .await
            .expect_err("no socket");
        let msg = err.to_string();
        assert!(
            msg.contains("control.sock") && msg.contains("is fleetban-agent running?"),
            "{msg}"
        );

        let listener = bind(&path).await.expect("bind");
        assert!(matches!(bind(&path).await, Err(ControlError::InUse { .. })));
        let (tx, mut rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, path.clone(), tx, None, stop.clone()));
        // The enforcer's side: accept every manual ban.
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                if let EnforceCmd::Manual { target, reply, .. } = cmd {
                    let _ = reply.send(Ok(format!("banned {target}")));
                }
            }
        });
        let ban = |target: &str, for_s| Request::Ban {
            target: target.into(),
            for_s,
            reason: String::new(),
            ssh_client: None,
            port: None,
            protocol: None,
        };
        let r = request(&path, &ban("192.0.2.300", Some(60)))
            .await
            .expect("answer");
        assert!(!r.ok && r.message.contains("192.0.2.300"), "{r:?}");
        let r = request(&path, &ban("192.0.2.3", Some(0)))
            .await
            .expect("answer");
        assert!(!r.ok && r.message.contains("0 s"), "{r:?}");
        let r = request(&path, &ban("::ffff:192.0.2.3", Some(60)))
            .await
            .expect("answer");
        assert_eq!((r.ok, r.message.as_str()), (true, "banned 192.0.2.3/32"));
        let r = request(&path, &Request::Unban { target: "x".into() })
            .await
            .expect("answer");
        assert!(!r.ok, "{r:?}");
        // Bad port lists are refused before anything is banned.
        for (port, protocol, want) in [
            (Some("sshh"), None, "unknown service \"sshh\""),
            (Some("70000"), None, "invalid port \"70000\""),
            (Some("22"), Some("icmp"), "unknown protocol \"icmp\""),
            (None, Some("tcp"), "--protocol needs --port"),
        ] {
            let req = Request::Ban {
                target: "192.0.2.4".into(),
                for_s: Some(60),
                reason: String::new(),
                ssh_client: None,
                port: port.map(Into::into),
                protocol: protocol.map(Into::into),
            };
            let r = request(&path, &req).await.expect("answer");
            assert!(!r.ok && r.message.contains(want), "{want}: {r:?}");
        }

        // A request that is not JSON.
        let mut s = UnixStream::connect(&path).await.expect("connect");
        s.write_all(b"ban 1.2.3.4\n").await.expect("write");
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .await
            .expect("read");
        assert!(answer.contains("bad request"), "{answer}");

        stop.cancel();
        server.await.expect("stops");
        assert!(!path.exists());
    }
}
