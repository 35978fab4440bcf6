//! The decisions of file following, without I/O: has the followed file been
//! truncated or replaced, and where to resume after a restart. The reader
//! (`file.rs`) looks at the file system and acts on these answers.

use super::position::FilePosition;

/// A file as seen on disk now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Whether its first bytes still hash to the fingerprint of the
    /// position it is compared with.
    pub head_matches: bool,
}

impl Seen {
    fn is(&self, p: &FilePosition) -> bool {
        self.dev == p.dev && self.ino == p.ino
    }
}

/// What happened to the followed file, seen through its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Still the same file, at least as long as what was read.
    None,
    /// Same file, shorter than what was read, or rewritten from its start
    /// (`copytruncate`, `> file`): read it again from its start.
    Truncated,
    /// Another file is at the path (rename rotation, or deleted and
    /// recreated): finish the old one, then read the new one from its start.
    Replaced,
    /// Nothing (or nothing readable) is at the path: keep the open file and
    /// wait for a new one.
    Missing,
}

/// Compares what was read (`pos`, whose offset is where reading stands) with
/// what is at the path now.
pub fn change(pos: &FilePosition, now: Option<&Seen>) -> Change {
    match now {
        None => Change::Missing,
        Some(s) if !s.is(pos) => Change::Replaced,
        Some(s) if s.len < pos.offset || (pos.offset > 0 && !s.head_matches) => Change::Truncated,
        Some(_) => Change::None,
    }
}

/// How to resume a file after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// A rotated file (index into the candidates) whose tail, from the saved
    /// offset, is read first.
    pub tail_of: Option<usize>,
    /// Where to read the file at the path from.
    pub current_from: u64,
}

/// Where to resume the file at a path, given the position saved for it, the
/// file at the path now (if any) and the rotated files beside it (`auth.log.1`,
/// `auth.log-20250101`; compressed ones are never candidates).
pub fn resume(saved: &FilePosition, current: Option<&Seen>, rotated: &[Seen]) -> Resume {
    if let Some(c) = current {
        if change(saved, Some(c)) == Change::None {
            return Resume {
                tail_of: None,
                current_from: saved.offset,
            };
        }
    }
    // The file moved (rename rotation) or was copied then truncated
    // (copytruncate) while the agent was down: its tail is in a rotated file,
    // found by inode first, else by the fingerprint of its head.
    let long_enough = |s: &&Seen| s.len >= saved.offset;
    let by_inode = rotated.iter().position(|s| s.is(saved) && s.head_matches);
    let by_head = || {
        rotated
            .iter()
            .enumerate()
            .filter(|(_, s)| saved.fingerprint.len > 0 && s.head_matches && long_enough(s))
            .map(|(i, _)| i)
            .next()
    };
    let tail_of = by_inode
        .filter(|&i| rotated.get(i).is_some_and(|s| long_enough(&s)))
        .or_else(by_head);
    Resume {
        tail_of,
        current_from: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::position::Fingerprint;
    use super::*;

    fn pos(ino: u64, offset: u64) -> FilePosition {
        FilePosition {
            dev: 1,
            ino,
            offset,
            fingerprint: Fingerprint::of(b"first line\n"),
        }
    }

    fn seen(ino: u64, len: u64, head_matches: bool) -> Seen {
        Seen {
            dev: 1,
            ino,
            len,
            head_matches,
        }
    }

    #[test]
    fn changes() {
        let p = pos(7, 100);
        assert_eq!(change(&p, None), Change::Missing);
        assert_eq!(change(&p, Some(&seen(7, 100, true))), Change::None);
        assert_eq!(change(&p, Some(&seen(7, 150, true))), Change::None);
        assert_eq!(change(&p, Some(&seen(7, 50, true))), Change::Truncated);
        // Truncated and written again past the old offset.
        assert_eq!(change(&p, Some(&seen(7, 150, false))), Change::Truncated);
        assert_eq!(change(&p, Some(&seen(8, 150, true))), Change::Replaced);
        // Nothing read yet: a different head is no truncation.
        assert_eq!(change(&pos(7, 0), Some(&seen(7, 10, false))), Change::None);
    }

    #[test]
    fn resume_in_place() {
        let r = resume(&pos(7, 100), Some(&seen(7, 120, true)), &[]);
        assert_eq!(
            r,
            Resume {
                tail_of: None,
                current_from: 100
            }
        );
    }

    #[test]
    fn resume_after_rename_rotation_reads_the_old_tail_first() {
        let rotated = [seen(5, 900, false), seen(7, 130, true)];
        let r = resume(&pos(7, 100), Some(&seen(9, 40, false)), &rotated);
        assert_eq!(
            r,
            Resume {
                tail_of: Some(1),
                current_from: 0
            }
        );
        // Rotated and the new file not created yet.
        assert_eq!(resume(&pos(7, 100), None, &rotated).tail_of, Some(1));
    }

    #[test]
    fn resume_after_copytruncate_reads_the_copy_tail_first() {
        // Same inode, now shorter; the copy has another inode, same head.
        let rotated = [seen(5, 900, false), seen(6, 180, true)];
        let r = resume(&pos(7, 100), Some(&seen(7, 20, false)), &rotated);
        assert_eq!(
            r,
            Resume {
                tail_of: Some(1),
                current_from: 0
            }
        );
    }

    #[test]
    fn resume_when_the_old_file_is_gone_reads_the_new_one_whole() {
        let r = resume(
            &pos(7, 100),
            Some(&seen(9, 40, false)),
            &[seen(5, 50, true)],
        );
        // A same-head candidate too short to hold the old offset is not it.
        assert_eq!(
            r,
            Resume {
                tail_of: None,
                current_from: 0
            }
        );
    }
}
