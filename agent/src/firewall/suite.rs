//! One behaviour for every firewall backend.

use ipnet::IpNet;

use super::Firewall;
use crate::blocklist::Changes;

fn net(s: &str) -> IpNet {
    fleetban_proto::parse_target(s).expect("target")
}

/// Drives `fw` through sync, apply and flush, reading back after each step.
pub(crate) async fn run(fw: &mut dyn Firewall) {
    fw.sync(&[
        (net("192.0.2.1"), Some(600_000)),
        (net("2001:db8::/64"), None),
        (net("198.51.100.0/24"), Some(60_000)),
    ])
    .await
    .expect("sync");
    assert_eq!(
        fw.list().await.expect("list"),
        vec![
            net("192.0.2.1"),
            net("198.51.100.0/24"),
            net("2001:db8::/64")
        ]
    );

    let changes = Changes {
        add: vec![(net("203.0.113.7"), Some(5_000))],
        remove: vec![net("192.0.2.1"), net("2001:db8::/64")],
    };
    fw.apply(&changes).await.expect("apply");
    assert_eq!(
        fw.list().await.expect("list"),
        vec![net("198.51.100.0/24"), net("203.0.113.7")]
    );
    fw.apply(&Changes::default()).await.expect("empty apply");

    // A full sync replaces everything.
    fw.sync(&[(net("192.0.2.200"), None)]).await.expect("sync");
    assert_eq!(fw.list().await.expect("list"), vec![net("192.0.2.200")]);
    fw.sync(&[]).await.expect("sync empty");
    assert!(fw.list().await.expect("list").is_empty());

    fw.flush().await.expect("flush");
    fw.flush().await.expect("flush twice");
}
