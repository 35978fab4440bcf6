-- Times are Unix milliseconds (INTEGER); targets are normalised CIDR text.

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    version          TEXT NOT NULL,
    jails            TEXT NOT NULL DEFAULT '',
    first_seen       INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL,
    applied_version  INTEGER NOT NULL DEFAULT 0,
    revoked_at       INTEGER
);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    jail         TEXT NOT NULL,
    ip           TEXT NOT NULL,
    username     TEXT,
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX events_ip_time ON events (ip, occurred_at);
CREATE INDEX events_time ON events (occurred_at);

CREATE TABLE block_list_version (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    version    INTEGER NOT NULL
);
INSERT INTO block_list_version (singleton, version) VALUES (1, 0);

CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    version     INTEGER NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('ban', 'revoke')),
    target      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    creator     TEXT NOT NULL,
    jail        TEXT NOT NULL DEFAULT '',
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revokes     INTEGER REFERENCES decisions (id),
    CHECK ((kind = 'revoke') = (revokes IS NOT NULL))
);
CREATE UNIQUE INDEX decisions_one_revocation ON decisions (revokes) WHERE revokes IS NOT NULL;
CREATE INDEX decisions_target ON decisions (target);
CREATE INDEX decisions_expires ON decisions (expires_at) WHERE kind = 'ban';
