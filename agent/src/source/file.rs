//! Follows one log file by path: appended lines, a partial last line held
//! until complete, rename rotation (the old file's tail is read, then the
//! new file from its start), `copytruncate` (the copy's tail is read, then
//! the file from its start), truncation, deletion and recreation, symlinks
//! (the target is followed). Decisions come from `rotation.rs`; this module
//! only does the reading.

use std::collections::VecDeque;
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
const READ_BUDGET: usize = 64 * 1024;
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
        let mut buf = [0u8; 64 * 1024];
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

/// A rotated file still read for a while, for writers that reopen late.
#[derive(Debug)]
struct Late {
    open: Open,
    quiet_since: Instant,
}

/// Follows the file at one path.
///
/// Files are read in the order they were written: first the `chain` of
/// rotated files not finished yet (oldest first), then the file at the path.
/// Each file that appears at the path is opened as soon as it is seen, so a
/// reader that lags behind several rotations still reads every file.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    key: Arc<str>,
    source: usize,
    /// Where to start the first file opened: the start policy, or a saved
    /// position. Files that appear later are read from their start.
    first: Option<First>,
    chain: VecDeque<Open>,
    current: Option<Open>,
    /// Finished rotated files, read again while they keep growing.
    late: Vec<Late>,
    /// The problem last reported, so each is reported once.
    problem: Option<String>,
    metrics: Arc<SourceMetrics>,
    label: SourceLabel,
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
            chain: VecDeque::new(),
            current: None,
            late: Vec::new(),
            problem: None,
            metrics,
            announce: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path is gone and everything read: a glob match that was
    /// deleted, no longer worth a reader.
    pub fn is_gone(&self) -> bool {
        self.chain.is_empty()
            && self.late.is_empty()
            && self.current.as_ref().is_none_or(|o| lag(o) == 0)
            && matches!(std::fs::symlink_metadata(&self.path), Err(e) if e.kind() == ErrorKind::NotFound)
    }

    /// Device and inode of the files being read.
    pub fn inodes(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chain
            .iter()
            .chain(self.current.iter())
            .chain(self.late.iter().map(|l| &l.open))
            .map(|o| (o.dev, o.ino))
    }

    /// Reads what is new. Returns a batch if anything was read (the batch
    /// may hold no line, when only a partial line came), `None` when idle.
    pub fn poll(&mut self, now: Instant) -> Option<Batch> {
        if self.current.is_none() {
            self.open_current();
        } else {
            // Before reading: a rotation is noticed at once (so no file is
            // missed however far behind the reader is), and a file
            // truncated and written again past the offset is read from its
            // start, not from the offset.
            self.check_path();
        }
        let mut lines = Vec::new();
        while let Some(front) = self.chain.front_mut() {
            match read(front, self.source, &mut lines) {
                Some((0, _)) | None => {
                    if self.chain.len() == 1 && self.current.is_none() {
                        return self.poll_late(now);
                    }
                    if let Some(open) = self.chain.pop_front() {
                        debug!(path = %self.path.display(), "done with a rotated file");
                        self.late.push(Late {
                            open,
                            quiet_since: now,
                        });
                    }
                }
                Some((_, cut)) => {
                    let checkpoint = Checkpoint::File(front.position());
                    let lag = lag(front);
                    return Some(self.batch(lines, Some(checkpoint), cut, lag));
                }
            }
        }
        let Some(open) = self.current.as_mut() else {
            return self.poll_late(now);
        };
        if std::mem::take(&mut self.announce) {
            // Where a file was first opened is saved at once, so that lines
            // written before the first read survive a restart.
            let checkpoint = Checkpoint::File(open.position());
            return Some(self.batch(Vec::new(), Some(checkpoint), 0, 0));
        }
        match read(open, self.source, &mut lines) {
            Some((0, _)) => self.poll_late(now),
            Some((_, cut)) => {
                let checkpoint = Checkpoint::File(open.position());
                let lag = lag(open);
                Some(self.batch(lines, Some(checkpoint), cut, lag))
            }
            None => {
                self.report("read failed".into());
                self.poll_late(now)
            }
        }
    }

    /// Late lines in rotated files: handed on, without moving the saved
    /// position (newer files were read already).
    fn poll_late(&mut self, now: Instant) -> Option<Batch> {
        let mut lines = Vec::new();
        let mut i = 0;
        while i < self.late.len() {
            let l = &mut self.late[i];
            match read(&mut l.open, self.source, &mut lines) {
                Some((n, cut)) if n > 0 => {
                    l.quiet_since = now;
                    return Some(self.batch(lines, None, cut, 0));
                }
                _ if now.duration_since(l.quiet_since) >= DRAIN_GRACE => {
                    close_in_background(self.late.swap_remove(i).open);
                }
                _ => i += 1,
            }
        }
        None
    }

    fn batch(
        &mut self,
        lines: Vec<Line>,
        checkpoint: Option<Checkpoint>,
        cut: u64,
        lag: u64,
    ) -> Batch {
        let m = &self.metrics;
        m.lines_read
            .get_or_create(&self.label)
            .inc_by(lines.len() as u64);
        if cut > 0 {
            warn!(path = %self.path.display(), limit = MAX_LINE, lines = cut, "over-long line cut");
            m.lines_cut.get_or_create(&self.label).inc_by(cut);
        }
        m.lag_bytes
            .get_or_create(&self.label)
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
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
            Err(e) if e.kind() == ErrorKind::NotFound && !self.chain.is_empty() => return,
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
                self.announce = self.chain.is_empty();
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
            .and_then(|(p, _)| open_at(&p, saved.offset).map(|o| (p, o)))
        {
            info!(path = %self.path.display(), rotated = %path.display(), offset = saved.offset, "resuming in the rotated file");
            self.chain.push_back(open);
        }
        if plan.current_from > 0 {
            debug!(path = %self.path.display(), offset = plan.current_from, "resuming");
        }
        current.seek(plan.current_from)?;
        Ok(current)
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

    /// Has the path moved on from the current file?
    fn check_path(&mut self) {
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
                    .and_then(|(p, _)| open_at(&p, pos.offset));
                if let Some(copy) = copy {
                    self.chain.push_back(copy);
                }
                if let Some(o) = self.current.as_mut() {
                    if let Err(e) = o.seek(0) {
                        self.report(describe(&e));
                        self.current = None;
                    }
                }
            }
            Change::Replaced => {
                info!(path = %self.path.display(), "log file rotated; following the new file");
                if let Some(old) = self.current.take() {
                    self.chain.push_back(old);
                }
                self.open_current();
            }
        }
    }
}

/// Closes a rotated file on a thread of its own: the last close of a
/// deleted file frees its blocks, which takes a while for a big one and
/// would hold up reading.
fn close_in_background(open: Open) {
    if std::thread::Builder::new()
        .name("fleetban-close".into())
        .spawn(move || drop(open))
        .is_err()
    {
        debug!("closing a rotated file in the reader thread");
    }
}

/// Reads from `open`; `(bytes, lines cut)`, or `None` on a read error.
fn read(open: &mut Open, source: usize, lines: &mut Vec<Line>) -> Option<(usize, u64)> {
    let cut = open.split.cut();
    let n = open.read_into(source, lines).ok()?;
    Some((n, open.split.cut() - cut))
}

/// Bytes of `open` not read yet.
fn lag(open: &Open) -> u64 {
    open.file
        .metadata()
        .map(|m| m.len().saturating_sub(open.read))
        .unwrap_or(0)
}

fn open_at(path: &Path, offset: u64) -> Option<Open> {
    let file = open(path).ok()?;
    let meta = file.metadata().ok()?;
    Open::new(file, &meta, offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_plain() {
        let e = |k: ErrorKind| describe(&std::io::Error::from(k));
        assert_eq!(e(ErrorKind::NotFound), "does not exist");
        assert_eq!(
            e(ErrorKind::PermissionDenied),
            "is not readable (permission denied)"
        );
    }

    #[test]
    fn unusable_paths_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = check_readable(dir.path()).expect_err("a directory");
        assert_eq!(
            e.to_string(),
            format!(
                "log path {}: is a directory, not a log file",
                dir.path().display()
            )
        );
        let missing = dir.path().join("nope.log");
        let e = check_readable(&missing).expect_err("missing");
        assert_eq!(
            e.to_string(),
            format!("log path {}: does not exist", missing.display())
        );
    }
}
