//! Follows one log file by path: appended lines, a partial last line held
//! until complete, rename rotation (the old file's tail is read, then the
//! new file from its start), `copytruncate` (the copy's tail is read, then
//! the file from its start), truncation, deletion and recreation, symlinks
//! (the target is followed). Decisions come from `rotation.rs`; this module
//! only does the reading.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::discover::rotated_siblings;
use super::position::{Checkpoint, FilePosition, Fingerprint, FINGERPRINT_BYTES};
use super::rotation::{self, Change, Seen};
use super::split::Splitter;
use super::{Batch, Line, Start, MAX_LINE};
use crate::metrics::{SourceLabel, SourceMetrics};

/// Most bytes read from a file before the lines are handed on.
const READ_BUDGET: usize = 256 * 1024;
/// A rotated file is still read this long after it went quiet, for writers
/// that reopen their log late.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Why a log path cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("log path {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// Checks that `path` is a readable regular file (at start, for explicit
/// paths; later, before each open).
pub fn check_readable(path: &Path) -> Result<(), SourceError> {
    let unusable = |reason: String| SourceError::Unusable {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unusable(describe(&e)))?;
    check_kind(&meta).map_err(unusable)?;
    open(path).map_err(|e| unusable(describe(&e)))?;
    Ok(())
}

fn check_kind(meta: &Metadata) -> Result<(), String> {
    if meta.is_dir() {
        return Err("is a directory, not a log file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a FIFO, socket or device?)".into());
    }
    Ok(())
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "does not exist".into(),
        ErrorKind::PermissionDenied => "is not readable (permission denied)".into(),
        _ => e.to_string(),
    }
}

/// Opens without blocking, should the path have become a FIFO since it was
/// checked.
fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// An open file and how far it was read.
#[derive(Debug)]
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read (handed to the splitter).
    read: u64,
    fingerprint: Fingerprint,
    split: Splitter,
}

impl Open {
    fn new(file: File, meta: &Metadata, from: u64) -> std::io::Result<Self> {
        let mut o = Open {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            read: 0,
            fingerprint: Fingerprint::of(&[]),
            split: Splitter::new(MAX_LINE),
        };
        o.seek(from)?;
        Ok(o)
    }

    fn seek(&mut self, to: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(to))?;
        self.read = to;
        self.split.reset();
        self.refresh_fingerprint();
        Ok(())
    }

    /// Seeks to the end, skipping a partial last line (it is the tail of a
    /// line written before the agent started).
    fn seek_end(&mut self, len: u64) -> std::io::Result<()> {
        self.seek(len)?;
        let mut last = [0u8; 1];
        if len > 0 && self.file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
            self.split.skip_line();
        }
        Ok(())
    }

    fn head(&self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut buf[got..], got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        buf
    }

    fn refresh_fingerprint(&mut self) {
        if self.fingerprint.complete() {
            return;
        }
        let want = self.read.min(FINGERPRINT_BYTES as u64) as usize;
        if want > self.fingerprint.len as usize || want == 0 {
            self.fingerprint = Fingerprint::of(&self.head(want));
        }
    }

    /// Where the next unread line starts.
    fn position(&self) -> FilePosition {
        let pending = if self.split.skipping() {
            0
        } else {
            self.split.pending() as u64
        };
        FilePosition {
            dev: self.dev,
            ino: self.ino,
            offset: self.read.saturating_sub(pending),
            fingerprint: self.fingerprint,
        }
    }

    /// Reads up to the budget; returns the bytes read (0 at end of file).
    fn read_into(&mut self, source: usize, lines: &mut Vec<Line>) -> std::io::Result<usize> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < READ_BUDGET {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            total += n;
            self.read += n as u64;
            self.split.feed(&buf[..n], |l| {
                lines.push(Line {
                    source,
                    text: String::from_utf8_lossy(l).into_owned(),
                    time_ms: None,
                })
            });
        }
        if total > 0 {
            self.refresh_fingerprint();
        }
        Ok(total)
    }

    /// Whether `seen` (the file at the path now) is this file with its head
    /// unchanged.
    fn seen(&self, meta: &Metadata) -> Seen {
        let same = meta.dev() == self.dev && meta.ino() == self.ino;
        Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            head_matches: same
                && Fingerprint::of(&self.head(self.fingerprint.len as usize)) == self.fingerprint,
        }
    }
}

/// A rotated file still being read.
#[derive(Debug)]
struct Draining {
    open: Open,
    quiet_since: Option<Instant>,
}

/// Follows the file at one path.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    key: Arc<str>,
    source: usize,
    /// Where to start the first file opened: the start policy, or a saved
    /// position. Files that appear later are read from their start.
    first: Option<First>,
    current: Option<Open>,
    draining: Option<Draining>,
    /// Lines of the current file were handed on: the rotated file's later
    /// lines no longer move the saved position back to it.
    current_delivered: bool,
    /// The problem last reported, so each is reported once.
    problem: Option<String>,
    metrics: Arc<SourceMetrics>,
    label: SourceLabel,
    cut_seen: u64,
    /// The first file was just opened: hand on its position.
    announce: bool,
}

/// How the first file is opened.
#[derive(Debug, Clone, Copy)]
pub enum First {
    Policy(Start),
    Saved(FilePosition),
}

impl FileTail {
    pub fn new(path: PathBuf, source: usize, first: First, metrics: Arc<SourceMetrics>) -> Self {
        let key: Arc<str> = path.to_string_lossy().into();
        FileTail {
            label: SourceMetrics::label(&key),
            path,
            key,
            source,
            first: Some(first),
            current: None,
            draining: None,
            current_delivered: false,
            problem: None,
            metrics,
            cut_seen: 0,
            announce: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode of the files being read.
    pub fn inodes(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.current
            .iter()
            .chain(self.draining.as_ref().map(|d| &d.open))
            .map(|o| (o.dev, o.ino))
    }

    /// Reads what is new. Returns a batch if anything was read (the batch
    /// may hold no line, when only a partial line came), `None` when idle.
    pub fn poll(&mut self, now: Instant) -> Option<Batch> {
        if self.current.is_none() && self.draining.is_none() {
            // After a restart, this may find a rotated file to finish first.
            self.open_current();
        }
        if let Some(b) = self.poll_draining(now) {
            return Some(b);
        }
        if self.current.is_none() {
            self.open_current();
        } else {
            // Before reading: a file truncated and written again past the
            // offset must be read from its start, not from the offset.
            self.check_path();
            if self.draining.is_some() {
                return self.poll_draining(now);
            }
        }
        let open = self.current.as_mut()?;
        if std::mem::take(&mut self.announce) {
            // Where a file was first opened is saved at once, so that lines
            // written before the first read survive a restart.
            let checkpoint = Checkpoint::File(open.position());
            return Some(self.batch(Vec::new(), Some(checkpoint)));
        }
        let mut lines = Vec::new();
        match open.read_into(self.source, &mut lines) {
            Ok(0) => {}
            Ok(_) => {
                self.current_delivered = true;
                let checkpoint = Checkpoint::File(open.position());
                return Some(self.batch(lines, Some(checkpoint)));
            }
            Err(e) => self.report(format!("read failed: {e}")),
        }
        None
    }

    fn poll_draining(&mut self, now: Instant) -> Option<Batch> {
        let d = self.draining.as_mut()?;
        let mut lines = Vec::new();
        match d.open.read_into(self.source, &mut lines) {
            Ok(0) | Err(_) => {
                let since = *d.quiet_since.get_or_insert(now);
                if now.duration_since(since) >= DRAIN_GRACE {
                    debug!(path = %self.path.display(), "done with the rotated file");
                    self.draining = None;
                }
                None
            }
            Ok(_) => {
                d.quiet_since = None;
                let checkpoint =
                    (!self.current_delivered).then(|| Checkpoint::File(d.open.position()));
                Some(self.batch(lines, checkpoint))
            }
        }
    }

    fn batch(&mut self, lines: Vec<Line>, checkpoint: Option<Checkpoint>) -> Batch {
        let m = &self.metrics;
        m.lines_read
            .get_or_create(&self.label)
            .inc_by(lines.len() as u64);
        let cut: u64 = self
            .current
            .iter()
            .chain(self.draining.as_ref().map(|d| &d.open))
            .map(|o| o.split.cut())
            .sum();
        if cut > self.cut_seen {
            warn!(path = %self.path.display(), limit = MAX_LINE, "over-long line cut");
            m.lines_cut
                .get_or_create(&self.label)
                .inc_by(cut - self.cut_seen);
        }
        self.cut_seen = cut;
        if let Some(o) = &self.current {
            if let Ok(meta) = o.file.metadata() {
                let lag = meta.len().saturating_sub(o.read);
                m.lag_bytes
                    .get_or_create(&self.label)
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        Batch {
            source: self.source,
            key: self.key.clone(),
            lines,
            checkpoint,
        }
    }

    fn report(&mut self, reason: String) {
        if self.problem.as_deref() != Some(reason.as_str()) {
            warn!(path = %self.path.display(), %reason, "log source unusable; retrying");
            self.metrics.errors.get_or_create(&self.label).inc();
            self.problem = Some(reason);
        }
    }

    fn usable(&mut self) {
        if self.problem.take().is_some() {
            info!(path = %self.path.display(), "log source usable again");
        }
    }

    /// Opens the file at the path, where the start policy, a saved position
    /// or (for a file that appeared later) its start says.
    fn open_current(&mut self) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => return self.report(describe(&e)),
        };
        if let Err(reason) = check_kind(&meta) {
            return self.report(reason);
        }
        let file = match open(&self.path) {
            Ok(f) => f,
            Err(e) => return self.report(describe(&e)),
        };
        let opened = match self.first.take() {
            None => Open::new(file, &meta, 0),
            Some(First::Policy(Start::Beginning)) => Open::new(file, &meta, 0),
            Some(First::Policy(Start::End)) => {
                Open::new(file, &meta, 0).and_then(|mut o| o.seek_end(meta.len()).map(|()| o))
            }
            Some(First::Saved(saved)) => self.resume(file, &meta, &saved),
        };
        match opened {
            Ok(o) => {
                self.usable();
                self.announce = self.draining.is_none();
                self.current_delivered = false;
                self.current = Some(o);
            }
            Err(e) => self.report(describe(&e)),
        }
    }

    /// After a restart: continue in place, or read the rotated file's tail
    /// first.
    fn resume(
        &mut self,
        file: File,
        meta: &Metadata,
        saved: &FilePosition,
    ) -> std::io::Result<Open> {
        let mut current = Open::new(file, meta, 0)?;
        current.fingerprint = Fingerprint::of(&current.head(saved.fingerprint.len as usize));
        let seen = Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            head_matches: current.fingerprint == saved.fingerprint,
        };
        let rotated = self.rotated_candidates(saved);
        let seens: Vec<Seen> = rotated.iter().map(|(_, s)| *s).collect();
        let plan = rotation::resume(saved, Some(&seen), &seens);
        if let Some((path, open)) = plan
            .tail_of
            .and_then(|i| rotated.into_iter().nth(i))
            .and_then(|(p, _)| self.open_at(&p, saved.offset).map(|o| (p, o)))
        {
            info!(path = %self.path.display(), rotated = %path.display(), offset = saved.offset, "resuming in the rotated file");
            self.draining = Some(Draining {
                open,
                quiet_since: None,
            });
        }
        if plan.current_from > 0 {
            debug!(path = %self.path.display(), offset = plan.current_from, "resuming");
        }
        current.seek(plan.current_from)?;
        Ok(current)
    }

    fn open_at(&self, path: &Path, offset: u64) -> Option<Open> {
        let file = open(path).ok()?;
        let meta = file.metadata().ok()?;
        Open::new(file, &meta, offset).ok()
    }

    /// Rotated files beside the path, each compared with `pos`.
    fn rotated_candidates(&self, pos: &FilePosition) -> Vec<(PathBuf, Seen)> {
        rotated_siblings(&self.path)
            .into_iter()
            .filter_map(|p| {
                let file = open(&p).ok()?;
                let meta = file.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                let o = Open::new(file, &meta, 0).ok()?;
                let head = o.head(pos.fingerprint.len as usize);
                let seen = Seen {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    len: meta.len(),
                    head_matches: Fingerprint::of(&head) == pos.fingerprint,
                };
                Some((p, seen))
            })
            .collect()
    }

    /// At the end of the current file: has the path moved on?
    fn check_path(&mut self) {
        if self.current.is_none() {
            return;
        }
        let now = match std::fs::metadata(&self.path) {
            Ok(m) if m.is_file() => self.current.as_ref().map(|o| o.seen(&m)),
            Ok(m) => {
                let reason = check_kind(&m).err().unwrap_or_default();
                self.report(reason);
                None
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Between a rotation's rename and create, or deleted: the
                // open file is still read; a new one is taken when it comes.
                None
            }
            Err(e) => {
                self.report(describe(&e));
                None
            }
        };
        let Some(open) = self.current.as_ref() else {
            return;
        };
        let pos = open.position();
        match rotation::change(
            &FilePosition {
                offset: open.read,
                ..pos
            },
            now.as_ref(),
        ) {
            Change::None | Change::Missing => {}
            Change::Truncated => {
                info!(path = %self.path.display(), "log file truncated; reading it from its start");
                // copytruncate: what was written after the last read is in
                // the copy.
                let copy = self
                    .rotated_candidates(&pos)
                    .into_iter()
                    .find(|(_, s)| s.head_matches && s.len > pos.offset && pos.fingerprint.len > 0)
                    .and_then(|(p, _)| self.open_at(&p, pos.offset));
                if self.draining.is_none() {
                    self.draining = copy.map(|open| Draining {
                        open,
                        quiet_since: None,
                    });
                }
                if let Some(o) = self.current.as_mut() {
                    if let Err(e) = o.seek(0) {
                        self.report(describe(&e));
                        self.current = None;
                    }
                }
                self.current_delivered = false;
            }
            Change::Replaced => {
                if self.draining.is_some() {
                    // Finish the previous rotated file first.
                    return;
                }
                info!(path = %self.path.display(), "log file rotated; following the new file");
                self.draining = self.current.take().map(|open| Draining {
                    open,
                    quiet_since: None,
                });
                self.current_delivered = false;
            }
        }
    }
}
