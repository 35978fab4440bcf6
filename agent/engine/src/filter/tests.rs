use super::*;
use crate::fail2ban::FilterDefinition;

const NOW: i64 = 1_124_013_600; // 2005-08-14 10:00:00 UTC

fn options(check_all: bool) -> FilterOptions {
    FilterOptions {
        zone: Zone::utc(),
        now_year: 2026,
        check_all,
        undated_is_now: false,
    }
}

fn filter(fail: &[&str], ignore: &[&str]) -> Filter {
    let fail: Vec<String> = fail.iter().map(|s| (*s).to_owned()).collect();
    let ignore: Vec<String> = ignore.iter().map(|s| (*s).to_owned()).collect();
    Filter::new(
        &FilterDefinition::from_regexes(None, &fail, &ignore),
        options(false),
    )
    .unwrap()
}

#[test]
fn finds_host_user_and_time() {
    let mut f = filter(
        &[r"Failed password for (?:invalid user )?<F-USER>\S+</F-USER> from <HOST> port \d+"],
        &[],
    );
    let r = f.process_line(
        "Aug 14 11:59:59 host sshd[1]: Failed password for root from 192.0.2.7 port 22 ssh2",
        NOW,
    );
    assert_eq!(r.failures.len(), 1);
    let fl = &r.failures[0];
    assert_eq!(fl.host.as_deref(), Some("192.0.2.7"));
    assert_eq!(fl.kind, HostKind::Ip4);
    assert_eq!(fl.user.as_deref(), Some("root"));
    assert_eq!(fl.time, Some(1_124_020_799.0));
    assert_eq!(fl.attempts, 1);
    assert_eq!(fl.address(), Some("192.0.2.7".parse().unwrap()));
    let r = f.process_line(
        "Aug 14 11:59:59 host sshd[1]: Accepted password for root from 192.0.2.7",
        NOW,
    );
    assert!(r.failures.is_empty() && !r.matched);
}

#[test]
fn the_date_is_cut_before_matching() {
    // Anchored at the start: only the text after the date is matched.
    let mut f = filter(&[r"^ host sshd\[\d+\]: fail from <HOST>$"], &[]);
    let r = f.process_line("Aug 14 11:59:59 host sshd[1]: fail from 2001:DB8::1", NOW);
    assert_eq!(r.failures[0].host.as_deref(), Some("2001:DB8::1"));
    assert_eq!(r.failures[0].kind, HostKind::Ip6);
}

#[test]
fn ignoreregex_vetoes() {
    let mut f = filter(&[r"fail from <HOST>"], &[r"from 192\.0\.2\.99"]);
    let r = f.process_line("fail from 192.0.2.99", NOW);
    assert!(r.failures.is_empty());
    assert!(r.ignored);
    assert_eq!(
        f.process_line("fail from 192.0.2.98", NOW).failures.len(),
        1
    );
}

#[test]
fn hostnames_stay_names_and_subnets_keep_their_prefix() {
    let mut f = filter(&[r"fail from <HOST>$", r"net <SUBNET>$"], &[]);
    let r = f.process_line("fail from evil.example.org", NOW);
    assert_eq!(r.failures[0].host.as_deref(), Some("evil.example.org"));
    assert_eq!(r.failures[0].kind, HostKind::Name);
    assert_eq!(r.failures[0].address(), None);
    let r = f.process_line("net 198.51.100.77/24", NOW);
    assert_eq!(r.failures[0].host.as_deref(), Some("198.51.100.0/24"));
}

#[test]
fn prefregex_narrows_to_content() {
    let def = FilterDefinition {
        prefregex: Some(Located {
            value: r"^\S+ sshd\[\d+\]: <F-CONTENT>.+</F-CONTENT>$".into(),
            option: "prefregex".into(),
            origin: None,
        }),
        ..FilterDefinition::from_regexes(None, &[r"^Failed for <HOST>$".to_owned()], &[])
    };
    let mut f = Filter::new(&def, options(false)).unwrap();
    assert_eq!(
        f.process_line("host sshd[1]: Failed for 192.0.2.1", NOW)
            .failures
            .len(),
        1
    );
    assert!(f
        .process_line("host other[1]: Failed for 192.0.2.1", NOW)
        .failures
        .is_empty());
}

#[test]
fn multi_line_failures_merge_by_id() {
    let def = FilterDefinition {
        prefregex: Some(Located {
            value: r"^\S+ sshd\[<F-MLFID>\d+</F-MLFID>\]: <F-CONTENT>.+</F-CONTENT>$".into(),
            option: "prefregex".into(),
            origin: None,
        }),
        ..FilterDefinition::from_regexes(
            None,
            &[
                r"^Connection from <HOST>".to_owned(),
                r"^Failed password for <F-USER>\S+</F-USER>$".to_owned(),
                r"^<F-MLFFORGET><F-MLFGAINED>Accepted password</F-MLFGAINED></F-MLFFORGET> for <F-USER>\S+</F-USER>$".to_owned(),
            ],
            &[],
        )
    };
    let mut f = Filter::new(&def, options(false)).unwrap();
    f.process_line("h sshd[7]: Connection from 192.0.2.5", NOW);
    let r = f.process_line("h sshd[7]: Failed password for bob", NOW);
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert_eq!(r.failures[0].host.as_deref(), Some("192.0.2.5"));
    assert_eq!(r.failures[0].user.as_deref(), Some("bob"));
    // Another connection knows no address: nothing to report.
    assert!(f
        .process_line("h sshd[8]: Failed password for eve", NOW)
        .failures
        .is_empty());
    // A success ends the connection's record.
    f.process_line("h sshd[7]: Accepted password for bob", NOW);
    assert!(f
        .process_line("h sshd[7]: Failed password for bob", NOW)
        .failures
        .is_empty());
}

#[test]
fn invalid_regexes_name_option_index_and_position() {
    let origin = Origin {
        file: "/etc/fleetban/agent.toml".into(),
        line: 12,
    };
    let def = FilterDefinition::from_regexes(
        Some(origin),
        &["ok <HOST>".to_owned(), "bad (<HOST>".to_owned()],
        &[],
    );
    let e = Filter::new(&def, options(false)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "/etc/fleetban/agent.toml:12: failregex #2: missing closing parenthesis at position"
        ),
        "{msg}"
    );
    let def = FilterDefinition::from_regexes(None, &["no id here".to_owned()], &[]);
    assert!(Filter::new(&def, options(false))
        .unwrap_err()
        .to_string()
        .contains("no failure id"));
}

#[test]
fn hostile_lines_do_not_stall_or_crash() {
    let mut f = filter(
        &[r"^(a|aa)+$<HOST>", r"user (?P<user>.*)+ from <HOST>"],
        &[],
    );
    let long = "a".repeat(100_000);
    assert!(f.process_line(&long, NOW).failures.is_empty());
    let evil = format!("user {} from 192.0.2.1", "x".repeat(5_000));
    let _ = f.process_line(&evil, NOW);
    assert!(f
        .process_line("\0\u{1}\u{7f} from \u{fffd}", NOW)
        .failures
        .is_empty());
    // An injected address in the user name is not the host.
    let mut f = filter(
        &[r"^Failed for <F-USER>.+</F-USER> from <HOST> port \d+$"],
        &[],
    );
    let r = f.process_line(
        "Failed for root from 6.6.6.6 port 1 from 192.0.2.9 port 22",
        NOW,
    );
    assert_eq!(r.failures[0].host.as_deref(), Some("192.0.2.9"));
}
