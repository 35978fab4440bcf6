//! Cutting a byte stream into lines: `\n` ends a line, a `\r` before it is
//! dropped, a partial last line is held until its end arrives, and a line
//! longer than the limit is cut (its head kept, the rest skipped, counted).

/// Splits bytes into lines. Pure: no I/O, fed by the readers.
#[derive(Debug)]
pub struct Splitter {
    partial: Vec<u8>,
    /// Inside an over-long line whose head was already emitted.
    skipping: bool,
    max: usize,
    cut: u64,
}

impl Splitter {
    pub fn new(max: usize) -> Self {
        Splitter {
            partial: Vec::new(),
            skipping: false,
            max: max.max(1),
            cut: 0,
        }
    }

    /// Feeds `data`, calling `emit` with each complete line (without its
    /// line ending) in order.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let (head, rest) = data.split_at(pos);
            data = &rest[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.partial.is_empty() {
                if head.len() > self.max {
                    self.cut += 1;
                    emit(&head[..self.max]);
                } else {
                    emit(strip_cr(head));
                }
                continue;
            }
            let room = self.max.saturating_sub(self.partial.len());
            if head.len() > room {
                self.partial.extend_from_slice(&head[..room]);
                self.cut += 1;
                emit(&self.partial);
            } else {
                self.partial.extend_from_slice(head);
                emit(strip_cr(&self.partial));
            }
            self.partial.clear();
        }
        if self.skipping || data.is_empty() {
            return;
        }
        let room = self.max.saturating_sub(self.partial.len());
        if data.len() > room {
            // The line is already too long: emit its head now and skip the
            // rest, so that a huge line never sits in memory.
            self.partial.extend_from_slice(&data[..room]);
            self.cut += 1;
            emit(&self.partial);
            self.partial = Vec::new();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// Bytes of the partial line held (not yet emitted).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Whether the reader is inside a cut line whose head was emitted.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Lines cut at the limit so far.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// Skips to the end of the current line (reading starts inside one).
    pub fn skip_line(&mut self) {
        self.partial.clear();
        self.skipping = true;
    }

    /// Forgets the partial line (the file it came from was truncated or
    /// replaced).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.skipping = false;
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split_all(s: &mut Splitter, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        out
    }

    #[test]
    fn lines_partials_and_crlf() {
        let mut s = Splitter::new(100);
        assert_eq!(
            split_all(&mut s, &[b"one\r\ntwo\npar", b"tial", b"\n\n"]),
            vec!["one", "two", "partial", ""]
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(split_all(&mut s, &[b"held"]), Vec::<String>::new());
        assert_eq!(s.pending(), 4);
        // A lone `\r` inside a line is kept; only the one before `\n` goes.
        assert_eq!(split_all(&mut s, &[b"\ra\r\r\n"]), vec!["held\ra\r"]);
    }

    #[test]
    fn long_lines_are_cut_once_and_counted() {
        let mut s = Splitter::new(4);
        let out = split_all(&mut s, &[b"abcdefgh", b"ijk\nxy\n", b"123456\n"]);
        assert_eq!(out, vec!["abcd", "xy", "1234"]);
        assert_eq!(s.cut(), 2);
        assert_eq!(s.pending(), 0);
        assert!(!s.skipping());
    }

    proptest! {
        /// However the bytes are chunked, the same lines come out.
        #[test]
        fn chunking_does_not_matter(
            lines in proptest::collection::vec("[a-z\r]{0,12}", 0..20),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let mut whole = Splitter::new(8);
            let mut chunked = Splitter::new(8);
            prop_assert_eq!(split_all(&mut whole, &[bytes]), split_all(&mut chunked, &chunks));
            prop_assert_eq!(whole.cut(), chunked.cut());
        }
    }
}
