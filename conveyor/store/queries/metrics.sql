-- name: queue_metrics
-- What the metrics collector exports about the queues, in one statement
-- (conveyor/observability/queue_metrics.py): per queue and tenant, tasks waiting, scheduled
-- and running and the oldest ready task's run_at; tenants outside the $1 with the most tasks
-- waiting (over all queues) are summed in one row per queue with `other` true. Then the
-- dead-letter count per queue (through task_history_dead_idx), in rows of kind 'dead'.
WITH per_tenant AS (
    SELECT queue, tenant_id,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           min(run_at) FILTER (WHERE state = 'queued') AS oldest
    FROM tasks
    GROUP BY queue, tenant_id
), busiest AS (
    SELECT tenant_id FROM per_tenant
    GROUP BY tenant_id
    ORDER BY sum(queued) DESC, sum(running) DESC, tenant_id
    LIMIT $1
)
SELECT 'load' AS kind,
       p.queue,
       CASE WHEN b.tenant_id IS NULL THEN NULL ELSE p.tenant_id END AS tenant_id,
       sum(p.queued)::bigint AS queued,
       sum(p.scheduled)::bigint AS scheduled,
       sum(p.running)::bigint AS running,
       extract(epoch FROM now() - min(p.oldest))::float8 AS oldest_queued_seconds,
       0::bigint AS dead
FROM per_tenant AS p
LEFT JOIN busiest AS b ON b.tenant_id = p.tenant_id
GROUP BY p.queue, 3
UNION ALL
SELECT 'dead', queue, NULL, 0, 0, 0, NULL, count(*)
FROM task_history
WHERE state = 'dead'
GROUP BY queue;
