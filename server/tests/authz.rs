//! The authorisation matrix: every role and every token scope against every
//! endpoint of the OpenAPI description, allowed or refused; and bad input,
//! each refused with a clear 4xx in the one error shape, nothing written.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::Api;
use fleetban_server::auth::Role;
use serde_json::{json, Value};

/// One endpoint: how to call it, and the scopes it needs (empty: any
/// authenticated caller).
struct Endpoint {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    needs: &'static [&'static str],
}

fn endpoints(n: usize, decision: i64) -> Vec<Endpoint> {
    let e =
        |method: Method, template: &'static str, path: &str, body: Option<Value>, needs| Endpoint {
            method,
            template,
            path: path.to_owned(),
            body,
            needs,
        };
    use Method as M;
    vec![
        e(M::GET, "/api/v1/auth/me", "/api/v1/auth/me", None, &[]),
        e(
            M::GET,
            "/api/v1/users",
            "/api/v1/users",
            None,
            &["users:write"],
        ),
        e(
            M::POST,
            "/api/v1/users",
            "/api/v1/users",
            Some(
                json!({"name": format!("u{n}"), "password": "correct horse battery", "role": "viewer"}),
            ),
            &["users:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/users/{name}",
            "/api/v1/users/nobody",
            None,
            &["users:write"],
        ),
        e(
            M::PATCH,
            "/api/v1/users/{name}",
            "/api/v1/users/nobody",
            Some(json!({"role": "viewer"})),
            &["users:write"],
        ),
        e(
            M::GET,
            "/api/v1/tokens",
            "/api/v1/tokens",
            None,
            &["tokens:write"],
        ),
        e(
            M::POST,
            "/api/v1/tokens",
            "/api/v1/tokens",
            Some(json!({"name": format!("t{n}"), "scopes": ["decisions:read"]})),
            &["tokens:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/tokens/{id}",
            "/api/v1/tokens/00000000-0000-4000-8000-000000000000",
            None,
            &["tokens:write"],
        ),
        e(
            M::GET,
            "/api/v1/bouncers",
            "/api/v1/bouncers",
            None,
            &["bouncers:write"],
        ),
        e(
            M::POST,
            "/api/v1/bouncers",
            "/api/v1/bouncers",
            Some(json!({"name": format!("b{n}")})),
            &["bouncers:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/bouncers/{name}",
            "/api/v1/bouncers/nobody",
            None,
            &["bouncers:write"],
        ),
        e(
            M::GET,
            "/api/v1/decisions",
            "/api/v1/decisions",
            None,
            &["decisions:read"],
        ),
        e(
            M::POST,
            "/api/v1/decisions",
            "/api/v1/decisions",
            Some(
                json!({"target": format!("198.18.{}.{}", n / 250, n % 250 + 1), "reason": "matrix"}),
            ),
            &["decisions:write"],
        ),
        e(
            M::GET,
            "/api/v1/decisions/{id}",
            &format!("/api/v1/decisions/{decision}"),
            None,
            &["decisions:read"],
        ),
        e(
            M::POST,
            "/api/v1/decisions/{id}/revoke",
            "/api/v1/decisions/999999/revoke",
            Some(json!({})),
            &["decisions:write"],
        ),
        e(
            M::POST,
            "/api/v1/decisions/bulk",
            "/api/v1/decisions/bulk",
            Some(json!({})),
            &["decisions:write"],
        ),
        e(
            M::GET,
            "/api/v1/decisions/export",
            "/api/v1/decisions/export",
            None,
            &["decisions:read"],
        ),
        e(
            M::GET,
            "/api/v1/events",
            "/api/v1/events",
            None,
            &["events:read"],
        ),
        e(
            M::GET,
            "/api/v1/events/aggregate",
            "/api/v1/events/aggregate?by=ip",
            None,
            &["events:read"],
        ),
        e(
            M::GET,
            "/api/v1/ips/{ip}",
            "/api/v1/ips/192.0.2.1",
            None,
            &["decisions:read", "events:read"],
        ),
        e(
            M::GET,
            "/api/v1/agents",
            "/api/v1/agents",
            None,
            &["agents:read"],
        ),
        e(
            M::GET,
            "/api/v1/agents/{id}",
            "/api/v1/agents/nobody",
            None,
            &["agents:read"],
        ),
        e(
            M::POST,
            "/api/v1/agents/{id}/revoke",
            "/api/v1/agents/nobody/revoke",
            None,
            &["agents:write"],
        ),
        e(
            M::GET,
            "/api/v1/enrollment-tokens",
            "/api/v1/enrollment-tokens",
            None,
            &["agents:write"],
        ),
        e(
            M::POST,
            "/api/v1/enrollment-tokens",
            "/api/v1/enrollment-tokens",
            Some(json!({"ttl": "1h", "uses": 1})),
            &["agents:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/enrollment-tokens/{id}",
            "/api/v1/enrollment-tokens/notoken",
            None,
            &["agents:write"],
        ),
        e(
            M::GET,
            "/api/v1/policies/rules",
            "/api/v1/policies/rules",
            None,
            &["policies:read"],
        ),
        e(
            M::PUT,
            "/api/v1/policies/rules",
            "/api/v1/policies/rules",
            Some(json!({"rules": "[policy]\ngroup_scope = false\n"})),
            &["policies:write"],
        ),
        e(
            M::GET,
            "/api/v1/policies/jails",
            "/api/v1/policies/jails",
            None,
            &["policies:read"],
        ),
        e(
            M::PUT,
            "/api/v1/policies/jails/{group}/{jail}",
            &format!("/api/v1/policies/jails/web/jail{n}"),
            Some(json!({"maxretry": 3})),
            &["policies:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/policies/jails/{group}/{jail}",
            "/api/v1/policies/jails/web/nojail",
            None,
            &["policies:write"],
        ),
        e(
            M::GET,
            "/api/v1/allowlists",
            "/api/v1/allowlists",
            None,
            &["policies:read"],
        ),
        e(
            M::POST,
            "/api/v1/allowlists",
            "/api/v1/allowlists",
            Some(json!({"network": format!("10.{}.{}.0/24", n / 250, n % 250)})),
            &["policies:write"],
        ),
        e(
            M::PATCH,
            "/api/v1/allowlists",
            "/api/v1/allowlists",
            Some(json!({"network": "192.0.2.99", "comment": "why"})),
            &["policies:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/allowlists",
            "/api/v1/allowlists?network=192.0.2.99",
            None,
            &["policies:write"],
        ),
        e(
            M::GET,
            "/api/v1/feeds",
            "/api/v1/feeds",
            None,
            &["policies:read"],
        ),
        e(
            M::POST,
            "/api/v1/feeds",
            "/api/v1/feeds",
            Some(json!({"name": format!("feed{n}"), "path": "/nonexistent/list.txt"})),
            &["policies:write"],
        ),
        e(
            M::DELETE,
            "/api/v1/feeds/{name}",
            "/api/v1/feeds/nofeed",
            None,
            &["policies:write"],
        ),
        e(
            M::POST,
            "/api/v1/feeds/{name}/refresh",
            "/api/v1/feeds/nofeed/refresh",
            None,
            &["policies:write"],
        ),
        e(
            M::GET,
            "/api/v1/audit",
            "/api/v1/audit",
            None,
            &["audit:read"],
        ),
        e(
            M::GET,
            "/api/v1/stats",
            "/api/v1/stats?series=events",
            None,
            &["stats:read"],
        ),
        e(
            M::GET,
            "/api/v1/stream",
            "/api/v1/stream",
            None,
            &["decisions:read"],
        ),
    ]
}

/// What each role holds, written out here rather than taken from the code
/// under test.
fn role_scopes(role: &str) -> Vec<&'static str> {
    let viewer = [
        "decisions:read",
        "events:read",
        "agents:read",
        "stats:read",
        "policies:read",
    ];
    match role {
        "viewer" => viewer.to_vec(),
        "operator" => [&viewer[..], &["decisions:write", "policies:write"]].concat(),
        "admin" => [
            &viewer[..],
            &[
                "decisions:write",
                "policies:write",
                "agents:write",
                "audit:read",
                "users:write",
                "tokens:write",
                "bouncers:write",
            ],
        ]
        .concat(),
        _ => unreachable!(),
    }
}

const TOKEN_SCOPES: [&str; 9] = [
    "decisions:read",
    "decisions:write",
    "events:read",
    "agents:read",
    "agents:write",
    "policies:read",
    "policies:write",
    "stats:read",
    "audit:read",
];

async fn authorization_matrix(api: Api) {
    let admin = api.user("root", Role::Admin).await;
    let mut callers: Vec<(String, String, Vec<&str>)> = Vec::new();
    for (name, role) in [
        ("ada", Role::Admin),
        ("otto", Role::Operator),
        ("vera", Role::Viewer),
    ] {
        let token = api.user(name, role).await;
        callers.push((format!("role {role}"), token, role_scopes(role.as_str())));
    }
    for (i, scope) in TOKEN_SCOPES.iter().enumerate() {
        let token = api.token(&admin, &format!("scope{i}"), &[scope]).await;
        callers.push((format!("token {scope}"), token, vec![*scope]));
    }
    let first = api
        .post(
            "/api/v1/decisions",
            &admin,
            json!({"target": "192.0.2.1", "reason": "seed"}),
        )
        .await
        .json()["id"]
        .as_i64()
        .expect("id");

    // The matrix covers every endpoint of the description but the public
    // ones and the CrowdSec ones (bouncer keys, tested in crowdsec.rs).
    let spec = api
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .json();
    let mut described = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            described.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let public: BTreeSet<String> = [
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/refresh",
        "POST /api/v1/auth/logout",
        "GET /v1/decisions/stream",
        "GET /v1/decisions",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let covered: BTreeSet<String> = endpoints(0, first)
        .iter()
        .map(|e| format!("{} {}", e.method, e.template))
        .chain(public.iter().cloned())
        .collect();
    assert_eq!(
        covered, described,
        "the matrix and the OpenAPI description differ"
    );

    let mut n = 0;
    let mut checked = 0;
    for (who, token, scopes) in &callers {
        for e in endpoints(0, first) {
            n += 1;
            let e = endpoints(n, first)
                .into_iter()
                .find(|x| x.template == e.template && x.method == e.method)
                .expect("same");
            let allowed = e.needs.iter().all(|s| scopes.contains(s));
            let status = if e.template == "/api/v1/stream" {
                api.status_of(e.method.clone(), &e.path, Some(token)).await
            } else {
                let r = api
                    .call(e.method.clone(), &e.path, Some(token), e.body.clone())
                    .await;
                if !allowed {
                    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
                }
                r.status
            };
            if allowed {
                assert!(
                    !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                        && !status.is_server_error(),
                    "{who} should be allowed {} {}: {status}",
                    e.method,
                    e.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{who} should be refused {} {}",
                    e.method,
                    e.path
                );
            }
            checked += 1;
        }
        // Without credentials: 401 everywhere.
    }
    for e in endpoints(0, first) {
        let status = if e.template == "/api/v1/stream" {
            api.status_of(e.method.clone(), &e.path, None).await
        } else {
            let r = api
                .call(e.method.clone(), &e.path, None, e.body.clone())
                .await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
            r.status
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", e.method, e.path);
        checked += 1;
    }
    // Logout needs a logged-in user: tokens are refused.
    for (who, token, _) in &callers {
        let r = api
            .call(Method::POST, "/api/v1/auth/logout", Some(token), None)
            .await;
        if who.starts_with("token") {
            r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        } else {
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{who}: {}", r.text);
        }
    }
    assert_eq!(checked, (callers.len() + 1) * endpoints(0, first).len());
}

async fn bad_input_is_refused_and_nothing_written(api: Api) {
    let admin = api.user("root", Role::Admin).await;
    let viewer = api.user("vera", Role::Viewer).await;
    let before_users = api.store.users().await.expect("users").len();
    let d = "/api/v1/decisions";
    let raw = |body: &'static str| (body, "application/json");
    for (body, ctype, status, code) in [
        (
            raw("{").0,
            raw("{").1,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\"} trailing",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "[1, 2]",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": 5, \"reason\": \"x\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\", \"admin\": true}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\"}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "{\"target\": \"300.1.1.1\", \"reason\": \"x\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "{\"target\": \"10.0.0.0/33\", \"reason\": \"x\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "{\"target\": \"0.0.0.0/0\", \"reason\": \"x\"}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused_by_policy",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\", \"duration\": \"forever\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\", \"duration\": \"0s\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"  \"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "{\"target\": \"192.0.2.1\", \"reason\": \"x\", \"group\": \"a b\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let r = api.raw(Method::POST, d, Some(&admin), ctype, body).await;
        r.assert_error(status, code);
    }
    let huge = format!(
        "{{\"target\": \"192.0.2.1\", \"reason\": \"{}\"}}",
        "x".repeat(300 * 1024)
    );
    api.raw(Method::POST, d, Some(&admin), "application/json", huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // A viewer writing.
    api.post(d, &viewer, json!({"target": "192.0.2.1", "reason": "x"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    // Bulk: one bad item refuses all.
    let ok = json!({"target": "192.0.2.1", "reason": "x"});
    api.post(
        "/api/v1/decisions/bulk",
        &admin,
        json!({"create": [ok, {"target": "nope", "reason": "x"}]}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_parameter");
    api.post(
        "/api/v1/decisions/bulk",
        &admin,
        json!({"create": [ok, {"target": "0.0.0.0/1", "reason": "x"}]}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "refused_by_policy");
    api.post(
        "/api/v1/decisions/bulk",
        &admin,
        json!({"create": [ok], "revoke": [{"id": 4242}]}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"target": format!("10.{}.{}.1", i / 250, i % 250), "reason": "x"}))
        .collect();
    api.post("/api/v1/decisions/bulk", &admin, json!({"create": many}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(api.decision_count().await, 0, "nothing was written");

    // Query strings and paths.
    for (path, status, code) in [
        (
            "/api/v1/decisions?ip=not-an-ip",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/decisions?ip=192.0.2.0/40",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/decisions?status=bogus",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/decisions?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/decisions?limit=5000",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/decisions?limit=abc",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/decisions?cursor=garbage",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/decisions?foo=1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/decisions?since=yesterday",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        ("/api/v1/decisions/abc", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/v1/decisions/12345",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/v1/events?ip=1.2.3",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/events?cursor=MTIzLjQ1",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/events/aggregate",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/events/aggregate?by=user",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/ips/not-an-ip",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/stats?series=events&step=0s",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/stats?series=events&step=1s",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/v1/stats?series=events&since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        ("/api/v1/agents/nobody", StatusCode::NOT_FOUND, "not_found"),
        ("/api/v1/nothing-here", StatusCode::NOT_FOUND, "not_found"),
    ] {
        api.get(path, &admin).await.assert_error(status, code);
    }
    api.call(Method::PUT, "/api/v1/decisions", Some(&admin), None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    api.post("/api/v1/decisions/1/revoke", &admin, json!({"reason": 5}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    // Users and tokens.
    for body in [
        json!({"name": "weak", "password": "short", "role": "viewer"}),
        json!({"name": "bad name!", "password": "correct horse battery", "role": "viewer"}),
        json!({"name": "r", "password": "correct horse battery", "role": "root"}),
        json!({"name": "r", "password": "correct horse battery"}),
    ] {
        api.post("/api/v1/users", &admin, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    api.post(
        "/api/v1/users",
        &admin,
        json!({"name": "vera", "password": "correct horse battery", "role": "admin"}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    for body in [
        json!({"name": "t", "scopes": []}),
        json!({"name": "t", "scopes": ["decisions:destroy"]}),
        json!({"name": "t", "scopes": ["tokens:write"]}),
        json!({"name": "t", "scopes": ["decisions:read"], "expires_at": "2000-01-01T00:00:00Z"}),
        json!({"name": "t", "scopes": ["decisions:read"], "expires_at": "soon"}),
    ] {
        api.post("/api/v1/tokens", &admin, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    assert_eq!(api.store.users().await.expect("users").len(), before_users);
    assert!(api.store.api_tokens().await.expect("tokens").is_empty());
    assert_eq!(api.decision_count().await, 0);

    // Policies, jails, allowlists and enrollment tokens.
    let rules_before = api.service.fleet_rules().await.expect("rules");
    let version_before = api.service.policy_version();
    let a = "/api/v1/allowlists";
    for (body, status, code) in [
        (
            json!({"network": "10.0.0.0/33"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"network": "300.1.1.1"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"network": "10.0.0.0/8", "group": "a b"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"network": "10.0.0.0/8", "group": "*"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"network": "10.0.0.0/8", "scope": "all"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"network": 10}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_body"),
    ] {
        api.post(a, &admin, body).await.assert_error(status, code);
    }
    api.call(
        Method::DELETE,
        "/api/v1/allowlists?network=nope",
        Some(&admin),
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    api.call(
        Method::DELETE,
        "/api/v1/allowlists?net=10.0.0.0/8",
        Some(&admin),
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    api.post(a, &viewer, json!({"network": "10.0.0.0/8"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    for rules in [
        "[policy\n",
        "[policy]\nallowlist = [\"10.0.0.0/33\"]\n",
        "[policy]\nthreshold_hosts = 3\n",
        "[policy.threshold]\nhosts = 2\nwindow = \"soon\"\nbantime = \"1h\"\n",
    ] {
        let r = api
            .call(
                Method::PUT,
                "/api/v1/policies/rules",
                Some(&admin),
                Some(json!({"rules": rules})),
            )
            .await;
        r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy");
    }
    api.call(
        Method::PUT,
        "/api/v1/policies/rules",
        Some(&admin),
        Some(json!({"toml": ""})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    api.call(
        Method::PUT,
        "/api/v1/policies/rules",
        Some(&viewer),
        Some(json!({"rules": ""})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    for (path, body, status, code) in [
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"maxretry": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"maxretry": 2147483648u64}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"findtime": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"bantime": "0s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"bantime": "20000d"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/a!b/sshd",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/ssh!d",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"retries": 3}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"maxretry": "three"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/api/v1/policies/jails/web/sshd",
            json!({"maxretry": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        api.call(Method::PUT, path, Some(&admin), Some(body))
            .await
            .assert_error(status, code);
    }
    api.call(
        Method::PUT,
        "/api/v1/policies/jails/web/sshd",
        Some(&viewer),
        Some(json!({})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    for body in [
        json!({"uses": 0}),
        json!({"uses": 10001}),
        json!({"ttl": "forever"}),
        json!({"ttl": "90d"}),
        json!({"group": "a b"}),
        json!({"secret": "mine"}),
    ] {
        api.post("/api/v1/enrollment-tokens", &admin, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    api.post("/api/v1/agents/nobody/revoke", &admin, json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // Names no agent or rule can have are not looked up (Postgres refuses NUL).
    api.post("/api/v1/agents/a%00b/revoke", &admin, json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call(
        Method::DELETE,
        "/api/v1/policies/jails/web/a%00b",
        Some(&admin),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call(
        Method::PUT,
        "/api/v1/policies/rules",
        Some(&admin),
        Some(json!({"rules": "# \u{0}\n"})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy");
    assert_eq!(
        api.service.fleet_rules().await.expect("rules"),
        rules_before
    );
    assert_eq!(
        api.service.policy_version(),
        version_before,
        "no policy written"
    );
    assert!(api.service.jail_rules().await.expect("jails").is_empty());
    assert!(api
        .store
        .tokens()
        .await
        .expect("enrollment tokens")
        .is_empty());
}

on_both!(
    authorization_matrix,
    bad_input_is_refused_and_nothing_written
);
