//! Feeds added through the API, on both databases.

use std::sync::Arc;

use fleetban_policy::{NewDecision, Origin};

use super::{ban, t};
use crate::feeds::FeedSource;
use crate::store::{
    feed_creator, DecisionKind, FeedPlan, FeedStatus, Store, StoreError, StoredFeed,
};

fn stored(name: &str, source: FeedSource) -> StoredFeed {
    StoredFeed {
        name: name.into(),
        source,
        interval_s: 600,
        bantime_s: Some(3600),
        max_invalid_percent: 10,
        allow_empty: false,
        created_at: t(0),
        created_by: "user:ada".into(),
    }
}

pub(crate) async fn feeds_are_added_and_removed_with_their_bans(s: Arc<dyn Store>) {
    let web = stored("web", FeedSource::Url("https://lists.example/x.txt".into()));
    let local = StoredFeed {
        bantime_s: None,
        ..stored(
            "local",
            FeedSource::File("/var/lib/fleetban/block.txt".into()),
        )
    };
    s.add_feed(&web).await.expect("add");
    s.add_feed(&local).await.expect("add");
    assert!(matches!(
        s.add_feed(&web).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.stored_feeds().await.expect("feeds"),
        vec![local.clone(), web.clone()]
    );

    let feed_ban = |target: &str| NewDecision {
        creator: feed_creator("web"),
        origin: Origin::Feed,
        ..ban(target, None)
    };
    let plan = |_: &[crate::store::Decision]| FeedPlan {
        add: vec![feed_ban("192.0.2.1"), feed_ban("198.51.100.0/24")],
        revoke: Vec::new(),
    };
    s.sync_feed("web", t(1), &plan).await.expect("import");
    s.record_decision(&ban("192.0.2.1", None), t(1))
        .await
        .expect("someone else's ban");
    s.put_feed_status(&FeedStatus {
        name: "web".into(),
        last_attempt: t(1),
        last_success: Some(t(1)),
        entries: 2,
        invalid_lines: 0,
        last_error: String::new(),
    })
    .await
    .expect("status");

    let revoked = s
        .remove_feed("web", "user:ada", t(2))
        .await
        .expect("remove");
    assert_eq!(revoked.len(), 2);
    assert!(revoked
        .iter()
        .all(|d| d.kind == DecisionKind::Revoke && d.creator == "user:ada"));
    let active = s.active_bans(t(3)).await.expect("active");
    assert_eq!(active.len(), 1, "only the other ban stays: {active:?}");
    assert_eq!(active[0].creator, "agent:a");
    assert!(s.feed_statuses().await.expect("statuses").is_empty());
    assert_eq!(s.stored_feeds().await.expect("feeds"), vec![local.clone()]);
    // An import still under way somewhere records nothing.
    assert!(matches!(
        s.sync_feed("web", t(3), &plan).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.active_bans(t(3)).await.expect("active").len(), 1);
    assert!(matches!(
        s.remove_feed("web", "user:ada", t(4)).await,
        Err(StoreError::NotFound(_))
    ));
    // Its name may be used again, and then it imports again.
    s.add_feed(&web).await.expect("add again");
    assert_eq!(
        s.sync_feed("web", t(5), &plan).await.expect("import").len(),
        2
    );
    // Feeds of the configuration file are never stored, and import.
    let cfg_plan = |_: &[crate::store::Decision]| FeedPlan {
        add: vec![NewDecision {
            creator: feed_creator("file"),
            ..feed_ban("203.0.113.7")
        }],
        revoke: Vec::new(),
    };
    assert_eq!(
        s.sync_feed("file", t(5), &cfg_plan)
            .await
            .expect("import")
            .len(),
        1
    );
}

pub(crate) async fn a_removed_feed_gets_no_status(s: Arc<dyn Store>) {
    let web = stored("web", FeedSource::Url("https://lists.example/x.txt".into()));
    s.add_feed(&web).await.expect("add");
    s.remove_feed("web", "user:ada", t(1))
        .await
        .expect("remove");
    let status = FeedStatus {
        name: "web".into(),
        last_attempt: t(2),
        last_success: None,
        entries: 0,
        invalid_lines: 0,
        last_error: "unreachable".into(),
    };
    s.put_feed_status(&status).await.expect("status");
    assert!(s.feed_statuses().await.expect("statuses").is_empty());
    s.put_feed_status(&FeedStatus {
        name: "file".into(),
        ..status
    })
    .await
    .expect("status");
    assert_eq!(s.feed_statuses().await.expect("statuses").len(), 1);
}
