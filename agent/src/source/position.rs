//! Where a source stands, and keeping that across restarts: a file's
//! device, inode, offset and a fingerprint of its first bytes; a journal's
//! cursor. Saved atomically (temporary file, fsync, rename, fsync of the
//! directory) so a crash leaves either the old or the new positions.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// How many of a file's first bytes identify it.
pub const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first `len` bytes. Two files whose first `len` bytes
/// hash alike are taken for the same content (a copy made by
/// `copytruncate`, or the same file after a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `head`, at most [`FINGERPRINT_BYTES`] of it.
    pub fn of(head: &[u8]) -> Self {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        // FNV-1a, 64 bits: stable across versions and platforms.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in head {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            len: u32::try_from(head.len()).unwrap_or(u32::MAX),
            hash,
        }
    }

    /// Whether the fingerprint covers all the bytes it ever will.
    pub fn complete(&self) -> bool {
        self.len as usize >= FINGERPRINT_BYTES
    }
}

/// A position in a log file: the next line starts at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub fingerprint: Fingerprint,
}

/// What a batch of lines advances its source to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    File(FilePosition),
    /// The journal cursor of the last entry delivered.
    Journal(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default)]
    files: BTreeMap<String, FilePosition>,
    #[serde(default)]
    journals: BTreeMap<String, String>,
}

/// Positions could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save positions to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every source's position, kept in `<state_dir>/positions.json`.
#[derive(Debug)]
pub struct PositionStore {
    path: PathBuf,
    state: StateFile,
    dirty: bool,
}

impl PositionStore {
    /// Opens (creating the directory) and loads the saved positions. A
    /// corrupt file is set aside as `positions.json.bad` with a warning:
    /// sources then start by their `start` policy.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = dir.join("positions.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "positions file corrupt; set aside, starting afresh");
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                    StateFile::default()
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => StateFile::default(),
            Err(source) => {
                return Err(StateError::Dir {
                    dir: dir.to_owned(),
                    source,
                })
            }
        };
        let store = PositionStore {
            path,
            state,
            dirty: false,
        };
        // Fail at start, not at the first save, if the directory is not
        // writable.
        store.write()?;
        Ok(store)
    }

    pub fn file(&self, key: &str) -> Option<FilePosition> {
        self.state.files.get(key).copied()
    }

    /// Saved positions of the files a configured path (a file or a glob)
    /// names.
    pub fn files_under(&self, spec: &Path) -> std::collections::HashMap<String, FilePosition> {
        let spec = spec.to_string_lossy();
        let pattern = glob::Pattern::new(&spec).ok();
        self.state
            .files
            .iter()
            .filter(|(k, _)| **k == *spec || pattern.as_ref().is_some_and(|p| p.matches(k)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn journal(&self, key: &str) -> Option<String> {
        self.state.journals.get(key).cloned()
    }

    /// Records what the detector has consumed; saved by [`Self::flush`].
    pub fn record(&mut self, key: &str, checkpoint: &Checkpoint) {
        match checkpoint {
            Checkpoint::File(p) => {
                if self.state.files.get(key) != Some(p) {
                    self.state.files.insert(key.to_owned(), *p);
                    self.dirty = true;
                }
            }
            Checkpoint::Journal(c) => {
                if self.state.journals.get(key) != Some(c) {
                    self.state.journals.insert(key.to_owned(), c.clone());
                    self.dirty = true;
                }
            }
        }
    }

    /// Saves the positions if they changed since the last save.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if !self.dirty {
            return Ok(());
        }
        self.write()?;
        self.dirty = false;
        Ok(())
    }

    fn write(&self) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.state).map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_the_head_only() {
        let a = Fingerprint::of(b"hello");
        assert_eq!(a.len, 5);
        assert_eq!(a, Fingerprint::of(b"hello"));
        assert_ne!(a, Fingerprint::of(b"hellp"));
        let long = vec![7u8; 1000];
        assert_eq!(Fingerprint::of(&long), Fingerprint::of(&long[..256]));
        assert!(Fingerprint::of(&long).complete());
    }

    #[test]
    fn positions_survive_a_reopen_and_corruption_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = PositionStore::open(dir.path()).expect("open");
        let p = FilePosition {
            dev: 1,
            ino: 2,
            offset: 3,
            fingerprint: Fingerprint::of(b"x"),
        };
        s.record("/var/log/a", &Checkpoint::File(p));
        s.record("jail:sshd", &Checkpoint::Journal("c=1".into()));
        s.flush().expect("flush");
        let s = PositionStore::open(dir.path()).expect("reopen");
        assert_eq!(s.file("/var/log/a"), Some(p));
        assert_eq!(s.journal("jail:sshd").as_deref(), Some("c=1"));
        assert_eq!(s.file("/var/log/b"), None);

        std::fs::write(dir.path().join("positions.json"), "{not json").expect("corrupt");
        let s = PositionStore::open(dir.path()).expect("reopen corrupt");
        assert_eq!(s.file("/var/log/a"), None);
        assert!(dir.path().join("positions.json.bad").exists());
    }
}
