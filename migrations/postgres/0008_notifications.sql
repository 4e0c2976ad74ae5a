-- [[notify]] webhooks: one row per notice and sink, created by whichever
-- instance saw the occurrence first (UNIQUE (sink, subject) keeps it to one)
-- and delivered by whichever claims it (claimed_until_ms is the lease).
-- A row of state 'baseline' marks where a sink began, so it is not sent
-- the history from before it was configured.
CREATE TABLE notifications (
    id               BIGSERIAL PRIMARY KEY,
    sink             TEXT    NOT NULL,
    subject          TEXT    NOT NULL,   -- group:KEY | drift:ID | event:ID | baseline
    event            TEXT    NOT NULL,   -- group | verdict | rollback | drift | ramp | baseline
    source_ms        BIGINT  NOT NULL,   -- when the occurrence happened
    payload          TEXT    NOT NULL,   -- JSON: the body sent
    state            TEXT    NOT NULL,   -- pending | delivered | failed | baseline
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT  NOT NULL,
    claimed_until_ms BIGINT  NOT NULL DEFAULT 0,
    claimed_by       TEXT,
    last_status      BIGINT,
    last_error       TEXT,
    created_ms       BIGINT  NOT NULL,
    settled_ms       BIGINT,
    UNIQUE (sink, subject)
);
CREATE INDEX notifications_due ON notifications (sink, state, next_attempt_ms);
CREATE INDEX notifications_latest ON notifications (sink, source_ms);
-- What the notifier pages through, every second, on every instance.
CREATE INDEX divergence_groups_seen ON divergence_groups (severity, first_seen_ms, group_key);
CREATE INDEX write_ledger_updated ON write_ledger (state, updated_ms, id);
CREATE INDEX events_kind ON events (kind, id);
