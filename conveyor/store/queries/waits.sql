-- Durable waits: a leased task suspends until a signal or its deadline; a signal is
-- write-once per (task, name) (see core/waits.py). A wait that ends (signal, deadline)
-- makes the task 'scheduled' at now(): the promoter then queues it with a fresh fairness
-- key, as for any task whose time has come.

-- name: suspend_leases
-- Leased tasks leave 'running' for 'waiting' on signal $3 (deadline $4 seconds from now, NULL:
-- none). Like a snooze, the attempt counted at claim is given back. A task whose cancel was
-- requested is not suspended: its lease runs out and the reaper finishes it as cancelled.
-- A debounced task's key is dropped: its burst was coalesced into the run that started, and
-- a later submit of the key makes a task of its own (which this one, resumed, must not meet
-- in tasks_debounce_idx). Each writes a `waiting` event (signal name, deadline) in the same
-- statement (0014).
WITH moved AS (
    UPDATE tasks AS t
    SET state = 'waiting',
        waiting_for = i.name,
        debounce_key = NULL,
        wait_until = now() + make_interval(secs => i.timeout),
        attempts = greatest(t.attempts - 1, 0),
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        started_at = NULL
    FROM ROWS FROM (
        unnest($1::bigint[]), unnest($2::bigint[]), unnest($3::text[]), unnest($4::float8[])
    ) AS i(id, token, name, timeout)
    WHERE t.id = i.id AND t.lease_token = i.token AND NOT t.cancel_requested
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, t.attempts, t.waiting_for, t.wait_until
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT t.tenant_id, t.id, t.queue, t.group_id, 'waiting', t.attempts,
           jsonb_build_object('signal', t.waiting_for, 'until', t.wait_until)
    FROM moved AS t
    WHERE t.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT m.id FROM moved AS m;

-- name: wake_signalled
-- Tasks of $1 that went waiting for a signal already delivered (it came while they ran):
-- their wait ends at once. Run after suspend_leases in its transaction, as a new statement,
-- so it sees every signal committed before it (deliver_signal locks the task row first).
UPDATE tasks AS t
SET state = 'scheduled', run_at = now(), waiting_for = NULL, wait_until = NULL
FROM task_signals AS s
WHERE t.id = ANY ($1::bigint[]) AND t.state = 'waiting'
  AND s.tenant_id = t.tenant_id AND s.task_id = t.id AND s.name = t.waiting_for
RETURNING t.id;

-- name: lock_signalled_task
-- The tenant's active task $2, locked: a suspension of it waits for this delivery to
-- commit, or this delivery for the suspension (so neither misses the other).
SELECT id, tenant_id, state, waiting_for FROM tasks
WHERE tenant_id = $1 AND id = $2
FOR UPDATE;

-- name: lock_signalled_task_any_tenant
SELECT id, tenant_id, state, waiting_for FROM tasks
WHERE id = $1
FOR UPDATE;

-- name: finished_task_state
-- The final state of a finished task of the tenant (NULL: no such task).
SELECT state FROM task_history WHERE tenant_id = $1 AND id = $2 LIMIT 1;

-- name: finished_task_state_any_tenant
SELECT state FROM task_history WHERE id = $1 LIMIT 1;

-- name: insert_signal
-- The first signal of a name wins; a later one finds the row and inserts nothing.
-- A delivered signal is a `signal` event of the task's log (0014).
WITH added AS (
    INSERT INTO task_signals (tenant_id, task_id, name, payload)
    VALUES ($1, $2, $3, $4::jsonb)
    ON CONFLICT (tenant_id, task_id, name) DO NOTHING
    RETURNING created_at
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, data)
    SELECT t.tenant_id, t.id, t.queue, t.group_id, 'signal', jsonb_build_object('name', $3::text)
    FROM added, tasks AS t
    WHERE t.id = $2 AND t.tenant_id = $1
      AND t.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT a.created_at FROM added AS a;

-- name: get_signal
SELECT name, payload, timed_out, created_at FROM task_signals
WHERE tenant_id = $1 AND task_id = $2 AND name = $3;

-- name: wake_on_signal
-- The task waits for exactly this signal: its wait ends now.
UPDATE tasks
SET state = 'scheduled', run_at = now(), waiting_for = NULL, wait_until = NULL
WHERE id = $1 AND state = 'waiting' AND waiting_for = $2
RETURNING id;

-- name: expire_waits
-- Waits past their deadline end: the timeout is recorded under the wait's name (so every
-- rerun's ctx.wait_for raises WaitTimedOut, and a late signal is refused) and the task is
-- made due to run again. Rows a signal delivery holds are skipped: it decides first.
WITH due AS (
    SELECT id, tenant_id, waiting_for FROM tasks
    WHERE state = 'waiting' AND wait_until <= now()
    ORDER BY wait_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    INSERT INTO task_signals (tenant_id, task_id, name, payload, timed_out)
    SELECT tenant_id, id, waiting_for, NULL, true FROM due
    ON CONFLICT (tenant_id, task_id, name) DO NOTHING
), woken AS (
    UPDATE tasks AS t
    SET state = 'scheduled', run_at = now(), waiting_for = NULL, wait_until = NULL
    FROM due
    WHERE t.id = due.id
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, due.waiting_for
), logged AS (
    -- `wait_timed_out` in the task's log (0014).
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, data)
    SELECT t.tenant_id, t.id, t.queue, t.group_id, 'wait_timed_out',
           jsonb_build_object('signal', t.waiting_for)
    FROM woken AS t
    WHERE t.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT w.id FROM woken AS w;
