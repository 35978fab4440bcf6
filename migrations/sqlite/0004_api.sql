-- The REST API's tables; see migrations/postgres/0004_api.sql. Times are
-- Unix milliseconds, ids of sessions and tokens are UUID text.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    refresh_hash   TEXT NOT NULL UNIQUE,
    previous_hash  TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER
);
CREATE INDEX sessions_previous ON sessions (previous_hash);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);

CREATE TABLE bouncers (
    name          TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_pull_at  INTEGER,
    last_version  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    source  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX decisions_created ON decisions (created_at, id);
CREATE INDEX events_time_id ON events (occurred_at, id);
CREATE INDEX events_agent_time ON events (agent_id, occurred_at);
CREATE INDEX events_jail_time ON events (jail, occurred_at);
