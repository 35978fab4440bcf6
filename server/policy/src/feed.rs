//! Block-list feeds: plain lists of addresses and networks, one a line.

use ipnet::IpNet;

/// A feed line that is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedError {
    pub line: usize,
    pub text: String,
}

/// The entries of a feed. `#` and `;` start comments; blank lines are
/// skipped; a line's first word is the entry (`192.0.2.0/24 ; spamhaus`).
pub fn parse(text: &str) -> (Vec<IpNet>, Vec<FeedError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        match parse_entry(word) {
            Some(net) => entries.push(net),
            None => errors.push(FeedError {
                line: i + 1,
                text: raw.chars().take(80).collect(),
            }),
        }
    }
    entries.sort();
    entries.dedup();
    (entries, errors)
}

/// Why a fetched feed is not applied (its decisions stay as they are).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedRefused {
    #[error("{invalid} of {lines} lines are not addresses or networks (first: line {first_line}: {first_text:?}); at most {max_percent}% may be")]
    TooManyInvalid {
        invalid: usize,
        lines: usize,
        first_line: usize,
        first_text: String,
        max_percent: u8,
    },
    #[error("the feed lists nothing; an empty feed would revoke all its bans")]
    Empty,
}

/// Whether a parsed feed may replace the previous one: not when more than
/// `max_invalid_percent` of its lines are garbage (an error page, a changed
/// format), nor when it is empty and `allow_empty` is off (a truncated
/// download).
pub fn assess(
    entries: &[IpNet],
    errors: &[FeedError],
    max_invalid_percent: u8,
    allow_empty: bool,
) -> Result<(), FeedRefused> {
    let lines = entries.len() + errors.len();
    if let Some(first) = errors.first() {
        if errors.len() * 100 > lines * usize::from(max_invalid_percent) {
            return Err(FeedRefused::TooManyInvalid {
                invalid: errors.len(),
                lines,
                first_line: first.line,
                first_text: first.text.clone(),
                max_percent: max_invalid_percent,
            });
        }
    }
    if entries.is_empty() && !allow_empty {
        return Err(FeedRefused::Empty);
    }
    Ok(())
}

/// What to change so the feed's bans in force (`current`, by decision id)
/// match its `wanted` entries: targets to ban, and decision ids to revoke
/// (no longer listed, or a duplicate of a target banned twice).
pub fn diff(current: &[(i64, IpNet)], wanted: &[IpNet]) -> (Vec<IpNet>, Vec<i64>) {
    let wanted_set: std::collections::BTreeSet<&IpNet> = wanted.iter().collect();
    let mut kept = std::collections::BTreeSet::new();
    let mut revoke = Vec::new();
    for (id, target) in current {
        if wanted_set.contains(target) && kept.insert(*target) {
            continue;
        }
        revoke.push(*id);
    }
    let mut add: Vec<IpNet> = wanted_set
        .into_iter()
        .filter(|t| !kept.contains(*t))
        .copied()
        .collect();
    add.sort();
    (add, revoke)
}

fn parse_entry(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(IpNet::from(ip));
    }
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lists_with_comments() {
        let (e, err) = parse(
            "# feed\n192.0.2.1\n198.51.100.7/24 ; note\n\n2001:db8::/32\nnot-an-ip\n192.0.2.1\n",
        );
        let got: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec!["192.0.2.1/32", "198.51.100.0/24", "2001:db8::/32"]
        );
        assert_eq!(
            err,
            vec![FeedError {
                line: 6,
                text: "not-an-ip".into()
            }]
        );
    }

    #[test]
    fn garbage_and_empty_feeds_are_refused() {
        let (e, err) = parse("<html>\n<body>oops</body>\n192.0.2.1\n");
        assert!(matches!(
            assess(&e, &err, 10, false),
            Err(FeedRefused::TooManyInvalid {
                invalid: 2,
                lines: 3,
                first_line: 1,
                ..
            })
        ));
        let many: String = (0..20).map(|i| format!("192.0.2.{i}\n")).collect();
        let (e, err) = parse(&format!("{many}junk\n"));
        assert_eq!(assess(&e, &err, 10, false), Ok(()));
        assert_eq!(assess(&[], &[], 10, false), Err(FeedRefused::Empty));
        assert_eq!(assess(&[], &[], 10, true), Ok(()));
    }

    #[test]
    fn diff_adds_new_and_revokes_gone() {
        let n = |s: &str| parse_entry(s).expect("net");
        let current = [
            (1, n("192.0.2.1")),
            (2, n("192.0.2.2")),
            (3, n("192.0.2.1")),
        ];
        let (add, revoke) = diff(&current, &[n("192.0.2.1"), n("192.0.2.3")]);
        assert_eq!(add, vec![n("192.0.2.3")]);
        assert_eq!(revoke, vec![2, 3]);
    }

    fn arb_net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::strategy::Strategy;
        (0u8..8, 30u8..=32).prop_map(|(a, len)| {
            IpNet::new(std::net::IpAddr::from([192, 0, 2, a]), len)
                .expect("prefix")
                .trunc()
        })
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        /// After applying the diff, the feed's bans are exactly its entries,
        /// each once.
        #[test]
        fn diff_converges(
            current in proptest::collection::vec(arb_net(), 0..12),
            wanted in proptest::collection::vec(arb_net(), 0..12),
        ) {
            let current: Vec<(i64, IpNet)> = current.into_iter().enumerate().map(|(i, t)| (i as i64, t)).collect();
            let (add, revoke) = diff(&current, &wanted);
            let mut after: Vec<IpNet> = current
                .iter()
                .filter(|(id, _)| !revoke.contains(id))
                .map(|(_, t)| *t)
                .chain(add)
                .collect();
            after.sort();
            let mut want = wanted.clone();
            want.sort();
            want.dedup();
            proptest::prop_assert_eq!(after, want);
        }
    }
}
