//! The agents' gRPC endpoint: one `Connect` stream per agent.

mod convert;
mod enroll;

pub use enroll::{auth_status, EnrollEndpoint, EnrollServiceServer};

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_server::AgentService;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{self, AgentMessage, ServerMessage};
use futures::Stream;
use std::collections::HashSet;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};

use crate::service::identity::{AuthError, Identities};
use crate::service::{Service, ServiceError};
use crate::store::{AgentInfo, StoreError};

pub use fleetban_proto::pb::agent_service_server::AgentServiceServer;

/// Bans per snapshot message: keeps each message well under gRPC's 4 MiB.
const SNAPSHOT_CHUNK: usize = 10_000;
/// An agent this many versions behind (or fewer) catches up with one delta;
/// further behind, it gets a snapshot.
const MAX_CATCH_UP: u64 = 10_000;
/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentEndpoint {
    service: Arc<Service>,
    /// Cancelled when the server stops: every session ends.
    stop: CancellationToken,
    /// Who may connect; `None`: anyone, as the id its Hello names.
    identities: Option<Arc<Identities>>,
}

impl AgentEndpoint {
    pub fn new(service: Arc<Service>, stop: CancellationToken) -> Self {
        AgentEndpoint {
            service,
            stop,
            identities: None,
        }
    }

    /// Streams are authenticated by `identities` (when it requires
    /// certificates), and end when their agent is revoked.
    pub fn with_identities(mut self, identities: Arc<Identities>) -> Self {
        self.identities = Some(identities);
        self
    }

    /// The agent a stream's client certificate belongs to, if streams are
    /// authenticated.
    /// The certified agent and its enrolled group; `None` in plaintext mode.
    async fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<(String, Option<String>)>, Status> {
        let Some(ids) = self
            .identities
            .as_ref()
            .filter(|i| i.requires_certificates())
        else {
            return Ok(None);
        };
        let certs = request.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        match ids.authenticate(leaf).await {
            Ok(agent) => Ok(Some(agent)),
            Err(e) => {
                info!(peer = ?request.remote_addr(), error = %e, "agent refused");
                Err(enroll::auth_status(e))
            }
        }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentEndpoint {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ServerStream>, Status> {
        let certified = self.authenticate(&request).await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))??;
        let hello = match first {
            Some(AgentMessage {
                msg: Some(AgentMsg::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let mut group = hello.group;
        if let Some((actual, enrolled_group)) = certified {
            if actual != hello.agent_id {
                let e = AuthError::WrongAgent {
                    claimed: hello.agent_id,
                    actual,
                };
                info!(error = %e, "agent refused");
                return Err(enroll::auth_status(e));
            }
            // The group of the enrollment binds; the Hello's cannot widen it.
            if let Some(g) = enrolled_group.filter(|g| !g.is_empty()) {
                if !group.is_empty() && group != g {
                    warn!(agent = %actual, claimed = %group, enrolled = %g, "agent claims another group than it was enrolled in; using the enrolled one");
                }
                group = g;
            }
        }
        let agent = AgentInfo {
            id: hello.agent_id,
            hostname: hello.hostname,
            version: hello.version,
            jails: hello.jails,
            group,
        };
        self.service.agent_joined(&agent).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::info_span!("server.grpc.session", agent = %agent.id);
        let session = Session {
            service: self.service.clone(),
            group: agent.group,
            agent_id: agent.id,
            tx,
            resume_from: hello.last_applied_version,
            revoked: self.identities.as_ref().map(|i| i.watch_revoked()),
        };
        tokio::spawn(session.run(inbound, self.stop.clone()).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Maps a use-case error to the status an agent sees; internal details stay
/// in the server's log.
fn status(e: ServiceError) -> Status {
    match e {
        ServiceError::Invalid(m) => Status::invalid_argument(m),
        e @ ServiceError::Feed { .. } => Status::failed_precondition(e.to_string()),
        e @ ServiceError::NotYourself { .. } => Status::permission_denied(e.to_string()),
        ServiceError::Policy(p) => Status::failed_precondition(p.to_string()),
        ServiceError::Store(StoreError::UnknownAgent(a)) => {
            Status::failed_precondition(format!("unknown agent {a:?}"))
        }
        ServiceError::Store(e) => {
            warn!(error = %e, "store error");
            Status::unavailable("the server cannot reach its database; retry later")
        }
    }
}

struct Session {
    service: Arc<Service>,
    agent_id: String,
    /// The agent's group ('' for none).
    group: String,
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
    /// The version the agent says it applied (0: none).
    resume_from: u64,
    /// Revoked agents: the session ends when its agent joins them.
    revoked: Option<watch::Receiver<Arc<HashSet<String>>>>,
}

/// Completes when `agent` is revoked (never, without a watch).
async fn revocation(revoked: Option<watch::Receiver<Arc<HashSet<String>>>>, agent: &str) {
    let Some(mut revoked) = revoked else {
        return std::future::pending().await;
    };
    if revoked.wait_for(|set| set.contains(agent)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The stream is gone (the agent left or the server is stopping).
struct Closed;

impl Session {
    async fn run(mut self, mut inbound: Streaming<AgentMessage>, stop: CancellationToken) {
        let metrics = self.service.metrics().clone();
        metrics.agents_connected.inc();
        info!("agent connected");
        let revoked = revocation(self.revoked.take(), &self.agent_id);
        tokio::select! {
            _ = self.serve(&mut inbound) => {}
            () = stop.cancelled() => {
                let _ = self.tx.send(Err(Status::unavailable("the server is shutting down"))).await;
            }
            () = revoked => {
                info!("agent revoked: stream closed");
                let e = AuthError::Revoked(self.agent_id.clone());
                let _ = self.tx.send(Err(enroll::auth_status(e))).await;
            }
        }
        metrics.agents_connected.dec();
        info!("agent disconnected");
    }

    async fn serve(&self, inbound: &mut Streaming<AgentMessage>) -> Result<(), Closed> {
        let mut versions = self.service.subscribe();
        self.send(ServerMsg::Welcome(pb::Welcome {
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            agent_id: self.agent_id.clone(),
        }))
        .await?;
        let mut expired = self.service.subscribe_expired();
        let mut policies = self.service.subscribe_policies();
        // The database's version, not only this process's: the agent may
        // come from a replica that is ahead of this one.
        if let Err(e) = self.service.resync().await {
            return Err(self.fail(e).await);
        }
        let current = self.service.current_version();
        let mut sent = if self.resume_from > 0
            && self.resume_from <= current
            && current - self.resume_from <= MAX_CATCH_UP
        {
            debug!(from = self.resume_from, to = current, "agent catches up");
            self.send_changes(self.resume_from).await?
        } else {
            self.send_snapshot().await?
        };
        policies.borrow_and_update();
        self.send_policy().await?;
        loop {
            tokio::select! {
                changed = policies.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    policies.borrow_and_update();
                    self.send_policy().await?;
                }
                ids = expired.recv() => match ids {
                    Ok(ids) => {
                        self.send(ServerMsg::Delta(pb::Delta {
                            version: sent,
                            added: Vec::new(),
                            removed: ids.iter().filter_map(|&id| u64::try_from(id).ok()).collect(),
                        }))
                        .await?;
                    }
                    // Missed expiries still end on the agent at their time.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.handle(m).await?,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        debug!(error = %e, "agent stream ended");
                        return Ok(());
                    }
                },
                changed = versions.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    sent = self.send_changes(sent).await?;
                }
            }
        }
    }

    async fn send(&self, msg: ServerMsg) -> Result<(), Closed> {
        self.tx
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .map_err(|_| Closed)
    }

    async fn fail(&self, e: ServiceError) -> Closed {
        let _ = self.tx.send(Err(status(e))).await;
        Closed
    }

    async fn send_snapshot(&self) -> Result<u64, Closed> {
        let snapshot = match self.service.snapshot().await {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e).await),
        };
        let decisions: Vec<pb::Decision> = snapshot
            .bans
            .iter()
            .filter(|d| crate::service::applies_to(&d.scope, &self.group))
            .map(convert::decision)
            .collect();
        let chunks: Vec<&[pb::Decision]> = if decisions.is_empty() {
            vec![&[]]
        } else {
            decisions.chunks(SNAPSHOT_CHUNK).collect()
        };
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.send(ServerMsg::Snapshot(pb::Snapshot {
                version: snapshot.version,
                decisions: chunk.to_vec(),
                last: i + 1 == n,
            }))
            .await?;
        }
        self.service.metrics().snapshots_sent.inc();
        debug!(
            version = snapshot.version,
            bans = decisions.len(),
            "snapshot sent"
        );
        Ok(snapshot.version)
    }

    /// The jail rules for the agent's group.
    async fn send_policy(&self) -> Result<(), Closed> {
        let p = self.service.jail_policy_for(&self.group);
        self.send(ServerMsg::PolicyUpdate(convert::policy(&p)))
            .await?;
        self.service.metrics().policy_updates_sent.inc();
        debug!(
            version = p.version,
            jails = p.jails.len(),
            "jail policy sent"
        );
        Ok(())
    }

    async fn send_changes(&self, from: u64) -> Result<u64, Closed> {
        let update = match self.service.changes_since(from).await {
            Ok(u) => u,
            Err(e) => return Err(self.fail(e).await),
        };
        if update.version == from {
            return Ok(from);
        }
        self.send(ServerMsg::Delta(pb::Delta {
            version: update.version,
            added: update
                .added
                .iter()
                .filter(|d| crate::service::applies_to(&d.scope, &self.group))
                .map(convert::decision)
                .collect(),
            removed: update
                .removed
                .iter()
                .filter_map(|&id| u64::try_from(id).ok())
                .collect(),
        }))
        .await?;
        self.service.metrics().deltas_sent.inc();
        debug!(
            version = update.version,
            added = update.added.len(),
            removed = update.removed.len(),
            "delta sent"
        );
        Ok(update.version)
    }

    async fn handle(&self, msg: AgentMessage) -> Result<(), Closed> {
        match msg.msg {
            Some(AgentMsg::Events(batch)) => {
                self.service.metrics().event_batches.inc();
                let seq = batch.seq;
                let unbans = convert::unbans(&self.agent_id, &batch.unbans);
                let (events, bans) = convert::batch(&self.agent_id, batch);
                match self.report(&events, &bans, &unbans).await {
                    Ok(()) => self.send(ServerMsg::Ack(pb::Ack { seq })).await,
                    Err(e) => Err(self.fail(e).await),
                }
            }
            Some(AgentMsg::Applied(a)) => self.seen(Some(a.version)).await,
            Some(AgentMsg::Heartbeat(h)) => match h.firewall {
                Some(f) => self.firewall(convert::firewall(&f)).await,
                None => self.seen(None).await,
            },
            Some(AgentMsg::Hello(_)) => Err(self
                .fail(ServiceError::Invalid(
                    "Hello may only be sent once per stream".into(),
                ))
                .await),
            None => Ok(()),
        }
    }

    /// Stores a batch: its events and bans, and its unbans in the order
    /// they happened among the bans (a ban, then its unban, then a new ban
    /// of the same address ends banned).
    async fn report(
        &self,
        events: &[crate::store::NewEvent],
        bans: &[fleetban_policy::LocalBan],
        unbans: &[convert::Unban],
    ) -> Result<(), ServiceError> {
        let (id, group) = (&self.agent_id, &self.group);
        if unbans.is_empty() {
            return self.service.report(id, group, events, bans).await.map(drop);
        }
        // Bans made before an unban go first (a batch holds them in the
        // order the agent made them).
        let mut rest = bans;
        let mut events = events;
        for u in unbans {
            let before = rest
                .iter()
                .take_while(|b| b.at.timestamp_millis() <= u.time_ms)
                .count();
            self.service
                .report(id, group, events, &rest[..before])
                .await?;
            events = &[];
            rest = &rest[before..];
            self.service.agent_unban(id, u.target).await?;
        }
        self.service.report(id, group, events, rest).await.map(drop)
    }

    async fn firewall(&self, state: crate::store::FirewallState) -> Result<(), Closed> {
        match self.service.agent_firewall(&self.agent_id, &state).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn seen(&self, applied: Option<u64>) -> Result<(), Closed> {
        match self.service.agent_seen(&self.agent_id, applied).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }
}
