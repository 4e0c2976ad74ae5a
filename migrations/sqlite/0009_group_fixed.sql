-- When a group was last marked `fixed`: an exchange observed after it that
-- diverges in the group reopens it (a regression, kept as an event); one
-- observed before it (still in a writer's batch) does not. `reopened_by`
-- names the exchange that reopened it ("at_ms request_id"), so the one
-- writer whose upsert reopened the group is the one that adds the event.
ALTER TABLE divergence_groups ADD COLUMN fixed_ms BIGINT;
ALTER TABLE divergence_groups ADD COLUMN reopened_by TEXT;
