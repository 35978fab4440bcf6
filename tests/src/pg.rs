//! A fresh Postgres database per test, created on the server named by
//! `FLEETBAN_TEST_DATABASE_URL` (`scripts/test` starts a throw-away one).

use sqlx::{Connection, Executor, PgConnection};

/// Environment variable holding an admin URL of the Postgres server tests use.
pub const DATABASE_URL_ENV: &str = "FLEETBAN_TEST_DATABASE_URL";

/// Creates an empty database named `fleetban_test_<uuid>` and returns its URL,
/// or `None` (after printing why) when no Postgres is configured. Panics when
/// none is configured under `FLEETBAN_TEST_STRICT=1`, or when the configured
/// server cannot be reached: a test never silently passes without its
/// database.
///
/// Databases are not dropped afterwards; the throw-away cluster of
/// `scripts/test` is deleted as a whole.
pub async fn fresh_database() -> Option<String> {
    let Ok(admin_url) = std::env::var(DATABASE_URL_ENV) else {
        if crate::strict() {
            panic!(
                "{DATABASE_URL_ENV} is not set and {}=1 forbids skipping; run scripts/test, \
                 which starts a throw-away Postgres",
                crate::STRICT_ENV
            );
        }
        eprintln!("skipped: {DATABASE_URL_ENV} not set");
        return None;
    };
    let name = format!("fleetban_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_ENV}={admin_url}: {e}"));
    // The name is ours (hex digits only), so quoting it is enough.
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on {admin_url}: {e}"));
    admin.close().await.ok();
    Some(with_database(&admin_url, &name))
}

/// Replaces the database name (the URL path) in a `postgres://` URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t1"),
            "postgres://u:p@h:1/t1?sslmode=disable"
        );
    }

    #[test]
    fn adds_a_missing_path() {
        assert_eq!(with_database("postgres://h:1", "t1"), "postgres://h:1/t1");
        assert_eq!(
            with_database("postgresql://h?host=/run/pg", "t1"),
            "postgresql://h/t1?host=/run/pg"
        );
    }

    #[test]
    fn keeps_a_socket_url() {
        assert_eq!(
            with_database("postgres:///postgres?host=/tmp/x/sock&port=5", "t1"),
            "postgres:///t1?host=/tmp/x/sock&port=5"
        );
    }
}
