-- Agents known to the fleet.
CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    version          TEXT NOT NULL,
    jails            TEXT NOT NULL DEFAULT '',
    first_seen       TIMESTAMPTZ NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL,
    applied_version  BIGINT NOT NULL DEFAULT 0,
    revoked_at       TIMESTAMPTZ
);

-- One failure seen in a log. The id is chosen by the agent, so a batch
-- resent after a reconnect is stored once.
CREATE TABLE events (
    id           UUID PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    jail         TEXT NOT NULL,
    ip           INET NOT NULL,
    username     TEXT,
    occurred_at  TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_ip_time ON events (ip, occurred_at);
CREATE INDEX events_time ON events (occurred_at);

-- The block list's version: bumped, under its row lock, by every change, so
-- versions are assigned in commit order.
CREATE TABLE block_list_version (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version    BIGINT NOT NULL
);
INSERT INTO block_list_version (singleton, version) VALUES (TRUE, 0);

-- Decisions are never updated or deleted in place: a revocation is a decision
-- of kind 'revoke' naming the decision it ends.
CREATE TABLE decisions (
    id          BIGSERIAL PRIMARY KEY,
    version     BIGINT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('ban', 'revoke')),
    target      CIDR NOT NULL,
    origin      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    creator     TEXT NOT NULL,
    jail        TEXT NOT NULL DEFAULT '',
    scope       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revokes     BIGINT REFERENCES decisions (id),
    CHECK ((kind = 'revoke') = (revokes IS NOT NULL))
);
CREATE UNIQUE INDEX decisions_one_revocation ON decisions (revokes) WHERE revokes IS NOT NULL;
CREATE INDEX decisions_target ON decisions (target);
CREATE INDEX decisions_expires ON decisions (expires_at) WHERE kind = 'ban';
