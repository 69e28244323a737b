-- 0016: runaway guards: caps on the LLM calls, tokens and money of one task run and of one
-- group (campaign), checked before every attempt like the monthly budgets
-- (conveyor/core/llm_caps.py holds the rule, conveyor/gateway/budgets/caps.py applies it).

-- A plan's caps for each task run and each group of its tenants (NULL: no cap).
ALTER TABLE plans
    ADD COLUMN run_llm_calls     integer CHECK (run_llm_calls >= 0),
    ADD COLUMN run_llm_tokens    bigint CHECK (run_llm_tokens >= 0),
    ADD COLUMN run_llm_cost      numeric(14, 4) CHECK (run_llm_cost >= 0),
    ADD COLUMN group_llm_calls   integer CHECK (group_llm_calls >= 0),
    ADD COLUMN group_llm_tokens  bigint CHECK (group_llm_tokens >= 0),
    ADD COLUMN group_llm_cost    numeric(14, 4) CHECK (group_llm_cost >= 0);

-- One row per capped task ('run', key: the task's id) and per capped group ('group', key:
-- the group's id). cap_*: the caps set at submit or at the group's creation (NULL: none);
-- calls/tokens/cost: what settled attempts used; reserved_*: the worst case of attempts in
-- flight, so that concurrent attempts (a group's, across workers) cannot all slip under a
-- cap. enforced: the caps the worker brought to the last reservation (role and plan, with
-- their sources), so that a reader sees the caps in force. A row made by a reservation
-- starts from what llm_calls already holds of its task or group.
CREATE TABLE llm_caps (
    tenant_id        text NOT NULL,
    scope            text NOT NULL CHECK (scope IN ('run', 'group')),
    key              text NOT NULL,
    cap_calls        bigint CHECK (cap_calls >= 0),
    cap_tokens       bigint CHECK (cap_tokens >= 0),
    cap_cost         numeric(14, 4) CHECK (cap_cost >= 0),
    calls            bigint NOT NULL DEFAULT 0,
    tokens           bigint NOT NULL DEFAULT 0,
    cost             numeric(16, 8) NOT NULL DEFAULT 0,
    reserved_calls   bigint NOT NULL DEFAULT 0,
    reserved_tokens  bigint NOT NULL DEFAULT 0,
    reserved_cost    numeric(16, 8) NOT NULL DEFAULT 0,
    enforced         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope, key)
);
-- Retention deletes rows untouched since its cutoff.
CREATE INDEX llm_caps_updated_idx ON llm_caps (updated_at);

-- Reserve one attempt (one call, p_tokens, p_cost) in one scope's row, if it fits both the
-- row's own caps and the p_*_cap limits (role and plan: NULL, none). status is 'ok'
-- (reserved), 'refused' (nothing reserved), or 'none' (no row and no cap: nothing to
-- count). The row returned counts the reservation when ok.
CREATE FUNCTION conveyor_take_llm_cap(
    p_tenant text, p_scope text, p_key text, p_tokens bigint, p_cost numeric,
    p_calls_cap bigint, p_tokens_cap bigint, p_cost_cap numeric, p_enforced jsonb,
    OUT status text, OUT cap llm_caps)
LANGUAGE plpgsql AS $fn$
BEGIN
    FOR pass IN 1..2 LOOP
        UPDATE llm_caps AS u
        SET reserved_calls = u.reserved_calls + 1,
            reserved_tokens = u.reserved_tokens + p_tokens,
            reserved_cost = u.reserved_cost + p_cost,
            enforced = p_enforced,
            updated_at = now()
        WHERE u.tenant_id = p_tenant AND u.scope = p_scope AND u.key = p_key
          AND (least(p_calls_cap, u.cap_calls) IS NULL
               OR u.calls + u.reserved_calls + 1 <= least(p_calls_cap, u.cap_calls))
          AND (least(p_tokens_cap, u.cap_tokens) IS NULL
               OR u.tokens + u.reserved_tokens + p_tokens <= least(p_tokens_cap, u.cap_tokens))
          AND (least(p_cost_cap, u.cap_cost) IS NULL
               OR u.cost + u.reserved_cost + p_cost <= least(p_cost_cap, u.cap_cost))
        RETURNING u.* INTO cap;
        IF FOUND THEN
            status := 'ok';
            RETURN;
        END IF;
        SELECT * INTO cap FROM llm_caps AS u
        WHERE u.tenant_id = p_tenant AND u.scope = p_scope AND u.key = p_key;
        IF FOUND THEN
            status := 'refused';
            RETURN;
        END IF;
        IF p_calls_cap IS NULL AND p_tokens_cap IS NULL AND p_cost_cap IS NULL THEN
            status := 'none';
            RETURN;
        END IF;
        -- The first capped attempt of this task or group: start from what it already used.
        INSERT INTO llm_caps AS u (tenant_id, scope, key, calls, tokens, cost)
        SELECT p_tenant, p_scope, p_key,
               count(*) FILTER (WHERE c.outcome NOT IN ('circuit_open', 'budget_refused',
                                                        'cached')),
               coalesce(sum(c.prompt_tokens + c.completion_tokens), 0),
               coalesce(sum(c.cost), 0)
        FROM llm_calls AS c
        WHERE c.tenant_id = p_tenant
          AND CASE WHEN p_scope = 'run' THEN c.task_id = p_key::bigint
                   ELSE c.group_id = p_key END
        ON CONFLICT DO NOTHING;
    END LOOP;
    status := 'refused';  -- unreachable: the second pass finds the row the first inserted
END
$fn$;

-- Release a reservation (p_sent false: the attempt was never sent), or settle it: the
-- reservation goes and what the attempt used is counted (one call, its tokens, their price).
CREATE FUNCTION conveyor_settle_llm_cap(
    p_tenant text, p_scope text, p_key text, p_provider text, p_model text,
    p_reserved_tokens bigint, p_reserved_cost numeric, p_prompt integer, p_completion integer,
    p_sent boolean)
RETURNS void
LANGUAGE sql AS $fn$
    UPDATE llm_caps AS u
    SET reserved_calls = greatest(u.reserved_calls - 1, 0),
        reserved_tokens = greatest(u.reserved_tokens - p_reserved_tokens, 0),
        reserved_cost = greatest(u.reserved_cost - p_reserved_cost, 0),
        calls = u.calls + CASE WHEN p_sent THEN 1 ELSE 0 END,
        tokens = u.tokens + CASE WHEN p_sent THEN p_prompt + p_completion ELSE 0 END,
        cost = u.cost + CASE WHEN p_sent THEN coalesce(
            (SELECT (p_prompt * pr.input_per_mtok + p_completion * pr.output_per_mtok) / 1000000
             FROM conveyor_llm_price(p_provider, p_model) AS pr), 0) ELSE 0 END,
        updated_at = now()
    WHERE u.tenant_id = p_tenant AND u.scope = p_scope AND u.key = p_key
$fn$;

-- Reserve one attempt's worst case (one call, p_prompt + p_completion tokens, their price)
-- in its task run's row (p_task NULL: none) and then its group's (p_group NULL: none), each
-- against its own caps and the worker's (p_run_* / p_group_*: role and plan, NULL none).
-- All or nothing: a group that refuses releases the run's reservation. The statuses say
-- which scope refused (or 'none': no cap there, nothing counted); the rows show why.
CREATE FUNCTION conveyor_reserve_llm_caps(
    p_tenant text, p_task text, p_group text, p_provider text, p_model text,
    p_prompt integer, p_completion integer,
    p_run_calls bigint, p_run_tokens bigint, p_run_cost numeric, p_run_enforced jsonb,
    p_group_calls bigint, p_group_tokens bigint, p_group_cost numeric, p_group_enforced jsonb,
    OUT estimate numeric, OUT run_status text, OUT run llm_caps, OUT group_status text,
    OUT grp llm_caps)
LANGUAGE plpgsql AS $fn$
DECLARE
    price record;
    taken record;
    want_tokens bigint := p_prompt + p_completion;
BEGIN
    estimate := 0;
    SELECT * INTO price FROM conveyor_llm_price(p_provider, p_model);
    IF price.input_per_mtok IS NOT NULL THEN
        -- Rounded as llm_caps stores it, so the settle takes back exactly what was added.
        estimate := round((p_prompt * price.input_per_mtok
                           + p_completion * price.output_per_mtok) / 1000000, 8);
    END IF;
    run_status := 'none';
    group_status := 'none';
    IF p_task IS NOT NULL THEN
        SELECT * INTO taken
        FROM conveyor_take_llm_cap(p_tenant, 'run', p_task, want_tokens, estimate,
                                   p_run_calls, p_run_tokens, p_run_cost, p_run_enforced);
        run_status := taken.status;
        run := taken.cap;
        IF run_status = 'refused' THEN
            RETURN;
        END IF;
    END IF;
    IF p_group IS NOT NULL THEN
        SELECT * INTO taken
        FROM conveyor_take_llm_cap(p_tenant, 'group', p_group, want_tokens, estimate,
                                   p_group_calls, p_group_tokens, p_group_cost,
                                   p_group_enforced);
        group_status := taken.status;
        grp := taken.cap;
        IF group_status = 'refused' AND run_status = 'ok' THEN
            PERFORM conveyor_settle_llm_cap(p_tenant, 'run', p_task, p_provider, p_model,
                                            want_tokens, estimate, 0, 0, false);
            run_status := 'released';
        END IF;
    END IF;
END
$fn$;
