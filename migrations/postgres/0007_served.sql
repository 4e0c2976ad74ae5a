-- Which side served the client: 'primary' or 'shadow' (the candidate),
-- '' for requests cutover sent itself (sweeps, read-backs, verification)
-- and for what was recorded before this migration. The rollups carry it in
-- their key, so a share on the candidate and the rest on the primary are
-- counted apart.
ALTER TABLE exchanges ADD COLUMN served TEXT NOT NULL DEFAULT '';

ALTER TABLE rollups ADD COLUMN served TEXT NOT NULL DEFAULT '';
ALTER TABLE rollups DROP CONSTRAINT rollups_pkey;
ALTER TABLE rollups ADD PRIMARY KEY (minute_ms, route, method, source, outcome, reason, served);

ALTER TABLE rollup_latency ADD COLUMN served TEXT NOT NULL DEFAULT '';
ALTER TABLE rollup_latency DROP CONSTRAINT rollup_latency_pkey;
ALTER TABLE rollup_latency ADD PRIMARY KEY (minute_ms, route, served, side, bucket);
