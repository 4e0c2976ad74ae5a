-- Counts and latencies per minute, so the store grows with what is worth
-- triaging rather than with traffic: every exchange adds to one `rollups`
-- row (its minute, route, method, source, outcome and skip reason) and,
-- when both sides answered, to one `rollup_latency` bucket per side
-- (bucket numbers are src/histogram.rs's layout). Writers add with upserts
-- in the transaction of their batch, so replicas add into the same rows
-- and each exchange counts once. Raw `exchanges` rows stay for what is not
-- a plain match, and for the sample of matches `store.keep_matches` keeps.

CREATE TABLE rollups (
    minute_ms       BIGINT  NOT NULL,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    reason          TEXT    NOT NULL,   -- '' unless skipped
    requests        BIGINT  NOT NULL,
    rows_left_out   BIGINT  NOT NULL,   -- exchanges counted here whose raw row keep_matches left out
    primary_429     BIGINT  NOT NULL,
    shadow_429      BIGINT  NOT NULL,
    primary_cache_hits  BIGINT  NOT NULL,
    primary_cache_known BIGINT  NOT NULL,
    shadow_cache_hits   BIGINT  NOT NULL,
    shadow_cache_known  BIGINT  NOT NULL,
    first_ms        BIGINT  NOT NULL,
    last_ms         BIGINT  NOT NULL,
    PRIMARY KEY (minute_ms, route, method, source, outcome, reason)
);

CREATE TABLE rollup_latency (
    minute_ms       BIGINT  NOT NULL,
    route           TEXT    NOT NULL,
    side            TEXT    NOT NULL,   -- primary | shadow
    bucket          BIGINT  NOT NULL,
    n               BIGINT  NOT NULL,
    PRIMARY KEY (minute_ms, route, side, bucket)
);

-- The report finds the diverged in a window without walking the sample
-- of matches.
CREATE INDEX exchanges_outcome_at ON exchanges (outcome, at_ms);

-- Exchanges written before this migration carry no rollups: they are
-- rolled up once, in chunks, up to the highest id of that time.
CREATE TABLE rollup_backfill (
    upto_id         BIGINT  NOT NULL,
    done_id         BIGINT  NOT NULL
);
INSERT INTO rollup_backfill (upto_id, done_id) SELECT COALESCE(MAX(id), 0), 0 FROM exchanges;
