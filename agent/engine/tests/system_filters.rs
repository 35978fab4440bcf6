//! Every filter that Debian's fail2ban package installs loads and compiles
//! unchanged (skipped with a reason where fail2ban is not installed).

use std::path::Path;

use fleetban_engine::fail2ban::read_filter;
use fleetban_engine::fail2ban::regex::{compile, resolve_tags, UseDns};

#[path = "support/fs.rs"]
mod fs;

use fs::Fs;

#[test]
fn every_shipped_filter_loads_and_compiles() {
    let dir = Path::new("/etc/fail2ban/filter.d");
    if !dir.is_dir() {
        if std::env::var("FLEETBAN_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("/etc/fail2ban/filter.d missing and FLEETBAN_TEST_STRICT=1");
        }
        eprintln!("skipped every_shipped_filter_loads_and_compiles: fail2ban is not installed");
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read filter.d")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".conf"))
                .map(str::to_owned)
        })
        // `common` and `*-common` are included by filters, not filters:
        // they may use names their includers define.
        .filter(|n| n != "common" && !n.ends_with("-common"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in &names {
        let def = match read_filter(&Fs, &dir.join(name), &[]) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let multiline = def.maxlines > 1;
        for l in def
            .prefregex
            .iter()
            .chain(&def.failregex)
            .chain(&def.ignoreregex)
        {
            if let Err(e) = compile(&resolve_tags(&l.value, UseDns::Names), multiline) {
                failures.push(format!("{name} {}: {e}", l.option));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filters fail:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    assert!(names.len() > 80, "{} filters", names.len());
}

#[test]
fn the_system_jail_configuration_loads() {
    let dir = Path::new("/etc/fail2ban");
    if !dir.join("jail.conf").is_file() {
        if std::env::var("FLEETBAN_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("/etc/fail2ban/jail.conf missing and FLEETBAN_TEST_STRICT=1");
        }
        eprintln!("skipped the_system_jail_configuration_loads: fail2ban is not installed");
        return;
    }
    let jails = fleetban_engine::fail2ban::read_jails(&Fs, dir).expect("jail.conf loads");
    assert!(jails.len() > 50, "{} jails", jails.len());
    let sshd = jails
        .iter()
        .find(|j| j.name == "sshd")
        .expect("an sshd jail");
    assert_eq!(sshd.port.as_deref(), Some("ssh"));
    // Debian enables sshd in jail.d/defaults-debian.conf.
    if sshd.enabled {
        let filter = sshd.filter.as_ref().expect("sshd's filter is read");
        assert!(filter.failregex.len() > 10);
    }
}

/// Hostile user names and host names never become the banned host with
/// fail2ban's own sshd filter.
#[test]
fn injected_addresses_are_not_the_host() {
    let dir = Path::new("/etc/fail2ban/filter.d");
    if !dir.join("sshd.conf").is_file() {
        if std::env::var("FLEETBAN_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("/etc/fail2ban/filter.d/sshd.conf missing and FLEETBAN_TEST_STRICT=1");
        }
        eprintln!("skipped injected_addresses_are_not_the_host: fail2ban is not installed");
        return;
    }
    let def = read_filter(&Fs, &dir.join("sshd"), &[]).expect("sshd");
    let options = fleetban_engine::FilterOptions {
        zone: fleetban_engine::date::Zone::utc(),
        now_year: 2026,
        check_all: false,
        undated_is_now: true,
    };
    let mut f = fleetban_engine::Filter::new(&def, options).expect("compile");
    let now = 1_764_000_000;
    let cases = [
        ("Nov 24 10:00:00 h sshd[1]: Failed password for invalid user 6.6.6.6 from 192.0.2.1 port 22 ssh2", "192.0.2.1"),
        ("Nov 24 10:00:00 h sshd[2]: Failed password for root from 6.6.6.6 port 1 from 192.0.2.2 port 22 ssh2", "192.0.2.2"),
        ("Nov 24 10:00:00 h sshd[3]: Invalid user from 6.6.6.6 from 192.0.2.3 port 22", "192.0.2.3"),
    ];
    for (line, host) in cases {
        let found: Vec<String> = f
            .process_line(line, now)
            .failures
            .into_iter()
            .filter_map(|x| x.host)
            .collect();
        assert_eq!(found, [host], "{line}");
    }
    // Control characters, NUL bytes and a huge line neither crash nor stall.
    let huge = format!(
        "Nov 24 10:00:00 h sshd[4]: Failed password for {} from 192.0.2.4 port 22 ssh2",
        "x".repeat(1 << 20)
    );
    let _ = f.process_line(&huge, now);
    let _ = f.process_line(
        "Nov 24 10:00:00 h sshd[5]: Failed password for \0\u{1b}[2J from 192.0.2.5 port 22 ssh2",
        now,
    );
}
