//! Log sources: each yields the lines appended to what it follows.

pub mod file;

pub use file::{check_readable, FileFollower};

/// A complete line from source number `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub source: usize,
    pub text: String,
}

/// Longest line kept; the rest of a longer line is dropped and counted.
pub const MAX_LINE: usize = 64 * 1024;
