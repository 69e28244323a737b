-- name: reserve_llm_caps
-- The worst case of one attempt, in the rows of its run and its group
-- (conveyor_reserve_llm_caps).
-- Asynchronous commit, as the monthly spend: a server crash may lose the last fraction of
-- a second of reservations and settles: the counting of a few calls.
SELECT s.estimate, s.run_status, s.group_status,
       (s.run).cap_calls AS run_cap_calls, (s.run).cap_tokens AS run_cap_tokens,
       (s.run).cap_cost AS run_cap_cost,
       coalesce((s.run).calls + (s.run).reserved_calls, 0) AS run_calls,
       coalesce((s.run).tokens + (s.run).reserved_tokens, 0) AS run_tokens,
       coalesce((s.run).cost + (s.run).reserved_cost, 0) AS run_cost,
       (s.grp).cap_calls AS group_cap_calls, (s.grp).cap_tokens AS group_cap_tokens,
       (s.grp).cap_cost AS group_cap_cost,
       coalesce((s.grp).calls + (s.grp).reserved_calls, 0) AS group_calls,
       coalesce((s.grp).tokens + (s.grp).reserved_tokens, 0) AS group_tokens,
       coalesce((s.grp).cost + (s.grp).reserved_cost, 0) AS group_cost
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed,
     conveyor_reserve_llm_caps($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                               $15) AS s;

-- name: settle_llm_caps
-- Release ($10 false) or settle ($10 true) the reservations of an attempt, in each scope
-- ($2) and key ($3) it holds: its run, its group, or both, in one round trip.
SELECT conveyor_settle_llm_cap($1, h.scope, h.key, $4, $5, $6, $7, $8, $9, $10)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed,
     unnest($2::text[], $3::text[]) AS h(scope, key);

-- name: set_task_llm_caps
-- The caps of new tasks, set at submit (in the enqueue transaction); one row per task.
INSERT INTO llm_caps (tenant_id, scope, key, cap_calls, cap_tokens, cap_cost)
SELECT i.tenant_id, 'run', i.task_id::text, i.calls, i.tokens, i.cost
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::numeric[])
    AS i(tenant_id, task_id, calls, tokens, cost)
ON CONFLICT (tenant_id, scope, key) DO UPDATE
SET cap_calls = excluded.cap_calls, cap_tokens = excluded.cap_tokens,
    cap_cost = excluded.cap_cost, updated_at = now();

-- name: set_group_llm_caps
-- The caps of a group, set (or replaced: NULL clears) when it is registered. A new row
-- starts from what the calls of the group already used.
INSERT INTO llm_caps AS u (tenant_id, scope, key, cap_calls, cap_tokens, cap_cost,
                           calls, tokens, cost)
SELECT $1, 'group', $2, $3, $4, $5,
       count(*) FILTER (WHERE c.outcome NOT IN ('circuit_open', 'budget_refused', 'cached')),
       coalesce(sum(c.prompt_tokens + c.completion_tokens), 0),
       coalesce(sum(c.cost), 0)
FROM llm_calls AS c
WHERE c.tenant_id = $1 AND c.group_id = $2
ON CONFLICT (tenant_id, scope, key) DO UPDATE
SET cap_calls = excluded.cap_calls, cap_tokens = excluded.cap_tokens,
    cap_cost = excluded.cap_cost, updated_at = now();

-- name: clear_group_llm_caps
UPDATE llm_caps SET cap_calls = NULL, cap_tokens = NULL, cap_cost = NULL, updated_at = now()
WHERE tenant_id = $1 AND scope = 'group' AND key = $2;

-- name: get_llm_caps
-- The row of a task (scope run, key its id) or of a group, for readers; no row: nothing
-- capped it yet.
SELECT cap_calls, cap_tokens, cap_cost, calls, tokens, cost,
       reserved_calls, reserved_tokens, reserved_cost, enforced, updated_at
FROM llm_caps
WHERE tenant_id = $1 AND scope = $2 AND key = $3;

-- name: prune_llm_caps
DELETE FROM llm_caps
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM llm_caps WHERE updated_at < $1 LIMIT $2
));
