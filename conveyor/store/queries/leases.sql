-- Statements that act on a lease match (id, lease_token) only, without state = 'running':
-- a token is set by the claim and cleared by every way out of 'running', so the match
-- implies the state. Leaving the state out matters: statistics taken while nothing runs
-- made the planner scan all of `tasks` for 'running' rows and re-run the unnest per row
-- (measured: finish_batch 765 ms for 500 tasks; by primary key it is a few ms).

-- name: claim_batch
-- Takes up to $2 ready tasks of the queues $1 for worker $3 for $4 seconds under one new
-- fencing token, fairly between tenants and within every cap and start rate limit: see
-- conveyor_claim_v2 in migrations/0011_claim_v2.sql (v1 of 0005 serves workers of the
-- previous release during a rolling deploy). A task submitted without max_attempts takes
-- the default of its agent ($5, aligned with $1) at its first claim.
-- Each claimed task's `started` event is written in the same statement (0014).
WITH claimed AS (
    SELECT * FROM conveyor_claim_v2($1::text[], $2::int, $3::text, $4::float8, $5::int[])
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT c.tenant_id, c.id, c.queue, c.group_id, 'started', c.attempts,
           jsonb_build_object('worker', $3::text)
    FROM claimed AS c
    WHERE c.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT * FROM claimed;

-- name: extend_leases
-- The worker's heartbeat: one statement touches its own row (with $5 outcomes waiting
-- unwritten in it and its last outcome recorded $6 seconds ago) and extends every lease it
-- still holds. Rows not returned were lost (taken over); cancel_requested asks the worker
-- to stop that task.
WITH beat AS (
    UPDATE workers
    SET heartbeat_at = now(),
        unwritten = $5::int,
        last_outcome_at = now() - make_interval(secs => $6::float8)
    WHERE id = $1
)
UPDATE tasks AS t
SET lease_expires_at = now() + make_interval(secs => $2::float8)
FROM unnest($3::bigint[], $4::bigint[]) AS h(id, token)
WHERE t.id = h.id AND t.lease_token = h.token
RETURNING t.id, t.cancel_requested;

-- name: release_leases
-- Graceful shutdown: hand unfinished tasks back without counting the attempt.
WITH moved AS (
    UPDATE tasks AS t
    SET state = 'queued',
        attempts = greatest(t.attempts - 1, 0),
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        started_at = NULL
    FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
    WHERE t.id = h.id AND t.lease_token = h.token
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, t.attempts
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT m.tenant_id, m.id, m.queue, m.group_id, 'released', m.attempts,
           jsonb_build_object('reason', 'shutdown')
    FROM moved AS m
    WHERE m.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT m.id, m.queue FROM moved AS m;

-- name: release_orphaned_leases
-- A claim whose reply was lost (the connection dropped after its commit) leaves tasks
-- leased to worker $1 that never learned of them. The worker hands back every task leased
-- to it that it does not hold ($2), without counting the attempt: none of them ran.
WITH moved AS (
    UPDATE tasks AS t
    SET state = 'queued',
        attempts = greatest(t.attempts - 1, 0),
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        started_at = NULL
    WHERE t.worker_id = $1 AND t.state = 'running' AND NOT (t.id = ANY($2::bigint[]))
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, t.attempts
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT m.tenant_id, m.id, m.queue, m.group_id, 'released', m.attempts,
           jsonb_build_object('reason', 'orphaned')
    FROM moved AS m
    WHERE m.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT m.id, m.queue FROM moved AS m;

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
    RETURNING t.id, t.tenant_id, t.queue, t.group_id, t.attempts, t.last_error,
              'queued'::text AS outcome
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
    RETURNING id, tenant_id, queue, group_id, attempts, last_error, state AS outcome
), logged AS (
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT e.tenant_id, e.id, e.queue, e.group_id,
           CASE WHEN e.outcome = 'queued' THEN 'retried' ELSE e.outcome END, e.attempts,
           jsonb_build_object('error', e.last_error)
    FROM (SELECT * FROM requeued UNION ALL SELECT * FROM archived) AS e
    WHERE e.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT id, queue, outcome FROM requeued
UNION ALL
SELECT id, queue, outcome FROM archived;

-- name: promote_due
-- Scheduled tasks whose run_at has come become ready. With fairness ($2) each takes its
-- fairness_key now, from its tenant's clock at its level, like a fresh submission: a key from
-- submission time would put a 9:00 batch (or a wave of retries) ahead of everyone.
WITH due AS MATERIALIZED (
    SELECT t.id, t.tenant_id, t.queue, t.priority FROM tasks AS t
    WHERE t.state = 'scheduled' AND t.run_at <= now()
    ORDER BY t.run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), levels AS MATERIALIZED (
    SELECT d.tenant_id, d.queue, d.priority, count(*) AS n,
           1.0 / (coalesce(tn.weight, 1) * coalesce(p.weight, 1))::float8 AS step
    FROM due AS d
    LEFT JOIN tenants AS tn ON tn.id = d.tenant_id
    LEFT JOIN plans AS p ON p.id = tn.plan_id
    GROUP BY d.tenant_id, d.queue, d.priority, tn.weight, p.weight
), level_rows AS (
    INSERT INTO queue_clocks (queue, priority)
    SELECT DISTINCT l.queue, l.priority FROM levels AS l
    ORDER BY l.queue, l.priority
    ON CONFLICT DO NOTHING
), reserved AS (
    INSERT INTO tenant_clocks AS c (tenant_id, queue, priority, clock, span)
    SELECT l.tenant_id, l.queue, l.priority, coalesce(v.vtime, 0) + l.n * l.step, l.n * l.step
    FROM levels AS l
    LEFT JOIN queue_clocks AS v ON v.queue = l.queue AND v.priority = l.priority
    WHERE $2::bool
    ORDER BY l.tenant_id, l.queue, l.priority
    ON CONFLICT (tenant_id, queue, priority) DO UPDATE
    SET clock = greatest(c.clock + excluded.span, excluded.clock), span = excluded.span
    RETURNING c.tenant_id, c.queue, c.priority, c.clock - c.span AS start
), keyed AS (
    SELECT d.id,
           r.start + l.step * row_number() OVER (
               PARTITION BY d.tenant_id, d.queue, d.priority ORDER BY d.id) AS fairness_key
    FROM due AS d
    JOIN levels AS l USING (tenant_id, queue, priority)
    JOIN reserved AS r USING (tenant_id, queue, priority)
)
UPDATE tasks AS t
SET state = 'queued', fairness_key = coalesce(k.fairness_key, t.fairness_key)
FROM due LEFT JOIN keyed AS k ON k.id = due.id
WHERE t.id = due.id
RETURNING t.queue;

-- name: try_leader_lock
-- One maintenance job of a kind at a time across all workers, for this transaction only
-- (safe behind PgBouncer in transaction mode).
SELECT pg_try_advisory_xact_lock($1::bigint);
