-- name: debounce_task
-- Adds the task, or gives its payload to the tenant's waiting task of the same queue and
-- debounce key: one statement, so concurrent submits of one key leave one task (the unique
-- partial index tasks_debounce_idx serializes them; the later one updates). A waiting task
-- a worker claims meanwhile leaves the index (state 'running'), and the submit then adds
-- a new task. The task always starts 'scheduled': promote_due makes it ready at run_at and
-- gives it its fairness key then. Only the payload is replaced; the first submit's run_at,
-- priority and other fields stay. `created` tells an insert (xmax 0) from an update.
-- The event is `created` for a new task, `debounced` when a waiting one took the payload.
WITH upserted AS (
    INSERT INTO tasks (
        tenant_id, queue, state, priority, run_at, max_attempts, timeout_seconds, group_id,
        payload, trace_context, debounce_key
    )
    VALUES ($1, $2, 'scheduled', $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (tenant_id, queue, debounce_key)
        WHERE debounce_key IS NOT NULL AND state IN ('scheduled', 'queued')
    DO UPDATE SET payload = excluded.payload
    RETURNING id, tenant_id, queue, group_id, (xmax = 0) AS created
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, data)
    SELECT u.tenant_id, u.id, u.queue, u.group_id,
           CASE WHEN u.created THEN 'created' ELSE 'debounced' END,
           jsonb_build_object('state', 'scheduled')
    FROM upserted AS u
    WHERE u.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT u.id, u.created FROM upserted AS u;
