-- The W3C trace id of the request a sample came from (32 lowercase hex
-- digits, NULL when the client sent no valid traceparent), so a divergence
-- can be found in the backends' traces.
ALTER TABLE divergence_samples ADD COLUMN trace_id TEXT;
