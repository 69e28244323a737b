-- name: finish_batch
-- Moves leased tasks to task_history as succeeded, dead or cancelled, in one statement,
-- and writes each one's final event (unless its queue turned events off, 0014) in it.
-- Only rows whose lease token still matches are moved: a zombie worker's result (its lease
-- expired and another worker claimed the task) matches nothing and is refused.
-- Results and errors travel as two JSON arrays aligned with the ids: a jsonb[] parameter
-- would read a list result as another array dimension. JSON null means no result/error.
WITH input AS (
    SELECT i.id, i.token, i.final_state,
           nullif(i.result, 'null'::jsonb) AS result, nullif(i.error, 'null'::jsonb) AS error
    FROM ROWS FROM (
        unnest($1::bigint[]), unnest($2::bigint[]), unnest($3::text[]),
        jsonb_array_elements($4::jsonb), jsonb_array_elements($5::jsonb)
    ) AS i(id, token, final_state, result, error)
), done AS (
    DELETE FROM tasks AS t
    USING input AS i
    WHERE t.id = i.id AND t.lease_token = i.token
    RETURNING t.*, i.final_state, i.result AS final_result, i.error AS final_error
), archived AS (
    INSERT INTO task_history (
        id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
        idempotency_key, parent_id, group_id, payload, trace_context, result, last_error,
        worker_id, created_at, started_at
    )
    SELECT id, tenant_id, queue, final_state, priority, attempts, max_attempts,
           timeout_seconds, idempotency_key, parent_id, group_id, payload, trace_context,
           final_result, coalesce(final_error, last_error), worker_id, created_at, started_at
    FROM done
    RETURNING id, tenant_id, group_id
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT d.tenant_id, d.id, d.queue, d.group_id, d.final_state, d.attempts,
           CASE WHEN d.final_state = 'succeeded' THEN NULL
                ELSE jsonb_build_object('error', coalesce(d.final_error, d.last_error)) END
    FROM done AS d
    WHERE d.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT a.id, a.tenant_id, a.group_id FROM archived AS a;

-- name: retry_batch
-- Leased tasks go back to wait: 'scheduled' until now() + delay, or 'queued' at once when
-- the delay is zero. A snooze ($5 true) gives back the attempt it counted at claim. Each
-- writes a `retried` event (`snoozed` when $5) in the same statement.
WITH input AS (
    SELECT * FROM ROWS FROM (
        unnest($1::bigint[]), unnest($2::bigint[]), unnest($3::float8[]),
        jsonb_array_elements($4::jsonb), unnest($5::bool[])
    ) AS i(id, token, delay, error, uncount)
), moved AS (
    UPDATE tasks AS t
    SET state = CASE WHEN i.delay > 0 THEN 'scheduled' ELSE 'queued' END,
        run_at = now() + make_interval(secs => i.delay),
        attempts = CASE WHEN i.uncount THEN greatest(t.attempts - 1, 0) ELSE t.attempts END,
        last_error = coalesce(nullif(i.error, 'null'::jsonb), t.last_error),
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        started_at = NULL
    FROM input AS i
    WHERE t.id = i.id AND t.lease_token = i.token
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, t.state, t.attempts, t.run_at,
              i.uncount, nullif(i.error, 'null'::jsonb) AS error
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT m.tenant_id, m.id, m.queue, m.group_id,
           CASE WHEN m.uncount THEN 'snoozed' ELSE 'retried' END, m.attempts,
           jsonb_build_object('error', m.error, 'run_at', m.run_at)
    FROM moved AS m
    WHERE m.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT m.id, m.queue, m.state FROM moved AS m;

-- name: cancel_waiting
-- A tenant's task that is not running (scheduled, queued, or waiting for a signal) is
-- cancelled at once. The tenant is required:
-- another tenant's id matches nothing, like an id that does not exist.
WITH gone AS (
    DELETE FROM tasks
    WHERE tenant_id = $1 AND id = $2 AND state IN ('scheduled', 'queued', 'waiting')
    RETURNING *
), archived AS (
    INSERT INTO task_history (
        id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
        idempotency_key, parent_id, group_id, payload, trace_context, result, last_error,
        worker_id, created_at, started_at
    )
    SELECT id, tenant_id, queue, 'cancelled', priority, attempts, max_attempts,
           timeout_seconds, idempotency_key, parent_id, group_id, payload, trace_context, NULL,
           jsonb_build_object('type', 'Cancelled', 'message', $3::text),
           worker_id, created_at, started_at
    FROM gone
    RETURNING id
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT g.tenant_id, g.id, g.queue, g.group_id, 'cancelled', g.attempts,
           jsonb_build_object('error', jsonb_build_object('type', 'Cancelled', 'message', $3::text))
    FROM gone AS g
    WHERE g.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT a.id FROM archived AS a;

-- name: cancel_waiting_any_tenant
-- The same for an operator (CLI, admin), whichever tenant owns the task.
WITH gone AS (
    DELETE FROM tasks
    WHERE id = $1 AND state IN ('scheduled', 'queued', 'waiting')
    RETURNING *
), archived AS (
    INSERT INTO task_history (
        id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
        idempotency_key, parent_id, group_id, payload, trace_context, result, last_error,
        worker_id, created_at, started_at
    )
    SELECT id, tenant_id, queue, 'cancelled', priority, attempts, max_attempts,
           timeout_seconds, idempotency_key, parent_id, group_id, payload, trace_context, NULL,
           jsonb_build_object('type', 'Cancelled', 'message', $2::text),
           worker_id, created_at, started_at
    FROM gone
    RETURNING id
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT g.tenant_id, g.id, g.queue, g.group_id, 'cancelled', g.attempts,
           jsonb_build_object('error', jsonb_build_object('type', 'Cancelled', 'message', $2::text))
    FROM gone AS g
    WHERE g.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT a.id FROM archived AS a;

-- name: request_cancel_running
-- A running task is asked to stop; its worker sees the flag on its next heartbeat (or the
-- notification) and finishes it as cancelled. If the worker is dead, the reaper does.
UPDATE tasks SET cancel_requested = true
WHERE tenant_id = $1 AND id = $2 AND state = 'running'
RETURNING id, worker_id;

-- name: request_cancel_running_any_tenant
UPDATE tasks SET cancel_requested = true
WHERE id = $1 AND state = 'running'
RETURNING id, worker_id;

-- name: notify_cancel
SELECT pg_notify('conveyor_cancel', $1::text);

-- name: get_active_task
-- A tenant's task by id (tenant required: another tenant's id finds nothing).
SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
       idempotency_key, parent_id, group_id, payload, trace_context, NULL::jsonb AS result,
       last_error, worker_id, run_at, lease_expires_at, created_at, started_at,
       NULL::timestamptz AS finished_at, waiting_for, wait_until
FROM tasks
WHERE tenant_id = $1 AND id = $2;

-- name: get_active_task_any_tenant
SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
       idempotency_key, parent_id, group_id, payload, trace_context, NULL::jsonb AS result,
       last_error, worker_id, run_at, lease_expires_at, created_at, started_at,
       NULL::timestamptz AS finished_at, waiting_for, wait_until
FROM tasks
WHERE id = $1;

-- name: get_finished_task
SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
       idempotency_key, parent_id, group_id, payload, trace_context, result,
       last_error, worker_id, NULL::timestamptz AS run_at, NULL::timestamptz AS lease_expires_at,
       created_at, started_at, finished_at, NULL::text AS waiting_for,
       NULL::timestamptz AS wait_until
FROM task_history
WHERE tenant_id = $1 AND id = $2;

-- name: get_finished_task_any_tenant
SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
       idempotency_key, parent_id, group_id, payload, trace_context, result,
       last_error, worker_id, NULL::timestamptz AS run_at, NULL::timestamptz AS lease_expires_at,
       created_at, started_at, finished_at, NULL::text AS waiting_for,
       NULL::timestamptz AS wait_until
FROM task_history
WHERE id = $1;

-- name: list_tasks
-- A tenant's tasks, active and finished, newest first: ids below the cursor $2 (NULL: from
-- the newest), narrowed by queue $3, group $4, state $5 and a created range [$7, $8) when
-- given. The tenant is required; task_history's key (tenant_id, id, finished_at) serves
-- its half.
SELECT * FROM (
    SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
           idempotency_key, parent_id, group_id, payload, trace_context, NULL::jsonb AS result,
           last_error, worker_id, run_at, lease_expires_at, created_at, started_at,
           NULL::timestamptz AS finished_at, waiting_for, wait_until
    FROM tasks
    WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2)
      AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR group_id = $4)
      AND ($5::text IS NULL OR state = $5)
      AND ($7::timestamptz IS NULL OR created_at >= $7)
      AND ($8::timestamptz IS NULL OR created_at < $8)
    UNION ALL
    SELECT id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
           idempotency_key, parent_id, group_id, payload, trace_context, result,
           last_error, worker_id, NULL::timestamptz AS run_at, NULL::timestamptz AS lease_expires_at,
           created_at, started_at, finished_at, NULL::text AS waiting_for,
           NULL::timestamptz AS wait_until
    FROM task_history
    WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2)
      AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR group_id = $4)
      AND ($5::text IS NULL OR state = $5)
      AND ($7::timestamptz IS NULL OR created_at >= $7)
      AND ($8::timestamptz IS NULL OR created_at < $8)
) AS listed
ORDER BY id DESC
LIMIT $6;
