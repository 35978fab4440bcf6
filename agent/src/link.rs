//! The agent's link to the server: one `Connect` stream, re-opened with
//! backoff whenever it fails. Events and local bans are batched; a batch
//! stays pending until the server acknowledges it, and pending batches are
//! sent again after a reconnect (the server stores each id once). While the
//! server is away, detection and local bans go on; pending batches are
//! bounded, the oldest dropped (and counted) past the bound. With several
//! server URLs (replicas), each lost stream moves on to the next one.

use std::collections::VecDeque;
use std::time::Duration;

use fleetban_proto::pb::agent_message::Msg as AgentMsg;
use fleetban_proto::pb::agent_service_client::AgentServiceClient;
use fleetban_proto::pb::server_message::Msg as ServerMsg;
use fleetban_proto::pb::{self, AgentMessage};
use fleetban_proto::BlockEntry;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::detect::JailOverride;
use crate::enforce::EnforceCmd;
use crate::metrics::FirewallMetrics;

/// Something to report to the server.
#[derive(Debug, Clone)]
pub enum Report {
    Event(pb::Event),
    Ban(pb::LocalBan),
    /// A ban lifted by hand (`fleetban-agent unban`).
    Unban(pb::Unban),
}

/// Reports in one batch at most.
const BATCH_MAX: usize = 500;
/// A batch waits at most this long for more reports.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Reports kept for the server while it is unreachable.
const PENDING_MAX: usize = 200_000;
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often the firewall's state is compared with the one last sent: a
/// change is reported at the next check, not at the next heartbeat.
const FIREWALL_CHECK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Link {
    /// Server replicas, tried in turn (at least one).
    pub urls: Vec<String>,
    /// Jail policies pushed by the server, for detection to apply.
    pub policy: mpsc::Sender<Vec<JailOverride>>,
    /// Where the agent's credential is (`identity/`).
    pub state_dir: std::path::PathBuf,
    pub hello: pb::Hello,
    pub reports: mpsc::Receiver<Report>,
    pub enforce: mpsc::Sender<EnforceCmd>,
    pub applied: watch::Receiver<u64>,
    /// What enforcement counts, reported with each heartbeat.
    pub firewall: std::sync::Arc<FirewallMetrics>,
    /// The firewall backend's name.
    pub backend: &'static str,
}

/// Batches not yet acknowledged, oldest first.
#[derive(Default)]
struct Pending {
    batches: VecDeque<pb::EventBatch>,
    reports: usize,
    next_seq: u64,
    dropped: u64,
    open: Vec<Report>,
}

impl Pending {
    fn push(&mut self, r: Report) {
        self.open.push(r);
    }

    /// Closes the open batch; returns it (to send) if it has anything.
    fn seal(&mut self) -> Option<pb::EventBatch> {
        if self.open.is_empty() {
            return None;
        }
        self.next_seq += 1;
        let mut batch = pb::EventBatch {
            seq: self.next_seq,
            events: Vec::new(),
            bans: Vec::new(),
            unbans: Vec::new(),
        };
        for r in self.open.drain(..) {
            match r {
                Report::Event(e) => batch.events.push(e),
                Report::Ban(b) => batch.bans.push(b),
                Report::Unban(u) => batch.unbans.push(u),
            }
        }
        self.reports += batch_len(&batch);
        self.batches.push_back(batch.clone());
        while self.reports > PENDING_MAX {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            let n = batch_len(&old);
            self.reports -= n;
            self.dropped += n as u64;
            warn!(
                dropped = n,
                total_dropped = self.dropped,
                "server unreachable too long; oldest reports dropped"
            );
        }
        Some(batch)
    }

    fn ack(&mut self, seq: u64) {
        if let Some(i) = self.batches.iter().position(|b| b.seq == seq) {
            if let Some(b) = self.batches.remove(i) {
                self.reports -= batch_len(&b);
            }
        }
    }
}

fn batch_len(b: &pb::EventBatch) -> usize {
    b.events.len() + b.bans.len() + b.unbans.len()
}

fn heartbeat_msg(firewall: pb::FirewallState) -> AgentMsg {
    AgentMsg::Heartbeat(pb::Heartbeat {
        time_ms: chrono::Utc::now().timestamp_millis(),
        firewall: Some(firewall),
    })
}

/// How one stream ended.
enum End {
    Stopped,
    Lost(String),
}

impl Link {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut pending = Pending::default();
        let mut backoff = BACKOFF_MIN;
        let mut next = 0usize;
        loop {
            let Some(url) = self.urls.get(next % self.urls.len().max(1)).cloned() else {
                return;
            };
            next = next.wrapping_add(1);
            match self.session(&url, &mut pending, &stop, &mut backoff).await {
                End::Stopped => return,
                End::Lost(why) => {
                    warn!(server = %url, reason = %why, retry_in_ms = backoff.as_millis() as u64, "server link down")
                }
            }
            // Keep collecting reports while waiting to reconnect.
            let wait = tokio::time::sleep(jitter(backoff));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    r = self.reports.recv() => match r {
                        Some(r) => {
                            pending.push(r);
                            if pending.open.len() >= BATCH_MAX {
                                pending.seal();
                            }
                        }
                        None => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
            pending.seal();
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn session(
        &mut self,
        url: &str,
        pending: &mut Pending,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> End {
        let endpoint = match crate::identity::endpoint(url, &self.state_dir) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true),
            Err(e) => return End::Lost(e.to_string()),
        };
        let channel = tokio::select! {
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => return End::Lost(format!("cannot connect: {}", source_chain(&e))),
            },
            () = stop.cancelled() => return End::Stopped,
        };
        let mut client = AgentServiceClient::new(channel);
        let (out, out_rx) = mpsc::channel::<AgentMessage>(256);
        let mut hello = self.hello.clone();
        hello.last_applied_version = *self.applied.borrow();
        let _ = out.send(msg(AgentMsg::Hello(hello))).await;
        let mut inbound = match client.connect(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return End::Lost(refusal(&s)),
        };
        // Everything not yet acknowledged goes again, oldest first.
        pending.seal();
        for batch in pending.batches.clone() {
            if out.send(msg(AgentMsg::Events(batch))).await.is_err() {
                return End::Lost("stream closed".into());
            }
        }
        let mut snapshot: Option<(u64, Vec<BlockEntry>)> = None;
        let mut flush = tokio::time::interval(BATCH_WAIT);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut check = tokio::time::interval(FIREWALL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<pb::FirewallState> = None;
        loop {
            tokio::select! {
                r = self.reports.recv() => {
                    let Some(r) = r else { return End::Stopped };
                    pending.push(r);
                    if pending.open.len() >= BATCH_MAX {
                        if let Some(b) = pending.seal() {
                            if out.send(msg(AgentMsg::Events(b))).await.is_err() {
                                return End::Lost("stream closed".into());
                            }
                        }
                    }
                }
                _ = flush.tick() => {
                    if let Some(b) = pending.seal() {
                        if out.send(msg(AgentMsg::Events(b))).await.is_err() {
                            return End::Lost("stream closed".into());
                        }
                    }
                }
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        if let Some(end) = self.on_server(url, m, pending, &mut snapshot, backoff).await {
                            return end;
                        }
                    }
                    Ok(None) => return End::Lost("the server closed the stream".into()),
                    Err(s) => return End::Lost(format!("{}: {}", code_name(s.code()), s.message())),
                },
                changed = self.applied.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                    let version = *self.applied.borrow_and_update();
                    let _ = out.send(msg(AgentMsg::Applied(pb::Applied { version }))).await;
                }
                _ = heartbeat.tick() => {
                    let state = self.firewall_state();
                    let _ = out.send(msg(heartbeat_msg(state.clone()))).await;
                    reported = Some(state);
                }
                _ = check.tick() => {
                    let state = self.firewall_state();
                    if reported.as_ref() != Some(&state) {
                        let _ = out.send(msg(heartbeat_msg(state.clone()))).await;
                        reported = Some(state);
                    }
                }
                () = stop.cancelled() => return End::Stopped,
            }
        }
    }

    fn firewall_state(&self) -> pb::FirewallState {
        pb::FirewallState {
            enforced: u64::try_from(self.firewall.entries.get()).unwrap_or(0),
            drift_total: self.firewall.drift_total(),
            backend: self.backend.to_owned(),
        }
    }

    async fn on_server(
        &mut self,
        url: &str,
        m: pb::ServerMessage,
        pending: &mut Pending,
        snapshot: &mut Option<(u64, Vec<BlockEntry>)>,
        backoff: &mut Duration,
    ) -> Option<End> {
        match m.msg? {
            ServerMsg::Welcome(w) => {
                info!(server = %url, server_version = %w.server_version, "connected to server");
                *backoff = BACKOFF_MIN;
            }
            ServerMsg::Snapshot(s) => {
                let part = snapshot.get_or_insert_with(|| (s.version, Vec::new()));
                part.1.extend(entries(s.decisions));
                if s.last {
                    let (version, entries) = snapshot.take().unwrap_or_default();
                    debug!(version, entries = entries.len(), "block list snapshot");
                    if self
                        .enforce
                        .send(EnforceCmd::Snapshot { version, entries })
                        .await
                        .is_err()
                    {
                        return Some(End::Stopped);
                    }
                }
            }
            ServerMsg::Delta(d) => {
                debug!(
                    version = d.version,
                    added = d.added.len(),
                    removed = d.removed.len(),
                    "block list delta"
                );
                let cmd = EnforceCmd::Delta {
                    version: d.version,
                    added: entries(d.added),
                    removed: d.removed,
                };
                if self.enforce.send(cmd).await.is_err() {
                    return Some(End::Stopped);
                }
            }
            ServerMsg::Ack(a) => pending.ack(a.seq),
            ServerMsg::PolicyUpdate(p) => {
                debug!(version = p.version, jails = p.jails.len(), "jail policy");
                if self.policy.send(overrides(p)).await.is_err() {
                    return Some(End::Stopped);
                }
            }
            ServerMsg::Command(_) => {
                debug!("server message not handled by this agent version");
            }
        }
        None
    }
}

/// The server's jail policy; zero values keep the agent's own settings.
fn overrides(p: pb::PolicyUpdate) -> Vec<JailOverride> {
    let ms = |s: i64| (s > 0).then(|| s.saturating_mul(1000));
    p.jails
        .into_iter()
        .map(|j| JailOverride {
            jail: j.jail,
            enabled: j.enabled,
            maxretry: (j.maxretry > 0).then_some(j.maxretry),
            findtime_ms: ms(j.findtime_s),
            bantime_ms: ms(j.bantime_s),
        })
        .collect()
}

/// Why the server refused the stream, with a hint when TLS itself failed.
fn refusal(s: &tonic::Status) -> String {
    if s.code() != tonic::Code::Unknown {
        return format!("refused: {}", s.message());
    }
    let chain = source_chain(s);
    if chain.contains("fatal alert") {
        format!("refused: {chain} (the server does not accept this agent's certificate: was it enrolled with this server?)")
    } else {
        format!("refused: {chain}")
    }
}

fn msg(m: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

/// Valid entries; an invalid one is logged and skipped.
fn entries(decisions: Vec<pb::Decision>) -> Vec<BlockEntry> {
    decisions
        .into_iter()
        .filter_map(|d| {
            let id = d.id;
            BlockEntry::try_from(d)
                .map_err(|e| warn!(decision = id, error = %e, "invalid decision ignored"))
                .ok()
        })
        .collect()
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unauthenticated => "unauthenticated",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u32) -> Report {
        Report::Event(pb::Event {
            id: i.to_string(),
            ..Default::default()
        })
    }

    #[test]
    fn pending_batches_until_acknowledged() {
        let mut p = Pending::default();
        assert!(p.seal().is_none());
        p.push(event(1));
        p.push(Report::Ban(pb::LocalBan::default()));
        let b1 = p.seal().expect("batch");
        assert_eq!((b1.seq, b1.events.len(), b1.bans.len()), (1, 1, 1));
        p.push(event(2));
        let b2 = p.seal().expect("batch");
        assert_eq!(p.batches.len(), 2);
        p.ack(b1.seq);
        assert_eq!(
            p.batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![b2.seq]
        );
        p.ack(99);
        assert_eq!(p.reports, 1);
    }

    #[test]
    fn pending_is_bounded() {
        let mut p = Pending::default();
        for i in 0..(PENDING_MAX as u32 + 1_000) {
            p.push(event(i));
            if p.open.len() >= BATCH_MAX {
                p.seal();
            }
        }
        p.seal();
        assert!(p.reports <= PENDING_MAX);
        assert_eq!(p.dropped as usize + p.reports, PENDING_MAX + 1_000);
    }
}
