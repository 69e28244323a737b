-- name: advance_fairness_clocks
-- For each (queue, tenant) of a submission, reserve `span` (tasks / weight) of the tenant's
-- virtual clock, starting no earlier than the queue's virtual time: the fairness_key at the
-- head of the queue, or, with nothing queued, the furthest clock of the queue (everyone
-- starts level). Returns where each reservation starts. Rows are taken in one order, so
-- concurrent submitters of one tenant take turns without deadlocking.
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) AS r(queue, tenant_id, span)
), virtual_time AS (
    SELECT q.queue,
           coalesce(
               (SELECT t.fairness_key FROM tasks AS t
                WHERE t.queue = q.queue AND t.state = 'queued'
                ORDER BY t.priority, t.fairness_key, t.id
                LIMIT 1),
               (SELECT max(f.clock) FROM fairness_clocks AS f WHERE f.queue = q.queue),
               0) AS vtime
    FROM (SELECT DISTINCT queue FROM req) AS q
)
INSERT INTO fairness_clocks AS f (queue, tenant_id, clock, span)
SELECT r.queue, r.tenant_id, v.vtime + r.span, r.span
FROM req AS r
JOIN virtual_time AS v ON v.queue = r.queue
ORDER BY r.queue, r.tenant_id
ON CONFLICT (queue, tenant_id) DO UPDATE
SET clock = greatest(f.clock + excluded.span, excluded.clock), span = excluded.span
RETURNING f.queue, f.tenant_id, f.clock - f.span AS start;
