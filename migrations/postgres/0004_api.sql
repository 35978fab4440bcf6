-- The REST API: users, their sessions, API tokens for tools, CrowdSec
-- bouncer keys, the audit log and server secrets. Every token and key is
-- stored as its SHA-256 hex digest, passwords as argon2id PHC strings.

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at     TIMESTAMPTZ NOT NULL,
    disabled_at    TIMESTAMPTZ
);

-- One login. The access tokens it issues name it, so revoking it (logout)
-- ends them at once. The refresh token rotates on every use; the previous
-- one is kept to detect its reuse.
CREATE TABLE sessions (
    id             UUID PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    refresh_hash   TEXT NOT NULL UNIQUE,
    previous_hash  TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ
);
CREATE INDEX sessions_previous ON sessions (previous_hash);

CREATE TABLE api_tokens (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);

-- CrowdSec bouncers pulling the block list; the version and time of their
-- last pull tell what changed since.
CREATE TABLE bouncers (
    name          TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    last_pull_at  TIMESTAMPTZ,
    last_version  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    source  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);

-- Secrets the server generates on its first start (the JWT signing key),
-- shared by every replica.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Filtered, paginated queries.
CREATE INDEX decisions_created ON decisions (created_at, id);
CREATE INDEX decisions_target_net ON decisions USING gist (target inet_ops);
CREATE INDEX events_time_id ON events (occurred_at, id);
CREATE INDEX events_agent_time ON events (agent_id, occurred_at);
CREATE INDEX events_jail_time ON events (jail, occurred_at);
