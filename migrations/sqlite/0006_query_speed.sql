-- REST API query speed (docs/benchmarks.md, REST API): a per-minute count
-- of events kept by the database itself for the stats charts. Times are
-- Unix milliseconds; minute = floor(occurred_at / 60000).

-- events_time_id (occurred_at, id) serves every query events_time did.
DROP INDEX events_time;

-- Kept exact by the triggers below: a row ignored as a duplicate
-- (ON CONFLICT DO NOTHING) fires no insert trigger; a delete (retention)
-- subtracts what it removed. Stats read these rows instead of events.
CREATE TABLE event_minutes (
    minute  INTEGER PRIMARY KEY,
    n       INTEGER NOT NULL
);

CREATE TRIGGER events_count_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_minutes (minute, n)
    VALUES (NEW.occurred_at / 60000 - (NEW.occurred_at % 60000 < 0), 1)
    ON CONFLICT (minute) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER events_count_delete AFTER DELETE ON events BEGIN
    UPDATE event_minutes SET n = n - 1
    WHERE minute = OLD.occurred_at / 60000 - (OLD.occurred_at % 60000 < 0);
    DELETE FROM event_minutes
    WHERE minute = OLD.occurred_at / 60000 - (OLD.occurred_at % 60000 < 0) AND n = 0;
END;

-- Events are never updated by fleetban; should someone change one's time by
-- hand, its old minute loses it and its new minute gains it.
CREATE TRIGGER events_count_update AFTER UPDATE OF occurred_at ON events BEGIN
    UPDATE event_minutes SET n = n - 1
    WHERE minute = OLD.occurred_at / 60000 - (OLD.occurred_at % 60000 < 0);
    DELETE FROM event_minutes
    WHERE minute = OLD.occurred_at / 60000 - (OLD.occurred_at % 60000 < 0) AND n = 0;
    INSERT INTO event_minutes (minute, n)
    VALUES (NEW.occurred_at / 60000 - (NEW.occurred_at % 60000 < 0), 1)
    ON CONFLICT (minute) DO UPDATE SET n = n + 1;
END;

-- The events already stored.
INSERT INTO event_minutes (minute, n)
SELECT occurred_at / 60000 - (occurred_at % 60000 < 0), count(*)
FROM events GROUP BY 1;
