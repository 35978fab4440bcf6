-- Agent identity: the fleet's certificate authority, enrollment tokens and
-- the credential each enrolled agent connects with.

-- The CA that signs the server's and the agents' certificates. Kept in the
-- database so that every server replica uses the same one.
CREATE TABLE certificate_authority (
    singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Tokens are stored as the SHA-256 of their secret, never in clear.
CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    agent_group   TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    max_uses      INTEGER NOT NULL CHECK (max_uses > 0),
    uses          INTEGER NOT NULL DEFAULT 0 CHECK (uses <= max_uses)
);

-- One credential per agent id: the SHA-256 of its client certificate.
CREATE TABLE enrollments (
    agent_id     TEXT PRIMARY KEY,
    cert_sha256  TEXT NOT NULL UNIQUE,
    agent_group  TEXT,
    token_id     TEXT NOT NULL REFERENCES enrollment_tokens (id),
    hostname     TEXT NOT NULL DEFAULT '',
    enrolled_at  TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX enrollments_revoked ON enrollments (revoked_at) WHERE revoked_at IS NOT NULL;
