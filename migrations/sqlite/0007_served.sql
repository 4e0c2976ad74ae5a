-- Which side served the client: 'primary' or 'shadow' (the candidate),
-- '' for requests cutover sent itself (sweeps, read-backs, verification)
-- and for what was recorded before this migration. The rollups carry it in
-- their key, so a share on the candidate and the rest on the primary are
-- counted apart. SQLite cannot change a primary key in place: the rollup
-- tables are rebuilt, their rows copied with served ''.
ALTER TABLE exchanges ADD COLUMN served TEXT NOT NULL DEFAULT '';

CREATE TABLE rollups_served (
    minute_ms       INTEGER NOT NULL,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    served          TEXT    NOT NULL,
    requests        INTEGER NOT NULL,
    rows_left_out   INTEGER NOT NULL,
    primary_429     INTEGER NOT NULL,
    shadow_429      INTEGER NOT NULL,
    primary_cache_hits  INTEGER NOT NULL,
    primary_cache_known INTEGER NOT NULL,
    shadow_cache_hits   INTEGER NOT NULL,
    shadow_cache_known  INTEGER NOT NULL,
    first_ms        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL,
    PRIMARY KEY (minute_ms, route, method, source, outcome, reason, served)
);
INSERT INTO rollups_served
SELECT minute_ms, route, method, source, outcome, reason, '', requests, rows_left_out, primary_429, shadow_429,
       primary_cache_hits, primary_cache_known, shadow_cache_hits, shadow_cache_known, first_ms, last_ms
FROM rollups;
DROP TABLE rollups;
ALTER TABLE rollups_served RENAME TO rollups;

CREATE TABLE rollup_latency_served (
    minute_ms       INTEGER NOT NULL,
    route           TEXT    NOT NULL,
    served          TEXT    NOT NULL,
    side            TEXT    NOT NULL,
    bucket          INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (minute_ms, route, served, side, bucket)
);
INSERT INTO rollup_latency_served SELECT minute_ms, route, '', side, bucket, n FROM rollup_latency;
DROP TABLE rollup_latency;
ALTER TABLE rollup_latency_served RENAME TO rollup_latency;
