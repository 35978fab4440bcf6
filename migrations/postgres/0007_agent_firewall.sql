-- What each agent's firewall enforces, as its heartbeats report it: the
-- entries held, the drift repaired since the agent started and the backend.
-- NULL until the agent first reports (agents older than this report never).
ALTER TABLE agents ADD COLUMN enforced BIGINT;
ALTER TABLE agents ADD COLUMN drift_total BIGINT;
ALTER TABLE agents ADD COLUMN firewall_backend TEXT;
