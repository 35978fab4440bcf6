-- Policies in the database and feeds (see the Postgres migration of the
-- same number; SQLite serves one server process, so nothing is notified).

ALTER TABLE agents ADD COLUMN agent_group TEXT NOT NULL DEFAULT '';

CREATE TABLE jail_policies (
    agent_group  TEXT NOT NULL,
    jail         TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    maxretry     INTEGER CHECK (maxretry > 0),
    findtime_s   INTEGER CHECK (findtime_s > 0),
    bantime_s    INTEGER CHECK (bantime_s > 0),
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (agent_group, jail)
);

CREATE TABLE policy_state (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    version      INTEGER NOT NULL,
    fleet_rules  TEXT,
    updated_at   INTEGER,
    updated_by   TEXT NOT NULL DEFAULT ''
);
INSERT INTO policy_state (singleton, version) VALUES (1, 0);

CREATE TABLE feed_status (
    name          TEXT PRIMARY KEY,
    last_attempt  INTEGER NOT NULL,
    last_success  INTEGER,
    entries       INTEGER NOT NULL DEFAULT 0,
    invalid_lines INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT ''
);

CREATE INDEX decisions_creator ON decisions (creator) WHERE kind = 'ban';
