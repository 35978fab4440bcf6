-- Feeds added through the API, and revocable enrollment tokens (see the
-- Postgres migration of the same number). Times are Unix ms.
CREATE TABLE feeds (
    name                TEXT PRIMARY KEY,
    url                 TEXT,
    path                TEXT,
    interval_s          INTEGER NOT NULL CHECK (interval_s > 0),
    bantime_s           INTEGER CHECK (bantime_s > 0),
    max_invalid_percent INTEGER NOT NULL CHECK (max_invalid_percent BETWEEN 0 AND 100),
    allow_empty         BOOLEAN NOT NULL,
    created_at          INTEGER NOT NULL,
    created_by          TEXT NOT NULL,
    removed_at          INTEGER,
    CHECK ((url IS NULL) <> (path IS NULL))
);

ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
