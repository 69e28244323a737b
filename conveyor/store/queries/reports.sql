-- name: history_summary
-- Per queue, tasks finished since $1: counts by final state, and wait (enqueue to start)
-- and run (start to finish) percentiles in seconds.
SELECT queue,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'dead') AS dead,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       sum(greatest(attempts - 1, 0)) AS retries,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - created_at)) AS wait_p50,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - created_at)) AS wait_p99,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - started_at)) AS run_p50
FROM task_history
WHERE finished_at >= $1
GROUP BY queue
ORDER BY queue;

-- name: tenant_waits
-- Per tenant, tasks finished since $1 and their wait (enqueue to start) percentiles.
SELECT tenant_id,
       count(*) AS tasks,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - created_at)) AS wait_p50,
       percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - created_at)) AS wait_p99
FROM task_history
WHERE finished_at >= $1 AND started_at IS NOT NULL
GROUP BY tenant_id
ORDER BY tenant_id;

-- name: running_by_tenant
-- Tasks running now per (tenant, queue), through the running index: what the caps bound.
SELECT tenant_id, queue, count(*) AS running
FROM tasks WHERE state = 'running'
GROUP BY tenant_id, queue;

-- name: tenant_task_counts
-- A tenant's tasks created in [$2, $3) per queue and state, waiting, running or finished. A
-- task finishes after it was created, so history partitions older than $2 are skipped.
SELECT queue, state, count(*) AS n FROM tasks
WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*) FROM task_history
WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 AND finished_at >= $2
GROUP BY queue, state;
