//! One behaviour for every firewall backend, and a network namespace for
//! the backends that need a kernel.

use ipnet::IpNet;

use super::Firewall;
use crate::blocklist::{Changes, Delta, PortKey};

fn net(s: &str) -> IpNet {
    fleetban_proto::parse_target(s).expect("target")
}

fn port(target: &str, proto: u8, port: u16) -> PortKey {
    PortKey {
        target: net(target),
        proto,
        port,
    }
}

/// A network namespace of its own, deleted on drop.
pub(crate) struct Namespace {
    name: String,
}

impl Namespace {
    pub(crate) fn new(prefix: &str) -> Self {
        let name = format!("{prefix}{}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(ok.success(), "cannot create namespace {name}");
        Namespace { name }
    }

    /// `ip netns exec NS`, for [`super::command::Runner`].
    /// The namespace's file, for entering it (`setns`).
    pub(crate) fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    pub(crate) fn wrapper(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs a shell command in the namespace; its stdout. Panics on failure.
    pub(crate) fn sh(&self, script: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Something of another program's in the namespace, to check it is left
/// alone: an nftables table and, where ipset is installed, an ipset.
fn foreign(ns: &Namespace) -> String {
    ns.sh("nft list table inet foreign; ipset save foreign 2>/dev/null || true")
}

/// Drives `fw` through sync, apply, read and flush, checking after each step,
/// beside a foreign nftables table and ipset that must stay as they were.
pub(crate) async fn run(fw: &mut dyn Firewall, ns: &Namespace) {
    ns.sh(
        "nft add table inet foreign && nft add set inet foreign keep '{ type ipv4_addr; }' \
         && nft add element inet foreign keep '{ 192.0.2.1 }' \
         && nft add chain inet foreign input '{ type filter hook input priority 0; policy accept; }' \
         && (! command -v ipset >/dev/null || (ipset create foreign hash:ip && ipset add foreign 192.0.2.1))",
    );
    let before = foreign(ns);
    run_plain(fw).await;
    assert_eq!(foreign(ns), before, "foreign table or set changed");
}

/// The backend-independent part of [`run`].
pub(crate) async fn run_plain(fw: &mut dyn Firewall) {
    fw.sync(
        &[
            (net("192.0.2.1"), Some(600_000)),
            (net("2001:db8::/64"), None),
            (net("198.51.100.0/24"), Some(60_000)),
            (net("2001:db8:1::7"), Some(60_000)),
        ],
        &[
            (port("192.0.2.50", 6, 22), Some(600_000)),
            (port("192.0.2.50", 17, 53), None),
            (port("2001:db8::50", 6, 443), Some(60_000)),
            (port("198.51.101.0/24", 6, 22), Some(60_000)),
        ],
    )
    .await
    .expect("sync");
    assert_eq!(
        fw.list().await.expect("list"),
        vec![
            net("192.0.2.1"),
            net("198.51.100.0/24"),
            net("2001:db8::/64"),
            net("2001:db8:1::7"),
        ]
    );
    let read = fw.read().await.expect("read");
    assert!(read.intact);
    let left = read.entries[&net("192.0.2.1")].expect("a timeout");
    assert!((590_000..=600_000).contains(&left), "{left}");
    assert_eq!(read.entries[&net("2001:db8::/64")], None);
    // Port elements are kept apart from address-wide entries.
    assert_eq!(
        read.ports.keys().copied().collect::<Vec<_>>(),
        vec![
            port("192.0.2.50", 6, 22),
            port("192.0.2.50", 17, 53),
            port("198.51.101.0/24", 6, 22),
            port("2001:db8::50", 6, 443),
        ]
    );
    let left = read.ports[&port("192.0.2.50", 6, 22)].expect("a timeout");
    assert!((590_000..=600_000).contains(&left), "{left}");
    assert_eq!(read.ports[&port("192.0.2.50", 17, 53)], None);

    let changes = Changes {
        add: vec![(net("203.0.113.7"), Some(5_000))],
        remove: vec![net("192.0.2.1"), net("2001:db8::/64")],
        ports: Delta {
            add: vec![(port("192.0.2.50", 6, 2222), Some(60_000))],
            remove: vec![port("192.0.2.50", 6, 22), port("198.51.101.0/24", 6, 22)],
        },
    };
    fw.apply(&changes).await.expect("apply");
    let read = fw.read().await.expect("read");
    assert!(read.intact);
    assert_eq!(
        read.ports.keys().copied().collect::<Vec<_>>(),
        vec![
            port("192.0.2.50", 6, 2222),
            port("192.0.2.50", 17, 53),
            port("2001:db8::50", 6, 443),
        ]
    );
    assert_eq!(
        fw.list().await.expect("list"),
        vec![
            net("198.51.100.0/24"),
            net("203.0.113.7"),
            net("2001:db8:1::7")
        ]
    );
    fw.apply(&Changes::default()).await.expect("empty apply");

    // A full sync replaces everything.
    fw.sync(&[(net("192.0.2.200"), None)], &[])
        .await
        .expect("sync");
    assert_eq!(fw.list().await.expect("list"), vec![net("192.0.2.200")]);
    assert!(fw.read().await.expect("read").ports.is_empty());
    fw.sync(&[], &[]).await.expect("sync empty");
    assert!(fw.list().await.expect("list").is_empty());
    assert!(fw.read().await.expect("read").intact);

    fw.flush().await.expect("flush");
    fw.flush().await.expect("flush twice");
    let read = fw.read().await.expect("read after flush");
    assert!(
        !read.intact && read.entries.is_empty() && read.ports.is_empty(),
        "{read:?}"
    );
}
