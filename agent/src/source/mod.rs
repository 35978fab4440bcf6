//! Log sources: each yields the lines appended to what it follows, in
//! order, each once, with the position after them so that a restart resumes
//! exactly there.
//!
//! Files (`file.rs`, globs in `follow.rs`) are read on inotify wake-ups with a
//! polling fallback; the systemd journal (`journal.rs`) through `journalctl`.
//! Each source runs on a thread of its own and hands batches of lines to the
//! detector through a bounded channel: when detection falls behind, readers
//! block on it, so memory stays bounded and the lag shows in the metrics.
//! A batch's checkpoint is saved once the detector has consumed the batch.

pub mod discover;
pub mod file;
pub mod follow;
pub mod journal;
pub mod position;
pub mod rotation;
pub mod run;
pub mod split;

use std::sync::Arc;

pub use file::{check_readable, SourceError};
pub use position::{Checkpoint, PositionStore};

/// A complete line from source number `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub source: usize,
    pub text: String,
    /// When the line was logged, if the source says (the journal does);
    /// otherwise it is taken as seen now.
    pub time_ms: Option<i64>,
}

impl Line {
    pub fn new(source: usize, text: impl Into<String>) -> Self {
        Line {
            source,
            text: text.into(),
            time_ms: None,
        }
    }
}

/// Lines read together from one file or journal, and where that leaves it.
#[derive(Debug)]
pub struct Batch {
    pub source: usize,
    /// The key its position is saved under: the file's path, or
    /// `journal:<jail>`.
    pub key: Arc<str>,
    pub lines: Vec<Line>,
    /// `None`: these lines do not move the saved position (late lines of a
    /// rotated file, once the new file was read).
    pub checkpoint: Option<Checkpoint>,
}

/// Where a source starts when no position was saved for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// Only lines written from now on.
    #[default]
    End,
    /// Everything already there, then what comes.
    Beginning,
}

/// How a jail's logs are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// Files, woken by inotify, polled where inotify does not work.
    #[default]
    Auto,
    /// Files, polled.
    Polling,
    /// The systemd journal.
    Systemd,
}

/// Longest line kept; the rest of a longer line is dropped and counted.
pub const MAX_LINE: usize = 64 * 1024;

#[cfg(test)]
mod tests;
