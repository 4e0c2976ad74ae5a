-- When a group was last marked `fixed`: an exchange observed after it that
-- diverges in the group reopens it (a regression, kept as an event); one
-- observed before it (still in a writer's batch) does not.
ALTER TABLE divergence_groups ADD COLUMN fixed_ms BIGINT;
