-- 0007: LLM accounting and the tenant's LLM limits.
--   llm_prices        what a model costs, per million tokens in and out
--   llm_calls         one row per attempt sent (and per call skipped), partitioned by month
--   tenant_llm_usage  each tenant's month of tokens and cost, and what calls in flight hold
-- and the plan columns (with tenant overrides) that the gateway enforces.

-- Per-tenant, per-provider request and token rates; a monthly spend limit in USD.
-- NULL means "no limit", as for the plan's other columns.
ALTER TABLE plans
    ADD COLUMN llm_requests_per_minute integer CHECK (llm_requests_per_minute >= 1),
    ADD COLUMN llm_tokens_per_minute   bigint CHECK (llm_tokens_per_minute >= 1),
    ADD COLUMN monthly_spend_limit     numeric(14, 4) CHECK (monthly_spend_limit >= 0);

UPDATE plans SET llm_requests_per_minute = 60, llm_tokens_per_minute = 100000,
                 monthly_spend_limit = 20 WHERE id = 'free';
UPDATE plans SET llm_requests_per_minute = 600, llm_tokens_per_minute = 1000000,
                 monthly_spend_limit = 500 WHERE id = 'pro';
UPDATE plans SET llm_requests_per_minute = 3000, llm_tokens_per_minute = 5000000,
                 monthly_spend_limit = 5000 WHERE id = 'agency';

-- A tenant's own monthly limits, over its plan's (NULL: the plan's).
ALTER TABLE tenants
    ADD COLUMN monthly_token_budget bigint CHECK (monthly_token_budget >= 0),
    ADD COLUMN monthly_spend_limit  numeric(14, 4) CHECK (monthly_spend_limit >= 0);

-- Prices in USD per million tokens. provider '' prices the model on every provider; a row
-- for a named provider (the gateway config's name) wins over it.
CREATE TABLE llm_prices (
    model                 text NOT NULL,
    provider              text NOT NULL DEFAULT '',
    input_per_mtok        numeric(12, 6) NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok       numeric(12, 6) NOT NULL CHECK (output_per_mtok >= 0),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, provider)
);

INSERT INTO llm_prices (model, input_per_mtok, output_per_mtok) VALUES
    ('gpt-4o', 2.50, 10.00),
    ('gpt-4o-mini', 0.15, 0.60),
    ('gpt-4.1', 2.00, 8.00),
    ('gpt-4.1-mini', 0.40, 1.60),
    ('claude-sonnet-4-0', 3.00, 15.00),
    ('claude-3-5-haiku-latest', 0.80, 4.00),
    ('mock-gpt', 0.50, 1.50),
    ('mock-claude', 3.00, 15.00),
    ('mock-llama', 0, 0);

-- The price of (provider, model): the provider's own row, else the any-provider row.
CREATE FUNCTION conveyor_llm_price(p_provider text, p_model text,
                                   OUT input_per_mtok numeric, OUT output_per_mtok numeric)
LANGUAGE sql STABLE AS $fn$
    SELECT p.input_per_mtok, p.output_per_mtok FROM llm_prices AS p
    WHERE p.model = p_model AND p.provider IN (p_provider, '')
    ORDER BY p.provider DESC
    LIMIT 1
$fn$;

-- One row per attempt (outcome 'ok' or a failure kind) and per call that sent nothing
-- (circuit_open, budget_refused) or was answered from the cache. tenant_id '' is a call
-- made outside any tenant. cost is NULL when the model has no price.
CREATE TABLE llm_calls (
    created_at         timestamptz NOT NULL,
    tenant_id          text NOT NULL,
    task_id            bigint,
    group_id           text,
    requested          text NOT NULL,
    provider           text NOT NULL,
    model              text NOT NULL,
    attempt            integer NOT NULL,
    outcome            text NOT NULL,
    stream             boolean NOT NULL,
    prompt_tokens      integer NOT NULL,
    completion_tokens  integer NOT NULL,
    usage_estimated    boolean NOT NULL,
    cost               numeric(16, 8),
    latency_ms         real NOT NULL,
    ttft_ms            real,
    status             smallint,
    error              text
) PARTITION BY RANGE (created_at);

CREATE INDEX llm_calls_tenant_idx ON llm_calls (tenant_id, created_at);
CREATE INDEX llm_calls_task_idx ON llm_calls (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX llm_calls_group_idx ON llm_calls (tenant_id, group_id) WHERE group_id IS NOT NULL;

-- A tenant's month: tokens and cost of the calls that finished, and what calls in flight
-- have reserved (their estimate) so that concurrent calls cannot overshoot the limit.
-- Created, from llm_calls, the first time a tenant with a limit calls in a month.
CREATE TABLE tenant_llm_usage (
    tenant_id        text NOT NULL,
    month            date NOT NULL,
    tokens           bigint NOT NULL DEFAULT 0,
    cost             numeric(16, 8) NOT NULL DEFAULT 0,
    reserved_tokens  bigint NOT NULL DEFAULT 0,
    reserved_cost    numeric(16, 8) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);

-- Reserve a call's estimate against the tenant's monthly token budget and spend limit
-- (NULL: none). ok is false, and nothing is reserved, when the estimate does not fit.
-- Returns the month (the settle goes to the same row) and the usage after the reservation.
CREATE FUNCTION conveyor_reserve_llm_spend(
    p_tenant text, p_provider text, p_model text, p_prompt integer, p_completion integer,
    p_token_limit bigint, p_cost_limit numeric)
RETURNS TABLE (ok boolean, month date, tokens bigint, cost numeric, estimate numeric)
LANGUAGE plpgsql AS $fn$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    price record;
    want_tokens bigint := p_prompt + p_completion;
    want_cost numeric := 0;
    found_row tenant_llm_usage%ROWTYPE;
BEGIN
    SELECT * INTO price FROM conveyor_llm_price(p_provider, p_model);
    IF price.input_per_mtok IS NOT NULL THEN
        want_cost := (p_prompt * price.input_per_mtok + p_completion * price.output_per_mtok)
                     / 1000000;
    END IF;
    FOR pass IN 1..2 LOOP
        UPDATE tenant_llm_usage AS u
        SET reserved_tokens = u.reserved_tokens + want_tokens,
            reserved_cost = u.reserved_cost + want_cost
        WHERE u.tenant_id = p_tenant AND u.month = this_month
          AND (p_token_limit IS NULL
               OR u.tokens + u.reserved_tokens + want_tokens <= p_token_limit)
          AND (p_cost_limit IS NULL OR u.cost + u.reserved_cost + want_cost <= p_cost_limit)
        RETURNING u.* INTO found_row;
        IF FOUND THEN
            RETURN QUERY SELECT true, this_month, found_row.tokens + found_row.reserved_tokens,
                                found_row.cost + found_row.reserved_cost, want_cost;
            RETURN;
        END IF;
        SELECT * INTO found_row FROM tenant_llm_usage AS u
        WHERE u.tenant_id = p_tenant AND u.month = this_month;
        IF FOUND THEN
            RETURN QUERY SELECT false, this_month, found_row.tokens + found_row.reserved_tokens,
                                found_row.cost + found_row.reserved_cost, want_cost;
            RETURN;
        END IF;
        -- First limited call of the month: start from what was already recorded.
        INSERT INTO tenant_llm_usage AS u (tenant_id, month, tokens, cost)
        SELECT p_tenant, this_month,
               coalesce(sum(c.prompt_tokens + c.completion_tokens), 0),
               coalesce(sum(c.cost), 0)
        FROM llm_calls AS c
        WHERE c.tenant_id = p_tenant AND c.created_at >= this_month
          AND c.created_at < this_month + interval '1 month'
        ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN QUERY SELECT false, this_month, 0::bigint, 0::numeric, want_cost;
END
$fn$;

-- A reserved call is over: release its estimate and count what it used.
CREATE FUNCTION conveyor_settle_llm_spend(
    p_tenant text, p_month date, p_provider text, p_model text,
    p_reserved_tokens bigint, p_reserved_cost numeric, p_prompt integer, p_completion integer)
RETURNS void
LANGUAGE sql AS $fn$
    UPDATE tenant_llm_usage AS u
    SET reserved_tokens = greatest(u.reserved_tokens - p_reserved_tokens, 0),
        reserved_cost = greatest(u.reserved_cost - p_reserved_cost, 0),
        tokens = u.tokens + p_prompt + p_completion,
        cost = u.cost + coalesce(
            (SELECT (p_prompt * pr.input_per_mtok + p_completion * pr.output_per_mtok) / 1000000
             FROM conveyor_llm_price(p_provider, p_model) AS pr), 0)
    WHERE u.tenant_id = p_tenant AND u.month = p_month
$fn$;
