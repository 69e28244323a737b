-- The task event log (migrations/0014_task_events.sql). Every read stops at the horizon:
-- events of transactions that may still commit are left for the next read, so a reader
-- that resumes after a position never misses an event that commits later.
-- conveyor_event_horizon() can move back (a transaction of another database that ends
-- between the snapshot and the pg_stat_activity read counts again), so each read takes
-- greatest(horizon, floor): the floor ($n) is a horizon this process has already seen
-- (store/event_operations.py). Transactions below it ended or wrote elsewhere: final.

-- name: event_tail
-- Every tenant's events after position ($1, $2), in log order: what an API process reads
-- once per wake-up and fans out to all its clients.
SELECT xid, id, at, tenant_id, task_id, queue, group_id, kind, attempt, data
FROM task_events
WHERE (xid, id) > ($1::bigint, $2::bigint)
  AND xid < greatest((SELECT conveyor_event_horizon()), $4::bigint)
ORDER BY xid, id
LIMIT $3;

-- name: event_head
-- The last position a reader can pass now (0, 0 for an empty log).
SELECT coalesce(max(xid), 0) AS xid, coalesce(max(id), 0) AS id FROM (
    SELECT xid, id FROM task_events
    WHERE xid < greatest((SELECT conveyor_event_horizon()), $1::bigint)
    ORDER BY xid DESC, id DESC
    LIMIT 1
) AS last;

-- name: tenant_events
-- One tenant's events after position ($2, $3), narrowed by group $4, queue $5 and task $6
-- when given; the tenant is required. Read through the position index: a resume is
-- expected to be recent.
SELECT xid, id, at, tenant_id, task_id, queue, group_id, kind, attempt, data
FROM task_events
WHERE (xid, id) > ($2::bigint, $3::bigint)
  AND xid < greatest((SELECT conveyor_event_horizon()), $8::bigint)
  AND tenant_id = $1
  AND ($4::text IS NULL OR group_id = $4) AND ($5::text IS NULL OR queue = $5)
  AND ($6::bigint IS NULL OR task_id = $6)
ORDER BY xid, id
LIMIT $7;

-- name: task_events
-- One task's events after position ($3, $4); the tenant is required (another tenant's
-- task has no events).
SELECT xid, id, at, tenant_id, task_id, queue, group_id, kind, attempt, data
FROM task_events
WHERE task_id = $2 AND tenant_id = $1
  AND (xid, id) > ($3::bigint, $4::bigint)
  AND xid < greatest((SELECT conveyor_event_horizon()), $6::bigint)
ORDER BY xid, id
LIMIT $5;

-- name: append_events
-- An agent's own events (ctx.emit), as one JSON array; written whatever the queue's
-- lifecycle switch says.
WITH added AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT e.tenant_id, e.task_id, e.queue, e.group_id, e.kind, e.attempt, e.data
    FROM jsonb_to_recordset($1::jsonb) AS e(
        tenant_id text, task_id bigint, queue text, group_id text, kind text,
        attempt integer, data jsonb)
    RETURNING 1
)
SELECT count(*) FROM added;

-- name: wake_event_streams
-- After events committed: one notification, in a transaction of its own (event_wake.py).
SELECT pg_notify($1, '');

-- name: event_horizon
-- Where the log stands: the horizon (events of lower xids are final) and the next xid the
-- server will assign (every transaction that has committed so far has a lower one). A
-- reader that saw a task finish waits until the horizon reaches that next xid: from then
-- on the task's log is complete.
SELECT greatest(conveyor_event_horizon(), $1::bigint) AS horizon,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid;

-- name: event_pending
-- Whether committed events after position ($1, $2) wait behind the horizon (an older
-- transaction still runs): the hub then reads again soon instead of at its next poll, since
-- the transaction holding the horizon may end without a notification.
SELECT EXISTS (
    SELECT 1 FROM task_events
    WHERE (xid, id) > ($1::bigint, $2::bigint)
      AND xid >= greatest((SELECT conveyor_event_horizon()), $3::bigint)
) AS pending;

-- name: try_session_lock
-- A session advisory lock, if free: held by a LISTEN connection that must be alone in its
-- database (the event relay to Redis), released by the server when the session ends.
SELECT pg_try_advisory_lock($1::bigint) AS locked;
