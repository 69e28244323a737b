-- name: advance_fairness_clocks
-- For each (tenant, queue, priority) of a submission, reserve `span` (tasks / weight) of the
-- tenant's virtual clock at that level, starting no earlier than the level's virtual time
-- (queue_clocks.vtime, moved forward by the claim to the largest key it took). Returns where
-- each reservation starts. Rows are taken in key order, so concurrent submitters of one
-- tenant take turns without deadlocking. ON CONFLICT DO NOTHING on queue_clocks never waits
-- for a claimer that holds the row.
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::float8[])
        AS r(tenant_id, queue, priority, span)
), level AS (
    INSERT INTO queue_clocks (queue, priority)
    SELECT DISTINCT r.queue, r.priority FROM req AS r
    ORDER BY r.queue, r.priority
    ON CONFLICT DO NOTHING
)
INSERT INTO tenant_clocks AS c (tenant_id, queue, priority, clock, span)
SELECT r.tenant_id, r.queue, r.priority, coalesce(v.vtime, 0) + r.span, r.span
FROM req AS r
LEFT JOIN queue_clocks AS v ON v.queue = r.queue AND v.priority = r.priority
ORDER BY r.tenant_id, r.queue, r.priority
ON CONFLICT (tenant_id, queue, priority) DO UPDATE
SET clock = greatest(c.clock + excluded.span, excluded.clock), span = excluded.span
RETURNING c.tenant_id, c.queue, c.priority, c.clock - c.span AS start;

-- name: ensure_queue_levels
-- Without fairness no clock moves, but the claim's starvation guard still needs a row per
-- (queue, priority) to tell when a level was last served.
INSERT INTO queue_clocks (queue, priority)
SELECT DISTINCT r.queue, r.priority FROM unnest($1::text[], $2::smallint[]) AS r(queue, priority)
ORDER BY r.queue, r.priority
ON CONFLICT DO NOTHING;
