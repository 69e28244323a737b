-- name: record_llm_calls
-- A batch of call records as one JSON array; cost from the price table (NULL: no price).
-- Asynchronous commit: a server crash may lose the last fraction of a second of records,
-- as a killed worker loses what it buffered. Each call made for a task also becomes an
-- `llm_call` event of the task's log (0014); the record names the task's queue.
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), recorded AS (
    INSERT INTO llm_calls (created_at, tenant_id, task_id, group_id, requested, provider,
                           model, attempt, outcome, stream, prompt_tokens, completion_tokens,
                           usage_estimated, cost, latency_ms, ttft_ms, status, error)
    SELECT r.created_at, r.tenant_id, r.task_id, r.group_id, r.requested, r.provider, r.model,
           r.attempt, r.outcome, r.stream, r.prompt_tokens, r.completion_tokens,
           r.usage_estimated,
           (r.prompt_tokens * pr.input_per_mtok + r.completion_tokens * pr.output_per_mtok)
               / 1000000,
           r.latency_ms, r.ttft_ms, r.status, r.error
    FROM jsonb_to_recordset($1::jsonb) AS r(
            created_at timestamptz, tenant_id text, task_id bigint, group_id text,
            requested text, provider text, model text, attempt integer, outcome text,
            stream boolean, prompt_tokens integer, completion_tokens integer,
            usage_estimated boolean, latency_ms real, ttft_ms real, status smallint,
            error text)
    CROSS JOIN relaxed
    LEFT JOIN LATERAL conveyor_llm_price(r.provider, r.model) AS pr ON true
    RETURNING tenant_id, task_id, group_id, requested, provider, model, attempt, outcome,
              stream, prompt_tokens, completion_tokens, cost, latency_ms, ttft_ms, status
)
INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
SELECT c.tenant_id, c.task_id, r.queue, c.group_id, 'llm_call', r.task_attempt,
       jsonb_build_object(
           'requested', c.requested, 'provider', c.provider, 'model', c.model,
           'attempt', c.attempt, 'outcome', c.outcome, 'stream', c.stream,
           'prompt_tokens', c.prompt_tokens, 'completion_tokens', c.completion_tokens,
           'cost', c.cost, 'latency_ms', c.latency_ms, 'ttft_ms', c.ttft_ms,
           'status', c.status)
FROM recorded AS c
JOIN LATERAL (
    SELECT t.queue, t.attempts AS task_attempt FROM tasks AS t WHERE t.id = c.task_id
    UNION ALL
    SELECT h.queue, h.attempts FROM task_history AS h
    WHERE h.id = c.task_id AND NOT EXISTS (SELECT 1 FROM tasks AS a WHERE a.id = c.task_id)
    LIMIT 1
) AS r ON true
WHERE c.task_id IS NOT NULL AND c.tenant_id IS NOT NULL
  AND r.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events));

-- name: tenant_llm_policy
-- What the gateway enforces for a tenant's calls from one queue: the plan's rates, the
-- monthly token budget and spend limit (the tenant's own over the plan's), and the
-- model override of the tenant's agent, and the plan's caps per task run and per group.
-- No row: the tenant does not exist.
SELECT p.llm_requests_per_minute AS requests_per_minute,
       p.llm_tokens_per_minute AS tokens_per_minute,
       coalesce(t.monthly_token_budget, p.monthly_token_budget) AS monthly_token_budget,
       coalesce(t.monthly_spend_limit, p.monthly_spend_limit) AS monthly_spend_limit,
       a.model_override,
       p.run_llm_calls, p.run_llm_tokens, p.run_llm_cost,
       p.group_llm_calls, p.group_llm_tokens, p.group_llm_cost
FROM tenants AS t
LEFT JOIN plans AS p ON p.id = t.plan_id
LEFT JOIN tenant_agents AS a ON a.tenant_id = t.id AND a.queue = $2
WHERE t.id = $1;

-- name: reserve_llm_spend
-- Asynchronous commit (a tenant's calls queue on its month's row): a server crash may lose
-- the last fraction of a second of reservations and settles, a few calls' worth of usage.
SELECT s.ok, s.month, s.tokens, s.cost, s.estimate
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed,
     conveyor_reserve_llm_spend($1, $2, $3, $4, $5, $6, $7) AS s;

-- name: settle_llm_spend
SELECT conveyor_settle_llm_spend($1, $2, $3, $4, $5, $6, $7, $8)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed;

-- name: llm_usage
-- Totals of a tenant's calls since $2 (and before $5 if given), narrowed to a group ($3) or
-- a task ($4) if given, per provider and model. "calls" counts attempts sent; skips (circuit open, budget
-- refused) and cache hits are counted apart.
SELECT c.provider, c.model,
       count(*) FILTER (WHERE c.outcome NOT IN ('circuit_open', 'budget_refused', 'cached'))
           AS attempts,
       count(*) FILTER (WHERE c.outcome = 'ok') AS succeeded,
       count(*) FILTER (WHERE c.outcome NOT IN ('ok', 'cached')) AS failed,
       count(*) FILTER (WHERE c.outcome = 'cached') AS cached,
       coalesce(sum(c.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(c.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(c.cost), 0)::numeric AS cost,
       bool_or(c.cost IS NULL AND c.outcome = 'ok') AS unpriced
FROM llm_calls AS c
WHERE c.tenant_id = $1 AND c.created_at >= $2
  AND ($3::text IS NULL OR c.group_id = $3)
  AND ($4::bigint IS NULL OR c.task_id = $4)
  AND ($5::timestamptz IS NULL OR c.created_at < $5)
GROUP BY c.provider, c.model
ORDER BY c.provider, c.model;

-- name: tenant_llm_month
SELECT tokens, cost, reserved_tokens, reserved_cost
FROM tenant_llm_usage
WHERE tenant_id = $1 AND month = $2;

-- name: list_llm_prices
SELECT model, provider, input_per_mtok, output_per_mtok, updated_at
FROM llm_prices
ORDER BY model, provider;

-- name: set_llm_price
INSERT INTO llm_prices AS p (model, provider, input_per_mtok, output_per_mtok)
VALUES ($1, $2, $3, $4)
ON CONFLICT (model, provider) DO UPDATE
SET input_per_mtok = excluded.input_per_mtok,
    output_per_mtok = excluded.output_per_mtok,
    updated_at = now()
RETURNING model, provider, input_per_mtok, output_per_mtok, updated_at;

-- name: set_tenant_llm_limits
-- $2/$3: new monthly token budget / spend limit; $4/$5 true clears the field (to the plan's).
UPDATE tenants AS t
SET monthly_token_budget = CASE WHEN $4 THEN NULL ELSE coalesce($2, t.monthly_token_budget) END,
    monthly_spend_limit = CASE WHEN $5 THEN NULL ELSE coalesce($3, t.monthly_spend_limit) END
WHERE t.id = $1
RETURNING t.id;
