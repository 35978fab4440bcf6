//! CIDR math for the block list, pure: overlapping and adjacent prefixes
//! folded into the fewest disjoint prefixes, each address keeping the
//! longest expiry any ban gives it. Interval sets in the kernel hold no
//! overlapping elements, and fewer elements load faster.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// Expiry in Unix ms; `None`: never.
pub type Expiry = Option<i64>;

/// `None` sorts after every time: it outlasts them all.
fn rank(e: Expiry) -> i64 {
    e.unwrap_or(i64::MAX)
}

fn unrank(r: i64) -> Expiry {
    (r != i64::MAX).then_some(r)
}

/// Disjoint prefixes covering exactly the addresses of `input`, each address
/// with the latest expiry among the inputs that cover it; neighbouring
/// pieces with the same expiry are merged. Sorted by address.
pub fn flatten(input: impl IntoIterator<Item = (IpNet, Expiry)>) -> Vec<(IpNet, Expiry)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (net, until) in input {
        let r = rank(until);
        match net {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
                r,
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()), r)),
        }
    }
    let mut out = Vec::new();
    for (lo, hi, r) in sweep(v4) {
        let (lo, hi) = (
            Ipv4Addr::from(u32::try_from(lo).unwrap_or(u32::MAX)),
            Ipv4Addr::from(u32::try_from(hi).unwrap_or(u32::MAX)),
        );
        out.extend(Ipv4Subnets::new(lo, hi, 0).map(|n| (IpNet::V4(n), unrank(r))));
    }
    for (lo, hi, r) in sweep(v6) {
        let (lo, hi) = (Ipv6Addr::from(lo), Ipv6Addr::from(hi));
        out.extend(Ipv6Subnets::new(lo, hi, 0).map(|n| (IpNet::V6(n), unrank(r))));
    }
    out
}

/// Inclusive ranges with a rank in, disjoint ranges with the highest rank
/// covering them out, neighbours of equal rank joined.
fn sweep(mut ranges: Vec<(u128, u128, i64)>) -> Vec<(u128, u128, i64)> {
    // Events: (position, rank, +1 start / -1 end-after). An end at u128::MAX
    // needs no event: the sweep stops there.
    let mut events: Vec<(u128, i64, i8)> = Vec::with_capacity(ranges.len() * 2);
    for (lo, hi, r) in ranges.drain(..) {
        events.push((lo, r, 1));
        if let Some(after) = hi.checked_add(1) {
            events.push((after, r, -1));
        }
    }
    events.sort_unstable();
    let mut active: BTreeMap<i64, usize> = BTreeMap::new();
    let mut out: Vec<(u128, u128, i64)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, r, d) = events[i];
            if d > 0 {
                *active.entry(r).or_default() += 1;
            } else if let Some(c) = active.get_mut(&r) {
                *c -= 1;
                if *c == 0 {
                    active.remove(&r);
                }
            }
            i += 1;
        }
        let Some((&top, _)) = active.last_key_value() else {
            continue;
        };
        let end = events.get(i).map_or(u128::MAX, |e| e.0 - 1);
        match out.last_mut() {
            Some(last) if last.2 == top && last.1.checked_add(1) == Some(pos) => last.1 = end,
            _ => out.push((pos, end, top)),
        }
    }
    out
}

/// Whether `host` is inside one of `nets` (sorted, disjoint, as [`flatten`]
/// makes them) whose expiry is at least `until`.
pub fn covered(nets: &[(IpNet, Expiry)], host: &IpNet, until: Expiry) -> bool {
    // The last prefix starting at or before the host is the only candidate.
    let i = nets.partition_point(|(n, _)| key(n) <= key(host));
    i > 0 && {
        let (n, e) = nets[i - 1];
        n.contains(host) && rank(e) >= rank(until)
    }
}

/// Sort key of [`flatten`]'s output: IPv4 first, then by network address.
fn key(n: &IpNet) -> (u8, u128) {
    match n {
        IpNet::V4(n) => (0, u128::from(u32::from(n.network()))),
        IpNet::V6(n) => (1, u128::from(n.network())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn show(v: &[(IpNet, Expiry)]) -> Vec<String> {
        v.iter()
            .map(|(n, e)| format!("{n}@{}", e.map_or("-".into(), |e| e.to_string())))
            .collect()
    }

    #[test]
    fn nested_prefixes_keep_the_longer_expiry() {
        let out = flatten([
            (net("192.0.2.0/24"), Some(100)),
            (net("192.0.2.128/25"), Some(500)),
        ]);
        assert_eq!(show(&out), vec!["192.0.2.0/25@100", "192.0.2.128/25@500"]);
        // The wider and longer ban swallows the narrower one.
        let out = flatten([
            (net("192.0.2.0/24"), None),
            (net("192.0.2.8/29"), Some(500)),
        ]);
        assert_eq!(show(&out), vec!["192.0.2.0/24@-"]);
    }

    #[test]
    fn adjacent_prefixes_with_one_expiry_merge() {
        let out = flatten([
            (net("198.51.100.0/25"), Some(7)),
            (net("198.51.100.128/25"), Some(7)),
            (net("198.51.101.0/24"), Some(8)),
            (net("2001:db8::/33"), None),
            (net("2001:db8:8000::/33"), None),
        ]);
        assert_eq!(
            show(&out),
            vec!["198.51.100.0/24@7", "198.51.101.0/24@8", "2001:db8::/32@-"]
        );
    }

    #[test]
    fn whole_spaces_do_not_overflow() {
        let out = flatten([(net("::/0"), Some(1)), (net("2001:db8::/32"), Some(2))]);
        // The rest of the space takes one prefix per level above the /32.
        assert_eq!(out.len(), 33);
        assert!(out
            .iter()
            .any(|(n, e)| *n == net("2001:db8::/32") && *e == Some(2)));
        let out = flatten([(net("0.0.0.0/0"), None)]);
        assert_eq!(show(&out), vec!["0.0.0.0/0@-"]);
    }

    #[test]
    fn hosts_inside_a_longer_prefix_are_covered() {
        let nets = flatten([
            (net("192.0.2.0/24"), Some(100)),
            (net("10.0.0.0/8"), None),
            (net("2001:db8::/32"), Some(5)),
        ]);
        assert!(covered(&nets, &net("192.0.2.9/32"), Some(100)));
        assert!(!covered(&nets, &net("192.0.2.9/32"), Some(101)));
        assert!(covered(&nets, &net("10.1.2.3/32"), None));
        assert!(!covered(&nets, &net("11.0.0.1/32"), Some(1)));
        assert!(covered(&nets, &net("2001:db8::1/128"), Some(5)));
        assert!(!covered(&nets, &net("2001:db9::1/128"), Some(5)));
        assert!(!covered(&[], &net("2001:db9::1/128"), Some(5)));
    }

    proptest::proptest! {
        /// Every address gets the latest expiry of the prefixes covering it,
        /// and the output prefixes are disjoint.
        #[test]
        fn flatten_matches_a_per_address_model(
            bans in proptest::collection::vec((0u8..=255, 24u8..=32, proptest::option::of(0i64..4)), 0..12)
        ) {
            let input: Vec<(IpNet, Expiry)> = bans
                .iter()
                .map(|(a, len, e)| (IpNet::new(Ipv4Addr::new(192, 0, 2, *a).into(), *len).expect("net").trunc(), *e))
                .collect();
            let out = flatten(input.clone());
            for w in out.windows(2) {
                proptest::prop_assert!(w[0].0.broadcast() < w[1].0.network());
            }
            for a in 0u8..=255 {
                let ip: IpNet = IpNet::from(std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, a)));
                let want = input.iter().filter(|(n, _)| n.contains(&ip)).map(|(_, e)| rank(*e)).max();
                let got = out.iter().find(|(n, _)| n.contains(&ip)).map(|(_, e)| rank(*e));
                proptest::prop_assert_eq!(want, got);
            }
        }
    }
}
