//! Native filters: regular expressions in which `<HOST>` stands for the
//! address of the offender, as in fail2ban's `failregex`.

use std::net::IpAddr;

use regex::Regex;

/// What `<HOST>` expands to: an IPv4 or IPv6 address, optionally in brackets
/// or prefixed `::ffff:`. The captured text is parsed afterwards, so the
/// pattern only needs to be loose enough to find candidates.
const HOST_PATTERN: &str = r"(?:::ffff:)?(?P<host>(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?)";

/// A filter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("failregex {pattern:?} has no <HOST> (or named group `host`)")]
    MissingHost { pattern: String },
    #[error("regex {pattern:?} does not compile: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("a filter needs at least one failregex")]
    Empty,
}

/// One failure found in a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub ip: IpAddr,
    pub user: Option<String>,
}

/// A compiled filter: the line is a failure if one `failregex` matches and no
/// `ignoreregex` does.
#[derive(Debug, Clone)]
pub struct Filter {
    fail: Vec<Regex>,
    ignore: Vec<Regex>,
}

impl Filter {
    pub fn new<S: AsRef<str>>(failregex: &[S], ignoreregex: &[S]) -> Result<Self, FilterError> {
        if failregex.is_empty() {
            return Err(FilterError::Empty);
        }
        let fail = failregex
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let re = compile(&expand(p))?;
                if re.capture_names().flatten().all(|n| n != "host") {
                    return Err(FilterError::MissingHost {
                        pattern: p.to_owned(),
                    });
                }
                Ok(re)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ignore = ignoreregex
            .iter()
            .map(|p| compile(&expand(p.as_ref())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter { fail, ignore })
    }

    /// The failure on this line, if any.
    pub fn check(&self, line: &str) -> Option<Failure> {
        let failure = self.fail.iter().find_map(|re| {
            let caps = re.captures(line)?;
            let host = caps.name("host")?.as_str();
            let host = host.split('%').next().unwrap_or(host);
            let ip: IpAddr = host.parse().ok()?;
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                IpAddr::V4(_) => ip,
            };
            let user = caps.name("user").map(|m| m.as_str().to_owned());
            Some(Failure { ip, user })
        })?;
        if self.ignore.iter().any(|re| re.is_match(line)) {
            return None;
        }
        Some(failure)
    }
}

fn expand(pattern: &str) -> String {
    pattern.replace("<HOST>", HOST_PATTERN)
}

fn compile(pattern: &str) -> Result<Regex, FilterError> {
    Regex::new(pattern).map_err(|source| FilterError::Regex {
        pattern: pattern.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sshd() -> Filter {
        Filter::new(
            &[
                r"Failed password for (?:invalid user )?(?P<user>\S+) from <HOST> port \d+",
                r"Invalid user \S+ from <HOST>",
            ],
            &[r"from 203\.0\.113\.99 "],
        )
        .unwrap()
    }

    #[test]
    fn finds_ipv4_ipv6_and_user() {
        let f = sshd();
        let l =
            "Nov 25 10:00:01 h sshd[1]: Failed password for root from 198.51.100.7 port 2222 ssh2";
        assert_eq!(
            f.check(l),
            Some(Failure {
                ip: "198.51.100.7".parse().unwrap(),
                user: Some("root".into())
            })
        );
        let l = "sshd[1]: Failed password for invalid user bob from 2001:db8::17 port 22 ssh2";
        assert_eq!(
            f.check(l).unwrap().ip,
            "2001:db8::17".parse::<IpAddr>().unwrap()
        );
        let l = "sshd[1]: Invalid user admin from ::ffff:192.0.2.1";
        assert_eq!(
            f.check(l).unwrap().ip,
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ignores_and_misses() {
        let f = sshd();
        assert_eq!(
            f.check("sshd[1]: Accepted password for root from 198.51.100.7 port 1 ssh2"),
            None
        );
        assert_eq!(
            f.check("sshd[1]: Failed password for x from 203.0.113.99 port 1 ssh2"),
            None
        );
        // Not an address: the capture is checked, not trusted.
        assert_eq!(f.check("sshd[1]: Invalid user a from 999.1.1.1"), None);
        assert_eq!(f.check(""), None);
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(matches!(
            Filter::new(&["no host here"], &[]),
            Err(FilterError::MissingHost { .. })
        ));
        assert!(matches!(
            Filter::new(&["(<HOST>"], &[]),
            Err(FilterError::Regex { .. })
        ));
        assert!(matches!(
            Filter::new::<&str>(&[], &[]),
            Err(FilterError::Empty)
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_line(line in ".{0,300}") {
            let _ = sshd().check(&line);
        }
    }
}
