-- Feeds added through the API, and revocable enrollment tokens.
--
-- Feeds of the server's configuration file stay there; these are the ones
-- operators add and remove while servers run. Every replica imports them;
-- an import takes the feed's advisory lock, and a removed feed keeps its
-- row with removed_at set so that an import already under way on another
-- replica records nothing for it.
CREATE TABLE feeds (
    name                TEXT PRIMARY KEY,
    url                 TEXT,
    path                TEXT,
    interval_s          BIGINT NOT NULL CHECK (interval_s > 0),
    bantime_s           BIGINT CHECK (bantime_s > 0),
    max_invalid_percent INTEGER NOT NULL CHECK (max_invalid_percent BETWEEN 0 AND 100),
    allow_empty         BOOLEAN NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    created_by          TEXT NOT NULL,
    removed_at          TIMESTAMPTZ,
    CHECK ((url IS NULL) <> (path IS NULL))
);

-- A revoked token enrolls no more agents; agents it enrolled stay.
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at TIMESTAMPTZ;
