-- Decision filters of the REST API by agent (creator), origin and jail,
-- newest first (see docs/benchmarks.md, REST API queries).
CREATE INDEX decisions_creator_created ON decisions (creator, created_at, id);
CREATE INDEX decisions_origin_created ON decisions (origin, created_at, id);
CREATE INDEX decisions_jail_created ON decisions (jail, created_at, id);
