//! Follows a log file from its end: appended lines, a partial last line held
//! until complete, rename rotation (the old file's tail is read, then the new
//! one from its start) and truncation.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Line, MAX_LINE};

/// How often the file is checked for growth and rotation.
const POLL: Duration = Duration::from_millis(20);

/// Why a log path cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("log path {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// Checks at start that `path` is a readable regular file.
pub fn check_readable(path: &Path) -> Result<(), SourceError> {
    let unusable = |reason: String| SourceError::Unusable {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unusable(describe(&e)))?;
    if meta.is_dir() {
        return Err(unusable("is a directory, not a log file".into()));
    }
    if !meta.is_file() {
        return Err(unusable("is not a regular file".into()));
    }
    File::open(path).map_err(|e| unusable(describe(&e)))?;
    Ok(())
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "does not exist".into(),
        ErrorKind::PermissionDenied => "is not readable (permission denied)".into(),
        _ => e.to_string(),
    }
}

pub struct FileFollower {
    path: PathBuf,
    source: usize,
    file: Option<(File, Metadata)>,
    offset: u64,
    partial: Vec<u8>,
    /// Bytes of an over-long line being skipped until its end.
    skipping: bool,
    cut_lines: u64,
}

impl FileFollower {
    /// Opens `path` positioned at its end.
    pub fn open_at_end(path: PathBuf, source: usize) -> Result<Self, SourceError> {
        check_readable(&path)?;
        let mut f = FileFollower {
            path,
            source,
            file: None,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            cut_lines: 0,
        };
        if let Some((mut file, meta)) = f.open_current() {
            f.offset = file.seek(SeekFrom::End(0)).unwrap_or(meta.len());
            f.file = Some((file, meta));
        }
        Ok(f)
    }

    /// Follows the file on a thread of its own until `stop` is set or the
    /// receiver is gone.
    pub fn spawn(
        mut self,
        tx: mpsc::Sender<Line>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            info!(path = %self.path.display(), "following log file");
            while !stop.load(Ordering::Relaxed) {
                let lines = self.poll();
                let idle = lines.is_empty();
                for text in lines {
                    if tx
                        .blocking_send(Line {
                            source: self.source,
                            text,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                if idle {
                    std::thread::sleep(POLL);
                }
            }
        })
    }

    fn open_current(&self) -> Option<(File, Metadata)> {
        let file = File::open(&self.path).ok()?;
        let meta = file.metadata().ok()?;
        Some((file, meta))
    }

    /// Reads what is new; returns complete lines.
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        self.read_available(&mut lines);
        if !lines.is_empty() {
            return lines;
        }
        // Nothing new: has the file been rotated or truncated?
        match std::fs::metadata(&self.path) {
            Ok(now) => {
                let same = self
                    .file
                    .as_ref()
                    .is_some_and(|(_, m)| m.dev() == now.dev() && m.ino() == now.ino());
                if !same {
                    // The old file's tail was read above; continue with the new one.
                    if let Some((file, meta)) = self.open_current() {
                        info!(path = %self.path.display(), "log file rotated; following the new file");
                        self.file = Some((file, meta));
                        self.offset = 0;
                        self.partial.clear();
                        self.read_available(&mut lines);
                    }
                } else if now.len() < self.offset {
                    info!(path = %self.path.display(), "log file truncated; reading from its start");
                    if let Some((file, _)) = self.file.as_mut() {
                        if file.seek(SeekFrom::Start(0)).is_ok() {
                            self.offset = 0;
                            self.partial.clear();
                            self.read_available(&mut lines);
                        }
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => warn!(path = %self.path.display(), error = %e, "cannot check log file"),
        }
        lines
    }

    fn read_available(&mut self, lines: &mut Vec<String>) {
        let Some((mut file, meta)) = self.file.take() else {
            return;
        };
        let mut buf = [0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.offset += n as u64;
                    self.split(&buf[..n], lines);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "cannot read log file");
                    break;
                }
            }
        }
        self.file = Some((file, meta));
    }

    fn split(&mut self, mut data: &[u8], lines: &mut Vec<String>) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = data.split_at(pos);
            data = &rest[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            self.partial.extend_from_slice(head);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        if self.skipping {
            return;
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE {
            // Keep the head of an over-long line and skip to its end.
            self.partial.truncate(MAX_LINE);
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
            self.skipping = true;
            self.cut_lines += 1;
            warn!(path = %self.path.display(), limit = MAX_LINE, "over-long line cut");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open");
        f.write_all(s.as_bytes()).expect("write");
    }

    #[test]
    fn follows_appends_partials_rotation_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("auth.log");
        append(&log, "old line, before start\n");
        let mut f = FileFollower::open_at_end(log.clone(), 0).expect("open");
        assert!(f.poll().is_empty());

        append(&log, "one\r\ntwo\npart");
        assert_eq!(f.poll(), vec!["one", "two"]);
        append(&log, "ial\n");
        assert_eq!(f.poll(), vec!["partial"]);

        // Rename rotation: the old file's tail first, then the new file.
        append(&log, "tail of old\n");
        std::fs::rename(&log, dir.path().join("auth.log.1")).expect("rotate");
        append(&log, "first of new\n");
        assert_eq!(f.poll(), vec!["tail of old"]);
        assert_eq!(f.poll(), vec!["first of new"]);

        // copytruncate.
        std::fs::write(&log, "").expect("truncate");
        assert!(f.poll().is_empty());
        append(&log, "after truncate\n");
        assert_eq!(f.poll(), vec!["after truncate"]);
    }

    #[test]
    fn long_lines_are_cut_and_invalid_utf8_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").expect("create");
        let mut f = FileFollower::open_at_end(log.clone(), 3).expect("open");
        append(&log, &format!("{}\nnext\n", "a".repeat(MAX_LINE * 3)));
        let lines = f.poll();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
        assert_eq!(f.cut_lines, 1);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        file.write_all(b"bad \xff\xfe utf8\n").expect("write");
        assert_eq!(f.poll(), vec!["bad \u{fffd}\u{fffd} utf8"]);
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
