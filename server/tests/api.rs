//! The REST API end to end through the real router, on Postgres and SQLite:
//! auth, every endpoint, the authorisation matrix, and bad input.

#[macro_use]
mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use chrono::Duration;
use common::{Api, Database};
use fleetban_server::auth::Role;
use fleetban_server::store::{AgentInfo, FeedStatus, NewEvent};
use serde_json::{json, Value};

fn login_from(name: &str, password: &str, from: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": name, "password": password}).to_string(),
        ))
        .expect("request");
    let addr: SocketAddr = format!("{from}:40000").parse().expect("addr");
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

async fn login_refresh_logout(api: Api) {
    let admin = api.user("alice", Role::Admin).await;
    let me = api.get("/api/v1/auth/me", &admin).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.json()["actor"], "user:alice");
    assert_eq!(me.json()["role"], "admin");

    let tokens = api.login("alice").await;
    let (access, refresh) = (
        tokens["access_token"].as_str().expect("a").to_owned(),
        tokens["refresh_token"].as_str().expect("r").to_owned(),
    );
    assert_eq!(tokens["token_type"], "Bearer");
    // Refresh rotates: the new pair works, the old refresh token does not.
    let r = api
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let refreshed = r.json();
    let access2 = refreshed["access_token"].as_str().expect("a").to_owned();
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
    assert_eq!(
        api.get("/api/v1/auth/me", &access2).await.status,
        StatusCode::OK
    );
    // Replaying the old refresh token revokes the session: both access
    // tokens of it stop working.
    let r = api
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    api.get("/api/v1/auth/me", &access2)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    api.get("/api/v1/auth/me", &access)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");

    // Logout ends the session at once, and its refresh token.
    let tokens = api.login("alice").await;
    let access = tokens["access_token"].as_str().expect("a");
    let r = api
        .call(Method::POST, "/api/v1/auth/logout", Some(access), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.get("/api/v1/auth/me", access)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    api.call(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": tokens["refresh_token"]})),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    // The still-live first login's session is unaffected by the others.
    assert_eq!(
        api.get("/api/v1/auth/me", &admin).await.status,
        StatusCode::OK
    );

    // Wrong password, unknown user: the same answer.
    let wrong = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "alice", "password": "not the password"})),
        )
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "bad_credentials");
    let unknown = api
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "mallory", "password": "not the password"})),
        )
        .await;
    assert_eq!(unknown.text, wrong.text);

    // Logins, failures and logouts are in the audit log.
    let audit = api.get("/api/v1/audit?limit=100", &admin).await.json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "user.create",
        "auth.login",
        "auth.logout",
        "auth.login_failed",
        "auth.session_revoked",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

async fn login_throttling(api: Api) {
    api.accounts
        .add_user("bob", "correct horse battery", Role::Viewer, "cli", None)
        .await
        .expect("user");
    for _ in 0..5 {
        let r = api
            .request(login_from("bob", "wrong password!", "192.0.2.1"))
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED, "bad_credentials");
    }
    // Locked, even with the right password, from anywhere.
    let r = api
        .request(login_from("bob", "correct horse battery", "192.0.2.2"))
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let retry: i64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .expect("h")
        .parse()
        .expect("secs");
    assert!(retry > 0 && retry <= 900, "{retry}");
    api.clock.advance(Duration::minutes(16));
    let r = api
        .request(login_from("bob", "correct horse battery", "192.0.2.2"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // One address trying many names is locked out too; others are not.
    for i in 0..20 {
        let r = api
            .request(login_from(
                &format!("guess{i}"),
                "wrong password!",
                "203.0.113.5",
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    api.request(login_from("bob", "correct horse battery", "203.0.113.5"))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let r = api
        .request(login_from("bob", "correct horse battery", "198.51.100.1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn expired_tampered_and_revoked_tokens(api: Api) {
    let admin = api.user("alice", Role::Admin).await;
    let u = api
        .store
        .user_by_name("alice")
        .await
        .expect("user")
        .expect("some");
    let fleetban_server::auth::Principal::User { session, .. } =
        api.accounts.authenticate(&admin).await.expect("principal")
    else {
        panic!("a user")
    };
    let now = api.clock.0.lock().expect("clock").to_owned();
    let expired = api
        .accounts
        .issue_access(
            "alice",
            u.id,
            Role::Admin,
            session,
            now - Duration::hours(1),
            now - Duration::seconds(1),
        )
        .expect("sign");
    api.get("/api/v1/decisions", &expired)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "token_expired");
    // A valid token edited: a role claim raised, the signature kept.
    let mut parts: Vec<String> = admin.split('.').map(str::to_owned).collect();
    parts[1].insert(5, 'A');
    api.get("/api/v1/decisions", &parts.join("."))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    api.get("/api/v1/decisions", "not-a-token")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    let r = api.call(Method::GET, "/api/v1/decisions", None, None).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    api.get("/api/v1/decisions", "fbt_unknown")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");

    // An API token: works, then is revoked; another expires.
    let tok = api.token(&admin, "soc", &["decisions:read"]).await;
    assert_eq!(
        api.get("/api/v1/decisions", &tok).await.status,
        StatusCode::OK
    );
    let listed = api.get("/api/v1/tokens", &admin).await.json();
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert!(listed[0]["last_used_at"].is_string());
    assert!(
        !listed.to_string().contains(&tok),
        "secrets are never listed"
    );
    let r = api
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.get("/api/v1/decisions", &tok)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    let expires = (now + Duration::hours(1)).to_rfc3339();
    let r = api
        .post(
            "/api/v1/tokens",
            &admin,
            json!({"name": "short", "scopes": ["agents:read"], "expires_at": expires}),
        )
        .await;
    let short = r.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(
        api.get("/api/v1/agents", &short).await.status,
        StatusCode::OK
    );
    api.clock.advance(Duration::hours(1));
    api.get("/api/v1/agents", &short)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");

    // A disabled user's tokens stop working at once.
    let viewer = api.user("vic", Role::Viewer).await;
    let admin = api.login("alice").await["access_token"]
        .as_str()
        .expect("a")
        .to_owned();
    let r = api
        .call(Method::DELETE, "/api/v1/users/vic", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.get("/api/v1/decisions", &viewer)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    // A role change applies to the next request.
    let op = api.user("otto", Role::Operator).await;
    let write = json!({"target": "192.0.2.50", "reason": "x"});
    assert_eq!(
        api.post("/api/v1/decisions", &op, write.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    let r = api
        .call(
            Method::PATCH,
            "/api/v1/users/otto",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.post("/api/v1/decisions", &op, write)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    api.call(
        Method::PATCH,
        "/api/v1/users/otto",
        Some(&admin),
        Some(json!({"role": "god"})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    api.call(
        Method::PATCH,
        "/api/v1/users/nobody",
        Some(&admin),
        Some(json!({"role": "viewer"})),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");

    // Tokens cannot manage users or tokens.
    api.post(
        "/api/v1/tokens",
        &admin,
        json!({"name": "x", "scopes": ["users:write"]}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
}

async fn decisions_endpoints(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    let viewer = api.user("vera", Role::Viewer).await;
    let version = api.service.subscribe();
    let now = api.clock.now_for_test();

    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "192.0.2.1", "reason": "brute force"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let first = r.json();
    assert_eq!(first["target"], "192.0.2.1");
    assert_eq!(first["origin"], "manual");
    assert_eq!(first["creator"], "user:otto");
    assert_eq!(first["status"], "active");
    assert_eq!(first["scope"], "fleet");
    assert_eq!(first["expires_at"], json!(now + Duration::hours(4)));
    // Agents get it: the block list moved on and holds it.
    assert!(version.has_changed().expect("open"));
    let pushed = api.service.changes_since(0).await.expect("changes");
    assert_eq!(
        pushed
            .added
            .iter()
            .map(|d| d.target.to_string())
            .collect::<Vec<_>>(),
        ["192.0.2.1/32"]
    );

    let r = api
        .post("/api/v1/decisions", &op, json!({"target": "198.51.100.0/24", "reason": "scanner, net", "duration": "permanent", "group": "web"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["expires_at"], Value::Null);
    assert_eq!(r.json()["scope"], "group:web");
    api.clock.advance(Duration::seconds(1));
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "2001:db8::7", "reason": "x", "duration": "30m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v6 = r.json()["id"].as_i64().expect("id");
    api.clock.advance(Duration::seconds(1));
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "203.0.113.9", "reason": "x", "duration": "1h"}),
        )
        .await;
    let last = r.json()["id"].as_i64().expect("id");

    let items = |r: common::Reply| -> Vec<Value> {
        r.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.text))
            .clone()
    };
    let targets = |v: &[Value]| {
        v.iter()
            .map(|d| d["target"].as_str().expect("t").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        targets(&items(api.get("/api/v1/decisions", &viewer).await)),
        ["203.0.113.9", "2001:db8::7", "198.51.100.0/24", "192.0.2.1"]
    );
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?sort=oldest&limit=1", &viewer)
                .await
        )),
        ["192.0.2.1"]
    );
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?ip=198.51.100.77", &viewer).await
        )),
        ["198.51.100.0/24"]
    );
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?ip=2001:db8::/32", &viewer).await
        )),
        ["2001:db8::7"]
    );
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?scope=group:web", &viewer).await
        )),
        ["198.51.100.0/24"]
    );
    assert_eq!(
        items(api.get("/api/v1/decisions?origin=local", &viewer).await).len(),
        0
    );
    assert_eq!(
        items(api.get("/api/v1/decisions?agent=a", &viewer).await).len(),
        0
    );
    let since = (now + Duration::seconds(1))
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(
        items(
            api.get(&format!("/api/v1/decisions?since={since}"), &viewer)
                .await
        )
        .len(),
        2
    );

    // Pages: every ban once.
    let mut seen = Vec::new();
    let mut path = "/api/v1/decisions?limit=3".to_owned();
    loop {
        let page = api.get(&path, &viewer).await.json();
        seen.extend(targets(page["items"].as_array().expect("items")));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/decisions?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);

    let one = api.get(&format!("/api/v1/decisions/{v6}"), &viewer).await;
    assert_eq!(one.json()["target"], "2001:db8::7");

    // Revoke, and again.
    let r = api
        .post(
            &format!("/api/v1/decisions/{v6}/revoke"),
            &op,
            json!({"reason": "false positive"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(r.json()["revoked"]["by"], "user:otto");
    assert_eq!(r.json()["revoked"]["reason"], "false positive");
    api.post(&format!("/api/v1/decisions/{v6}/revoke"), &op, json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let snapshot = api.service.snapshot().await.expect("snapshot");
    assert!(!snapshot.bans.iter().any(|d| d.id == v6), "agents drop it");
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?status=revoked", &viewer).await
        )),
        ["2001:db8::7"]
    );
    // The revocation is not a decision of its own here.
    let revocation = api
        .get(&format!("/api/v1/decisions/{v6}"), &viewer)
        .await
        .json()["revoked"]["id"]
        .as_i64()
        .expect("id");
    api.get(&format!("/api/v1/decisions/{revocation}"), &viewer)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    // Expiry shows. (Access tokens last 15 minutes: log in again.)
    api.clock.advance(Duration::hours(1));
    let viewer = api.login("vera").await["access_token"]
        .as_str()
        .expect("a")
        .to_owned();
    let op = api.login("otto").await["access_token"]
        .as_str()
        .expect("a")
        .to_owned();
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?status=expired", &viewer).await
        )),
        ["203.0.113.9"]
    );
    assert_eq!(
        targets(&items(
            api.get("/api/v1/decisions?status=active", &viewer).await
        )),
        ["198.51.100.0/24", "192.0.2.1"]
    );

    // Bulk.
    let r = api
        .post("/api/v1/decisions/bulk", &op, json!({
            "create": [{"target": "10.9.0.1", "reason": "list"}, {"target": "10.9.0.2", "reason": "list"}],
            "revoke": [{"id": first["id"], "reason": "bulk"}]
        }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["created"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json()["revoked"][0]["status"], "revoked");
    api.post(
        "/api/v1/decisions/bulk",
        &op,
        json!({"revoke": [{"id": first["id"]}]}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    api.post(
        "/api/v1/decisions/bulk",
        &op,
        json!({"revoke": [{"id": last}, {"id": last}]}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    // Export: the active ones.
    let text = api.get("/api/v1/decisions/export", &viewer).await;
    assert!(
        text.content_type.starts_with("text/plain"),
        "{}",
        text.content_type
    );
    let mut lines: Vec<&str> = text.text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["10.9.0.1", "10.9.0.2", "198.51.100.0/24"]);
    let csv_reply = api
        .get(
            "/api/v1/decisions/export?format=csv&status=revoked",
            &viewer,
        )
        .await;
    assert!(csv_reply.content_type.starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(csv_reply.text.as_bytes());
    let headers = reader.headers().expect("headers").clone();
    assert_eq!(&headers[1], "target");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2);
    let all = api
        .get(
            "/api/v1/decisions/export?format=csv&status=active&ip=198.51.100.0/24",
            &viewer,
        )
        .await;
    let mut reader = csv::Reader::from_reader(all.text.as_bytes());
    let row = reader.records().next().expect("one").expect("row");
    assert_eq!(&row[5], "scanner, net", "commas survive quoting");
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "192.0.2.77", "reason": "=HYPERLINK(\"x\")"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let csv_reply = api
        .get("/api/v1/decisions/export?format=csv&ip=192.0.2.77", &viewer)
        .await;
    let mut reader = csv::Reader::from_reader(csv_reply.text.as_bytes());
    let row = reader.records().next().expect("one").expect("row");
    assert_eq!(
        &row[5], "'=HYPERLINK(\"x\")",
        "no formula reaches a spreadsheet"
    );

    // Audit: every change with its actor.
    let admin = api.user("root", Role::Admin).await;
    let audit = api
        .get("/api/v1/audit?actor=user:otto&limit=1000", &admin)
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "decision.create").count(),
        7
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "decision.revoke").count(),
        2
    );
}

async fn allowlisted_bans_are_refused() {
    let Some(api) =
        Api::with_rules(Database::Sqlite, "[policy]\nallowlist = [\"10.0.0.0/8\"]\n").await
    else {
        return;
    };
    let op = api.user("otto", Role::Operator).await;
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "10.1.2.3", "reason": "x"}),
        )
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "refused_by_policy");
    assert!(r.json()["error"]["message"]
        .as_str()
        .expect("m")
        .contains("allowlisted"));
    api.post("/api/v1/decisions/bulk", &op, json!({"create": [{"target": "192.0.2.1", "reason": "x"}, {"target": "10.0.0.0/16", "reason": "x"}]}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "refused_by_policy");
    assert_eq!(api.decision_count().await, 0);
}

#[tokio::test]
async fn allowlisted_bans_are_refused_on_sqlite() {
    allowlisted_bans_are_refused().await;
}

fn event(agent: &str, ip: &str, jail: &str, at: chrono::DateTime<chrono::Utc>) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::new_v4(),
        agent_id: agent.into(),
        jail: jail.into(),
        ip: ip.parse().expect("ip"),
        user: Some("root".into()),
        occurred_at: at,
    }
}

async fn events_ips_agents_stats(api: Api) {
    let viewer = api.user("vera", Role::Viewer).await;
    let now = api.clock.now_for_test();
    for id in ["web-1", "web-2"] {
        api.service
            .agent_joined(&AgentInfo {
                id: id.into(),
                hostname: format!("{id}.example"),
                version: "0.1.0".into(),
                jails: vec!["sshd".into()],
                group: String::new(),
            })
            .await
            .expect("join");
    }
    let evs = [
        event("web-1", "192.0.2.1", "sshd", now - Duration::minutes(50)),
        event("web-1", "192.0.2.1", "nginx", now - Duration::minutes(40)),
        event("web-1", "192.0.2.99", "sshd", now - Duration::minutes(30)),
    ];
    api.service
        .report("web-1", "", &evs, &[])
        .await
        .expect("report");
    let evs2 = [
        event("web-2", "192.0.2.1", "sshd", now - Duration::minutes(20)),
        event("web-2", "2001:db8::9", "sshd", now - Duration::minutes(10)),
    ];
    api.service
        .report("web-2", "", &evs2, &[])
        .await
        .expect("report");
    let op = api.user("otto", Role::Operator).await;
    api.post(
        "/api/v1/decisions",
        &op,
        json!({"target": "192.0.2.0/24", "reason": "net"}),
    )
    .await;

    let items = |v: Value| v["items"].as_array().expect("items").clone();
    assert_eq!(
        items(api.get("/api/v1/events", &viewer).await.json()).len(),
        5
    );
    let by_ip = items(api.get("/api/v1/events?ip=192.0.2.1", &viewer).await.json());
    assert_eq!(by_ip.len(), 3);
    assert_eq!(by_ip[0]["agent"], "web-2", "newest first");
    assert_eq!(
        items(
            api.get(
                "/api/v1/events?ip=192.0.2.0/24&agent=web-1&jail=sshd",
                &viewer
            )
            .await
            .json()
        )
        .len(),
        2
    );
    let since = (now - Duration::minutes(35))
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(
        items(
            api.get(&format!("/api/v1/events?since={since}"), &viewer)
                .await
                .json()
        )
        .len(),
        3
    );
    let p1 = api
        .get("/api/v1/events?limit=4&sort=oldest", &viewer)
        .await
        .json();
    let c = p1["next_cursor"].as_str().expect("cursor");
    let p2 = items(
        api.get(
            &format!("/api/v1/events?limit=4&sort=oldest&cursor={c}"),
            &viewer,
        )
        .await
        .json(),
    );
    assert_eq!(p2.len(), 1);
    assert_eq!(p2[0]["ip"], "2001:db8::9");

    let agg = api
        .get("/api/v1/events/aggregate?by=ip", &viewer)
        .await
        .json();
    assert_eq!(agg[0]["key"], "192.0.2.1");
    assert_eq!(agg[0]["count"], 3);
    let agg = api
        .get("/api/v1/events/aggregate?by=agent&ip=192.0.2.0/24", &viewer)
        .await
        .json();
    assert_eq!(
        agg,
        json!([
            {"key": "web-1", "count": 3, "first": now - Duration::minutes(50), "last": now - Duration::minutes(30)},
            {"key": "web-2", "count": 1, "first": now - Duration::minutes(20), "last": now - Duration::minutes(20)},
        ])
    );

    let report = api.get("/api/v1/ips/192.0.2.1", &viewer).await.json();
    assert_eq!(report["banned"], true);
    assert_eq!(report["decisions"][0]["target"], "192.0.2.0/24");
    assert_eq!(report["events_by_agent"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        report["events_by_jail"][0],
        json!({"key": "sshd", "count": 2, "first": now - Duration::minutes(50), "last": now - Duration::minutes(20)})
    );
    assert_eq!(report["recent_events"].as_array().map(Vec::len), Some(3));
    let clean = api.get("/api/v1/ips/198.51.100.1", &viewer).await.json();
    assert_eq!(
        (clean["banned"].clone(), clean["recent_events"].clone()),
        (json!(false), json!([]))
    );

    let agents = api.get("/api/v1/agents", &viewer).await.json();
    assert_eq!(agents.as_array().map(Vec::len), Some(2));
    assert_eq!(agents[0]["health"], "online");
    assert_eq!(agents[0]["lag"], 1, "one decision it has not applied");
    assert!(
        agents[0]["lag_seconds"].as_i64().is_some_and(|s| s >= 0),
        "{}",
        agents[0]
    );
    assert_eq!(agents[0]["firewall"], json!(null), "not reported yet");
    assert_eq!(agents[0]["revoked_at"], json!(null));
    // A heartbeat with the firewall's state reaches the agent's view.
    api.service
        .agent_firewall(
            "web-1",
            &fleetban_server::store::FirewallState {
                enforced: 41,
                drift_total: 2,
                backend: "nftables".into(),
            },
        )
        .await
        .expect("firewall");
    api.clock.advance(Duration::minutes(1));
    let one = api.get("/api/v1/agents/web-1", &viewer).await.json();
    assert_eq!(
        one["firewall"],
        json!({"enforced": 41, "drift_total": 2, "backend": "nftables"})
    );
    assert_eq!(one["lag"], 1);
    assert!(
        one["lag_seconds"].as_i64().is_some_and(|s| s >= 60),
        "behind for a minute at least: {one}"
    );
    api.service
        .agent_seen("web-1", Some(1))
        .await
        .expect("seen");
    api.clock.advance(Duration::minutes(5));
    let one = api.get("/api/v1/agents/web-1", &viewer).await.json();
    assert_eq!(one["lag_seconds"], 0, "up to date");
    assert_eq!(
        (
            one["health"].clone(),
            one["lag"].clone(),
            one["hostname"].clone()
        ),
        (json!("offline"), json!(0), json!("web-1.example"))
    );

    let until = now.to_rfc3339().replace('+', "%2B");
    let stats = api
        .get(
            &format!("/api/v1/stats?series=events&step=1h&until={until}"),
            &viewer,
        )
        .await
        .json();
    let buckets = stats["buckets"].as_array().expect("buckets");
    assert_eq!(stats["step_seconds"], 3600);
    assert_eq!(buckets.len(), 24);
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_u64().expect("n"))
            .sum::<u64>(),
        5
    );
    // A resent batch is stored and counted once; per-minute buckets agree.
    api.service
        .report("web-1", "", &evs, &[])
        .await
        .expect("resend");
    let since = (now - Duration::hours(1)).to_rfc3339().replace('+', "%2B");
    let stats = api
        .get(
            &format!("/api/v1/stats?series=events&step=1m&since={since}&until={until}"),
            &viewer,
        )
        .await
        .json();
    let counts: Vec<u64> = stats["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_u64().expect("n"))
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(counts, vec![1; 5]);
    let stats = api
        .get("/api/v1/stats?series=decisions&step=10m", &viewer)
        .await
        .json();
    assert_eq!(
        stats["buckets"]
            .as_array()
            .expect("b")
            .iter()
            .map(|b| b["count"].as_u64().expect("n"))
            .sum::<u64>(),
        1
    );
}

async fn live_stream(api: Api) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let viewer = api.user("vera", Role::Viewer).await;
    let op = api.user("otto", Role::Operator).await;
    let req = Request::builder()
        .uri(format!("/api/v1/stream?access_token={viewer}"))
        .body(Body::empty())
        .expect("request");
    let res = api.router.clone().oneshot(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let mut body = res.into_body();
    api.service
        .agent_joined(&AgentInfo {
            id: "web-1".into(),
            hostname: "w".into(),
            version: "0".into(),
            jails: vec![],
            group: String::new(),
        })
        .await
        .expect("join");
    let now = api.clock.now_for_test();
    api.service
        .report(
            "web-1",
            "",
            &[event("web-1", "192.0.2.5", "sshd", now)],
            &[],
        )
        .await
        .expect("report");
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "192.0.2.5", "reason": "live"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut text = String::new();
    let read = async {
        while !text.contains("\n\n") || !text.contains("event: decision") {
            let frame = body.frame().await.expect("stream open").expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    // A bound so a broken stream fails instead of hanging the suite.
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("a decision arrives");
    let data = text
        .lines()
        .skip_while(|l| *l != "event: decision")
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    let d: Value = serde_json::from_str(data).expect("json");
    assert_eq!(
        (d["kind"].clone(), d["target"].clone()),
        (json!("ban"), json!("192.0.2.5"))
    );
    // A viewer holds events:read, so the event came first.
    assert!(
        text.find("event: event").expect("event") < text.find("event: decision").expect("decision"),
        "{text}"
    );
}

async fn openapi_and_viewer(api: Api) {
    let r = api
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let spec = r.json();
    assert!(spec["openapi"].as_str().expect("version").starts_with("3."));
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let list = &spec["paths"]["/api/v1/decisions"]["get"];
    let params: Vec<&str> = list["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "ip", "origin", "jail", "agent", "status", "since", "until", "limit", "cursor", "sort",
    ] {
        assert!(params.contains(&p), "{p} in {params:?}");
    }
    let docs = api.call(Method::GET, "/api/v1/docs", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("openapi.json"));
    assert!(
        !docs.text.contains("http://") && !docs.text.contains("https://"),
        "the viewer loads nothing from elsewhere"
    );
}

async fn policies_jails_allowlists_feeds(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    let viewer = api.user("vera", Role::Viewer).await;
    let put = |path: &'static str, body: Value| {
        let api = &api;
        let op = op.clone();
        async move { api.call(Method::PUT, path, Some(&op), Some(body)).await }
    };

    // Jail rules: agents of the group get them at once.
    let r = put(
        "/api/v1/policies/jails/web/sshd",
        json!({"maxretry": 3, "findtime": "10m", "bantime": "1h"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"group": "web", "jail": "sshd", "enabled": true, "maxretry": 3, "findtime": "10m", "bantime": "1h"})
    );
    let r = put("/api/v1/policies/jails/*/nginx", json!({"enabled": false})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let web = api.service.jail_policy_for("web");
    let sshd = web
        .jails
        .iter()
        .find(|j| j.jail == "sshd")
        .expect("sshd for web");
    assert_eq!(sshd.maxretry, Some(3));
    assert_eq!(sshd.bantime, Some(Duration::hours(1)));
    assert!(web.jails.iter().any(|j| j.jail == "nginx" && !j.enabled));
    assert!(api
        .service
        .jail_policy_for("db")
        .jails
        .iter()
        .all(|j| j.jail != "sshd"));
    let list = api.get("/api/v1/policies/jails", &viewer).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(
        list.json().as_array().map(Vec::len),
        Some(2),
        "{}",
        list.text
    );
    let del = api
        .call(
            Method::DELETE,
            "/api/v1/policies/jails/web/sshd",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.text);
    api.call(
        Method::DELETE,
        "/api/v1/policies/jails/web/sshd",
        Some(&op),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(api
        .service
        .jail_policy_for("web")
        .jails
        .iter()
        .all(|j| j.jail != "sshd"));

    // Correlation rules, as TOML.
    let rules = "[policy]\n[policy.threshold]\nhosts = 2\nwindow = \"10m\"\nbantime = \"1h\"\n";
    let r = put("/api/v1/policies/rules", json!({"rules": rules})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let got = api.get("/api/v1/policies/rules", &viewer).await.json();
    assert_eq!(got["rules"], rules);
    assert_eq!(got["structured"]["policy"]["threshold"]["hosts"], 2);
    assert_eq!(got["policy_version"], api.service.policy_version());
    assert!(api.service.policy().threshold.is_some());

    // Allowlists: stored in the rules, used by correlation at once.
    let ban = |target: &'static str| {
        let api = &api;
        let op = op.clone();
        async move {
            api.post(
                "/api/v1/decisions",
                &op,
                json!({"target": target, "reason": "test"}),
            )
            .await
        }
    };
    let r = api
        .post("/api/v1/allowlists", &op, json!({"network": "10.0.0.0/8"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json()["global"],
        json!([{"network": "10.0.0.0/8", "comment": null}])
    );
    let r = api
        .post(
            "/api/v1/allowlists",
            &op,
            json!({"network": "198.51.100.7", "group": "office"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.post("/api/v1/allowlists", &op, json!({"network": "10.0.0.0/8"}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let lists = api.get("/api/v1/allowlists", &viewer).await.json();
    assert_eq!(
        lists["groups"],
        json!({"office": [{"network": "198.51.100.7/32", "comment": null}]})
    );
    let policy = api.service.policy();
    assert_eq!(
        policy.allowlist.global,
        vec!["10.0.0.0/8".parse().expect("net")]
    );
    assert_eq!(policy.allowlist.groups["office"].len(), 1);
    assert!(
        api.service.policy().threshold.is_some(),
        "other rules are kept"
    );
    ban("10.1.2.3")
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "refused_by_policy");
    let r = api
        .call(
            Method::DELETE,
            "/api/v1/allowlists?network=10.0.0.0/8",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["global"], json!([]));
    api.call(
        Method::DELETE,
        "/api/v1/allowlists?network=10.0.0.0/8",
        Some(&op),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let r = api
        .call(
            Method::DELETE,
            "/api/v1/allowlists?network=198.51.100.7/32&group=office",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["groups"], json!({}));
    assert_eq!(ban("10.1.2.3").await.status, StatusCode::CREATED);

    // Feeds: none configured here; a status another replica recorded.
    assert_eq!(api.get("/api/v1/feeds", &viewer).await.json(), json!([]));
    api.store
        .put_feed_status(&FeedStatus {
            name: "spamhaus".into(),
            last_attempt: common::t0(),
            last_success: None,
            entries: 0,
            invalid_lines: 0,
            last_error: "HTTP 503".into(),
        })
        .await
        .expect("status");
    let feeds = api.get("/api/v1/feeds", &viewer).await.json();
    assert_eq!(feeds[0]["name"], "spamhaus");
    assert_eq!(feeds[0]["configured"], false);
    assert_eq!(feeds[0]["status"]["last_error"], "HTTP 503");

    // Every change is in the audit log with its actor.
    let admin = api.user("root", Role::Admin).await;
    let audit = api
        .get("/api/v1/audit?actor=user:otto&limit=1000", &admin)
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for (action, n) in [
        ("policy.jail.set", 2),
        ("policy.jail.remove", 1),
        ("policy.rules.set", 1),
        ("allowlist.add", 2),
        ("allowlist.remove", 2),
    ] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            n,
            "{action}: {actions:?}"
        );
    }
}

async fn agents_revoke_and_enrollment_tokens(api: Api) {
    let admin = api.user("root", Role::Admin).await;
    let op = api.user("otto", Role::Operator).await;
    let r = api
        .post(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"ttl": "2h", "uses": 3, "group": "web"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let made = r.json();
    let token = made["token"].as_str().expect("token").to_owned();
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(made["expires_at"].clone()).expect("expires_at");
    assert_eq!(expires, common::t0() + Duration::hours(2));
    assert_eq!(made["max_uses"], 3);
    assert_eq!(made["group"], "web");
    assert_eq!(made["server_url"], common::AGENT_URL);
    api.get("/api/v1/enrollment-tokens", &op)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    // An agent enrolls with it, then is revoked through the API.
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let enrolled = api
        .identities
        .enroll(&token, "web-1", "web-1.example", &csr)
        .await
        .expect("enroll");
    assert_eq!(enrolled.group.as_deref(), Some("web"));
    let list = api.get("/api/v1/enrollment-tokens", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.json();
    assert_eq!(items.as_array().map(Vec::len), Some(1));
    assert_eq!(items[0]["id"], made["id"]);
    assert_eq!(items[0]["uses"], 1);
    let secret = token
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or(&token);
    assert!(
        !list.text.contains(&token) && !list.text.contains(secret),
        "the list never shows a secret"
    );

    let revoked = api.identities.watch_revoked();
    api.post("/api/v1/agents/web-1/revoke", &op, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(!revoked.borrow().contains("web-1"));
    let r = api
        .call(
            Method::POST,
            "/api/v1/agents/web-1/revoke",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["agent_id"], "web-1");
    assert_eq!(v["group"], "web");
    assert!(v["revoked_at"].is_string(), "{v}");
    assert!(
        revoked.borrow().contains("web-1"),
        "open streams are told at once"
    );
    assert_eq!(
        api.store.revoked_agents().await.expect("revoked"),
        vec!["web-1".to_owned()]
    );
    api.call(
        Method::POST,
        "/api/v1/agents/web-9/revoke",
        Some(&admin),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");

    // The token is revoked: no agent enrolls with it any more, the agents
    // it enrolled stay.
    let id = made["id"].as_str().expect("id").to_owned();
    api.call(
        Method::DELETE,
        &format!("/api/v1/enrollment-tokens/{id}"),
        Some(&op),
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .call(
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["id"], made["id"]);
    assert!(r.json()["revoked_at"].is_string(), "{}", r.text);
    let listed = api.get("/api/v1/enrollment-tokens", &admin).await.json();
    assert_eq!(listed[0]["revoked_at"], r.json()["revoked_at"]);
    let refused = api
        .identities
        .enroll(&token, "web-2", "web-2.example", &csr)
        .await
        .expect_err("a revoked token enrolls nobody");
    assert!(refused.to_string().contains("revoked"), "{refused}");
    assert_eq!(
        api.get("/api/v1/enrollment-tokens", &admin).await.json()[0]["uses"],
        1,
        "a refusal uses nothing"
    );
    for missing in ["nope", "a%20b"] {
        api.call(
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{missing}"),
            Some(&admin),
            None,
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let audit = api
        .get("/api/v1/audit?actor=user:root&limit=1000", &admin)
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"enrollment_token.create"), "{actions:?}");
    assert!(actions.contains(&"agent.revoke"), "{actions:?}");
    assert!(actions.contains(&"enrollment_token.revoke"), "{actions:?}");
}

/// A manual ban of some ports: stored, shown and pushed with them; a bad
/// port list is refused and nothing is recorded.
async fn port_scoped_decisions(api: Api) {
    let op = api.user("otto", Role::Operator).await;
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "192.0.2.5", "reason": "ssh scan", "ports": "tcp/https,ssh"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["ports"], "tcp/22,443");
    let id = r.json()["id"].as_i64().expect("id");
    let got = api.get(&format!("/api/v1/decisions/{id}"), &op).await;
    assert_eq!(got.json()["ports"], "tcp/22,443", "{}", got.text);
    let pushed = api.service.changes_since(0).await.expect("changes");
    assert_eq!(pushed.added[0].ports, "tcp/22,443");
    let r = api
        .post(
            "/api/v1/decisions",
            &op,
            json!({"target": "192.0.2.6", "reason": "x"}),
        )
        .await;
    assert_eq!(r.json()["ports"], "", "{}", r.text);
    for bad in ["22", "tcp/sshh", "icmp/1", "tcp/90:80", "tcp/1:2000"] {
        let r = api
            .post(
                "/api/v1/decisions",
                &op,
                json!({"target": "192.0.2.7", "reason": "x", "ports": bad}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], "invalid_body", "{}", r.text);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("ports {bad:?}"))),
            "{}",
            r.text
        );
    }
    assert_eq!(
        api.service
            .changes_since(0)
            .await
            .expect("changes")
            .added
            .len(),
        2
    );
}

on_both!(
    port_scoped_decisions,
    login_refresh_logout,
    login_throttling,
    expired_tampered_and_revoked_tokens,
    decisions_endpoints,
    events_ips_agents_stats,
    live_stream,
    openapi_and_viewer,
    policies_jails_allowlists_feeds,
    agents_revoke_and_enrollment_tokens,
);
