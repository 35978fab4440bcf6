//! One configured log path (a file or a glob) followed on a thread of its
//! own: the files it matches, new matches as they appear, woken by inotify
//! or by a timer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::discover::{expand, glob_base, is_glob};
use super::file::{FileTail, First};
use super::position::FilePosition;
use super::{Backend, Batch, Start};
use crate::metrics::SourceMetrics;

/// How often files are checked without inotify.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often files are checked anyway with inotify (for changes it missed).
const SAFETY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a glob is expanded again, at most.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Wakes a reader when something changed in the directories it watches, or
/// after its interval.
pub struct Waker {
    rx: Receiver<()>,
    tx: SyncSender<()>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    interval: Duration,
}

impl Waker {
    pub fn new(backend: Backend) -> Self {
        let (tx, rx) = sync_channel(1);
        let watcher = (backend == Backend::Auto)
            .then(|| {
                let wake = tx.clone();
                notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                    // One pending wake-up is enough: the reader reads all.
                    let _ = wake.try_send(());
                })
                .map_err(|e| warn!(error = %e, "inotify unavailable; polling log files"))
                .ok()
            })
            .flatten();
        let interval = if watcher.is_some() {
            SAFETY_INTERVAL
        } else {
            POLL_INTERVAL
        };
        Waker {
            rx,
            tx,
            watcher,
            watched: HashSet::new(),
            interval,
        }
    }

    /// A handle that wakes the reader (at shutdown).
    pub fn handle(&self) -> SyncSender<()> {
        self.tx.clone()
    }

    /// Watches `dir` (not recursively), once.
    pub fn watch(&mut self, dir: &Path) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if self.watched.contains(dir) {
            return;
        }
        match w.watch(dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_owned());
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling it");
                self.interval = POLL_INTERVAL;
            }
        }
    }

    pub fn wait(&self) {
        let _ = self.rx.recv_timeout(self.interval);
    }
}

/// The files of one configured log path.
pub struct FileGroup {
    spec: PathBuf,
    glob: bool,
    source: usize,
    start: Start,
    saved: HashMap<String, FilePosition>,
    tails: Vec<FileTail>,
    /// Glob matches not followed, and why (reported once).
    skipped: HashMap<PathBuf, String>,
    /// Glob matches that are followed files under another name (a rotated
    /// `auth.log.1`), by device and inode.
    aliases: HashMap<PathBuf, (u64, u64)>,
    last_scan: Option<Instant>,
    metrics: Arc<SourceMetrics>,
    next: usize,
}

impl FileGroup {
    /// `saved` holds the positions saved for this path's files.
    pub fn new(
        spec: PathBuf,
        source: usize,
        start: Start,
        saved: HashMap<String, FilePosition>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        let glob = is_glob(&spec);
        let mut g = FileGroup {
            spec,
            glob,
            source,
            start,
            saved,
            tails: Vec::new(),
            skipped: HashMap::new(),
            aliases: HashMap::new(),
            last_scan: None,
            metrics,
            next: 0,
        };
        if !g.glob {
            let path = g.spec.clone();
            g.add(path, true);
        }
        g
    }

    fn add(&mut self, path: PathBuf, at_start: bool) {
        let key = path.to_string_lossy().into_owned();
        let first = match self.saved.remove(&key) {
            Some(p) => First::Saved(p),
            None if at_start => First::Policy(self.start),
            // A file that appeared after start is read whole.
            None => First::Policy(Start::Beginning),
        };
        self.tails.push(FileTail::new(
            path,
            self.source,
            first,
            self.metrics.clone(),
        ));
    }

    /// Directories whose changes should wake the reader.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if self.glob {
            out.push(glob_base(&self.spec));
        }
        for t in &self.tails {
            for p in [
                Some(t.path().to_path_buf()),
                std::fs::canonicalize(t.path()).ok(),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(d) = p.parent() {
                    out.push(d.to_path_buf());
                }
            }
        }
        out.retain(|d| d.is_dir());
        out
    }

    /// Reads from each file once; returns the non-empty batches.
    pub fn poll(&mut self, now: Instant) -> Vec<Batch> {
        if self.glob
            && self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= RESCAN_INTERVAL)
        {
            let first = self.last_scan.is_none();
            self.last_scan = Some(now);
            self.rescan(first);
        }
        let mut out = Vec::new();
        let n = self.tails.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if let Some(b) = self.tails[idx].poll(now) {
                if !b.lines.is_empty() || b.checkpoint.is_some() {
                    out.push(b);
                }
            }
        }
        self.next = self.next.wrapping_add(1);
        out
    }

    fn rescan(&mut self, at_start: bool) {
        let pattern = self.spec.to_string_lossy().into_owned();
        // Matches deleted and read to their end are let go.
        self.tails.retain(|t| {
            let gone = t.is_gone();
            if gone {
                info!(pattern = %pattern, path = %t.path().display(), "log file gone; no longer followed");
            }
            !gone
        });
        let known: HashSet<(u64, u64)> = self.tails.iter().flat_map(|t| t.inodes()).collect();
        for path in expand(&pattern) {
            if self.tails.iter().any(|t| t.path() == path) {
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if !meta.is_file() {
                let reason = if meta.is_dir() {
                    "is a directory, not a log file"
                } else {
                    "is not a regular file (a FIFO, socket or device?)"
                };
                if self.skipped.insert(path.clone(), reason.into()).is_none() {
                    warn!(pattern = %pattern, path = %path.display(), reason, "glob match skipped");
                    self.metrics
                        .errors
                        .get_or_create(&SourceMetrics::label(&pattern))
                        .inc();
                }
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            let id = (meta.dev(), meta.ino());
            if known.contains(&id) || self.aliases.get(&path) == Some(&id) {
                // A followed file renamed to a name the glob matches too
                // (`auth.log*` and `auth.log.1`): already being read.
                self.aliases.insert(path, id);
                continue;
            }
            self.aliases.remove(&path);
            self.skipped.remove(&path);
            info!(pattern = %pattern, path = %path.display(), "following new log file");
            self.add(path, at_start);
        }
    }
}

/// A running reader.
pub struct SourceHandle {
    pub thread: std::thread::JoinHandle<()>,
    wake: Option<SyncSender<()>>,
    stop_hook: Option<Box<dyn FnOnce() + Send>>,
}

impl SourceHandle {
    pub fn new(
        thread: std::thread::JoinHandle<()>,
        wake: Option<SyncSender<()>>,
        stop_hook: Option<Box<dyn FnOnce() + Send>>,
    ) -> Self {
        SourceHandle {
            thread,
            wake,
            stop_hook,
        }
    }

    /// Asks the reader to stop (the shared stop flag must be set first).
    pub fn interrupt(&mut self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
        if let Some(h) = self.stop_hook.take() {
            h();
        }
    }
}

/// Follows `group` on a thread until `stop` is set or the receiver is gone.
pub fn spawn_files(
    mut group: FileGroup,
    backend: Backend,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
) -> SourceHandle {
    let mut waker = Waker::new(backend);
    let wake = waker.handle();
    // The first poll takes each file's starting position (its end, for
    // `start = "end"`); the caller waits for it, so that a line written once
    // the agent says it runs is never taken for an old one.
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let thread = std::thread::spawn(move || {
        info!(path = %group.spec.display(), "following log path");
        let mut started = Some(started_tx);
        while !stop.load(Ordering::Relaxed) {
            let batches = group.poll(Instant::now());
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
            let idle = batches.is_empty();
            for b in batches {
                metrics.queued_batches.inc();
                if tx.blocking_send(b).is_err() {
                    return;
                }
            }
            if idle {
                for d in group.dirs() {
                    waker.watch(&d);
                }
                waker.wait();
            }
        }
    });
    // Bounded: a hung file system must not hold the agent's start forever.
    let _ = started_rx.recv_timeout(START_WAIT);
    SourceHandle::new(thread, Some(wake), None)
}

/// How long starting a file source waits for its first poll.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
