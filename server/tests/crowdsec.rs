//! CrowdSec bouncer compatibility through the real router: bouncer keys,
//! `/v1/decisions/stream` (startup, new, deleted on revocation and expiry)
//! and `/v1/decisions`.

#[macro_use]
mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Duration;
use common::Api;
use fleetban_server::auth::Role;
use serde_json::{json, Value};

async fn pull(api: &Api, key: &str, path: &str) -> common::Reply {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("X-Api-Key", key)
        .body(Body::empty())
        .expect("request");
    api.request(req).await
}

fn values(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn bouncer_stream_and_live_mode(api: Api) {
    let admin = api.user("root", Role::Admin).await;
    let r = api
        .post("/api/v1/bouncers", &admin, json!({"name": "fw-1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.json()["key"].as_str().expect("key").to_owned();
    let d1 = api
        .post(
            "/api/v1/decisions",
            &admin,
            json!({"target": "192.0.2.1", "reason": "x", "duration": "2h"}),
        )
        .await
        .json();
    api.post(
        "/api/v1/decisions",
        &admin,
        json!({"target": "198.51.100.0/24", "reason": "x", "duration": "permanent"}),
    )
    .await;

    // Keys: none, wrong, a user's token: refused.
    for k in ["", "fbb_wrong", admin.as_str()] {
        pull(&api, k, "/v1/decisions/stream?startup=true")
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    // A bouncer key is no API token.
    api.get("/api/v1/decisions", &key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");

    let r = pull(&api, &key, "/v1/decisions/stream?startup=true").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = r.json();
    assert_eq!(values(&s["new"]), ["192.0.2.1", "198.51.100.0/24"]);
    assert_eq!(s["deleted"], json!([]));
    let ip = s["new"]
        .as_array()
        .expect("new")
        .iter()
        .find(|d| d["value"] == "192.0.2.1")
        .expect("ip")
        .clone();
    assert_eq!(ip["scope"], "Ip");
    assert_eq!(ip["type"], "ban");
    assert_eq!(ip["origin"], "manual");
    assert_eq!(ip["duration"], "2h0m0s");
    assert_eq!(ip["scenario"], "fleetban/manual");
    let range = s["new"]
        .as_array()
        .expect("new")
        .iter()
        .find(|d| d["value"] != "192.0.2.1")
        .expect("range")
        .clone();
    assert_eq!(range["scope"], "Range");

    // Nothing changed: nothing new.
    let s = pull(&api, &key, "/v1/decisions/stream").await.json();
    assert_eq!((values(&s["new"]), values(&s["deleted"])), (vec![], vec![]));

    // A new ban, a revocation, an expiry.
    api.clock.advance(Duration::minutes(1));
    api.post(
        "/api/v1/decisions",
        &admin,
        json!({"target": "2001:db8::1", "reason": "x", "duration": "1h"}),
    )
    .await;
    let id = d1["id"].as_i64().expect("id");
    let r = api
        .post(&format!("/api/v1/decisions/{id}/revoke"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = pull(&api, &key, "/v1/decisions/stream").await.json();
    assert_eq!(values(&s["new"]), ["2001:db8::1"]);
    assert_eq!(values(&s["deleted"]), ["192.0.2.1"]);
    assert_eq!(s["deleted"][0]["id"], id, "deleted under the ban's id");
    api.clock.advance(Duration::minutes(61));
    let s = pull(&api, &key, "/v1/decisions/stream").await.json();
    assert_eq!(
        (values(&s["new"]), values(&s["deleted"])),
        (vec![], vec!["2001:db8::1".to_owned()])
    );
    // Scopes as bouncers ask for them.
    let s = pull(&api, &key, "/v1/decisions/stream?startup=true&scopes=ip")
        .await
        .json();
    assert_eq!(values(&s["new"]), Vec::<String>::new());
    let s = pull(
        &api,
        &key,
        "/v1/decisions/stream?startup=true&scopes=ip,range&origins=manual",
    )
    .await
    .json();
    assert_eq!(values(&s["new"]), ["198.51.100.0/24"]);

    // Live mode.
    let r = pull(&api, &key, "/v1/decisions?ip=198.51.100.7").await;
    assert_eq!(values(&r.json()), ["198.51.100.0/24"]);
    let r = pull(&api, &key, "/v1/decisions?ip=203.0.113.1").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "null"));
    pull(&api, &key, "/v1/decisions?ip=nonsense")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(
        values(&pull(&api, &key, "/v1/decisions").await.json()),
        ["198.51.100.0/24"]
    );

    // The pull is recorded; a revoked key stops working.
    let admin = api.login("root").await["access_token"]
        .as_str()
        .expect("a")
        .to_owned();
    let listed = api.get("/api/v1/bouncers", &admin).await.json();
    assert!(listed[0]["last_pull_at"].is_string(), "{listed}");
    let r = api
        .call(Method::DELETE, "/api/v1/bouncers/fw-1", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    pull(&api, &key, "/v1/decisions")
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

on_both!(bouncer_stream_and_live_mode);
