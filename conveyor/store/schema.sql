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
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    unwritten     integer NOT NULL DEFAULT 0,
    last_outcome_at timestamptz NOT NULL DEFAULT now()
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

-- 0005: the fair claim. Virtual clocks per (queue, priority), per-tenant per-role caps and
-- start rate limits enforced in the claim, a global cap per role, and priority aging.
-- docs/design/fairness.md measured the design; docs/fairness.md explains it.

-- Clocks per (queue, priority): one clock per (queue, tenant) pushed a tenant's priority-1
-- work behind its own priority-10 backlog. The queue's virtual time is moved by the claim
-- (the largest key it took), not read from the head, so a capped tenant's stale head does
-- not pull newcomers ahead of everything the served tenants have queued.
CREATE TABLE queue_clocks (
    queue           text NOT NULL,
    priority        smallint NOT NULL,
    vtime           double precision NOT NULL DEFAULT 0,
    last_served_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, priority)
);

CREATE TABLE tenant_clocks (
    tenant_id  text NOT NULL,
    queue      text NOT NULL,
    priority   smallint NOT NULL,
    clock      double precision NOT NULL,
    span       double precision NOT NULL,
    PRIMARY KEY (tenant_id, queue, priority)
);

-- Start rate limits: at most start_rate_limit task starts per start_rate_interval seconds,
-- per tenant and role; the plan gives the default, tenant_agents overrides it.
ALTER TABLE plans
    ADD COLUMN start_rate_limit integer CHECK (start_rate_limit >= 1),
    ADD COLUMN start_rate_interval real CHECK (start_rate_interval > 0),
    ADD CONSTRAINT plans_start_rate_pair
        CHECK ((start_rate_limit IS NULL) = (start_rate_interval IS NULL));
ALTER TABLE tenant_agents
    ADD COLUMN start_rate_limit integer CHECK (start_rate_limit >= 1),
    ADD COLUMN start_rate_interval real CHECK (start_rate_interval > 0),
    ADD CONSTRAINT tenant_agents_start_rate_pair
        CHECK ((start_rate_limit IS NULL) = (start_rate_interval IS NULL));

-- The GCRA state of a rate-limited (tenant, role): the theoretical arrival time of the next
-- start. `emission` (seconds between starts) and `burst` are copied from the limit when the
-- claim spends, so the claim can tell a dry bucket without resolving limits.
CREATE TABLE tenant_rate (
    tenant_id  text NOT NULL,
    queue      text NOT NULL,
    tat        timestamptz NOT NULL,
    emission   double precision NOT NULL CHECK (emission > 0),
    burst      integer NOT NULL CHECK (burst >= 1),
    PRIMARY KEY (tenant_id, queue)
);
CREATE INDEX tenant_rate_dry_idx ON tenant_rate (queue, tat);

-- A global cap per role (all tenants together) and the starvation guard's wait.
ALTER TABLE queues
    ADD COLUMN max_running integer CHECK (max_running >= 1),
    ADD COLUMN aging_seconds real NOT NULL DEFAULT 30 CHECK (aging_seconds > 0);

-- The cap stripe a running task was claimed under (see conveyor_claim_queue).
ALTER TABLE tasks ADD COLUMN cap_stripe smallint;
-- Running tasks per (queue, tenant, stripe): the cap check counts these. (No index of ready
-- tasks per tenant: measured, it cost enqueue a quarter of its throughput.)
CREATE INDEX tasks_running_tenant_idx ON tasks (queue, tenant_id, cap_stripe)
    WHERE state = 'running';

-- The cap and start rate limit of each tenant for role q; NULL is no limit.
CREATE FUNCTION conveyor_tenant_limits(q text, tenant_ids text[])
RETURNS TABLE (tenant_id text, cap integer, rate_limit integer, rate_interval real)
LANGUAGE sql STABLE AS $fn$
    SELECT t.id,
           coalesce(ta.max_concurrent, p.max_concurrent_per_role),
           CASE WHEN ta.start_rate_limit IS NOT NULL THEN ta.start_rate_limit
                ELSE p.start_rate_limit END,
           CASE WHEN ta.start_rate_limit IS NOT NULL THEN ta.start_rate_interval
                ELSE p.start_rate_interval END
    FROM tenants AS t
    LEFT JOIN plans AS p ON p.id = t.plan_id
    LEFT JOIN tenant_agents AS ta ON ta.tenant_id = t.id AND ta.queue = q
    WHERE t.id = ANY (tenant_ids)
$fn$;

-- Claim up to n ready tasks of one queue under fencing token `token`. Two snapshots:
-- statement 1 locks candidate rows in claim order, passing over tenants that are at their
-- cap or out of start tokens; then the limited tenants among them are try-locked (one
-- claimer per tenant at a time; a tenant another claimer holds is skipped, never awaited);
-- statement 2, under a snapshot taken after those locks, counts every committed running
-- task of each locked tenant and takes only what fits. Exits from 'running' need no
-- bookkeeping: the running rows are the count.
CREATE FUNCTION conveyor_claim_queue(
    q text, n integer, worker text, lease double precision, dflt integer, token bigint,
    aging double precision
) RETURNS TABLE (
    id bigint, tenant_id text, queue text, priority smallint, attempts integer,
    max_attempts integer, timeout_seconds real, lease_token bigint,
    lease_expires_at timestamptz, parent_id bigint, group_id text, payload jsonb,
    trace_context jsonb, created_at timestamptz
) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    share integer := greatest(1, n / 10);
    window_rows integer := 4 * n;
    b_priority smallint := 32767;
    b_key double precision := 'infinity';
    b_id bigint := 9223372036854775807;
    bounded boolean := false;
    window_ids bigint[];
    window_priorities smallint[];
    window_keys double precision[];
    window_count integer;
    aged_ids bigint[];
    capped text[];
    dry text[];
    ids bigint[];
    more bigint[];
    more_tenants text[];
    level record;
    heads text[];
    limited text[];
    locked text[];
    old_lock_timeout text;
    limited_stripes integer[];
    limited_caps integer[];
    limited_wants bigint[];
    unit_tenants text[];
    unit_stripes smallint[];
    id_stripes smallint[];
    covered bigint;
    last_tried integer;
    stripe integer;
    waits integer;
BEGIN
    -- Tenants at their cap or with an empty bucket. The tenants with running tasks come
    -- from a skip scan of the running index (one probe per tenant, not per task); only
    -- those with a cap are counted, and no further than the cap.
    WITH RECURSIVE busy AS (
        (SELECT t.tenant_id FROM tasks AS t
         WHERE t.queue = q AND t.state = 'running' ORDER BY t.tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT t.tenant_id FROM tasks AS t
                WHERE t.queue = q AND t.state = 'running' AND t.tenant_id > b.tenant_id
                ORDER BY t.tenant_id LIMIT 1)
        FROM busy AS b WHERE b.tenant_id IS NOT NULL
    ), busy_tenants AS MATERIALIZED (
        SELECT coalesce(array_agg(b.tenant_id), '{}') AS ids
        FROM busy AS b WHERE b.tenant_id IS NOT NULL
    )
    SELECT coalesce(array_agg(l.tenant_id), '{}') INTO capped
    FROM busy_tenants AS b, conveyor_tenant_limits(q, b.ids) AS l
    WHERE l.cap IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM tasks AS r
               WHERE r.queue = q AND r.tenant_id = l.tenant_id AND r.state = 'running'
               LIMIT l.cap) AS c) >= l.cap;
    SELECT coalesce(array_agg(b.tenant_id), '{}') INTO dry FROM tenant_rate AS b
    WHERE b.queue = q AND b.tat > now()
      AND b.tat > now() + (b.burst - 1) * make_interval(secs => b.emission);

    IF cardinality(capped) = 0 AND cardinality(dry) = 0 THEN
        -- Statement 1, nobody to pass over: lock the first n rows in claim order. Levels
        -- with work that were not served for `aging` seconds take up to `share` rows first,
        -- so priority 10 is never starved by a steady stream of priority 1.
        WITH starving AS MATERIALIZED (
            SELECT c.priority FROM queue_clocks AS c
            WHERE c.queue = q AND c.last_served_at < now() - make_interval(secs => aging)
        ), aged AS MATERIALIZED (
            SELECT a.id, a.tenant_id FROM starving AS s, LATERAL (
                SELECT t.id, t.tenant_id FROM tasks AS t
                WHERE t.queue = q AND t.state = 'queued' AND t.priority = s.priority
                ORDER BY t.fairness_key, t.id
                LIMIT share
                FOR UPDATE OF t SKIP LOCKED
            ) AS a
        ), main AS MATERIALIZED (
            SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
            WHERE t.queue = q AND t.state = 'queued'
              AND t.id <> ALL (ARRAY(SELECT aged.id FROM aged))
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT n
            FOR UPDATE OF t SKIP LOCKED
        ), cand AS (
            SELECT aged.id, aged.tenant_id FROM aged
            UNION ALL
            (SELECT main.id, main.tenant_id FROM main
             ORDER BY main.priority, main.fairness_key, main.id
             LIMIT n - (SELECT count(*) FROM aged))
        )
        SELECT array_agg(cand.id), array_agg(DISTINCT cand.tenant_id) INTO ids, heads
        FROM cand;
    ELSE
        -- Statement 1 with tenants to pass over, inside a window: the first 4n ready rows
        -- (and the first 4 * share of each starving level). A deep backlog of capped
        -- tenants at the head then costs at most 4n rows per claim; what lies beyond is
        -- reached by the look past the window below. The rows are locked by id, and the
        -- state test is written so no partial index matches it: the planner must take the
        -- primary key instead of scanning the queue (it did, on stale statistics).
        SELECT array_agg(w.id ORDER BY w.priority, w.fairness_key, w.id),
               array_agg(w.priority ORDER BY w.priority, w.fairness_key, w.id),
               array_agg(w.fairness_key ORDER BY w.priority, w.fairness_key, w.id)
        INTO window_ids, window_priorities, window_keys
        FROM (SELECT t.id, t.priority, t.fairness_key FROM tasks AS t
              WHERE t.queue = q AND t.state = 'queued'
              ORDER BY t.priority, t.fairness_key, t.id
              LIMIT window_rows) AS w;
        window_count := coalesce(cardinality(window_ids), 0);
        bounded := window_count >= window_rows;
        IF bounded THEN
            b_priority := window_priorities[window_count];
            b_key := window_keys[window_count];
            b_id := window_ids[window_count];
        END IF;
        SELECT coalesce(array_agg(a.id), '{}') INTO aged_ids
        FROM queue_clocks AS c, LATERAL (
            SELECT t.id FROM tasks AS t
            WHERE t.queue = q AND t.state = 'queued' AND t.priority = c.priority
            ORDER BY t.fairness_key, t.id
            LIMIT 4 * share
        ) AS a
        WHERE c.queue = q AND c.last_served_at < now() - make_interval(secs => aging);
        WITH aged AS MATERIALIZED (
            SELECT t.id, t.tenant_id FROM tasks AS t
            WHERE t.id = ANY (aged_ids) AND t.state NOT IN ('scheduled', 'running')
              AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT share
            FOR UPDATE OF t SKIP LOCKED
        ), main AS MATERIALIZED (
            SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
            WHERE t.id = ANY (window_ids) AND t.state NOT IN ('scheduled', 'running')
              AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
              AND t.id <> ALL (ARRAY(SELECT aged.id FROM aged))
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT n
            FOR UPDATE OF t SKIP LOCKED
        ), cand AS (
            SELECT aged.id, aged.tenant_id FROM aged
            UNION ALL
            (SELECT main.id, main.tenant_id FROM main
             ORDER BY main.priority, main.fairness_key, main.id
             LIMIT n - (SELECT count(*) FROM aged))
        )
        SELECT array_agg(cand.id), array_agg(DISTINCT cand.tenant_id) INTO ids, heads
        FROM cand;
    END IF;
    ids := coalesce(ids, '{}');
    heads := coalesce(heads, '{}');

    -- The window was full of rows of tenants that must be passed over. Those are rows that
    -- lag behind the level's virtual time (their tenant was served slower than its fair
    -- share, because of its cap or rate); everyone else's next tasks sit at the virtual
    -- time. So look again from there: a second window per level, from its virtual time.
    IF bounded AND cardinality(ids) < n THEN
        FOR level IN
            SELECT c.priority, c.vtime FROM queue_clocks AS c
            WHERE c.queue = q AND c.priority >= b_priority
            ORDER BY c.priority
        LOOP
            SELECT coalesce(array_agg(w.id), '{}') INTO window_ids
            FROM (SELECT t.id FROM tasks AS t
                  WHERE t.queue = q AND t.state = 'queued' AND t.priority = level.priority
                    AND t.fairness_key >= level.vtime
                  ORDER BY t.fairness_key, t.id
                  LIMIT window_rows) AS w;
            WITH taken AS (
                SELECT t.id, t.tenant_id FROM tasks AS t
                WHERE t.id = ANY (window_ids) AND t.state NOT IN ('scheduled', 'running')
                  AND t.id <> ALL (ids)
                  AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
                ORDER BY t.fairness_key, t.id
                LIMIT n - cardinality(ids)
                FOR UPDATE OF t SKIP LOCKED
            )
            SELECT array_agg(taken.id), array_agg(DISTINCT taken.tenant_id)
            INTO more, more_tenants
            FROM taken;
            IF more IS NOT NULL THEN
                ids := ids || more;
                heads := ARRAY(SELECT DISTINCT x FROM unnest(heads || more_tenants) AS x);
            END IF;
            EXIT WHEN cardinality(ids) >= n;
        END LOOP;
    END IF;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;

    -- Limited tenants among the candidates (with a cap or a start rate) are claimed under
    -- locks. A tenant's cap is split into 4 stripes (a quarter of the cap each; a running
    -- task records its stripe in cap_stripe), each with a lock of its own, so up to 4
    -- claimers serve one big tenant at once; a claimer locks as many stripes as it needs.
    -- A stripe never takes the tenant past the cap: it counts its own running tasks against
    -- its quota and all of them against the cap. A tenant with a start rate has one bucket,
    -- so one lock (stripe 0, quota the whole cap).
    SELECT coalesce(array_agg(l.tenant_id ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg(CASE WHEN l.rate_limit IS NULL THEN 4 ELSE 1 END
                              ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg(coalesce(l.cap, 0) ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg((SELECT count(*) FROM tasks AS c
                               WHERE c.id = ANY (ids) AND c.tenant_id = l.tenant_id)
                              ORDER BY l.tenant_id), '{}')
    INTO limited, limited_stripes, limited_caps, limited_wants
    FROM conveyor_tenant_limits(q, heads) AS l
    WHERE l.cap IS NOT NULL OR l.rate_limit IS NOT NULL;
    -- Stripes are tried in a random order, so claimers spread over them. When all are held,
    -- a short wait for one: its holder commits within milliseconds, and skipping left
    -- workers idle while one big tenant was all the work (benchmarks/fairness.py).
    -- lock_timeout bounds the wait, so claimers waiting for each other give up instead of
    -- deadlocking.
    unit_tenants := '{}';
    unit_stripes := '{}';
    waits := 0;
    FOR i IN 1 .. cardinality(limited) LOOP
        covered := 0;
        last_tried := NULL;
        FOR stripe IN
            SELECT g FROM generate_series(0, limited_stripes[i] - 1) AS g
            WHERE limited_stripes[i] = 1 OR limited_caps[i] / 4 + (g < limited_caps[i] % 4)::int > 0
            ORDER BY random()
        LOOP
            last_tried := stripe;
            IF pg_try_advisory_xact_lock(hashtext(q), hashtext(limited[i] || '#' || stripe)) THEN
                unit_tenants := unit_tenants || limited[i];
                unit_stripes := unit_stripes || stripe::smallint;
                covered := covered + CASE WHEN limited_stripes[i] = 1 THEN limited_wants[i]
                    ELSE limited_caps[i] / 4 + (stripe < limited_caps[i] % 4)::int END;
                EXIT WHEN covered >= limited_wants[i];
            END IF;
        END LOOP;
        IF covered = 0 AND last_tried IS NOT NULL AND waits < 4 THEN
            waits := waits + 1;
            old_lock_timeout := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', '20ms', true);
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext(q),
                                              hashtext(limited[i] || '#' || last_tried));
                unit_tenants := unit_tenants || limited[i];
                unit_stripes := unit_stripes || last_tried::smallint;
            EXCEPTION WHEN lock_not_available THEN
                NULL;  -- still held: pass over the tenant in this claim
            END;
            PERFORM set_config('lock_timeout', old_lock_timeout, true);
        END IF;
    END LOOP;

    id_stripes := array_fill(NULL::smallint, ARRAY[cardinality(ids)]);
    IF cardinality(limited) > 0 THEN
        -- Statement 2 (a snapshot taken after the locks: earlier claims under a held stripe
        -- have committed and are counted) keeps what fits, assigns each kept task to one of
        -- its tenant's held stripes, and spends the start tokens.
        WITH units AS MATERIALIZED (
            SELECT u.tenant_id, u.stripe, s.stripes, l.cap, l.rate_limit,
                   l.rate_interval::float8 / l.rate_limit AS emission,
                   (SELECT count(*) FROM tasks AS r
                    WHERE r.queue = q AND r.tenant_id = u.tenant_id
                      AND r.state = 'running') AS running,
                   (SELECT count(*) FROM tasks AS r
                    WHERE r.queue = q AND r.tenant_id = u.tenant_id AND r.state = 'running'
                      AND r.cap_stripe = u.stripe) AS in_stripe
            FROM unnest(unit_tenants, unit_stripes) AS u(tenant_id, stripe)
            JOIN unnest(limited, limited_stripes) AS s(tenant_id, stripes)
                ON s.tenant_id = u.tenant_id
            JOIN conveyor_tenant_limits(q, unit_tenants) AS l ON l.tenant_id = u.tenant_id
        ), unit_room AS MATERIALIZED (
            SELECT n_.tenant_id, n_.stripe, n_.rate_limit, n_.emission,
                   greatest(0, CASE
                       WHEN n_.cap IS NULL THEN n
                       WHEN n_.stripes = 1 THEN n_.cap - n_.running
                       ELSE least(n_.cap / 4 + (n_.stripe < n_.cap % 4)::int - n_.in_stripe,
                                  n_.cap - n_.running)
                   END) AS room
            FROM units AS n_
        ), ranges AS MATERIALIZED (
            -- each held stripe covers a range of the tenant's candidates, in claim order
            SELECT r.*,
                   sum(r.room) OVER (PARTITION BY r.tenant_id ORDER BY r.stripe) - r.room
                       AS lo,
                   sum(r.room) OVER (PARTITION BY r.tenant_id ORDER BY r.stripe) AS hi
            FROM unit_room AS r
        ), allowance AS MATERIALIZED (
            SELECT b0.tenant_id, greatest(coalesce(b.tat, now()), now()) AS tat0,
                   b0.emission, b0.rate_limit,
                   floor(extract(epoch FROM now() - greatest(coalesce(b.tat, now()), now()))
                         / b0.emission + b0.rate_limit + 1e-9)::integer AS tokens
            FROM (SELECT DISTINCT ranges.tenant_id, ranges.emission, ranges.rate_limit
                  FROM ranges WHERE ranges.rate_limit IS NOT NULL) AS b0
            LEFT JOIN tenant_rate AS b ON b.tenant_id = b0.tenant_id AND b.queue = q
        ), candidates AS MATERIALIZED (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key,
                   c.tenant_id = ANY (limited) AS is_limited,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM tasks AS c
            WHERE c.id = ANY (ids)
        ), got AS MATERIALIZED (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key, g.stripe
            FROM candidates AS c
            LEFT JOIN ranges AS g
                ON g.tenant_id = c.tenant_id AND c.rn > g.lo AND c.rn <= g.hi
            LEFT JOIN allowance AS a ON a.tenant_id = c.tenant_id
            WHERE NOT c.is_limited
               OR (g.stripe IS NOT NULL AND (a.tokens IS NULL OR c.rn <= a.tokens))
        ), spend AS (
            INSERT INTO tenant_rate AS b (tenant_id, queue, tat, emission, burst)
            SELECT a.tenant_id, q, a.tat0 + k.k * make_interval(secs => a.emission),
                   a.emission, a.rate_limit
            FROM (SELECT got.tenant_id, count(*) AS k FROM got GROUP BY got.tenant_id) AS k
            JOIN allowance AS a ON a.tenant_id = k.tenant_id
            WHERE a.rate_limit IS NOT NULL
            ON CONFLICT (tenant_id, queue) DO UPDATE
            SET tat = excluded.tat, emission = excluded.emission, burst = excluded.burst
        )
        SELECT coalesce(array_agg(got.id), '{}'), coalesce(array_agg(got.stripe), '{}')
        INTO ids, id_stripes
        FROM got;
    END IF;

    -- Lease the kept rows under the claim's token; move the level's virtual time to the
    -- largest key taken.
    RETURN QUERY
    WITH got AS MATERIALIZED (
        SELECT c.id, c.priority, c.fairness_key FROM tasks AS c WHERE c.id = ANY (ids)
    ), stripes AS (
        SELECT * FROM unnest(ids, id_stripes) AS s(id, stripe)
    ), served AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), advance AS (
        UPDATE queue_clocks AS c
        SET vtime = greatest(c.vtime, m.k), last_served_at = now()
        FROM (SELECT got.priority, max(got.fairness_key) AS k FROM got
              WHERE got.priority IN (SELECT served.priority FROM served)
              GROUP BY got.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority
    ), claimed AS (
        UPDATE tasks AS t
        SET state = 'running',
            attempts = t.attempts + 1,
            max_attempts = coalesce(t.max_attempts, dflt),
            worker_id = worker,
            lease_token = token,
            lease_expires_at = now() + make_interval(secs => lease),
            started_at = now(),
            cap_stripe = stripes.stripe
        FROM stripes
        WHERE t.id = stripes.id
        RETURNING t.id, t.tenant_id, t.queue, t.priority, t.attempts, t.max_attempts,
                  t.timeout_seconds, t.lease_token, t.lease_expires_at, t.parent_id,
                  t.group_id, t.payload, t.trace_context, t.created_at, t.fairness_key
    )
    SELECT c.id, c.tenant_id, c.queue, c.priority, c.attempts, c.max_attempts,
           c.timeout_seconds, c.lease_token, c.lease_expires_at, c.parent_id, c.group_id,
           c.payload, c.trace_context, c.created_at
    FROM claimed AS c
    ORDER BY c.priority, c.fairness_key, c.id;
END
$fn$;

-- Claim up to n ready tasks of the given queues under one new fencing token. Paused
-- queues are left out. With several queues, the first n ready rows of all of them, merged by
-- (priority, lag behind the level's virtual time, id), give each queue its share (keys of
-- different queues are not comparable; their lags are); what a share leaves unclaimed
-- (capped tenants) goes to the other queues in a second pass. A queue with a global cap
-- (queues.max_running) is claimed by one transaction at a time: those locks are taken
-- first, in name order, so claimers never deadlock.
CREATE FUNCTION conveyor_claim(
    queue_names text[], n integer, worker text, lease double precision, dflt integer[]
) RETURNS TABLE (
    id bigint, tenant_id text, queue text, priority smallint, attempts integer,
    max_attempts integer, timeout_seconds real, lease_token bigint,
    lease_expires_at timestamptz, parent_id bigint, group_id text, payload jsonb,
    trace_context jsonb, created_at timestamptz
) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    token bigint := nextval('lease_token_seq');
    wanted integer := n;
    room integer;
    taken integer;
    pass integer;
    shortfall boolean := false;
    capped_queue record;
    r record;
BEGIN
    FOR capped_queue IN
        SELECT s.name FROM queues AS s
        WHERE s.name = ANY (queue_names) AND s.max_running IS NOT NULL AND NOT s.paused
        ORDER BY s.name
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext('conveyor.queue'), hashtext(capped_queue.name));
    END LOOP;
    IF cardinality(queue_names) = 1 THEN
        SELECT s.paused, s.max_running, coalesce(s.aging_seconds, 30)::float8 AS aging
        INTO r FROM (SELECT 1) AS one LEFT JOIN queues AS s ON s.name = queue_names[1];
        IF coalesce(r.paused, false) THEN
            RETURN;
        END IF;
        room := n;
        IF r.max_running IS NOT NULL THEN
            room := least(room, r.max_running - (
                SELECT count(*) FROM tasks AS t
                WHERE t.queue = queue_names[1] AND t.state = 'running'));
        END IF;
        IF room > 0 THEN
            RETURN QUERY SELECT * FROM conveyor_claim_queue(
                queue_names[1], room, worker, lease, dflt[1], token, r.aging);
        END IF;
        RETURN;
    END IF;
    FOR pass IN 1..2 LOOP
        FOR r IN
            WITH active AS (
                SELECT a.q, a.d, coalesce(s.aging_seconds, 30)::float8 AS aging,
                       s.max_running
                FROM (SELECT DISTINCT ON (u.q) u.q, u.d
                      FROM unnest(queue_names, dflt) AS u(q, d)) AS a
                LEFT JOIN queues AS s ON s.name = a.q
                WHERE NOT coalesce(s.paused, false)
            ), heads AS (
                SELECT a.q, h.priority, h.lag, h.id FROM active AS a, LATERAL (
                    SELECT t.priority, t.fairness_key - coalesce(v.vtime, 0) AS lag, t.id
                    FROM tasks AS t
                    LEFT JOIN queue_clocks AS v ON v.queue = t.queue AND v.priority = t.priority
                    WHERE t.queue = a.q AND t.state = 'queued'
                    ORDER BY t.priority, t.fairness_key, t.id
                    LIMIT wanted
                ) AS h
            ), merged AS (
                SELECT heads.q, min(heads.priority) AS best, count(*) AS share FROM (
                    SELECT * FROM heads ORDER BY heads.priority, heads.lag, heads.id
                    LIMIT wanted
                ) AS heads
                GROUP BY heads.q
            )
            SELECT a.q, a.d, a.aging, a.max_running, m.best,
                   CASE WHEN pass = 1 THEN m.share ELSE wanted END AS share
            FROM active AS a JOIN merged AS m ON m.q = a.q
            ORDER BY m.best, a.q
        LOOP
            room := least(wanted, r.share);
            IF r.max_running IS NOT NULL THEN
                room := least(room, r.max_running - (
                    SELECT count(*) FROM tasks AS t
                    WHERE t.queue = r.q AND t.state = 'running'));
            END IF;
            IF room > 0 THEN
                RETURN QUERY SELECT * FROM conveyor_claim_queue(
                    r.q, room, worker, lease, r.d, token, r.aging);
                GET DIAGNOSTICS taken = ROW_COUNT;
                wanted := wanted - taken;
                shortfall := shortfall OR taken < room;
                EXIT WHEN wanted <= 0;
            END IF;
        END LOOP;
        -- A second pass only when a queue took less than its share (capped tenants).
        EXIT WHEN wanted <= 0 OR NOT shortfall;
    END LOOP;
END
$fn$;

-- 0006: drip buckets the LLM gateway shares across every worker: the clock (theoretical
-- arrival time) of each provider's request and token budget. tenant_id '' is the provider's
-- global bucket; per-tenant buckets use the same table.
CREATE TABLE llm_buckets (
    tenant_id  text NOT NULL DEFAULT '',
    provider   text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('requests', 'tokens')),
    tat        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider, kind)
);

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

-- The LLM gateway's shared response cache (0008): the stored reply of a deterministic call
-- per (tenant, request key), served until expires_at; pruned in batches by expires_at.
CREATE TABLE llm_cache (
    tenant_id   text NOT NULL,
    key         bytea NOT NULL,
    reply       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    hits        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX llm_cache_expires_idx ON llm_cache (expires_at);

-- The claim's statements run on generic plans (0009): their custom planning cost more than
-- their execution.
ALTER FUNCTION conveyor_claim_queue(
    text, integer, text, double precision, integer, bigint, double precision
) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION conveyor_claim(text[], integer, text, double precision, integer[])
    SET plan_cache_mode = force_generic_plan;

-- The claim, version 2 (0011), beside version 1 until no worker of an older release runs
-- (AGENTS.md): the candidate step written once, and at most n aged rows.
-- Claim up to n ready tasks of one queue under fencing token `token`. Two snapshots:
-- statement 1 locks candidate rows in claim order, passing over tenants that are at their
-- cap or out of start tokens; then the limited tenants among them are try-locked (one
-- claimer per tenant at a time; a tenant another claimer holds is skipped, never awaited);
-- statement 2, under a snapshot taken after those locks, counts every committed running
-- task of each locked tenant and takes only what fits. Exits from 'running' need no
-- bookkeeping: the running rows are the count.
CREATE FUNCTION conveyor_claim_queue_v2(
    q text, n integer, worker text, lease double precision, dflt integer, token bigint,
    aging double precision
) RETURNS TABLE (
    id bigint, tenant_id text, queue text, priority smallint, attempts integer,
    max_attempts integer, timeout_seconds real, lease_token bigint,
    lease_expires_at timestamptz, parent_id bigint, group_id text, payload jsonb,
    trace_context jsonb, created_at timestamptz
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    share integer := greatest(1, n / 10);
    window_rows integer := 4 * n;
    b_priority smallint := 32767;
    b_key double precision := 'infinity';
    b_id bigint := 9223372036854775807;
    bounded boolean := false;
    window_ids bigint[];
    window_priorities smallint[];
    window_keys double precision[];
    window_count integer;
    aged_ids bigint[];
    candidate_ids bigint[];
    candidate_tenants text[];
    capped text[];
    dry text[];
    ids bigint[];
    more bigint[];
    more_tenants text[];
    level record;
    heads text[];
    limited text[];
    locked text[];
    old_lock_timeout text;
    limited_stripes integer[];
    limited_caps integer[];
    limited_wants bigint[];
    unit_tenants text[];
    unit_stripes smallint[];
    id_stripes smallint[];
    covered bigint;
    last_tried integer;
    stripe integer;
    waits integer;
BEGIN
    -- Tenants at their cap or with an empty bucket. The tenants with running tasks come
    -- from a skip scan of the running index (one probe per tenant, not per task); only
    -- those with a cap are counted, and no further than the cap.
    WITH RECURSIVE busy AS (
        (SELECT t.tenant_id FROM tasks AS t
         WHERE t.queue = q AND t.state = 'running' ORDER BY t.tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT t.tenant_id FROM tasks AS t
                WHERE t.queue = q AND t.state = 'running' AND t.tenant_id > b.tenant_id
                ORDER BY t.tenant_id LIMIT 1)
        FROM busy AS b WHERE b.tenant_id IS NOT NULL
    ), busy_tenants AS MATERIALIZED (
        SELECT coalesce(array_agg(b.tenant_id), '{}') AS ids
        FROM busy AS b WHERE b.tenant_id IS NOT NULL
    )
    SELECT coalesce(array_agg(l.tenant_id), '{}') INTO capped
    FROM busy_tenants AS b, conveyor_tenant_limits(q, b.ids) AS l
    WHERE l.cap IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM tasks AS r
               WHERE r.queue = q AND r.tenant_id = l.tenant_id AND r.state = 'running'
               LIMIT l.cap) AS c) >= l.cap;
    SELECT coalesce(array_agg(b.tenant_id), '{}') INTO dry FROM tenant_rate AS b
    WHERE b.queue = q AND b.tat > now()
      AND b.tat > now() + (b.burst - 1) * make_interval(secs => b.emission);

    IF cardinality(capped) = 0 AND cardinality(dry) = 0 THEN
        -- Statement 1, nobody to pass over: lock the first n rows in claim order. Levels
        -- with work that were not served for `aging` seconds take up to `share` rows first,
        -- so priority 10 is never starved by a steady stream of priority 1.
        WITH starving AS MATERIALIZED (
            SELECT c.priority FROM queue_clocks AS c
            WHERE c.queue = q AND c.last_served_at < now() - make_interval(secs => aging)
            ORDER BY c.priority
        ), aged AS MATERIALIZED (
            SELECT a.id, a.tenant_id FROM starving AS s, LATERAL (
                SELECT t.id, t.tenant_id FROM tasks AS t
                WHERE t.queue = q AND t.state = 'queued' AND t.priority = s.priority
                ORDER BY t.fairness_key, t.id
                LIMIT share
                FOR UPDATE OF t SKIP LOCKED
            ) AS a
            LIMIT n
        ), main AS MATERIALIZED (
            SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
            WHERE t.queue = q AND t.state = 'queued'
              AND t.id <> ALL (ARRAY(SELECT aged.id FROM aged))
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT n
            FOR UPDATE OF t SKIP LOCKED
        )
        SELECT a.ids || m.ids, a.tenants || m.tenants INTO candidate_ids, candidate_tenants
        FROM (SELECT array_agg(aged.id) AS ids, array_agg(aged.tenant_id) AS tenants
              FROM aged) AS a,
             (SELECT array_agg(o.id) AS ids, array_agg(o.tenant_id) AS tenants
              FROM (SELECT main.id, main.tenant_id FROM main
                    ORDER BY main.priority, main.fairness_key, main.id) AS o) AS m;
    ELSE
        -- Statement 1 with tenants to pass over, inside a window: the first 4n ready rows
        -- (and the first 4 * share of each starving level). A deep backlog of capped
        -- tenants at the head then costs at most 4n rows per claim; what lies beyond is
        -- reached by the look past the window below. The rows are locked by id, and the
        -- state test is written so no partial index matches it: the planner must take the
        -- primary key instead of scanning the queue (it did, on stale statistics).
        SELECT array_agg(w.id ORDER BY w.priority, w.fairness_key, w.id),
               array_agg(w.priority ORDER BY w.priority, w.fairness_key, w.id),
               array_agg(w.fairness_key ORDER BY w.priority, w.fairness_key, w.id)
        INTO window_ids, window_priorities, window_keys
        FROM (SELECT t.id, t.priority, t.fairness_key FROM tasks AS t
              WHERE t.queue = q AND t.state = 'queued'
              ORDER BY t.priority, t.fairness_key, t.id
              LIMIT window_rows) AS w;
        window_count := coalesce(cardinality(window_ids), 0);
        bounded := window_count >= window_rows;
        IF bounded THEN
            b_priority := window_priorities[window_count];
            b_key := window_keys[window_count];
            b_id := window_ids[window_count];
        END IF;
        SELECT coalesce(array_agg(a.id), '{}') INTO aged_ids
        FROM queue_clocks AS c, LATERAL (
            SELECT t.id FROM tasks AS t
            WHERE t.queue = q AND t.state = 'queued' AND t.priority = c.priority
            ORDER BY t.fairness_key, t.id
            LIMIT 4 * share
        ) AS a
        WHERE c.queue = q AND c.last_served_at < now() - make_interval(secs => aging);
        WITH aged AS MATERIALIZED (
            SELECT t.id, t.tenant_id FROM tasks AS t
            WHERE t.id = ANY (aged_ids) AND t.state NOT IN ('scheduled', 'running')
              AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT share
            FOR UPDATE OF t SKIP LOCKED
        ), main AS MATERIALIZED (
            SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
            WHERE t.id = ANY (window_ids) AND t.state NOT IN ('scheduled', 'running')
              AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
              AND t.id <> ALL (ARRAY(SELECT aged.id FROM aged))
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT n
            FOR UPDATE OF t SKIP LOCKED
        )
        SELECT a.ids || m.ids, a.tenants || m.tenants INTO candidate_ids, candidate_tenants
        FROM (SELECT array_agg(aged.id) AS ids, array_agg(aged.tenant_id) AS tenants
              FROM aged) AS a,
             (SELECT array_agg(o.id) AS ids, array_agg(o.tenant_id) AS tenants
              FROM (SELECT main.id, main.tenant_id FROM main
                    ORDER BY main.priority, main.fairness_key, main.id) AS o) AS m;
    END IF;
    -- The candidates, whichever way they were locked: the aged rows, then the main rows in
    -- claim order, n in all. (The main rows past n, locked when aged rows took part of the
    -- n, stay locked and unclaimed until the claim commits.) Their tenants may repeat in
    -- heads: it is only ever matched with = ANY.
    ids := coalesce(candidate_ids[1 : n], '{}');
    heads := coalesce(candidate_tenants[1 : n], '{}');

    -- The window was full of rows of tenants that must be passed over. Those are rows that
    -- lag behind the level's virtual time (their tenant was served slower than its fair
    -- share, because of its cap or rate); everyone else's next tasks sit at the virtual
    -- time. So look again from there: a second window per level, from its virtual time.
    IF bounded AND cardinality(ids) < n THEN
        FOR level IN
            SELECT c.priority, c.vtime FROM queue_clocks AS c
            WHERE c.queue = q AND c.priority >= b_priority
            ORDER BY c.priority
        LOOP
            SELECT coalesce(array_agg(w.id), '{}') INTO window_ids
            FROM (SELECT t.id FROM tasks AS t
                  WHERE t.queue = q AND t.state = 'queued' AND t.priority = level.priority
                    AND t.fairness_key >= level.vtime
                  ORDER BY t.fairness_key, t.id
                  LIMIT window_rows) AS w;
            WITH taken AS (
                SELECT t.id, t.tenant_id FROM tasks AS t
                WHERE t.id = ANY (window_ids) AND t.state NOT IN ('scheduled', 'running')
                  AND t.id <> ALL (ids)
                  AND t.tenant_id <> ALL (capped) AND t.tenant_id <> ALL (dry)
                ORDER BY t.fairness_key, t.id
                LIMIT n - cardinality(ids)
                FOR UPDATE OF t SKIP LOCKED
            )
            SELECT array_agg(taken.id), array_agg(DISTINCT taken.tenant_id)
            INTO more, more_tenants
            FROM taken;
            IF more IS NOT NULL THEN
                ids := ids || more;
                heads := ARRAY(SELECT DISTINCT x FROM unnest(heads || more_tenants) AS x);
            END IF;
            EXIT WHEN cardinality(ids) >= n;
        END LOOP;
    END IF;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;

    -- Limited tenants among the candidates (with a cap or a start rate) are claimed under
    -- locks. A tenant's cap is split into 4 stripes (a quarter of the cap each; a running
    -- task records its stripe in cap_stripe), each with a lock of its own, so up to 4
    -- claimers serve one big tenant at once; a claimer locks as many stripes as it needs.
    -- A stripe never takes the tenant past the cap: it counts its own running tasks against
    -- its quota and all of them against the cap. A tenant with a start rate has one bucket,
    -- so one lock (stripe 0, quota the whole cap).
    SELECT coalesce(array_agg(l.tenant_id ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg(CASE WHEN l.rate_limit IS NULL THEN 4 ELSE 1 END
                              ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg(coalesce(l.cap, 0) ORDER BY l.tenant_id), '{}'),
           coalesce(array_agg((SELECT count(*) FROM tasks AS c
                               WHERE c.id = ANY (ids) AND c.tenant_id = l.tenant_id)
                              ORDER BY l.tenant_id), '{}')
    INTO limited, limited_stripes, limited_caps, limited_wants
    FROM conveyor_tenant_limits(q, heads) AS l
    WHERE l.cap IS NOT NULL OR l.rate_limit IS NOT NULL;
    -- Stripes are tried in a random order, so claimers spread over them. When all are held,
    -- a short wait for one: its holder commits within milliseconds, and skipping left
    -- workers idle while one big tenant was all the work (benchmarks/fairness.py).
    -- lock_timeout bounds the wait, so claimers waiting for each other give up instead of
    -- deadlocking.
    unit_tenants := '{}';
    unit_stripes := '{}';
    waits := 0;
    FOR i IN 1 .. cardinality(limited) LOOP
        covered := 0;
        last_tried := NULL;
        FOR stripe IN
            SELECT g FROM generate_series(0, limited_stripes[i] - 1) AS g
            WHERE limited_stripes[i] = 1 OR limited_caps[i] / 4 + (g < limited_caps[i] % 4)::int > 0
            ORDER BY random()
        LOOP
            last_tried := stripe;
            IF pg_try_advisory_xact_lock(hashtext(q), hashtext(limited[i] || '#' || stripe)) THEN
                unit_tenants := unit_tenants || limited[i];
                unit_stripes := unit_stripes || stripe::smallint;
                covered := covered + CASE WHEN limited_stripes[i] = 1 THEN limited_wants[i]
                    ELSE limited_caps[i] / 4 + (stripe < limited_caps[i] % 4)::int END;
                EXIT WHEN covered >= limited_wants[i];
            END IF;
        END LOOP;
        IF covered = 0 AND last_tried IS NOT NULL AND waits < 4 THEN
            waits := waits + 1;
            old_lock_timeout := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', '20ms', true);
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext(q),
                                              hashtext(limited[i] || '#' || last_tried));
                unit_tenants := unit_tenants || limited[i];
                unit_stripes := unit_stripes || last_tried::smallint;
            EXCEPTION WHEN lock_not_available THEN
                NULL;  -- still held: pass over the tenant in this claim
            END;
            PERFORM set_config('lock_timeout', old_lock_timeout, true);
        END IF;
    END LOOP;

    id_stripes := array_fill(NULL::smallint, ARRAY[cardinality(ids)]);
    IF cardinality(limited) > 0 THEN
        -- Statement 2 (a snapshot taken after the locks: earlier claims under a held stripe
        -- have committed and are counted) keeps what fits, assigns each kept task to one of
        -- its tenant's held stripes, and spends the start tokens.
        WITH units AS MATERIALIZED (
            SELECT u.tenant_id, u.stripe, s.stripes, l.cap, l.rate_limit,
                   l.rate_interval::float8 / l.rate_limit AS emission,
                   (SELECT count(*) FROM tasks AS r
                    WHERE r.queue = q AND r.tenant_id = u.tenant_id
                      AND r.state = 'running') AS running,
                   (SELECT count(*) FROM tasks AS r
                    WHERE r.queue = q AND r.tenant_id = u.tenant_id AND r.state = 'running'
                      AND r.cap_stripe = u.stripe) AS in_stripe
            FROM unnest(unit_tenants, unit_stripes) AS u(tenant_id, stripe)
            JOIN unnest(limited, limited_stripes) AS s(tenant_id, stripes)
                ON s.tenant_id = u.tenant_id
            JOIN conveyor_tenant_limits(q, unit_tenants) AS l ON l.tenant_id = u.tenant_id
        ), unit_room AS MATERIALIZED (
            SELECT n_.tenant_id, n_.stripe, n_.rate_limit, n_.emission,
                   greatest(0, CASE
                       WHEN n_.cap IS NULL THEN n
                       WHEN n_.stripes = 1 THEN n_.cap - n_.running
                       ELSE least(n_.cap / 4 + (n_.stripe < n_.cap % 4)::int - n_.in_stripe,
                                  n_.cap - n_.running)
                   END) AS room
            FROM units AS n_
        ), ranges AS MATERIALIZED (
            -- each held stripe covers a range of the tenant's candidates, in claim order
            SELECT r.*,
                   sum(r.room) OVER (PARTITION BY r.tenant_id ORDER BY r.stripe) - r.room
                       AS lo,
                   sum(r.room) OVER (PARTITION BY r.tenant_id ORDER BY r.stripe) AS hi
            FROM unit_room AS r
        ), allowance AS MATERIALIZED (
            SELECT b0.tenant_id, greatest(coalesce(b.tat, now()), now()) AS tat0,
                   b0.emission, b0.rate_limit,
                   floor(extract(epoch FROM now() - greatest(coalesce(b.tat, now()), now()))
                         / b0.emission + b0.rate_limit + 1e-9)::integer AS tokens
            FROM (SELECT DISTINCT ranges.tenant_id, ranges.emission, ranges.rate_limit
                  FROM ranges WHERE ranges.rate_limit IS NOT NULL) AS b0
            LEFT JOIN tenant_rate AS b ON b.tenant_id = b0.tenant_id AND b.queue = q
        ), candidates AS MATERIALIZED (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key,
                   c.tenant_id = ANY (limited) AS is_limited,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM tasks AS c
            WHERE c.id = ANY (ids)
        ), got AS MATERIALIZED (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key, g.stripe
            FROM candidates AS c
            LEFT JOIN ranges AS g
                ON g.tenant_id = c.tenant_id AND c.rn > g.lo AND c.rn <= g.hi
            LEFT JOIN allowance AS a ON a.tenant_id = c.tenant_id
            WHERE NOT c.is_limited
               OR (g.stripe IS NOT NULL AND (a.tokens IS NULL OR c.rn <= a.tokens))
        ), spend AS (
            INSERT INTO tenant_rate AS b (tenant_id, queue, tat, emission, burst)
            SELECT a.tenant_id, q, a.tat0 + k.k * make_interval(secs => a.emission),
                   a.emission, a.rate_limit
            FROM (SELECT got.tenant_id, count(*) AS k FROM got GROUP BY got.tenant_id) AS k
            JOIN allowance AS a ON a.tenant_id = k.tenant_id
            WHERE a.rate_limit IS NOT NULL
            ON CONFLICT (tenant_id, queue) DO UPDATE
            SET tat = excluded.tat, emission = excluded.emission, burst = excluded.burst
        )
        SELECT coalesce(array_agg(got.id), '{}'), coalesce(array_agg(got.stripe), '{}')
        INTO ids, id_stripes
        FROM got;
    END IF;

    -- Lease the kept rows under the claim's token; move the level's virtual time to the
    -- largest key taken.
    RETURN QUERY
    WITH got AS MATERIALIZED (
        SELECT c.id, c.priority, c.fairness_key FROM tasks AS c WHERE c.id = ANY (ids)
    ), stripes AS (
        SELECT * FROM unnest(ids, id_stripes) AS s(id, stripe)
    ), served AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), advance AS (
        UPDATE queue_clocks AS c
        SET vtime = greatest(c.vtime, m.k), last_served_at = now()
        FROM (SELECT got.priority, max(got.fairness_key) AS k FROM got
              WHERE got.priority IN (SELECT served.priority FROM served)
              GROUP BY got.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority
    ), claimed AS (
        UPDATE tasks AS t
        SET state = 'running',
            attempts = t.attempts + 1,
            max_attempts = coalesce(t.max_attempts, dflt),
            worker_id = worker,
            lease_token = token,
            lease_expires_at = now() + make_interval(secs => lease),
            started_at = now(),
            cap_stripe = stripes.stripe
        FROM stripes
        WHERE t.id = stripes.id
        RETURNING t.id, t.tenant_id, t.queue, t.priority, t.attempts, t.max_attempts,
                  t.timeout_seconds, t.lease_token, t.lease_expires_at, t.parent_id,
                  t.group_id, t.payload, t.trace_context, t.created_at, t.fairness_key
    )
    SELECT c.id, c.tenant_id, c.queue, c.priority, c.attempts, c.max_attempts,
           c.timeout_seconds, c.lease_token, c.lease_expires_at, c.parent_id, c.group_id,
           c.payload, c.trace_context, c.created_at
    FROM claimed AS c
    ORDER BY c.priority, c.fairness_key, c.id;
END
$fn$;

-- Claim up to n ready tasks of the given queues under one new fencing token. Paused
-- queues are left out. With several queues, the first n ready rows of all of them, merged by
-- (priority, lag behind the level's virtual time, id), give each queue its share (keys of
-- different queues are not comparable; their lags are); what a share leaves unclaimed
-- (capped tenants) goes to the other queues in a second pass. A queue with a global cap
-- (queues.max_running) is claimed by one transaction at a time: those locks are taken
-- first, in name order, so claimers never deadlock.
CREATE FUNCTION conveyor_claim_v2(
    queue_names text[], n integer, worker text, lease double precision, dflt integer[]
) RETURNS TABLE (
    id bigint, tenant_id text, queue text, priority smallint, attempts integer,
    max_attempts integer, timeout_seconds real, lease_token bigint,
    lease_expires_at timestamptz, parent_id bigint, group_id text, payload jsonb,
    trace_context jsonb, created_at timestamptz
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    token bigint := nextval('lease_token_seq');
    wanted integer := n;
    room integer;
    taken integer;
    pass integer;
    shortfall boolean := false;
    capped_queue record;
    r record;
BEGIN
    FOR capped_queue IN
        SELECT s.name FROM queues AS s
        WHERE s.name = ANY (queue_names) AND s.max_running IS NOT NULL AND NOT s.paused
        ORDER BY s.name
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext('conveyor.queue'), hashtext(capped_queue.name));
    END LOOP;
    IF cardinality(queue_names) = 1 THEN
        SELECT s.paused, s.max_running, coalesce(s.aging_seconds, 30)::float8 AS aging
        INTO r FROM (SELECT 1) AS one LEFT JOIN queues AS s ON s.name = queue_names[1];
        IF coalesce(r.paused, false) THEN
            RETURN;
        END IF;
        room := n;
        IF r.max_running IS NOT NULL THEN
            room := least(room, r.max_running - (
                SELECT count(*) FROM tasks AS t
                WHERE t.queue = queue_names[1] AND t.state = 'running'));
        END IF;
        IF room > 0 THEN
            RETURN QUERY SELECT * FROM conveyor_claim_queue_v2(
                queue_names[1], room, worker, lease, dflt[1], token, r.aging);
        END IF;
        RETURN;
    END IF;
    FOR pass IN 1..2 LOOP
        FOR r IN
            WITH active AS (
                SELECT a.q, a.d, coalesce(s.aging_seconds, 30)::float8 AS aging,
                       s.max_running
                FROM (SELECT DISTINCT ON (u.q) u.q, u.d
                      FROM unnest(queue_names, dflt) AS u(q, d)) AS a
                LEFT JOIN queues AS s ON s.name = a.q
                WHERE NOT coalesce(s.paused, false)
            ), heads AS (
                SELECT a.q, h.priority, h.lag, h.id FROM active AS a, LATERAL (
                    SELECT t.priority, t.fairness_key - coalesce(v.vtime, 0) AS lag, t.id
                    FROM tasks AS t
                    LEFT JOIN queue_clocks AS v ON v.queue = t.queue AND v.priority = t.priority
                    WHERE t.queue = a.q AND t.state = 'queued'
                    ORDER BY t.priority, t.fairness_key, t.id
                    LIMIT wanted
                ) AS h
            ), merged AS (
                SELECT heads.q, min(heads.priority) AS best, count(*) AS share FROM (
                    SELECT * FROM heads ORDER BY heads.priority, heads.lag, heads.id
                    LIMIT wanted
                ) AS heads
                GROUP BY heads.q
            )
            SELECT a.q, a.d, a.aging, a.max_running, m.best,
                   CASE WHEN pass = 1 THEN m.share ELSE wanted END AS share
            FROM active AS a JOIN merged AS m ON m.q = a.q
            ORDER BY m.best, a.q
        LOOP
            room := least(wanted, r.share);
            IF r.max_running IS NOT NULL THEN
                room := least(room, r.max_running - (
                    SELECT count(*) FROM tasks AS t
                    WHERE t.queue = r.q AND t.state = 'running'));
            END IF;
            IF room > 0 THEN
                RETURN QUERY SELECT * FROM conveyor_claim_queue_v2(
                    r.q, room, worker, lease, r.d, token, r.aging);
                GET DIAGNOSTICS taken = ROW_COUNT;
                wanted := wanted - taken;
                shortfall := shortfall OR taken < room;
                EXIT WHEN wanted <= 0;
            END IF;
        END LOOP;
        -- A second pass only when a queue took less than its share (capped tenants).
        EXIT WHEN wanted <= 0 OR NOT shortfall;
    END LOOP;
END
$fn$;
-- API keys for the HTTP API: only the SHA-256 of the secret is kept; tenant_id NULL is an
-- admin key.
CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    tenant_id    text REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL,
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- 0013: backpressure, idempotency fingerprints and debounce for the HTTP API.
--
-- queues.depth_threshold: past it, new work of the queue is refused lowest priority first
-- (core/shedding.py holds the rule; NULL: never shed). The API reads the depth of such
-- queues once a second per process, never per request.
ALTER TABLE queues ADD COLUMN depth_threshold integer CHECK (depth_threshold >= 1);

-- The hash of the canonical request body that took an idempotency key: the same key with
-- another body is refused (idempotency-conflict). NULL for keys taken without one (older
-- releases, ctx.spawn, the CLI): any body matches those.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint bytea;

-- A debounced task's key: at most one task of a tenant's queue with a given key waits
-- (scheduled or queued) at a time; a submit with the key of a waiting task replaces its
-- payload instead of adding a task. Rows without a key stay out of the index.
ALTER TABLE tasks ADD COLUMN debounce_key text;
CREATE UNIQUE INDEX tasks_debounce_idx ON tasks (tenant_id, queue, debounce_key)
    WHERE debounce_key IS NOT NULL AND state IN ('scheduled', 'queued');

-- The drain rate of a queue the API sheds for: tasks that finished in the last minute.
-- BRIN: finished_at grows with the heap, so the index is a few pages and costs finishes
-- next to nothing; only queues at or past their threshold are measured.
CREATE INDEX task_history_finished_brin ON task_history USING brin (finished_at)
    WITH (pages_per_range = 32);

-- 0014: the task event log.
--
-- One row per thing that happened to a task: created, started, step, llm_call, an agent's
-- own events (ctx.emit), retried, released, succeeded, dead, cancelled. Lifecycle rows are
-- written by the statement that changes the task's state (finish_batch, retry_batch, the
-- claim...), so the log and the task never disagree.
--
-- Order: an event's position is (xid, id). `id` comes from a sequence and orders the events
-- of one transaction; `xid` is the writing transaction's id. Readers take only events of
-- transactions below the horizon (the oldest transaction still running, see
-- conveyor_event_horizon): every such transaction has ended, so no event can later appear
-- before a position a reader has passed. A reader that resumes after position P misses
-- nothing and sees nothing twice. The price: an event is delivered once every write
-- transaction of this database that began before it has ended (a long write transaction
-- delays the stream; it never loses or reorders it).
--
-- Partitioned by month on `at` and dropped whole by retention, like task_history. Two
-- indexes: the position (the tail every API process reads) and the task (one task's log,
-- a handful of rows, sorted by position after the lookup; the narrow key keeps the index
-- and its WAL small).
CREATE SEQUENCE task_event_id_seq AS bigint CACHE 64;

CREATE TABLE task_events (
    xid        bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id         bigint NOT NULL DEFAULT nextval('task_event_id_seq'),
    at         timestamptz NOT NULL DEFAULT now(),
    tenant_id  text NOT NULL,
    task_id    bigint NOT NULL,
    queue      text NOT NULL,
    group_id   text,
    kind       text NOT NULL,
    attempt    integer,
    data       jsonb
) PARTITION BY RANGE (at);
CREATE INDEX task_events_position_idx ON task_events (xid, id);
CREATE INDEX task_events_task_idx ON task_events (task_id);

-- The lowest transaction id that may still commit events: events of transactions below it
-- are final. Compared as bigint, like task_events.xid. From the statement's snapshot: the
-- oldest transaction in progress, leaving out those pg_stat_activity shows working in
-- another database, and those prepared (two-phase) in another database (they cannot write
-- this database's events: a CREATE DATABASE, a long batch job or a forgotten prepared
-- transaction next door does not hold the streams back). A transaction whose database cannot
-- be seen (it just ended, or the role may not see other sessions) counts: the horizon may
-- wait a read longer than it must, never pass an event that could still commit. Call it
-- as (SELECT conveyor_event_horizon()), once per statement.
CREATE FUNCTION conveyor_event_horizon() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity AS a
             WHERE a.backend_xid IS NOT NULL
               AND a.backend_xid::text::bigint = x::text::bigint % 4294967296
               AND a.datname IS DISTINCT FROM current_database())
           AND NOT EXISTS (
             SELECT 1 FROM pg_prepared_xacts AS p
             WHERE p.transaction::text::bigint = x::text::bigint % 4294967296
               AND p.database <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
$$;

-- A queue can turn its lifecycle events off (ctx.emit events are still written).
ALTER TABLE queues ADD COLUMN events boolean NOT NULL DEFAULT true;

-- 0015: durable waits (ctx.wait_for) and the signals that end them.
--
-- A task that waits for a signal leaves 'running' for 'waiting': no lease, no worker, no
-- slot. waiting_for names the signal, wait_until is the deadline (NULL: no timeout); both
-- are cleared when the wait ends. The claim takes only 'queued' rows, so it is unchanged.
ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('scheduled', 'queued', 'running', 'waiting'));
ALTER TABLE tasks ADD COLUMN waiting_for text;
ALTER TABLE tasks ADD COLUMN wait_until timestamptz;
-- The maintenance loop's sweep of waits past their deadline (expire_waits).
CREATE INDEX tasks_wait_until_idx ON tasks (wait_until) WHERE state = 'waiting';

-- Signals, write-once per (task, name): the first delivery is what every run of the task
-- gets from ctx.wait_for(name); timed_out marks a wait whose deadline passed first (a
-- later signal of that name is refused). Kept after the task finishes, like its steps in
-- the effects ledger, so a replayed task sees the same answers; retention prunes them.
CREATE TABLE task_signals (
    tenant_id   text NOT NULL,
    task_id     bigint NOT NULL,
    name        text NOT NULL,
    payload     jsonb,
    timed_out   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, name)
);
CREATE INDEX task_signals_created_idx ON task_signals (created_at);

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
    FOR pass IN 1..3 LOOP
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
            -- A row committed after the UPDATE took its snapshot (a concurrent first
            -- attempt made it) is not refusal: if the attempt fits it, try again.
            IF pass < 3
               AND (least(p_calls_cap, cap.cap_calls) IS NULL
                    OR cap.calls + cap.reserved_calls + 1 <= least(p_calls_cap, cap.cap_calls))
               AND (least(p_tokens_cap, cap.cap_tokens) IS NULL
                    OR cap.tokens + cap.reserved_tokens + p_tokens
                       <= least(p_tokens_cap, cap.cap_tokens))
               AND (least(p_cost_cap, cap.cap_cost) IS NULL
                    OR cap.cost + cap.reserved_cost + p_cost <= least(p_cost_cap, cap.cap_cost))
            THEN
                CONTINUE;
            END IF;
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
    status := 'refused';  -- three passes found room and lost it each time: a busy row
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

-- 0018: live LLM output of running tasks, for GET /v1/tasks/{id}/stream.
--
-- Each row is a slice of the text an agent's ctx.llm.stream produced, in the order the
-- worker's token relay wrote it: (task_id, run, seq). `run` is the lease token of the run
-- that produced it (a later run of the task, a retry or a task handed back and claimed
-- again, has a greater one), `seq` counts up from 0 within the run. kind 'end' marks the
-- end of one streamed call. UNLOGGED: no WAL is written for it; a server crash empties it,
-- which costs live viewers the replay of partial output, never any task state.
-- Maintenance deletes a task's rows once the task has ended and they are older than the
-- stream retention (CONVEYOR_STREAM_RETENTION_SECONDS).
CREATE UNLOGGED TABLE task_chunks (
    task_id    bigint NOT NULL,
    run        bigint NOT NULL,
    seq        integer NOT NULL,
    tenant_id  text NOT NULL,
    kind       text NOT NULL DEFAULT 'chunk' CHECK (kind IN ('chunk', 'end')),
    text       text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, run, seq)
);
CREATE INDEX task_chunks_at_idx ON task_chunks (at);

-- 0017: declarative agents: a role defined as data (prompts, model, output schema, limits).
--
-- Every change of a role's definition is a new row with the next version, never an update:
-- a task records the version it ran with, so the text it ran with must stay readable. The
-- API's PUT /v1/agents/{role} and a worker's --agents file write here; workers poll the
-- latest version of the roles they serve. `digest` is the SHA-256 of the definition's
-- canonical JSON, so a file loaded again unchanged adds no version. Not tenant-owned: a
-- definition is an operator's, like a plan.
CREATE TABLE agent_definitions (
    role        text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL,
    digest      bytea NOT NULL,
    source      text NOT NULL CHECK (source IN ('api', 'file')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, version)
);

-- 0020: callback tokens of the webhook adapter (external runtimes).
--
-- The worker hands an external runtime one token per delivery (a task's attempt) and keeps
-- only its SHA-256 here. The runtime reports with it: progress and heartbeats while the
-- token is live, the result once (used_at is set in the transaction that delivers the
-- result as the task's signal `signal`, so a replayed result finds it used). expires_at is
-- the callback deadline, moved by heartbeats up to max_until and never past it. queue and
-- group_id come along so a progress report becomes an event without reading the task.
CREATE TABLE callback_tokens (
    token_hash  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    task_id     bigint NOT NULL,
    attempt     integer NOT NULL,
    queue       text NOT NULL,
    group_id    text,
    signal      text NOT NULL,
    timeout     float8 NOT NULL CHECK (timeout > 0),
    expires_at  timestamptz NOT NULL,
    max_until   timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- A redelivery of the same attempt (the worker died after sending) replaces its token.
CREATE UNIQUE INDEX callback_tokens_task_attempt_idx ON callback_tokens (task_id, attempt);
-- Maintenance prunes tokens long past their deadline.
CREATE INDEX callback_tokens_max_until_idx ON callback_tokens (max_until);
