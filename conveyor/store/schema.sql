-- The canonical schema: what replaying every migration produces (a test checks it).
-- Read this file to see the whole schema at once; change it only together with a migration.

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name        text NOT NULL,
    weight      real NOT NULL DEFAULT 1 CHECK (weight > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO tenants (id, name) VALUES ('default', 'Default tenant');

CREATE SEQUENCE task_id_seq AS bigint;

-- One fencing token per claim: a completion must present the token of the current lease.
CREATE SEQUENCE lease_token_seq AS bigint;

CREATE TABLE tasks (
    id                bigint PRIMARY KEY DEFAULT nextval('task_id_seq'),
    tenant_id         text NOT NULL,
    queue             text NOT NULL,
    state             text NOT NULL CHECK (state IN ('scheduled', 'queued', 'running')),
    priority          smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    fairness_key      double precision NOT NULL DEFAULT 0,
    run_at            timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0,
    -- NULL until the first claim: then the agent's retry policy decides.
    max_attempts      integer CHECK (max_attempts >= 1),
    timeout_seconds   real CHECK (timeout_seconds > 0),
    lease_token       bigint,
    lease_expires_at  timestamptz,
    worker_id         text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    idempotency_key   text,
    parent_id         bigint,
    group_id          text,
    payload           jsonb NOT NULL DEFAULT '{}',
    trace_context     jsonb,
    last_error        jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz
);

-- The claim: per queue, ready rows in (priority, fairness_key, id) order.
CREATE INDEX tasks_claim_idx ON tasks (queue, priority, fairness_key, id) WHERE state = 'queued';
-- The promoter: scheduled rows whose run_at has come.
CREATE INDEX tasks_scheduled_idx ON tasks (run_at) WHERE state = 'scheduled';
-- The reaper: rows whose lease expired (small: only leased rows have a lease). The predicate
-- is on the lease, not on state = 'running': with that one, statistics taken after a bulk
-- enqueue (almost nothing running) made the planner drive finish_batch from this index and
-- scan every running task per call (measured: 16 ms per 100 tasks at 400 running).
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_group_idx ON tasks (tenant_id, group_id) WHERE group_id IS NOT NULL;

-- Finished tasks. The primary key leads with tenant_id (Citus-ready) and must include the
-- partition key.
CREATE TABLE task_history (
    id                bigint NOT NULL,
    tenant_id         text NOT NULL,
    queue             text NOT NULL,
    state             text NOT NULL CHECK (state IN ('succeeded', 'dead', 'cancelled')),
    priority          smallint NOT NULL,
    attempts          integer NOT NULL,
    max_attempts      integer,
    timeout_seconds   real,
    idempotency_key   text,
    parent_id         bigint,
    group_id          text,
    payload           jsonb NOT NULL,
    trace_context     jsonb,
    result            jsonb,
    last_error        jsonb,
    worker_id         text,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id, finished_at)
) PARTITION BY RANGE (finished_at);

CREATE INDEX task_history_id_idx ON task_history (id);
CREATE INDEX task_history_dead_idx ON task_history (queue, finished_at) WHERE state = 'dead';
CREATE INDEX task_history_group_idx ON task_history (tenant_id, group_id) WHERE group_id IS NOT NULL;

-- Idempotency keys outlive the task row (it moves to history), so they get their own table.
CREATE TABLE idempotency_keys (
    tenant_id   text NOT NULL,
    key         text NOT NULL,
    task_id     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The exactly-once ledger behind ctx.once and durable steps. A 'pending' row is owned by
-- the lease (task_id, lease_token) running the effect; a 'done' row holds its result.
CREATE TABLE effects (
    tenant_id    text NOT NULL,
    key          text NOT NULL,
    state        text NOT NULL DEFAULT 'done' CHECK (state IN ('pending', 'done')),
    task_id      bigint,
    lease_token  bigint,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX effects_created_idx ON effects (created_at);

CREATE TABLE workers (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    queues        text[] NOT NULL,
    concurrency   integer NOT NULL,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'stopping', 'stopped')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Per-queue switches. A queue with no row is active.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    paused_at  timestamptz
);

CREATE TABLE periodic_tasks (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    queue         text NOT NULL,
    tenant_id     text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    priority      smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    max_attempts  integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    last_tick     timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Creates the monthly partition of `parent` that holds `month_start`, if it is missing.
-- Names are derived here, never taken from a caller's string.
CREATE FUNCTION conveyor_ensure_month_partition(parent regclass, month_start date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', month_start)::date;
    part_name text := format('%s_p%s', parent::text, to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
            part_name, parent, first_day::timestamp AT TIME ZONE 'UTC',
            (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC'
        );
    END IF;
    RETURN part_name;
END $$;

-- Drops one partition of `parent`; refuses anything that is not a partition of it.
CREATE FUNCTION conveyor_drop_partition(parent regclass, part_name text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND c.relname = part_name
    ) THEN
        RAISE EXCEPTION 'relation % is not a partition of %', part_name, parent;
    END IF;
    EXECUTE format('DROP TABLE %I', part_name);
END $$;

-- 0002: plans as data, per-tenant agent overrides, and monthly usage for admission control.

-- A plan says which agent roles a tenant may use and how much. NULL means "no limit"
-- (allowed_roles NULL: any role, custom ones included).
CREATE TABLE plans (
    id                       text PRIMARY KEY,
    name                     text NOT NULL,
    allowed_roles            text[],
    max_concurrent_per_role  integer CHECK (max_concurrent_per_role >= 1),
    monthly_task_limit       bigint CHECK (monthly_task_limit >= 0),
    monthly_token_budget     bigint CHECK (monthly_token_budget >= 0),
    weight                   real NOT NULL DEFAULT 1 CHECK (weight > 0),
    created_at               timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (id, name, allowed_roles, max_concurrent_per_role, monthly_task_limit,
                   monthly_token_budget, weight)
VALUES
    ('free', 'Free', ARRAY['copywriter', 'seo'], 1, 1000, 2000000, 1),
    ('pro', 'Pro', ARRAY['copywriter', 'seo', 'social', 'analyst'], 2, 20000, 50000000, 2),
    ('agency', 'Agency',
     ARRAY['activity_planner', 'copywriter', 'seo', 'social', 'paid_ads', 'analyst',
           'researcher'], 4, 200000, 500000000, 4),
    ('enterprise', 'Enterprise', NULL, NULL, NULL, NULL, 8);

-- A tenant without a plan (internal and system tenants) has no plan restrictions.
ALTER TABLE tenants ADD COLUMN plan_id text REFERENCES plans (id);

-- Per-tenant, per-role overrides of the plan. NULL fields fall back to the plan.
CREATE TABLE tenant_agents (
    tenant_id           text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    queue               text NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    max_concurrent      integer CHECK (max_concurrent >= 1),
    monthly_task_limit  bigint CHECK (monthly_task_limit >= 0),
    model_override      text,
    adapter_override    text,
    PRIMARY KEY (tenant_id, queue)
);

-- Tasks accepted per tenant, month and queue; queue '*' holds the tenant's monthly total.
-- Counted in the enqueue transaction, so a refused or rolled-back submission counts nothing.
CREATE TABLE tenant_usage (
    tenant_id  text NOT NULL,
    month      date NOT NULL,
    queue      text NOT NULL,
    tasks      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month, queue)
);

-- 0003: campaigns (groups) with a follow-up task enqueued once when all their tasks finish.
CREATE TABLE groups (
    tenant_id     text NOT NULL,
    group_id      text NOT NULL,
    on_complete   jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    follow_up_id  bigint,
    PRIMARY KEY (tenant_id, group_id)
);
CREATE INDEX groups_open_idx ON groups (created_at) WHERE completed_at IS NULL;

-- 0004: weighted fair queueing. Each (queue, tenant) has a virtual clock; a tenant's next
-- task gets max(its clock, the queue's virtual time) + 1/weight as its fairness_key, so a
-- flood from one tenant lines up behind everyone else's next task.
CREATE TABLE fairness_clocks (
    queue      text NOT NULL,
    tenant_id  text NOT NULL,
    clock      double precision NOT NULL,
    span       double precision NOT NULL,
    PRIMARY KEY (queue, tenant_id)
);
