-- A dual-write is in the ledger before it is sent to the other side: its
-- row starts as `pending` under a key of the run that sent it (`intent`),
-- and the answer settles it. A run that ends without a clean stop leaves
-- its pending rows behind; the next start of the same instance turns them
-- into drift (reason unclean_restart), since whether the other side
-- applied them is unknown.
ALTER TABLE write_ledger ADD COLUMN intent TEXT;
ALTER TABLE write_ledger ADD COLUMN instance TEXT;
CREATE UNIQUE INDEX write_ledger_intent ON write_ledger (intent);
