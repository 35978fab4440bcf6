-- Port scope of a ban: '' bans all traffic; otherwise PROTOCOL/PORTS, e.g.
-- 'tcp/22' or 'all/80,443,8000:8100' (see fleetban_proto::ports).
ALTER TABLE decisions ADD COLUMN ports TEXT NOT NULL DEFAULT '';
