-- Paths learned as noise (value changes set aside), kept for the report so
-- a person can confirm them (move them to a route's ignore) or veto them
-- (not_noise). Upserted by the running instance.
CREATE TABLE learned_noise (
    route           TEXT    NOT NULL,
    pattern         TEXT    NOT NULL,
    side            TEXT    NOT NULL,   -- primary | shadow
    observations    INTEGER NOT NULL,
    first_seen_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (route, pattern, side)
);
