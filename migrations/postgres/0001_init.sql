-- The divergence store (PostgreSQL). Times are Unix milliseconds; the same
-- tables exist in migrations/sqlite with that database's types.

CREATE TABLE exchanges (
    id              BIGSERIAL PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    request_id      TEXT    NOT NULL,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,   -- query values redacted before storing
    source          TEXT    NOT NULL,   -- traffic | sweep | replay | verify
    primary_status  BIGINT,
    shadow_status   BIGINT,
    primary_ms      DOUBLE PRECISION,
    shadow_ms       DOUBLE PRECISION,
    outcome         TEXT    NOT NULL,
    reason          TEXT,               -- the skip reason, when skipped
    primary_cache   TEXT,
    shadow_cache    TEXT
);
CREATE INDEX exchanges_at ON exchanges (at_ms);
CREATE INDEX exchanges_route_at ON exchanges (route, at_ms);

CREATE TABLE divergence_groups (
    group_key       TEXT    PRIMARY KEY,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    location        TEXT    NOT NULL,
    pattern         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    severity        TEXT    NOT NULL,
    summary         TEXT    NOT NULL,
    first_seen_ms   BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    count           BIGINT NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL DEFAULT 'open',   -- open | accepted | bug | fixed
    note            TEXT
);
CREATE INDEX divergence_groups_route ON divergence_groups (route, status);

CREATE TABLE exchange_groups (
    exchange_id     BIGINT NOT NULL REFERENCES exchanges (id) ON DELETE CASCADE,
    group_key       TEXT    NOT NULL REFERENCES divergence_groups (group_key) ON DELETE CASCADE,
    PRIMARY KEY (exchange_id, group_key)
);
CREATE INDEX exchange_groups_group ON exchange_groups (group_key);

CREATE TABLE divergence_samples (
    id              BIGSERIAL PRIMARY KEY,
    group_key       TEXT    NOT NULL REFERENCES divergence_groups (group_key) ON DELETE CASCADE,
    exchange_id     BIGINT REFERENCES exchanges (id) ON DELETE SET NULL,
    at_ms           BIGINT NOT NULL,
    differences     TEXT    NOT NULL,   -- JSON: the structured differences
    unified_diff    TEXT,
    request         TEXT    NOT NULL,   -- JSON: the redacted request
    primary_excerpt TEXT,
    shadow_excerpt  TEXT
);
CREATE INDEX divergence_samples_group ON divergence_samples (group_key);

CREATE TABLE id_map (
    kind            TEXT    NOT NULL,
    primary_id      TEXT    NOT NULL,
    shadow_id       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,   -- import | learned
    created_ms      BIGINT NOT NULL,
    PRIMARY KEY (kind, primary_id),
    UNIQUE (kind, shadow_id)
);

CREATE TABLE write_ledger (
    id              BIGSERIAL PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    entity          TEXT,
    primary_status  BIGINT,
    shadow_status   BIGINT,
    primary_ms      DOUBLE PRECISION,
    shadow_ms       DOUBLE PRECISION,
    state           TEXT    NOT NULL,   -- ok | drift | reconciled
    attempts        BIGINT NOT NULL DEFAULT 0,
    replay          TEXT,               -- JSON: what a replay needs (headers redacted)
    updated_ms      BIGINT NOT NULL
);
CREATE INDEX write_ledger_state ON write_ledger (state, at_ms);

CREATE TABLE events (
    id              BIGSERIAL PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    kind            TEXT    NOT NULL,   -- mode_switch | config_reload | rollback | restart | triage
    detail          TEXT    NOT NULL    -- JSON
);
CREATE INDEX events_at ON events (at_ms);
