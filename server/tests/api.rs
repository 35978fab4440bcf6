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
use fleetban_server::store::{AgentInfo, NewEvent};
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
        .call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let refreshed = r.json();
    let access2 = refreshed["access_token"].as_str().expect("a").to_owned();
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
    assert_eq!(api.get("/api/v1/auth/me", &access2).await.status, StatusCode::OK);
    // Replaying the old refresh token revokes the session: both access
    // tokens of it stop working.
    let r = api
        .call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh})))
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
    let r = api.call(Method::POST, "/api/v1/auth/logout", Some(access), None).await;
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
    assert_eq!(api.get("/api/v1/auth/me", &admin).await.status, StatusCode::OK);

    // Wrong password, unknown user: the same answer.
    let wrong = api
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "alice", "password": "not the password"})))
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "bad_credentials");
    let unknown = api
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "mallory", "password": "not the password"})))
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
    for a in ["user.create", "auth.login", "auth.logout", "auth.login_failed", "auth.session_revoked"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

async fn login_throttling(api: Api) {
    api.accounts
        .add_user("bob", "correct horse battery", Role::Viewer, "cli", None)
        .await
        .expect("user");
    for _ in 0..5 {
        let r = api.request(login_from("bob", "wrong password!", "192.0.2.1")).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "bad_credentials");
    }
    // Locked, even with the right password, from anywhere.
    let r = api.request(login_from("bob", "correct horse battery", "192.0.2.2")).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let retry: i64 = r.headers[header::RETRY_AFTER].to_str().expect("h").parse().expect("secs");
    assert!(retry > 0 && retry <= 900, "{retry}");
    api.clock.advance(Duration::minutes(16));
    let r = api.request(login_from("bob", "correct horse battery", "192.0.2.2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // One address trying many names is locked out too; others are not.
    for i in 0..20 {
        let r = api.request(login_from(&format!("guess{i}"), "wrong password!", "203.0.113.5")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    api.request(login_from("bob", "correct horse battery", "203.0.113.5"))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let r = api.request(login_from("bob", "correct horse battery", "198.51.100.1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn expired_tampered_and_revoked_tokens(api: Api) {
    let admin = api.user("alice", Role::Admin).await;
    let u = api.store.user_by_name("alice").await.expect("user").expect("some");
    let fleetban_server::auth::Principal::User { session, .. } =
        api.accounts.authenticate(&admin).await.expect("principal")
    else {
        panic!("a user")
    };
    let now = api.clock.0.lock().expect("clock").to_owned();
    let expired = api
        .accounts
        .issue_access("alice", u.id, Role::Admin, session, now - Duration::hours(1), now - Duration::seconds(1))
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
    assert_eq!(api.get("/api/v1/decisions", &tok).await.status, StatusCode::OK);
    let listed = api.get("/api/v1/tokens", &admin).await.json();
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert!(listed[0]["last_used_at"].is_string());
    assert!(!listed.to_string().contains(&tok), "secrets are never listed");
    let r = api.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.get("/api/v1/decisions", &tok)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    let expires = (now + Duration::hours(1)).to_rfc3339();
    let r = api
        .post("/api/v1/tokens", &admin, json!({"name": "short", "scopes": ["agents:read"], "expires_at": expires}))
        .await;
    let short = r.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(api.get("/api/v1/agents", &short).await.status, StatusCode::OK);
    api.clock.advance(Duration::hours(1));
    api.get("/api/v1/agents", &short)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");

    // A disabled user's tokens stop working at once.
    let viewer = api.user("vic", Role::Viewer).await;
    let admin = api.login("alice").await["access_token"].as_str().expect("a").to_owned();
    let r = api.call(Method::DELETE, "/api/v1/users/vic", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.get("/api/v1/decisions", &viewer)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    // Tokens cannot manage users or tokens.
    api.post("/api/v1/tokens", &admin, json!({"name": "x", "scopes": ["users:write"]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
}

on_both!(
    login_refresh_logout,
    login_throttling,
    expired_tampered_and_revoked_tokens,
);
