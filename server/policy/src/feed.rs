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

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }
    }
}
