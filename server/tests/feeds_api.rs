//! Feeds and allowlist comments through the REST API, on Postgres and
//! SQLite: a feed added from a local file is imported on refresh, its
//! entries become decisions, and removing it revokes them; bad input is
//! refused in the one error shape with nothing written.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::Api;
use fleetban_server::auth::Role;
use fleetban_server::store::FeedStatus;
use serde_json::{json, Value};

async fn feed_bans(api: &Api, feed: &str) -> Vec<String> {
    let mut v: Vec<String> = api
        .service
        .snapshot()
        .await
        .expect("snapshot")
        .bans
        .into_iter()
        .filter(|d| d.creator == format!("feed:{feed}"))
        .map(|d| d.target.to_string())
        .collect();
    v.sort();
    v
}

fn names(feeds: &Value) -> Vec<String> {
    feeds
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect()
}

async fn feeds_are_added_refreshed_and_removed(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    let viewer = api.user("vera", Role::Viewer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("block.txt");
    std::fs::write(&list, "# ours\n192.0.2.10\n198.51.100.0/24\n").expect("write");
    let path = list.display().to_string();

    let body = json!({"name": "ours", "path": path, "interval": "10m", "bantime": "1d"});
    api.post("/api/v1/feeds", &viewer, body.clone())
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api.post("/api/v1/feeds", &op, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["name"], "ours");
    assert_eq!(v["source"], path);
    assert_eq!(v["interval_seconds"], 600);
    assert_eq!(v["bantime_seconds"], 86_400);
    assert_eq!(v["added_by"], "user:otto");
    assert!(v["status"].is_null(), "not imported yet: {v}");
    api.post("/api/v1/feeds", &op, body)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Refresh: fetched and imported now.
    api.post("/api/v1/feeds/ours/refresh", &viewer, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api.post("/api/v1/feeds/ours/refresh", &op, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"]["entries"], 2, "{v}");
    assert!(v["status"]["last_error"].is_null(), "{v}");
    assert_eq!(
        feed_bans(&api, "ours").await,
        vec!["192.0.2.10/32", "198.51.100.0/24"]
    );
    // A list gone bad changes nothing and says why.
    std::fs::remove_file(&list).expect("remove");
    let v = api
        .post("/api/v1/feeds/ours/refresh", &op, json!({}))
        .await
        .json();
    assert!(
        v["status"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read")),
        "{v}"
    );
    assert_eq!(feed_bans(&api, "ours").await.len(), 2, "its bans stay");
    api.post("/api/v1/feeds/nope/refresh", &op, json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let listed = api.get("/api/v1/feeds", &viewer).await.json();
    assert_eq!(names(&listed), vec!["ours"]);

    // Removed: its bans are revoked, and it is gone from the list.
    api.call(Method::DELETE, "/api/v1/feeds/ours", Some(&viewer), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .call(Method::DELETE, "/api/v1/feeds/ours", Some(&op), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["revoked"], 2);
    assert!(feed_bans(&api, "ours").await.is_empty());
    assert_eq!(api.get("/api/v1/feeds", &viewer).await.json(), json!([]));
    api.call(Method::DELETE, "/api/v1/feeds/ours", Some(&op), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // The revocations are decisions like any other, with who made them.
    let revokes = api
        .get("/api/v1/decisions?status=revoked&limit=10", &viewer)
        .await
        .json();
    assert_eq!(
        revokes["items"].as_array().map(Vec::len),
        Some(2),
        "{revokes}"
    );

    let admin = api.user("root", Role::Admin).await;
    let audit = api
        .get("/api/v1/audit?actor=user:otto&limit=100", &admin)
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for (action, n) in [("feed.add", 1), ("feed.refresh", 2), ("feed.remove", 1)] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            n,
            "{action}: {actions:?}"
        );
    }
}

async fn bad_feeds_are_refused_and_nothing_written(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    for (body, says) in [
        (
            json!({"name": "x", "url": "ftp://lists.example/x"}),
            "url: ",
        ),
        (json!({"name": "x", "url": "file:///etc/passwd"}), "url: "),
        (
            json!({"name": "x", "path": "/l.txt", "interval": "10s"}),
            "interval: ",
        ),
        (
            json!({"name": "x", "path": "/l.txt", "interval": "often"}),
            "interval: ",
        ),
        (json!({"name": "x", "path": "l.txt"}), "absolute"),
        (json!({"name": "a b", "path": "/l.txt"}), "name: "),
        (json!({"name": "", "path": "/l.txt"}), "name: "),
        (json!({"name": "x"}), "either url or path"),
        (
            json!({"name": "x", "path": "/l", "url": "https://h/l"}),
            "either url or path",
        ),
        (
            json!({"name": "x", "path": "/l", "bantime": "0s"}),
            "bantime: ",
        ),
        (
            json!({"name": "x", "path": "/l", "max_invalid_percent": 101}),
            "max_invalid_percent: ",
        ),
    ] {
        let r = api.post("/api/v1/feeds", &op, body.clone()).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    for (body, code) in [
        (
            json!({"name": "x", "path": "/l", "colour": "red"}),
            "invalid_body",
        ),
        (json!({"name": 7, "path": "/l"}), "invalid_body"),
        (
            json!({"name": "x", "path": "/l", "max_invalid_percent": 300}),
            "invalid_body",
        ),
    ] {
        let r = api.post("/api/v1/feeds", &op, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(
            r.json()["error"]["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("invalid")),
            "{code}: {}",
            r.text
        );
    }
    assert!(api.service.stored_feeds().await.expect("feeds").is_empty());
    assert_eq!(api.get("/api/v1/feeds", &op).await.json(), json!([]));

    // A name another replica's configuration file uses is taken.
    api.store
        .put_feed_status(&FeedStatus {
            name: "elsewhere".into(),
            last_attempt: common::t0(),
            last_success: Some(common::t0()),
            entries: 1,
            invalid_lines: 0,
            last_error: String::new(),
        })
        .await
        .expect("status");
    let r = api
        .post(
            "/api/v1/feeds",
            &op,
            json!({"name": "elsewhere", "path": "/l.txt"}),
        )
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(api.service.stored_feeds().await.expect("feeds").is_empty());
}

async fn allowlist_entries_carry_comments(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    let viewer = api.user("vera", Role::Viewer).await;
    let r = api
        .post(
            "/api/v1/allowlists",
            &op,
            json!({"network": "192.0.2.0/28", "comment": "uptime monitoring"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.post("/api/v1/allowlists", &op, json!({"network": "10.0.0.0/8"}))
        .await;
    let lists = api.get("/api/v1/allowlists", &viewer).await.json();
    assert_eq!(
        lists["global"],
        json!([
            {"network": "192.0.2.0/28", "comment": "uptime monitoring"},
            {"network": "10.0.0.0/8", "comment": null},
        ])
    );
    assert_eq!(api.service.policy().allowlist.global.len(), 2);

    let patch = |body: Value, token: &str| {
        let token = token.to_owned();
        let api = &api;
        async move {
            api.call(
                Method::PATCH,
                "/api/v1/allowlists",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    patch(json!({"network": "10.0.0.0/8", "comment": "x"}), &viewer)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = patch(json!({"network": "10.0.0.0/8", "comment": "our LAN"}), &op).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["global"][1]["comment"], "our LAN");
    let r = patch(json!({"network": "192.0.2.0/28", "comment": ""}), &op).await;
    assert_eq!(r.json()["global"][0]["comment"], Value::Null);
    patch(json!({"network": "203.0.113.1", "comment": "x"}), &op)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    patch(json!({"network": "10.0.0.0/8", "comment": "a\nb"}), &op)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    patch(
        json!({"network": "10.0.0.0/8", "comment": "x".repeat(201)}),
        &op,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    patch(json!({"network": "10.0.0.0/8"}), &op)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    let lists = api.get("/api/v1/allowlists", &viewer).await.json();
    assert_eq!(lists["global"][1]["comment"], "our LAN", "nothing written");
    // The stored rules stay readable by the policy parser, and the
    // correlation keeps using both entries.
    let rules = api.get("/api/v1/policies/rules", &viewer).await.json();
    assert!(
        rules["rules"]
            .as_str()
            .is_some_and(|r| r.contains("our LAN")),
        "{rules}"
    );
    assert_eq!(api.service.policy().allowlist.global.len(), 2);
    let r = api
        .call(
            Method::DELETE,
            "/api/v1/allowlists?network=10.0.0.0/8",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["global"].as_array().map(Vec::len), Some(1));
}

on_both!(
    feeds_are_added_refreshed_and_removed,
    bad_feeds_are_refused_and_nothing_written,
    allowlist_entries_carry_comments,
);
