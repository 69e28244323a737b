-- Statements that act on a lease match (id, lease_token) only, without state = 'running':
-- a token is set by the claim and cleared by every way out of 'running', so the match
-- implies the state. Leaving the state out matters: statistics taken while nothing runs
-- made the planner scan all of `tasks` for 'running' rows and re-run the unnest per row
-- (measured: finish_batch 765 ms for 500 tasks; by primary key it is a few ms).

-- name: claim_batch
-- Takes up to $2 ready tasks of the queues $1 that are not paused, in (priority,
-- fairness_key, id) order, and leases them to worker $3 for $4 seconds under one new fencing
-- token. Each queue is read through its own index range (LATERAL) so the order holds across
-- several queues without sorting the backlog. A task submitted without max_attempts takes
-- the default of its agent ($5, aligned with $1) at its first claim.
WITH active AS (
    -- DISTINCT: a queue named twice would otherwise yield its rows twice and waste the limit.
    SELECT DISTINCT ON (q) q, default_attempts
    FROM unnest($1::text[], $5::int[]) AS a(q, default_attempts)
    WHERE NOT EXISTS (SELECT 1 FROM queues WHERE name = q AND paused)
), picked AS (
    SELECT c.id, active.default_attempts
    FROM active, LATERAL (
        SELECT id, priority, fairness_key FROM tasks
        WHERE queue = active.q AND state = 'queued'
        ORDER BY priority, fairness_key, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority, c.fairness_key, c.id
    LIMIT $2
), token AS (
    SELECT nextval('lease_token_seq') AS value
)
UPDATE tasks AS t
SET state = 'running',
    attempts = t.attempts + 1,
    max_attempts = coalesce(t.max_attempts, picked.default_attempts),
    worker_id = $3,
    lease_token = token.value,
    lease_expires_at = now() + make_interval(secs => $4::float8),
    started_at = now()
FROM picked, token
WHERE t.id = picked.id
RETURNING t.id, t.tenant_id, t.queue, t.priority, t.attempts, t.max_attempts,
          t.timeout_seconds, t.lease_token, t.lease_expires_at, t.parent_id, t.group_id,
          t.payload, t.trace_context, t.created_at;

-- name: extend_leases
-- The worker's heartbeat: one statement touches its own row and extends every lease it
-- still holds. Rows not returned were lost (taken over); cancel_requested asks the worker
-- to stop that task.
WITH beat AS (
    UPDATE workers SET heartbeat_at = now() WHERE id = $1
)
UPDATE tasks AS t
SET lease_expires_at = now() + make_interval(secs => $2::float8)
FROM unnest($3::bigint[], $4::bigint[]) AS h(id, token)
WHERE t.id = h.id AND t.lease_token = h.token
RETURNING t.id, t.cancel_requested;

-- name: release_leases
-- Graceful shutdown: hand unfinished tasks back without counting the attempt.
UPDATE tasks AS t
SET state = 'queued',
    attempts = greatest(t.attempts - 1, 0),
    lease_token = NULL,
    lease_expires_at = NULL,
    worker_id = NULL,
    started_at = NULL
FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
WHERE t.id = h.id AND t.lease_token = h.token
RETURNING t.id, t.queue;

-- name: reap_expired_leases
-- Tasks whose lease ran out (their worker died or hung). The attempt was counted at claim;
-- a task with attempts left goes back to the queue, one without (or with a cancel pending)
-- is finished as dead (or cancelled).
WITH expired AS (
    SELECT id FROM tasks
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE tasks AS t
    SET state = 'queued',
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        last_error = jsonb_build_object(
            'type', 'LeaseExpired',
            'message', format('lease of worker %s expired on attempt %s', t.worker_id, t.attempts))
    FROM expired AS e
    WHERE t.id = e.id AND t.attempts < t.max_attempts AND NOT t.cancel_requested
    RETURNING t.id, t.queue, 'queued'::text AS outcome
), finished AS (
    DELETE FROM tasks AS t
    USING expired AS e
    WHERE t.id = e.id AND (t.attempts >= t.max_attempts OR t.cancel_requested)
    RETURNING t.*
), archived AS (
    INSERT INTO task_history (
        id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
        idempotency_key, parent_id, group_id, payload, trace_context, result, last_error,
        worker_id, created_at, started_at
    )
    SELECT id, tenant_id, queue,
           CASE WHEN cancel_requested THEN 'cancelled' ELSE 'dead' END,
           priority, attempts, max_attempts, timeout_seconds, idempotency_key, parent_id,
           group_id, payload, trace_context, NULL,
           jsonb_build_object(
               'type', 'LeaseExpired',
               'message', format('lease of worker %s expired on the last attempt (%s/%s)',
                                 worker_id, attempts, max_attempts)),
           worker_id, created_at, started_at
    FROM finished
    RETURNING id, queue, state AS outcome
)
SELECT id, queue, outcome FROM requeued
UNION ALL
SELECT id, queue, outcome FROM archived;

-- name: promote_due
-- Scheduled tasks whose run_at has come become ready.
WITH due AS (
    SELECT id FROM tasks
    WHERE state = 'scheduled' AND run_at <= now()
    ORDER BY run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t SET state = 'queued'
FROM due
WHERE t.id = due.id
RETURNING t.queue;

-- name: try_leader_lock
-- One maintenance job of a kind at a time across all workers, for this transaction only
-- (safe behind PgBouncer in transaction mode).
SELECT pg_try_advisory_xact_lock($1::bigint);
