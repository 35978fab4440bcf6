use std::collections::BTreeMap;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::growth::Growth;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn net(s: &str) -> IpNet {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => s.parse::<IpNet>().unwrap().trunc(),
    }
}

fn ban(target: &str, at: i64) -> LocalBan {
    LocalBan {
        agent_id: "a".into(),
        jail: "sshd".into(),
        target: net(target),
        at: t(at),
        duration: Duration::minutes(10),
        failures: 5,
        ports: String::new(),
    }
}

fn policy() -> Policy {
    let mut groups = BTreeMap::new();
    groups.insert("office".to_owned(), vec![net("198.51.100.0/24")]);
    Policy {
        allowlist: Allowlist {
            global: vec![net("10.0.0.0/8")],
            groups,
        },
        threshold: Some(FleetThreshold {
            hosts: 3,
            failures: 20,
            window: Duration::minutes(10),
            bantime: Duration::hours(1),
        }),
        recidive: Some(BanGrowth {
            growth: Growth::Exponential { factor: 2.0 },
            maxtime: Some(Duration::hours(24)),
        }),
        subnet: Some(SubnetEscalation {
            min_banned: 3,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn local_ban_is_echoed_fleet_wide() {
    let d = on_local_ban(
        &policy(),
        &ban("192.0.2.1", 0),
        None,
        &Facts::default(),
        t(1),
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].origin, Origin::Local);
    assert_eq!(d[0].scope, "fleet");
    assert_eq!(d[0].expires_at, Some(t(600)));
    let scoped = Policy {
        group_scope: true,
        ..policy()
    };
    assert_eq!(
        on_local_ban(
            &scoped,
            &ban("192.0.2.1", 0),
            Some("web"),
            &Facts::default(),
            t(1)
        )[0]
        .scope,
        "group:web"
    );
    // A ban in force covers a new one unless the new one lasts much longer.
    let short = Facts {
        active: vec![ActiveBan {
            target: net("192.0.2.0/24"),
            expires_at: Some(t(60)),
            ports: String::new(),
        }],
        ..Default::default()
    };
    assert_eq!(
        on_local_ban(&policy(), &ban("192.0.2.1", 0), None, &short, t(1)).len(),
        1
    );
    let long = Facts {
        active: vec![ActiveBan {
            target: net("192.0.2.1"),
            expires_at: Some(t(500)),
            ports: String::new(),
        }],
        ..Default::default()
    };
    assert!(on_local_ban(&policy(), &ban("192.0.2.1", 0), None, &long, t(1)).is_empty());
    // A port-scoped ban keeps its scope, and covers only the same ports.
    let sshd = LocalBan {
        ports: "tcp/22".into(),
        ..ban("192.0.2.1", 0)
    };
    let d = on_local_ban(&policy(), &sshd, None, &Facts::default(), t(1));
    assert_eq!(d[0].ports, "tcp/22");
    let scoped = Facts {
        active: vec![ActiveBan {
            target: net("192.0.2.1"),
            expires_at: Some(t(500)),
            ports: "tcp/22".into(),
        }],
        ..Default::default()
    };
    assert!(on_local_ban(&policy(), &sshd, None, &scoped, t(1)).is_empty());
    let d = on_local_ban(&policy(), &ban("192.0.2.1", 0), None, &scoped, t(1));
    assert_eq!((d.len(), d[0].ports.as_str()), (1, ""));
    let web = LocalBan {
        ports: "tcp/80,443".into(),
        ..ban("192.0.2.1", 0)
    };
    assert_eq!(on_local_ban(&policy(), &web, None, &scoped, t(1)).len(), 1);
    // The address-wide ban covers every port.
    assert!(on_local_ban(&policy(), &web, None, &long, t(1)).is_empty());
    let unshared = Policy {
        shared_jails: Some(vec!["nginx".into()]),
        ..policy()
    };
    assert!(on_local_ban(
        &unshared,
        &ban("192.0.2.1", 0),
        None,
        &Facts::default(),
        t(1)
    )
    .is_empty());
}

#[test]
fn recidive_grows_and_is_capped() {
    let facts = |n| Facts {
        previous_bans: n,
        ..Default::default()
    };
    let mins: Vec<i64> = (0..10)
        .map(|n| {
            let d = &on_local_ban(&policy(), &ban("192.0.2.1", 0), None, &facts(n), t(0))[0];
            assert_eq!(
                d.origin,
                if n == 0 {
                    Origin::Local
                } else {
                    Origin::Recidive
                }
            );
            (d.expires_at.unwrap() - t(0)).num_minutes()
        })
        .collect();
    assert_eq!(mins, vec![10, 20, 40, 80, 160, 320, 640, 1280, 1440, 1440]);
}

#[test]
fn fleet_threshold_on_hosts_or_failures() {
    let p = policy();
    let ip = net("192.0.2.9");
    let f = |hosts, failures| Facts {
        hosts,
        failures,
        ..Default::default()
    };
    assert!(on_failures(&p, &ip, "sshd", None, &f(2, 5), t(0)).is_empty());
    let d = on_failures(&p, &ip, "sshd", None, &f(3, 5), t(0));
    assert_eq!(
        (d[0].origin, d[0].expires_at),
        (Origin::Fleet, Some(t(3600)))
    );
    assert_eq!(on_failures(&p, &ip, "sshd", None, &f(1, 20), t(0)).len(), 1);
    let none = Policy {
        threshold: None,
        ..p
    };
    assert!(on_failures(&none, &ip, "sshd", None, &f(50, 50), t(0)).is_empty());
}

#[test]
fn subnet_escalation() {
    let facts = Facts {
        banned_in_prefix: 3,
        ..Default::default()
    };
    let d = on_local_ban(&policy(), &ban("192.0.2.77", 0), None, &facts, t(0));
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[1].target, d[1].origin),
        (net("192.0.2.0/24"), Origin::Subnet)
    );
    let d = on_local_ban(&policy(), &ban("2001:db8:1:2::5", 0), None, &facts, t(0));
    assert_eq!(d[1].target, net("2001:db8:1:2::/64"));
    // Already banned as a prefix: nothing more.
    let active = vec![ActiveBan {
        target: net("192.0.2.0/24"),
        expires_at: None,
        ports: String::new(),
    }];
    let facts = Facts {
        banned_in_prefix: 9,
        active,
        ..Default::default()
    };
    assert!(on_local_ban(&policy(), &ban("192.0.2.78", 0), None, &facts, t(0)).is_empty());
}

#[test]
fn allowlisted_and_broad_targets_are_refused() {
    let p = policy();
    assert!(on_local_ban(&p, &ban("10.1.2.3", 0), None, &Facts::default(), t(0)).is_empty());
    // The office network is allowlisted for its group and for fleet-wide bans.
    assert!(on_local_ban(&p, &ban("198.51.100.7", 0), None, &Facts::default(), t(0)).is_empty());
    let e = manual(&p, net("10.0.0.0/16"), None, None, "user:a", "x", t(0)).unwrap_err();
    assert_eq!(
        e,
        PolicyError::Allowlisted {
            target: net("10.0.0.0/16"),
            allowlisted: net("10.0.0.0/8")
        }
    );
    assert!(matches!(
        manual(&p, net("0.0.0.0/0"), None, None, "u", "x", t(0)),
        Err(PolicyError::TooBroad { .. })
    ));
    assert!(matches!(
        manual(&p, net("::/0"), None, None, "u", "x", t(0)),
        Err(PolicyError::TooBroad { .. })
    ));
    assert_eq!(
        manual(
            &p,
            net("192.0.2.1"),
            Some(Duration::zero()),
            None,
            "u",
            "x",
            t(0)
        ),
        Err(PolicyError::NoDuration)
    );
    let ok = manual(
        &p,
        net("192.0.2.0/24"),
        Some(Duration::hours(1)),
        Some("web"),
        "user:a",
        "scan",
        t(0),
    )
    .unwrap();
    assert_eq!(
        (ok.origin, ok.scope.as_str(), ok.expires_at),
        (Origin::Manual, "group:web", Some(t(3600)))
    );
    // A subnet that holds an allowlisted address is not escalated.
    let facts = Facts {
        banned_in_prefix: 9,
        ..Default::default()
    };
    let d = on_local_ban(&p, &ban("198.51.100.200", 0), Some("db"), &facts, t(0));
    assert!(d.iter().all(|d| d.origin != Origin::Subnet));
}

#[test]
fn feeds_skip_what_they_may_not_ban() {
    let (d, refused) = from_feed(
        &policy(),
        "blocklist",
        &[net("192.0.2.1"), net("10.0.0.1"), net("0.0.0.0/1")],
        Some(Duration::hours(2)),
        t(0),
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].origin, Origin::Feed);
    assert_eq!(d[0].creator, "feed:blocklist");
    assert_eq!(refused.len(), 2);
}

fn arb_ip() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| net(&format!("10.{a}.{b}.1"))),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| net(&format!("192.0.{a}.{b}"))),
        (0u8..4).prop_map(|b| net(&format!("198.51.100.{b}"))),
    ]
}

proptest! {
    /// An allowlisted address is never banned, by any rule.
    #[test]
    fn allowlisted_never_banned(ip in arb_ip(), hosts in 0u32..10, failures in 0u32..50, prefix in 0u32..10, prev in 0u32..5) {
        let p = policy();
        let facts = Facts { hosts, failures, banned_in_prefix: prefix, previous_bans: prev, ..Default::default() };
        let lb = LocalBan { target: ip, ..ban("192.0.2.1", 0) };
        let all: Vec<NewDecision> = on_local_ban(&p, &lb, None, &facts, t(0))
            .into_iter()
            .chain(on_failures(&p, &ip, "sshd", None, &facts, t(0)))
            .collect();
        for d in all {
            prop_assert!(!p.allowlist.allows(&d.target, None), "{} banned", d.target);
        }
    }

    /// One burst makes one decision: once its decision is in force, the
    /// same reports decide nothing more.
    #[test]
    fn no_decision_twice_for_one_burst(reports in 1usize..20, hosts in 3u32..10) {
        let p = Policy { subnet: None, ..policy() };
        let ip = net("192.0.2.50");
        let mut active: Vec<ActiveBan> = Vec::new();
        let mut decisions = 0;
        for i in 0..reports {
            let now = t(i as i64);
            // The store records each decision before the next report is
            // correlated: facts always show what is in force.
            let facts = |active: &Vec<ActiveBan>| Facts { hosts, failures: hosts, active: active.clone(), ..Default::default() };
            let d = on_failures(&p, &ip, "sshd", None, &facts(&active), now);
            decisions += d.len();
            active.extend(d.into_iter().map(|d| ActiveBan { target: d.target, expires_at: d.expires_at, ports: d.ports }));
            let d = on_local_ban(&p, &LocalBan { target: ip, at: now, ..ban("192.0.2.50", 0) }, None, &facts(&active), now);
            decisions += d.len();
            active.extend(d.into_iter().map(|d| ActiveBan { target: d.target, expires_at: d.expires_at, ports: d.ports }));
        }
        prop_assert_eq!(decisions, 1);
    }
}
