//! The systemd journal, followed through `journalctl -o json --follow`:
//! entries matching the jail's `journalmatch`, formatted as fail2ban does
//! (`HOST IDENT[PID]: MESSAGE`), with the journal's own timestamp, resumed
//! after a restart from the saved cursor.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::follow::SourceHandle;
use super::split::Splitter;
use super::{Batch, Checkpoint, Line, SourceError, Start};
use crate::metrics::SourceMetrics;

/// Longest JSON entry read; a longer one is skipped and counted as cut.
const MAX_ENTRY: usize = 1024 * 1024;
/// Most entries handed on in one batch.
const BATCH_LINES: usize = 1024;

/// What to read from the journal.
#[derive(Debug, Clone)]
pub struct JournalSpec {
    /// `journal:<jail>`: its cursor is saved under this key.
    pub key: String,
    pub source: usize,
    /// `journalctl` match arguments: `FIELD=value` and `+`.
    pub matches: Vec<String>,
    /// Journal directories or files (`--directory`, `--file`); empty: the
    /// system journal.
    pub paths: Vec<PathBuf>,
    pub start: Start,
    /// The `journalctl` to run.
    pub journalctl: PathBuf,
}

/// Splits fail2ban's `journalmatch` (`_SYSTEMD_UNIT=sshd.service + _COMM=sshd`)
/// into `journalctl` arguments, checking each.
pub fn parse_journalmatch(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        if word == "+" {
            if out.is_empty() || out.last().is_some_and(|w: &String| w == "+") {
                return Err(format!("{s:?}: '+' must stand between two matches"));
            }
            out.push(word.to_owned());
            continue;
        }
        let Some((field, _)) = word.split_once('=') else {
            return Err(format!("{word:?}: expected FIELD=value or '+'"));
        };
        if field.is_empty()
            || !field
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "{word:?}: a journal field name is upper-case letters, digits and '_'"
            ));
        }
        out.push(word.to_owned());
    }
    if out.last().is_some_and(|w| w == "+") {
        return Err(format!("{s:?}: '+' must stand between two matches"));
    }
    Ok(out)
}

/// Checks at start that `journalctl` runs and the journal paths exist.
pub fn check(spec: &JournalSpec) -> Result<(), SourceError> {
    for p in &spec.paths {
        if !p.exists() {
            return Err(SourceError::Unusable {
                path: p.clone(),
                reason: "does not exist (a journal directory or file)".into(),
            });
        }
    }
    match Command::new(&spec.journalctl)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(SourceError::Unusable {
            path: spec.journalctl.clone(),
            reason: format!("`journalctl --version` failed ({s})"),
        }),
        Err(e) => Err(SourceError::Unusable {
            path: spec.journalctl.clone(),
            reason: format!("cannot run journalctl: {e}"),
        }),
    }
}

fn base_command(spec: &JournalSpec) -> Command {
    let mut cmd = Command::new(&spec.journalctl);
    cmd.args(["-o", "json", "--no-pager", "-q"]);
    for p in &spec.paths {
        if p.is_dir() {
            cmd.arg(format!("--directory={}", p.display()));
        } else {
            cmd.arg(format!("--file={}", p.display()));
        }
    }
    cmd
}

/// The cursor of the journal's last matching entry, where `start = "end"`
/// begins: entries written after it are read even if the agent restarts
/// before any arrives.
fn tail_cursor(spec: &JournalSpec) -> Option<String> {
    let out = base_command(spec)
        .args(["-n", "1"])
        .args(&spec.matches)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let entry: Entry = serde_json::from_slice(out.stdout.trim_ascii()).ok()?;
    entry.cursor
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "__CURSOR")]
    cursor: Option<String>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<String>,
    #[serde(rename = "_HOSTNAME")]
    hostname: Option<String>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<serde_json::Value>,
    #[serde(rename = "_COMM")]
    comm: Option<serde_json::Value>,
    #[serde(rename = "SYSLOG_PID")]
    syslog_pid: Option<serde_json::Value>,
    #[serde(rename = "_PID")]
    pid: Option<serde_json::Value>,
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
}

/// A journal field as text: journalctl writes strings, byte arrays for
/// binary values, and arrays of those for repeated fields.
fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        serde_json::Value::Array(items) => items.first().and_then(text),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One journal entry as a log line, and its cursor.
pub fn entry_to_line(source: usize, json: &[u8]) -> Result<(Line, Option<String>), String> {
    let e: Entry = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut parts: Vec<String> = Vec::with_capacity(3);
    if let Some(h) = e.hostname.filter(|h| !h.is_empty()) {
        parts.push(h);
    }
    let ident = e
        .identifier
        .as_ref()
        .and_then(text)
        .or_else(|| e.comm.as_ref().and_then(text));
    if let Some(mut ident) = ident {
        if let Some(pid) = e
            .syslog_pid
            .as_ref()
            .and_then(text)
            .or_else(|| e.pid.as_ref().and_then(text))
        {
            ident.push_str(&format!("[{pid}]"));
        }
        ident.push(':');
        parts.push(ident);
    }
    parts.push(e.message.as_ref().and_then(text).unwrap_or_default());
    let time_ms = e
        .realtime
        .and_then(|t| t.parse::<i64>().ok())
        .map(|us| us / 1000);
    Ok((
        Line {
            source,
            text: parts.join(" "),
            time_ms,
        },
        e.cursor,
    ))
}

/// Follows the journal on a thread until `stop` is set (the handle's
/// interrupt kills `journalctl`) or the receiver is gone.
pub fn spawn(
    spec: JournalSpec,
    cursor: Option<String>,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
) -> SourceHandle {
    let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    let kill = child.clone();
    let thread = std::thread::spawn(move || {
        let mut reader = JournalReader {
            key: spec.key.clone().into(),
            label: SourceMetrics::label(&spec.key),
            cursor,
            spec,
            tx,
            metrics,
            child,
        };
        reader.run(&stop);
    });
    let hook: Box<dyn FnOnce() + Send> = Box::new(move || {
        if let Ok(mut c) = kill.lock() {
            if let Some(c) = c.as_mut() {
                let _ = c.kill();
            }
        }
    });
    SourceHandle::new(thread, None, Some(hook))
}

struct JournalReader {
    spec: JournalSpec,
    key: Arc<str>,
    label: crate::metrics::SourceLabel,
    cursor: Option<String>,
    tx: mpsc::Sender<Batch>,
    metrics: Arc<SourceMetrics>,
    child: Arc<Mutex<Option<Child>>>,
}

impl JournalReader {
    fn run(&mut self, stop: &AtomicBool) {
        if self.cursor.is_none() && self.spec.start == Start::End {
            self.cursor = tail_cursor(&self.spec);
            if let Some(c) = &self.cursor {
                // Saved at once, so a restart reads what came after start.
                let b = Batch {
                    source: self.spec.source,
                    key: self.key.clone(),
                    lines: Vec::new(),
                    checkpoint: Some(Checkpoint::Journal(c.clone())),
                };
                if self.tx.blocking_send(b).is_err() {
                    return;
                }
            }
        }
        info!(source = %self.key, matches = ?self.spec.matches, "following the journal");
        while !stop.load(Ordering::Relaxed) {
            match self.follow_once(stop) {
                Ok(()) if stop.load(Ordering::Relaxed) => break,
                Ok(()) => self.problem("journalctl exited".into()),
                Err(e) => self.problem(e),
            }
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn problem(&self, reason: String) {
        warn!(source = %self.key, %reason, "journal source failed; retrying");
        self.metrics.errors.get_or_create(&self.label).inc();
    }

    /// Runs one `journalctl --follow` until it ends.
    fn follow_once(&mut self, stop: &AtomicBool) -> Result<(), String> {
        let mut cmd = base_command(&self.spec);
        cmd.args(["--follow", "--no-tail"]);
        if let Some(c) = &self.cursor {
            cmd.arg(format!("--after-cursor={c}"));
        }
        cmd.args(&self.spec.matches);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run journalctl: {e}"))?;
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| "journalctl has no stdout".to_string())?;
        let mut err = child.stderr.take();
        if let Ok(mut slot) = self.child.lock() {
            *slot = Some(child);
        }
        if stop.load(Ordering::Relaxed) {
            self.kill();
        }
        let mut split = Splitter::new(MAX_ENTRY);
        let mut buf = vec![0u8; 64 * 1024];
        let result = loop {
            let n = match out.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(format!("reading journalctl: {e}")),
            };
            let cut_before = split.cut();
            let mut lines = Vec::new();
            let mut cursor = None;
            let mut bad = 0u64;
            split.feed(&buf[..n], |json| {
                match entry_to_line(self.spec.source, json) {
                    Ok((line, c)) => {
                        lines.push(line);
                        if c.is_some() {
                            cursor = c;
                        }
                    }
                    Err(_) => bad += 1,
                }
            });
            let cut = split.cut() - cut_before;
            if cut > 0 {
                warn!(source = %self.key, limit = MAX_ENTRY, "over-long journal entry skipped");
                self.metrics
                    .lines_cut
                    .get_or_create(&self.label)
                    .inc_by(cut);
            }
            if bad > cut {
                warn!(source = %self.key, entries = bad - cut, "unreadable journal entries skipped");
            }
            if !self.send(lines, cursor) {
                self.kill();
                return Ok(());
            }
        };
        self.kill();
        let stderr = err
            .as_mut()
            .map(|e| {
                let mut s = String::new();
                let _ = e.take(4096).read_to_string(&mut s);
                s
            })
            .unwrap_or_default();
        match result {
            Ok(()) if !stderr.trim().is_empty() && !stop.load(Ordering::Relaxed) => {
                Err(format!("journalctl: {}", stderr.trim()))
            }
            r => r,
        }
    }

    fn send(&mut self, mut lines: Vec<Line>, cursor: Option<String>) -> bool {
        if let Some(c) = &cursor {
            self.cursor = Some(c.clone());
        }
        self.metrics
            .lines_read
            .get_or_create(&self.label)
            .inc_by(lines.len() as u64);
        while lines.len() > BATCH_LINES {
            let rest = lines.split_off(BATCH_LINES);
            // Only the last batch carries the cursor.
            if !self.push(std::mem::replace(&mut lines, rest), None) {
                return false;
            }
        }
        if lines.is_empty() && cursor.is_none() {
            return true;
        }
        self.push(lines, cursor.map(Checkpoint::Journal))
    }

    fn push(&self, lines: Vec<Line>, checkpoint: Option<Checkpoint>) -> bool {
        self.metrics.queued_batches.inc();
        self.tx
            .blocking_send(Batch {
                source: self.spec.source,
                key: self.key.clone(),
                lines,
                checkpoint,
            })
            .is_ok()
    }

    fn kill(&self) {
        if let Ok(mut slot) = self.child.lock() {
            if let Some(mut c) = slot.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journalmatch_is_checked() {
        assert_eq!(
            parse_journalmatch("_SYSTEMD_UNIT=sshd.service + _COMM=sshd"),
            Ok(vec![
                "_SYSTEMD_UNIT=sshd.service".to_string(),
                "+".into(),
                "_COMM=sshd".into()
            ])
        );
        assert!(parse_journalmatch("+ _COMM=sshd").is_err());
        assert!(parse_journalmatch("_COMM=sshd +").is_err());
        assert!(parse_journalmatch("_COMM=a + + _COMM=b").is_err());
        assert!(parse_journalmatch("sshd").is_err());
        assert!(parse_journalmatch("_comm=sshd").is_err());
    }

    #[test]
    fn entries_read_as_fail2ban_formats_them() {
        let (line, cursor) = entry_to_line(
            2,
            br#"{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd","_PID":"42","MESSAGE":"Failed password"}"#,
        )
        .expect("entry");
        assert_eq!(line.text, "web1 sshd[42]: Failed password");
        assert_eq!(line.time_ms, Some(1_700_000_000_123));
        assert_eq!(line.source, 2);
        assert_eq!(cursor.as_deref(), Some("c1"));
        // Binary message, no identifier but a command name.
        let (line, _) = entry_to_line(
            0,
            br#"{"__CURSOR":"c2","_COMM":"cron","MESSAGE":[104,105,255]}"#,
        )
        .expect("entry");
        assert_eq!(line.text, "cron: hi\u{fffd}");
        assert!(entry_to_line(0, b"{oops").is_err());
    }
}
