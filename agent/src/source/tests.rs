//! File following on real files: each case asserts the exact lines
//! delivered, and a model test drives writes, rotations, truncations and
//! restarts at random against the list of lines written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::follow::FileGroup;
use super::position::FilePosition;
use super::{Checkpoint, Start, MAX_LINE};
use crate::metrics::SourceMetrics;

/// A follower and what its consumer saved, with a clock of its own.
struct Harness {
    spec: PathBuf,
    start: Start,
    group: FileGroup,
    saved: HashMap<String, FilePosition>,
    now: Instant,
    metrics: Arc<SourceMetrics>,
    /// Lines read when the follower started, returned by the next poll.
    early: Vec<String>,
}

impl Harness {
    fn new(spec: &Path, start: Start) -> Self {
        let metrics = Arc::new(SourceMetrics::default());
        let mut h = Harness {
            spec: spec.to_owned(),
            start,
            group: FileGroup::new(spec.to_owned(), 0, start, HashMap::new(), metrics.clone()),
            saved: HashMap::new(),
            now: Instant::now(),
            metrics,
            early: Vec::new(),
        };
        // Starting is opening the files (at their end by default).
        h.early = h.poll();
        h
    }

    /// Reads until nothing more comes; the clock moves 3 s a round so that
    /// rotated files are let go.
    fn poll(&mut self) -> Vec<String> {
        let mut out = std::mem::take(&mut self.early);
        let mut idle = 0;
        while idle < 4 {
            self.now += Duration::from_secs(3);
            let batches = self.group.poll(self.now);
            if batches.is_empty() {
                idle += 1;
            }
            for b in batches {
                out.extend(b.lines.into_iter().map(|l| l.text));
                if let Some(Checkpoint::File(p)) = b.checkpoint {
                    self.saved.insert(b.key.to_string(), p);
                }
            }
        }
        out
    }

    /// Stops and starts again from the saved positions.
    fn restart(&mut self) {
        self.group = FileGroup::new(
            self.spec.clone(),
            0,
            self.start,
            self.saved.clone(),
            self.metrics.clone(),
        );
        self.early = self.poll();
    }
}

fn append(path: &Path, s: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open");
    f.write_all(s.as_bytes()).expect("write");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn appends_partials_crlf_rotation_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    append(&log, "old line, before start\nhalf of a line");
    let mut h = Harness::new(&log, Start::End);
    assert!(h.poll().is_empty());
    append(&log, " ends here\none\r\ntwo\npart");
    assert_eq!(h.poll(), strings(&["one", "two"]));
    append(&log, "ial\n");
    assert_eq!(h.poll(), strings(&["partial"]));

    // Rename rotation (logrotate `create`): old tail first, then the new file.
    append(&log, "tail of old\n");
    std::fs::rename(&log, dir.path().join("auth.log.1")).expect("rotate");
    append(&log, "first of new\n");
    assert_eq!(h.poll(), strings(&["tail of old", "first of new"]));

    // Truncation.
    std::fs::write(&log, "").expect("truncate");
    assert!(h.poll().is_empty());
    append(&log, "after truncate\n");
    assert_eq!(h.poll(), strings(&["after truncate"]));

    // Deleted, then created again.
    std::fs::remove_file(&log).expect("delete");
    assert!(h.poll().is_empty());
    append(&log, "recreated\n");
    assert_eq!(h.poll(), strings(&["recreated"]));
}

#[test]
fn a_reader_behind_several_rotations_reads_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("big.log");
    append(&log, "");
    let mut h = Harness::new(&log, Start::End);
    let mut written = Vec::new();
    let mut n = 0;
    for generation in 1..=4 {
        // 1 MiB per file: more than one read, so the reader falls behind.
        let mut text = String::new();
        while text.len() < 1 << 20 {
            n += 1;
            written.push(format!("line {n:08}"));
            text.push_str(&format!("line {n:08}\n"));
        }
        append(&log, &text);
        // One read, which notices the rotation below only at the next one.
        h.now += Duration::from_secs(3);
        let got: Vec<String> = h
            .group
            .poll(h.now)
            .into_iter()
            .flat_map(|b| b.lines.into_iter().map(|l| l.text))
            .collect();
        h.early.extend(got);
        std::fs::rename(&log, dir.path().join(format!("big.log.{generation}"))).expect("rotate");
        append(&log, "");
    }
    assert_eq!(h.poll(), written);
}

#[test]
fn start_beginning_reads_what_is_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("a.log");
    append(&log, "x\ny\n");
    let mut h = Harness::new(&log, Start::Beginning);
    assert_eq!(h.poll(), strings(&["x", "y"]));
}

#[test]
fn copytruncate_reads_the_copy_tail_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut h = Harness::new(&log, Start::End);
    append(&log, "a\n");
    assert_eq!(h.poll(), strings(&["a"]));
    // Written after the last read, then copied and truncated.
    append(&log, "b\nc\n");
    std::fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
    std::fs::write(&log, "").expect("truncate");
    append(&log, "d\n");
    assert_eq!(h.poll(), strings(&["b", "c", "d"]));
}

#[test]
fn restart_in_the_middle_of_a_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    append(&log, "");
    let mut h = Harness::new(&log, Start::End);
    append(&log, "1\n2\n");
    assert_eq!(h.poll(), strings(&["1", "2"]));
    // While the agent is down: more lines, a rotation, a new file.
    append(&log, "3\npart");
    std::fs::rename(&log, dir.path().join("auth.log.1")).expect("rotate");
    append(&log, "4\n");
    h.restart();
    assert_eq!(h.poll(), strings(&["3", "4"]));
    // Restart again, in place.
    append(&log, "5\n");
    h.restart();
    assert_eq!(h.poll(), strings(&["5"]));
    // copytruncate while down.
    append(&log, "6\n");
    std::fs::copy(&log, dir.path().join("auth.log.0")).expect("copy");
    std::fs::write(&log, "7\n").expect("truncate and write");
    h.restart();
    assert_eq!(h.poll(), strings(&["6", "7"]));
}

#[test]
fn symlinked_logs_follow_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.log");
    let link = dir.path().join("link.log");
    append(&real, "");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let mut h = Harness::new(&link, Start::End);
    append(&real, "via link\n");
    assert_eq!(h.poll(), strings(&["via link"]));
}

#[test]
fn globs_pick_up_new_files_and_skip_compressed_and_rotated_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.log");
    append(&a, "before\n");
    let pattern = dir.path().join("*.log*");
    let mut h = Harness::new(&pattern, Start::End);
    assert!(h.poll().is_empty());
    append(&a, "a1\n");
    append(&dir.path().join("b.log"), "b1\n");
    append(&dir.path().join("c.log.2.gz"), "compressed\n");
    let mut got = h.poll();
    got.sort();
    assert_eq!(got, strings(&["a1", "b1"]));
    // a.log renamed to a.log.1 (which the glob matches): not read twice.
    append(&a, "a2\n");
    std::fs::rename(&a, dir.path().join("a.log.1")).expect("rotate");
    append(&a, "a3\n");
    assert_eq!(h.poll(), strings(&["a2", "a3"]));
    // A deleted match is let go; one created again under its name is new.
    std::fs::remove_file(dir.path().join("b.log")).expect("rm");
    assert!(h.poll().is_empty());
    append(&dir.path().join("b.log"), "b2\n");
    assert_eq!(h.poll(), strings(&["b2"]));
}

#[test]
fn bad_paths_are_reported_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("x.log");
    std::fs::create_dir(&log).expect("a directory where the log should be");
    let mut h = Harness::new(&log, Start::Beginning);
    assert!(h.poll().is_empty());
    let errors = |h: &Harness| {
        h.metrics
            .errors
            .get_or_create(&SourceMetrics::label(&log.to_string_lossy()))
            .get()
    };
    assert_eq!(errors(&h), 1, "reported once, not at every retry");
    std::fs::remove_dir(&log).expect("rmdir");
    let status = std::process::Command::new("mkfifo")
        .arg(&log)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    assert!(h.poll().is_empty(), "a FIFO is never opened for reading");
    assert_eq!(errors(&h), 2);
    std::fs::remove_file(&log).expect("rm fifo");
    append(&log, "usable now\n");
    assert_eq!(h.poll(), strings(&["usable now"]));
}

#[test]
fn long_lines_are_cut_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("x.log");
    append(&log, "");
    let mut h = Harness::new(&log, Start::End);
    append(&log, &format!("{}\nnext\n", "a".repeat(MAX_LINE * 5 + 3)));
    let got = h.poll();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), MAX_LINE);
    assert_eq!(got[1], "next");
    let cut = h
        .metrics
        .lines_cut
        .get_or_create(&SourceMetrics::label(&log.to_string_lossy()))
        .get();
    assert_eq!(cut, 1);
    append(&log, "bad \u{0}\n");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    f.write_all(b"bad \xff\xfe utf8\n").expect("write");
    assert_eq!(
        h.poll(),
        strings(&["bad \u{0}", "bad \u{fffd}\u{fffd} utf8"])
    );
}

/// What the model test does to the log.
#[derive(Debug, Clone)]
enum Action {
    Write(usize),
    Rotate,
    CopyTruncate,
    Truncate,
    DeleteRecreate,
    Restart,
    Poll,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1usize..6).prop_map(Action::Write),
        1 => Just(Action::Rotate),
        1 => Just(Action::CopyTruncate),
        1 => Just(Action::Truncate),
        1 => Just(Action::DeleteRecreate),
        2 => Just(Action::Restart),
        2 => Just(Action::Poll),
    ]
}

/// Runs `actions` on a real log file; returns (written, delivered).
fn interpret(actions: &[Action]) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut h = Harness::new(&log, Start::End);
    let mut written = Vec::new();
    let mut delivered = Vec::new();
    let mut next = 0usize;
    let mut generation = 0usize;
    // Whether the file at the path holds lines the follower has not seen
    // since it was created, and whether the log was rotated since the last
    // read: the follower recovers one rotation, from a file it has read.
    let mut unseen_new_file = true;
    let mut rotated = false;
    // Whether the file at the path holds a line.
    let mut has_lines = false;
    for a in actions {
        let needs_read = match a {
            Action::Rotate | Action::CopyTruncate => rotated || unseen_new_file,
            Action::Truncate | Action::DeleteRecreate => true,
            _ => false,
        };
        if needs_read {
            delivered.extend(h.poll());
            unseen_new_file = !has_lines;
            rotated = false;
        }
        match a {
            Action::Write(n) => {
                let lines: String = (0..*n)
                    .map(|_| {
                        next += 1;
                        written.push(format!("line {next}"));
                        format!("line {next}\n")
                    })
                    .collect();
                append(&log, &lines);
                has_lines = true;
            }
            Action::Rotate => {
                generation += 1;
                std::fs::rename(&log, dir.path().join(format!("app.log.{generation}")))
                    .expect("rotate");
                append(&log, "");
                rotated = true;
                unseen_new_file = true;
                has_lines = false;
            }
            Action::CopyTruncate => {
                generation += 1;
                std::fs::copy(&log, dir.path().join(format!("app.log.{generation}")))
                    .expect("copy");
                std::fs::write(&log, "").expect("truncate");
                rotated = true;
                unseen_new_file = true;
                has_lines = false;
            }
            Action::Truncate => {
                std::fs::write(&log, "").expect("truncate");
                unseen_new_file = true;
                has_lines = false;
            }
            Action::DeleteRecreate => {
                std::fs::remove_file(&log).expect("delete");
                append(&log, "");
                unseen_new_file = true;
                has_lines = false;
            }
            Action::Restart => h.restart(),
            Action::Poll => {
                delivered.extend(h.poll());
                unseen_new_file = !has_lines;
                rotated = false;
            }
        }
    }
    delivered.extend(h.poll());
    (written, delivered)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Every line written is delivered once, in order, whatever happens to
    /// the file and the follower in between.
    #[test]
    fn every_line_once_in_order(actions in proptest::collection::vec(action(), 1..25)) {
        let (written, delivered) = interpret(&actions);
        prop_assert_eq!(written, delivered);
    }
}

#[test]
fn a_reader_waits_for_detection_and_reports_its_lag() {
    use std::sync::atomic::AtomicBool;

    use super::follow::spawn_files;
    use super::Backend;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("fast.log");
    // 8 MiB, there before the reader starts: far more than the queue holds
    // (2 batches of at most 64 KiB).
    let line = "x".repeat(99);
    let lines = 80_000;
    let text: String = (0..lines).map(|_| format!("{line}\n")).collect();
    append(&log, &text);
    let metrics = Arc::new(SourceMetrics::default());
    let group = FileGroup::new(
        log.clone(),
        0,
        Start::Beginning,
        HashMap::new(),
        metrics.clone(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handle = spawn_files(group, Backend::Auto, tx, stop.clone(), metrics.clone());
    let label = SourceMetrics::label(&log.to_string_lossy());
    // The reader stops while most of the file is unread, and says so.
    let mut waited = 0;
    while metrics.queued_batches.get() < 3 && waited < 1000 {
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    std::thread::sleep(Duration::from_millis(100));
    // Two batches in the queue and one waiting to enter it, no more.
    assert_eq!(metrics.queued_batches.get(), 3, "the queue is full");
    let lag = metrics.lag_bytes.get_or_create(&label).get();
    assert!(lag > 6 << 20, "lag {lag}");
    // Once detection catches up, everything arrives, once.
    let mut got = 0;
    while got < lines {
        let b = rx.blocking_recv().expect("batch");
        metrics.queued_batches.dec();
        got += b.lines.len();
    }
    assert_eq!(got, lines);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.interrupt();
    drop(rx);
    handle.thread.join().expect("reader thread");
}

#[test]
fn the_polling_backend_delivers_without_inotify() {
    use std::sync::atomic::AtomicBool;

    use super::follow::spawn_files;
    use super::Backend;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("nfs.log");
    append(&log, "");
    let metrics = Arc::new(SourceMetrics::default());
    let group = FileGroup::new(log.clone(), 0, Start::End, HashMap::new(), metrics.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handle = spawn_files(group, Backend::Polling, tx, stop.clone(), metrics);
    // The start position comes first, then the lines.
    let first = rx.blocking_recv().expect("start position");
    assert!(first.lines.is_empty() && first.checkpoint.is_some());
    append(&log, "polled\n");
    let b = rx.blocking_recv().expect("batch");
    assert_eq!(b.lines.len(), 1);
    assert_eq!(b.lines[0].text, "polled");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.interrupt();
    drop(rx);
    handle.thread.join().expect("reader thread");
}
