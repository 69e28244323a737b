"""The recommended claim (function), with caps, GCRA rate limits and WFQ vtime; and the
priority-aging variants."""

FAIR_DDL = """
CREATE INDEX tasks_running_tenant_idx ON tasks (queue, tenant_id) WHERE state = 'running';

-- Per-tenant start-rate buckets (GCRA): at most rate_burst starts at once, then one per
-- rate_interval seconds. tat = theoretical arrival time.
CREATE TABLE tenant_rate (
    queue          text NOT NULL,
    tenant_id      text NOT NULL,
    rate_interval  double precision NOT NULL CHECK (rate_interval > 0),
    rate_burst     integer NOT NULL DEFAULT 1 CHECK (rate_burst >= 1),
    tat            timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (queue, tenant_id)
);

ALTER TABLE queue_clocks ADD COLUMN last_served_at timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION claim_fair(q text, n int, worker text, lease float8, dflt int)
RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
DECLARE
    ids bigint[];
    tenants text[];
    locked text[];
BEGIN
    -- Statement 1 (snapshot 1): lock up to n head rows, in (priority, fairness_key, id)
    -- order, passing over tenants that are at their cap or out of start tokens.
    WITH capped AS MATERIALIZED (
        SELECT r.tenant_id FROM tasks AS r
        JOIN tenant_caps AS c ON c.queue = q AND c.tenant_id = r.tenant_id
        WHERE r.queue = q AND r.state = 'running'
        GROUP BY r.tenant_id, c.cap HAVING count(*) >= c.cap
    ), dry AS MATERIALIZED (
        SELECT b.tenant_id FROM tenant_rate AS b
        WHERE b.queue = q
          AND b.tat > now() + (b.rate_burst - 1) * make_interval(secs => b.rate_interval)
    ), cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id FROM tasks AS t
        WHERE t.queue = q AND t.state = 'queued'
          AND t.tenant_id NOT IN (SELECT tenant_id FROM capped)
          AND t.tenant_id NOT IN (SELECT tenant_id FROM dry)
        ORDER BY t.priority, t.fairness_key, t.id
        LIMIT n
        FOR UPDATE OF t SKIP LOCKED
    )
    SELECT array_agg(c.id), array_agg(DISTINCT c.tenant_id) INTO ids, tenants FROM cand AS c;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    -- Tenants with a cap or a bucket are claimed by one transaction at a time: try-lock
    -- them (transaction-scoped; a tenant another claimer holds is skipped, never awaited).
    SELECT array_agg(d.t) INTO locked FROM unnest(tenants) AS d(t)
    WHERE (EXISTS (SELECT 1 FROM tenant_caps AS c WHERE c.queue = q AND c.tenant_id = d.t)
           OR EXISTS (SELECT 1 FROM tenant_rate AS b WHERE b.queue = q AND b.tenant_id = d.t))
      AND pg_try_advisory_xact_lock(hashtext(q), hashtext(d.t));
    locked := coalesce(locked, '{}');
    -- Statement 2 (snapshot 2, taken after the locks): every earlier claim of a locked
    -- tenant has committed and is counted. Unlimited tenants pass through.
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
        WHERE t.id = ANY (ids)
    ), lim AS MATERIALIZED (
        SELECT d.t AS tenant_id,
               c.cap - (SELECT count(*) FROM tasks AS r
                        WHERE r.queue = q AND r.tenant_id = d.t AND r.state = 'running')
                   AS cap_free,
               b.rate_interval, greatest(b.tat, now()) AS tat0,
               floor(extract(epoch FROM now() + b.rate_burst * make_interval(secs => b.rate_interval)
                             - greatest(b.tat, now())) / b.rate_interval)::int AS tokens
        FROM unnest(tenants) AS d(t)
        LEFT JOIN tenant_caps AS c ON c.queue = q AND c.tenant_id = d.t
        LEFT JOIN tenant_rate AS b ON b.queue = q AND b.tenant_id = d.t
        WHERE c.cap IS NOT NULL OR b.rate_interval IS NOT NULL
    ), got AS MATERIALIZED (
        SELECT x.id, x.tenant_id, x.priority, x.fairness_key FROM (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key,
                   CASE WHEN l.tenant_id IS NULL THEN n          -- unlimited
                        WHEN NOT (l.tenant_id = ANY (locked)) THEN 0   -- another claimer has it
                        ELSE least(coalesce(l.cap_free, n), coalesce(l.tokens, n)) END AS free,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM cand AS c LEFT JOIN lim AS l ON l.tenant_id = c.tenant_id
        ) AS x
        WHERE x.rn <= x.free
    ), spend AS (
        UPDATE tenant_rate AS b
        SET tat = l.tat0 + k.k * make_interval(secs => b.rate_interval)
        FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS k
        JOIN lim AS l ON l.tenant_id = k.tenant_id
        WHERE b.queue = q AND b.tenant_id = k.tenant_id
    ), vt_lock AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), vt AS (
        UPDATE queue_clocks AS c SET vtime = greatest(c.vtime, m.k), last_served_at = now()
        FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
              WHERE g.priority IN (SELECT vt_lock.priority FROM vt_lock)
              GROUP BY g.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority
    ), token AS (SELECT nextval('lease_token_seq') AS value)
    UPDATE tasks AS t
    SET state = 'running',
        attempts = t.attempts + 1,
        max_attempts = coalesce(t.max_attempts, dflt),
        worker_id = worker,
        lease_token = token.value,
        lease_expires_at = now() + make_interval(secs => lease),
        started_at = now()
    FROM got, token
    WHERE t.id = got.id
    RETURNING t.*;
END $fn$;

"""
CLAIM_FAIR = "SELECT * FROM claim_fair($1, $2, $3, $4, $6 + 0 * $5)"
FAIR_W_DDL = """CREATE FUNCTION claim_fair_w(q text, n int, worker text, lease float8, dflt int, scan int)
RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
DECLARE
    ids bigint[];
    tenants text[];
    locked text[];
BEGIN
    -- Statement 1 (snapshot 1): lock up to n head rows, in (priority, fairness_key, id)
    -- order, passing over tenants that are at their cap or out of start tokens.
    WITH capped AS MATERIALIZED (
        SELECT r.tenant_id FROM tasks AS r
        JOIN tenant_caps AS c ON c.queue = q AND c.tenant_id = r.tenant_id
        WHERE r.queue = q AND r.state = 'running'
        GROUP BY r.tenant_id, c.cap HAVING count(*) >= c.cap
    ), dry AS MATERIALIZED (
        SELECT b.tenant_id FROM tenant_rate AS b
        WHERE b.queue = q
          AND b.tat > now() + (b.rate_burst - 1) * make_interval(secs => b.rate_interval)
    ), win AS MATERIALIZED (
        -- a bounded window of the head, read without locks: an empty claim costs at most
        -- `scan` index entries, however deep a capped tenant's backlog is
        SELECT h.id FROM (
            SELECT id, tenant_id FROM tasks
            WHERE queue = q AND state = 'queued'
            ORDER BY priority, fairness_key, id
            LIMIT scan) AS h
        WHERE h.tenant_id NOT IN (SELECT tenant_id FROM capped)
          AND h.tenant_id NOT IN (SELECT tenant_id FROM dry)
    ), cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id FROM tasks AS t
        WHERE t.id IN (SELECT id FROM win) AND t.state = 'queued'
        ORDER BY t.priority, t.fairness_key, t.id
        LIMIT n
        FOR UPDATE OF t SKIP LOCKED
    )
    SELECT array_agg(c.id), array_agg(DISTINCT c.tenant_id) INTO ids, tenants FROM cand AS c;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    -- Tenants with a cap or a bucket are claimed by one transaction at a time: try-lock
    -- them (transaction-scoped; a tenant another claimer holds is skipped, never awaited).
    SELECT array_agg(d.t) INTO locked FROM unnest(tenants) AS d(t)
    WHERE (EXISTS (SELECT 1 FROM tenant_caps AS c WHERE c.queue = q AND c.tenant_id = d.t)
           OR EXISTS (SELECT 1 FROM tenant_rate AS b WHERE b.queue = q AND b.tenant_id = d.t))
      AND pg_try_advisory_xact_lock(hashtext(q), hashtext(d.t));
    locked := coalesce(locked, '{}');
    -- Statement 2 (snapshot 2, taken after the locks): every earlier claim of a locked
    -- tenant has committed and is counted. Unlimited tenants pass through.
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
        WHERE t.id = ANY (ids)
    ), lim AS MATERIALIZED (
        SELECT d.t AS tenant_id,
               c.cap - (SELECT count(*) FROM tasks AS r
                        WHERE r.queue = q AND r.tenant_id = d.t AND r.state = 'running')
                   AS cap_free,
               b.rate_interval, greatest(b.tat, now()) AS tat0,
               floor(extract(epoch FROM now() + b.rate_burst * make_interval(secs => b.rate_interval)
                             - greatest(b.tat, now())) / b.rate_interval)::int AS tokens
        FROM unnest(tenants) AS d(t)
        LEFT JOIN tenant_caps AS c ON c.queue = q AND c.tenant_id = d.t
        LEFT JOIN tenant_rate AS b ON b.queue = q AND b.tenant_id = d.t
        WHERE c.cap IS NOT NULL OR b.rate_interval IS NOT NULL
    ), got AS MATERIALIZED (
        SELECT x.id, x.tenant_id, x.priority, x.fairness_key FROM (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key,
                   CASE WHEN l.tenant_id IS NULL THEN n          -- unlimited
                        WHEN NOT (l.tenant_id = ANY (locked)) THEN 0   -- another claimer has it
                        ELSE least(coalesce(l.cap_free, n), coalesce(l.tokens, n)) END AS free,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM cand AS c LEFT JOIN lim AS l ON l.tenant_id = c.tenant_id
        ) AS x
        WHERE x.rn <= x.free
    ), spend AS (
        UPDATE tenant_rate AS b
        SET tat = l.tat0 + k.k * make_interval(secs => b.rate_interval)
        FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS k
        JOIN lim AS l ON l.tenant_id = k.tenant_id
        WHERE b.queue = q AND b.tenant_id = k.tenant_id
    ), vt_lock AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), vt AS (
        UPDATE queue_clocks AS c SET vtime = greatest(c.vtime, m.k), last_served_at = now()
        FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
              WHERE g.priority IN (SELECT vt_lock.priority FROM vt_lock)
              GROUP BY g.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority
    ), token AS (SELECT nextval('lease_token_seq') AS value)
    UPDATE tasks AS t
    SET state = 'running',
        attempts = t.attempts + 1,
        max_attempts = coalesce(t.max_attempts, dflt),
        worker_id = worker,
        lease_token = token.value,
        lease_expires_at = now() + make_interval(secs => lease),
        started_at = now()
    FROM got, token
    WHERE t.id = got.id
    RETURNING t.*;
END $fn$;
"""
CLAIM_FAIR_W = "SELECT * FROM claim_fair_w($1, $2, $3, $4, $6, $5)"

# Priority aging, in the claim: a priority level of the queue that has queued work but has
# not been served for $7 seconds (queue_clocks.last_served_at) gets up to $8 of this batch,
# taken first; the rest of the batch is the usual (priority, fairness_key, id) order.
# $1 queue, $2 n, $3 worker, $4 lease, $5 scan (unused), $6 default attempts, $7 max wait s,
# $8 aged share per starving level.
CLAIM_AGED = """
WITH starving AS MATERIALIZED (
    SELECT c.priority FROM queue_clocks AS c
    WHERE c.queue = $1 AND c.last_served_at < now() - make_interval(secs => $7::float8)
), aged AS MATERIALIZED (
    SELECT a.id, a.tenant_id, a.priority, a.fairness_key
    FROM starving AS s, LATERAL (
        SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
        WHERE t.queue = $1 AND t.state = 'queued' AND t.priority = s.priority
        ORDER BY t.fairness_key, t.id
        LIMIT $8::int
        FOR UPDATE SKIP LOCKED
    ) AS a
), main AS MATERIALIZED (
    SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
    WHERE t.queue = $1 AND t.state = 'queued' AND $5::int > 0
      AND t.id <> ALL (ARRAY(SELECT id FROM aged))
    ORDER BY t.priority, t.fairness_key, t.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), got AS MATERIALIZED (
    SELECT * FROM aged
    UNION ALL
    (SELECT * FROM main ORDER BY priority, fairness_key, id
     LIMIT $2 - (SELECT count(*) FROM aged))
), vt_lock AS MATERIALIZED (
    SELECT c.priority FROM queue_clocks AS c
    WHERE c.queue = $1 AND c.priority IN (SELECT priority FROM got)
    FOR UPDATE SKIP LOCKED
), vt AS (
    UPDATE queue_clocks AS c SET vtime = greatest(c.vtime, m.k), last_served_at = now()
    FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
          WHERE g.priority IN (SELECT priority FROM vt_lock) GROUP BY g.priority) AS m
    WHERE c.queue = $1 AND c.priority = m.priority
), token AS (SELECT nextval('lease_token_seq') AS value)
UPDATE tasks AS t
SET state = 'running',
    attempts = t.attempts + 1,
    max_attempts = coalesce(t.max_attempts, $6::int),
    worker_id = $3,
    lease_token = token.value,
    lease_expires_at = now() + make_interval(secs => $4::float8),
    started_at = now()
FROM got, token
WHERE t.id = got.id
RETURNING t.id, t.tenant_id, t.priority, t.lease_token
"""

# plain_vt with last_served_at kept (the same bookkeeping, no aging), for the cost contrast
CLAIM_PLAIN_VT_LS = """
WITH got AS MATERIALIZED (
    SELECT id, tenant_id, priority, fairness_key FROM tasks
    WHERE queue = $1 AND state = 'queued' AND $5::int > 0 AND $7::float8 >= 0 AND $8::int >= 0
    ORDER BY priority, fairness_key, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), vt_lock AS MATERIALIZED (
    SELECT c.priority FROM queue_clocks AS c
    WHERE c.queue = $1 AND c.priority IN (SELECT priority FROM got)
    FOR UPDATE SKIP LOCKED
), vt AS (
    UPDATE queue_clocks AS c SET vtime = greatest(c.vtime, m.k), last_served_at = now()
    FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
          WHERE g.priority IN (SELECT priority FROM vt_lock) GROUP BY g.priority) AS m
    WHERE c.queue = $1 AND c.priority = m.priority
), token AS (SELECT nextval('lease_token_seq') AS value)
UPDATE tasks AS t
SET state = 'running',
    attempts = t.attempts + 1,
    max_attempts = coalesce(t.max_attempts, $6::int),
    worker_id = $3,
    lease_token = token.value,
    lease_expires_at = now() + make_interval(secs => $4::float8),
    started_at = now()
FROM got, token
WHERE t.id = got.id
RETURNING t.id, t.tenant_id, t.priority, t.lease_token
"""

# Maintenance alternative: promote the next $3 tasks (fairness order) of a starving level
# $2 to level $4, placed at that level's current virtual time.
PROMOTE_HEAD = """
WITH head AS (
    SELECT id FROM tasks
    WHERE queue = $1 AND state = 'queued' AND priority = $2
    ORDER BY fairness_key, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET priority = $4,
    fairness_key = coalesce((SELECT vtime FROM queue_clocks
                             WHERE queue = $1 AND priority = $4), 0)
FROM head WHERE t.id = head.id
"""
# Naive maintenance: every queued task older than the step moves up one level.
PROMOTE_ALL_OLD = """
UPDATE tasks SET priority = priority - 1
WHERE queue = $1 AND state = 'queued' AND priority > 1
  AND run_at < now() - make_interval(secs => $2::float8)
"""
