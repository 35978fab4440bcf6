//! The API under test: the real router on a real store (Postgres when
//! FLEETBAN_TEST_DATABASE_URL is set, and SQLite), driven with
//! `tower::ServiceExt::oneshot`, with a clock the test sets.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use fleetban_server::auth::{Accounts, AuthConfig, Role};
use fleetban_server::http::api::ApiState;
use fleetban_server::identity::Authority;
use fleetban_server::metrics::Metrics;
use fleetban_server::service::identity::Identities;
use fleetban_server::service::{Clock, Service};
use fleetban_server::store::{self, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct TestClock(pub Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

impl TestClock {
    pub fn now_for_test(&self) -> DateTime<Utc> {
        self.now()
    }

    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().expect("clock") += d;
    }
}

/// The gRPC URL the test API tells new agents.
pub const AGENT_URL: &str = "https://fleet.example:50051";

pub fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).single().expect("time")
}

pub struct Api {
    pub router: Router,
    pub service: Arc<Service>,
    pub accounts: Arc<Accounts>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<TestClock>,
    pub identities: Arc<Identities>,
    /// The fleet CA `identities` signs agent certificates with.
    pub ca: Arc<Authority>,
    _dir: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    pub headers: axum::http::HeaderMap,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// Asserts the one error shape with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{}", self.text);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{}", self.text);
    }
}

pub enum Database {
    Postgres,
    Sqlite,
}

impl Api {
    pub async fn new(db: Database) -> Option<Api> {
        Self::with_rules(db, "").await
    }

    /// The API on a database seeded with correlation rules (a `[policy]`
    /// section, as the server stores them).
    pub async fn with_rules(db: Database, rules: &str) -> Option<Api> {
        let policy = fleetban_server::policy_config::parse_rules(rules).expect("rules");
        let (store, dir) = match db {
            Database::Postgres => {
                let url = fleetban_tests::pg::fresh_database().await?;
                (store::open(&url).await.expect("open postgres"), None)
            }
            Database::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("t.db").display());
                (store::open(&url).await.expect("open sqlite"), Some(dir))
            }
        };
        let clock = Arc::new(TestClock(Mutex::new(t0())));
        let accounts = Arc::new(
            Accounts::new(store.clone(), clock.clone(), AuthConfig::default())
                .await
                .expect("accounts"),
        );
        let service = Arc::new(
            Service::new(
                store.clone(),
                clock.clone(),
                Arc::new(Metrics::new()),
                &fleetban_server::policy_config::PolicySeed {
                    policy,
                    rules_toml: rules.to_owned(),
                    ..Default::default()
                },
            )
            .await
            .expect("service"),
        );
        // A fleet CA, so enrollment tokens can be made as on a TLS server.
        let ca = Arc::new(
            Authority::load(&Authority::generate().expect("generate CA")).expect("load CA"),
        );
        let identities = Arc::new(
            Identities::new(store.clone(), clock.clone(), Some(ca.clone()))
                .await
                .expect("identities"),
        );
        let state = Arc::new(ApiState {
            service: service.clone(),
            accounts: accounts.clone(),
            identities: identities.clone(),
            feeds: Arc::new(Vec::new()),
            feed_client: fleetban_server::feeds::client().expect("feed client"),
            feeds_changed: Arc::new(tokio::sync::Notify::new()),
            agent_url: Some(AGENT_URL.to_owned()),
        });
        let router = fleetban_server::http::router(service.clone(), state);
        Some(Api {
            router,
            service,
            accounts,
            store,
            clock,
            identities,
            ca,
            _dir: dir,
        })
    }

    pub async fn request(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            content_type,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            headers,
        }
    }

    /// Only the status (for endpoints whose body never ends, the stream).
    pub async fn status_of(&self, method: Method, path: &str, token: Option<&str>) -> StatusCode {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b.body(Body::empty()).expect("request");
        self.router
            .clone()
            .oneshot(req)
            .await
            .expect("infallible")
            .status()
    }

    /// `method path` with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        self.request(req).await
    }

    /// A raw body with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", token.unwrap_or("")),
            )
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        self.request(req).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Adds a user and logs them in; returns the access token.
    pub async fn user(&self, name: &str, role: Role) -> String {
        self.accounts
            .add_user(name, "correct horse battery", role, "cli", None)
            .await
            .expect("add user");
        self.login(name).await["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    pub async fn login(&self, name: &str) -> Value {
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"username": name, "password": "correct horse battery"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()
    }

    /// Creates an API token with `scopes` through the API, as `admin`.
    pub async fn token(&self, admin: &str, name: &str, scopes: &[&str]) -> String {
        let r = self
            .post(
                "/api/v1/tokens",
                admin,
                serde_json::json!({"name": name, "scopes": scopes}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()["token"].as_str().expect("token").to_owned()
    }

    pub async fn decision_count(&self) -> usize {
        self.store
            .decisions_since(0)
            .await
            .expect("decisions")
            .len()
    }
}

/// Runs `$body` (an async fn taking `Api`) on Postgres and on SQLite.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(api) = super::common::Api::new(super::common::Database::Postgres).await {
                        super::$name(api).await;
                    }
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let api = super::common::Api::new(super::common::Database::Sqlite).await.expect("sqlite");
                    super::$name(api).await;
                }
            )*
        }
    };
}
