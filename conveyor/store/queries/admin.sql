-- name: create_tenant
-- A NULL name, weight or plan keeps the existing value (a new tenant takes its id as name,
-- weight 1, and no plan).
INSERT INTO tenants (id, name, weight, plan_id)
VALUES ($1, coalesce($2, $1), coalesce($3, 1), $4)
ON CONFLICT (id) DO UPDATE
SET name = coalesce($2, tenants.name), weight = coalesce($3, tenants.weight),
    plan_id = coalesce($4, tenants.plan_id)
RETURNING id, name, weight, plan_id, created_at;

-- name: list_tenants
SELECT id, name, weight, plan_id, created_at FROM tenants ORDER BY id;

-- name: get_tenant
SELECT id, name, weight, plan_id, created_at FROM tenants WHERE id = $1;

-- name: list_plans
SELECT id, name, allowed_roles, max_concurrent_per_role, monthly_task_limit,
       monthly_token_budget, weight, start_rate_limit, start_rate_interval,
       llm_requests_per_minute, llm_tokens_per_minute, monthly_spend_limit,
       run_llm_calls, run_llm_tokens, run_llm_cost,
       group_llm_calls, group_llm_tokens, group_llm_cost
FROM plans ORDER BY weight, id;

-- name: update_plan
-- NULL arguments keep what is there; $12 / $16 true replace the run / group caps with
-- $13-$15 / $17-$19 (NULL: no cap).
UPDATE plans
SET max_concurrent_per_role = coalesce($2, max_concurrent_per_role),
    monthly_task_limit = coalesce($3, monthly_task_limit),
    weight = coalesce($4, weight),
    start_rate_limit = coalesce($5, start_rate_limit),
    start_rate_interval = coalesce($6, start_rate_interval),
    allowed_roles = coalesce($7, allowed_roles),
    monthly_token_budget = coalesce($8, monthly_token_budget),
    llm_requests_per_minute = coalesce($9, llm_requests_per_minute),
    llm_tokens_per_minute = coalesce($10, llm_tokens_per_minute),
    monthly_spend_limit = coalesce($11, monthly_spend_limit),
    run_llm_calls = CASE WHEN $12 THEN $13 ELSE run_llm_calls END,
    run_llm_tokens = CASE WHEN $12 THEN $14 ELSE run_llm_tokens END,
    run_llm_cost = CASE WHEN $12 THEN $15 ELSE run_llm_cost END,
    group_llm_calls = CASE WHEN $16 THEN $17 ELSE group_llm_calls END,
    group_llm_tokens = CASE WHEN $16 THEN $18 ELSE group_llm_tokens END,
    group_llm_cost = CASE WHEN $16 THEN $19 ELSE group_llm_cost END
WHERE id = $1
RETURNING id, name, allowed_roles, max_concurrent_per_role, monthly_task_limit,
          monthly_token_budget, weight, start_rate_limit, start_rate_interval,
          llm_requests_per_minute, llm_tokens_per_minute, monthly_spend_limit,
          run_llm_calls, run_llm_tokens, run_llm_cost,
          group_llm_calls, group_llm_tokens, group_llm_cost;

-- name: set_tenant_agent
-- Creates or updates a tenant's override of one role; NULL arguments keep what is there.
INSERT INTO tenant_agents AS a (tenant_id, queue, enabled, max_concurrent, monthly_task_limit,
                                model_override, adapter_override, start_rate_limit,
                                start_rate_interval)
VALUES ($1, $2, coalesce($3, true), $4, $5, $6, $7, $8, $9)
ON CONFLICT (tenant_id, queue) DO UPDATE
SET enabled = coalesce($3, a.enabled),
    max_concurrent = coalesce($4, a.max_concurrent),
    monthly_task_limit = coalesce($5, a.monthly_task_limit),
    model_override = coalesce($6, a.model_override),
    adapter_override = coalesce($7, a.adapter_override),
    start_rate_limit = coalesce($8, a.start_rate_limit),
    start_rate_interval = coalesce($9, a.start_rate_interval)
RETURNING tenant_id, queue, enabled, max_concurrent, monthly_task_limit, model_override,
          adapter_override, start_rate_limit, start_rate_interval;

-- name: list_tenant_agents
SELECT tenant_id, queue, enabled, max_concurrent, monthly_task_limit, model_override,
       adapter_override, start_rate_limit, start_rate_interval
FROM tenant_agents WHERE tenant_id = $1 ORDER BY queue;

-- name: tenant_usage
SELECT queue, tasks FROM tenant_usage WHERE tenant_id = $1 AND month = $2 ORDER BY queue;

-- name: set_queue_paused
INSERT INTO queues (name, paused, paused_at)
VALUES ($1, $2, CASE WHEN $2 THEN now() END)
ON CONFLICT (name) DO UPDATE
SET paused = excluded.paused, paused_at = excluded.paused_at;

-- name: paused_queues
SELECT name FROM queues WHERE paused ORDER BY name;

-- name: list_queue_settings
SELECT name, paused, max_running, aging_seconds, depth_threshold, events FROM queues ORDER BY name;

-- name: set_queue_limits
-- NULL keeps the current value; max_running 0 removes the cap, depth_threshold 0 the
-- threshold.
INSERT INTO queues AS s (name, max_running, aging_seconds, depth_threshold, events)
VALUES ($1, nullif($2, 0), coalesce($3, 30), nullif($4::int, 0), coalesce($5::bool, true))
ON CONFLICT (name) DO UPDATE
SET max_running = CASE WHEN $2 IS NULL THEN s.max_running ELSE nullif($2, 0) END,
    aging_seconds = coalesce($3, s.aging_seconds),
    depth_threshold = CASE WHEN $4::int IS NULL THEN s.depth_threshold ELSE nullif($4::int, 0) END,
    events = coalesce($5::bool, s.events)
RETURNING name, paused, max_running, aging_seconds, depth_threshold, events;

-- name: list_dead
SELECT id, tenant_id, queue, attempts, max_attempts, last_error, payload, created_at,
       finished_at
FROM task_history
WHERE state = 'dead'
  AND ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR tenant_id = $2)
ORDER BY finished_at DESC, id DESC
LIMIT $3;

-- name: replay_dead
-- Moves dead tasks back to the queue with a fresh attempt budget, keeping their ids. With
-- no filter at all it matches nothing: replaying everything must be asked for ($4 true).
WITH picked AS (
    SELECT id, finished_at FROM task_history
    WHERE state = 'dead'
      AND ($1::bigint[] IS NULL OR id = ANY($1))
      AND ($2::text IS NULL OR queue = $2)
      AND ($3::text IS NULL OR tenant_id = $3)
      AND ($1 IS NOT NULL OR $2 IS NOT NULL OR $3 IS NOT NULL OR $4)
    ORDER BY finished_at, id
    LIMIT $5
), moved AS (
    DELETE FROM task_history AS h
    USING picked AS p
    WHERE h.id = p.id AND h.finished_at = p.finished_at AND h.state = 'dead'
    RETURNING h.*
), requeued AS (
    INSERT INTO tasks (
        id, tenant_id, queue, state, priority, run_at, attempts, max_attempts,
        timeout_seconds, idempotency_key, parent_id, group_id, payload, trace_context,
        last_error, created_at
    )
    SELECT id, tenant_id, queue, 'queued', priority, now(), 0, max_attempts, timeout_seconds,
           idempotency_key, parent_id, group_id, payload, trace_context, last_error, created_at
    FROM moved
    RETURNING id, tenant_id, queue, group_id
), logged AS (
    -- The task's log goes on: `replayed`, then a new run's `started` (0014).
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, data)
    SELECT r.tenant_id, r.id, r.queue, r.group_id, 'replayed', NULL
    FROM requeued AS r
    WHERE r.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT r.id, r.queue FROM requeued AS r;

-- name: queue_depths
-- Depth and age per queue of the hot table.
SELECT queue,
       count(*) FILTER (WHERE state = 'queued') AS queued,
       count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'waiting') AS waiting,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'queued'))::float8
           AS oldest_queued_seconds
FROM tasks
GROUP BY queue
ORDER BY queue;

-- name: dead_counts
SELECT queue, count(*) AS dead FROM task_history WHERE state = 'dead' GROUP BY queue;

-- name: upsert_worker
-- Also declares the worker's queues (see queue_declarations): the worker's own row is
-- forgotten a day after it stops, but a queue that was served stays a known queue.
WITH declared AS (
    INSERT INTO queues (name) SELECT DISTINCT unnest($4::text[])
    ON CONFLICT (name) DO NOTHING
)
INSERT INTO workers (id, host, pid, queues, concurrency, state, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, 'running', now(), now())
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, state = 'running', heartbeat_at = now();

-- name: set_worker_state
UPDATE workers SET state = $2, heartbeat_at = now() WHERE id = $1;

-- name: list_workers
SELECT id, host, pid, queues, concurrency, state, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS silent_seconds,
       unwritten,
       extract(epoch FROM now() - last_outcome_at)::float8 AS seconds_since_outcome,
       (SELECT count(*) FROM tasks t WHERE t.worker_id = w.id AND t.state = 'running')
           AS running
FROM workers AS w
ORDER BY started_at;

-- name: prune_workers
-- Forget workers that stopped or went silent long ago.
DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => $1::float8);
