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
