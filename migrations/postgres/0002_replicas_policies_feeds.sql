-- Replicas, policies in the database, feeds.
--
-- Every change to the block list is announced on the channel
-- 'fleetban_decisions' (payload: the new version) and every policy change on
-- 'fleetban_policies'; the tables stay the truth, the notifications only
-- wake the other server processes up.

-- The agent group an agent says it belongs to ('' for none).
ALTER TABLE agents ADD COLUMN agent_group TEXT NOT NULL DEFAULT '';

-- Jail settings pushed to agents: for every agent (agent_group '*') or for
-- one group, which wins over '*' for the same jail. NULL settings leave the
-- agent's own value.
CREATE TABLE jail_policies (
    agent_group  TEXT NOT NULL,
    jail         TEXT NOT NULL,
    enabled      BOOLEAN NOT NULL,
    maxretry     INTEGER CHECK (maxretry > 0),
    findtime_s   BIGINT CHECK (findtime_s > 0),
    bantime_s    BIGINT CHECK (bantime_s > 0),
    updated_at   TIMESTAMPTZ NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (agent_group, jail)
);

-- The fleet's correlation rules, as the TOML of a [policy] section, and the
-- version of all policies: bumped, under its row lock, by every change.
CREATE TABLE policy_state (
    singleton    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version      BIGINT NOT NULL,
    -- NULL until the first server start seeds it from its configuration.
    fleet_rules  TEXT,
    updated_at   TIMESTAMPTZ,
    updated_by   TEXT NOT NULL DEFAULT ''
);
INSERT INTO policy_state (singleton, version) VALUES (TRUE, 0);

-- The last import of each block-list feed.
CREATE TABLE feed_status (
    name          TEXT PRIMARY KEY,
    last_attempt  TIMESTAMPTZ NOT NULL,
    last_success  TIMESTAMPTZ,
    entries       BIGINT NOT NULL DEFAULT 0,
    invalid_lines BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT ''
);

CREATE INDEX decisions_creator ON decisions (creator) WHERE kind = 'ban';
