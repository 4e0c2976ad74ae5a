-- The order writes reached the shadow (or would have): replay follows it.
-- A hybrid clock in microseconds; rows from before this column sort by id.
ALTER TABLE write_ledger ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX write_ledger_seq ON write_ledger (state, seq, id);
