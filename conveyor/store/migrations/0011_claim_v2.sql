-- 0011: the claim, version 2, beside version 1.
--
-- SQL functions are versioned (AGENTS.md): during a rolling deploy, workers of the last
-- release keep calling conveyor_claim (v1, 0005 + 0009) while the new ones call
-- conveyor_claim_v2, so neither sees its claim change under it. v1 stays until no worker
-- of a release before this one can run; a later migration drops conveyor_claim and
-- conveyor_claim_queue then (never this file: applied migrations are not edited).
--
-- What changed from v1, in conveyor_claim_queue_v2 only (conveyor_claim_v2 is v1 calling
-- it; both carry plan_cache_mode = force_generic_plan in their definition, as 0009 set on
-- v1):
-- - The candidate step is written once. v1 repeated the `cand` CTE (the aged rows, then
--   the main rows in claim order up to n) in both branches of statement 1; in v2 each
--   branch only locks its aged and main rows, and one step after the branches takes the
--   first n of them.
-- - The short path took `share` aged rows from every starving level and then asked for
--   the main rows with LIMIT n - (aged rows): with more starving levels than n / share
--   (n = 1 and priorities 5 and 10 both starving) the limit was negative and the claim
--   failed ("LIMIT must not be negative"). v2 takes at most n aged rows, lowest priority
--   number first. In every other case v2 claims what v1 claims
--   (tests/integration/test_claim_versions.py runs both on the same data).

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
