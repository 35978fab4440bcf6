-- Agent identity: the fleet's certificate authority, enrollment tokens and
-- the credential each enrolled agent connects with. Times are Unix ms.

CREATE TABLE certificate_authority (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    agent_group   TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    max_uses      INTEGER NOT NULL CHECK (max_uses > 0),
    uses          INTEGER NOT NULL DEFAULT 0 CHECK (uses <= max_uses)
);

CREATE TABLE enrollments (
    agent_id     TEXT PRIMARY KEY,
    cert_sha256  TEXT NOT NULL UNIQUE,
    agent_group  TEXT,
    token_id     TEXT NOT NULL REFERENCES enrollment_tokens (id),
    hostname     TEXT NOT NULL DEFAULT '',
    enrolled_at  INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX enrollments_revoked ON enrollments (revoked_at) WHERE revoked_at IS NOT NULL;
