-- REST API query speed (docs/benchmarks.md, REST API): events of a /24 or
-- /64 read in index order, and a per-minute count of events kept by the
-- database itself for the stats charts.

-- Writers wait until the rollup below is filled and its triggers are in
-- place, so no event is counted twice or missed.
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;

-- The /24 (IPv4) or /64 (IPv6) an address falls in: the prefix that subnet
-- escalation counts, and the key of the index that lists a prefix's events
-- newest first without sorting all of them.
CREATE FUNCTION event_network(ip inet) RETURNS cidr
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT set_masklen(ip::cidr, CASE family(ip) WHEN 4 THEN 24 ELSE 64 END) $$;
CREATE INDEX events_network_time ON events (event_network(ip), occurred_at, id);

-- events_time_id (occurred_at, id) serves every query events_time did.
DROP INDEX events_time;

-- Events per minute of occurred_at (minute = floor(Unix time / 60)), in 8
-- shards per minute (shard = hashtext(agent_id) & 7) so that batches from
-- different agents do not queue on one row. Kept exact by the statement
-- triggers below: an insert counts only the rows it stored (ON CONFLICT DO
-- NOTHING skips duplicates), a delete (retention) subtracts the rows it
-- removed. Stats read these rows instead of events.
CREATE TABLE event_minutes (
    minute  BIGINT NOT NULL,
    shard   SMALLINT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (minute, shard)
) WITH (fillfactor = 50); -- room on each page for the updates of its rows (HOT)

-- Adds TG_ARGV[0] (1 or -1) times the rows of the transition table
-- `changed`, in (minute, shard) order so that concurrent statements lock
-- rows in the same order; rows that reach zero go.
CREATE FUNCTION event_minutes_apply() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := TG_ARGV[0]::bigint;
BEGIN
    INSERT INTO event_minutes AS m (minute, shard, n)
    SELECT floor(extract(epoch FROM occurred_at) / 60)::bigint, (hashtext(agent_id) & 7)::smallint, sign * count(*)
    FROM changed GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (minute, shard) DO UPDATE SET n = m.n + EXCLUDED.n;
    IF sign < 0 THEN
        DELETE FROM event_minutes m
        USING (SELECT DISTINCT floor(extract(epoch FROM occurred_at) / 60)::bigint AS minute, (hashtext(agent_id) & 7)::smallint AS shard
               FROM changed) c
        WHERE m.minute = c.minute AND m.shard = c.shard AND m.n = 0;
    END IF;
    RETURN NULL;
END $$;

-- Events are never updated by fleetban; should someone change one by hand,
-- its old minute loses it and its new minute gains it.
CREATE FUNCTION event_minutes_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_minutes AS m (minute, shard, n)
    SELECT minute, shard, sum(n) FROM (
        SELECT floor(extract(epoch FROM occurred_at) / 60)::bigint AS minute, (hashtext(agent_id) & 7)::smallint AS shard, -1 AS n
        FROM before_rows
        UNION ALL
        SELECT floor(extract(epoch FROM occurred_at) / 60)::bigint, (hashtext(agent_id) & 7)::smallint, 1 FROM after_rows
    ) d GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
    ON CONFLICT (minute, shard) DO UPDATE SET n = m.n + EXCLUDED.n;
    DELETE FROM event_minutes WHERE n = 0;
    RETURN NULL;
END $$;

CREATE FUNCTION event_minutes_truncate() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_minutes;
    RETURN NULL;
END $$;

CREATE TRIGGER events_count_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION event_minutes_apply('1');
CREATE TRIGGER events_count_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION event_minutes_apply('-1');
CREATE TRIGGER events_count_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION event_minutes_update();
CREATE TRIGGER events_count_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION event_minutes_truncate();

-- The events already stored, in key order so that a range of minutes sits
-- on few pages (as new minutes do, appended as they come).
INSERT INTO event_minutes (minute, shard, n)
SELECT floor(extract(epoch FROM occurred_at) / 60)::bigint, (hashtext(agent_id) & 7)::smallint, count(*)
FROM events GROUP BY 1, 2 ORDER BY 1, 2;
