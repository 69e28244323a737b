"""SQL of every variant measured in the fairness spike (scratch databases only)."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def named(path: Path) -> dict[str, str]:
    """`-- name:` blocks of a repo SQL file (snapshot copied to /tmp)."""
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", path.read_text(), flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        out[name.strip()] = body.strip().rstrip(";")
    return out


REPO_LEASES = named(HERE / "leases.sql")
REPO_FINISH = named(HERE / "finish.sql")

CLAIM_BASELINE = REPO_LEASES["claim_batch"]  # $1 text[], $2 n, $3 worker, $4 lease, $5 int[]
FINISH_BASELINE = REPO_FINISH["finish_batch"]

RETURNING = """
RETURNING t.id, t.tenant_id, t.queue, t.priority, t.attempts, t.max_attempts,
          t.timeout_seconds, t.lease_token, t.lease_expires_at, t.parent_id, t.group_id,
          t.payload, t.trace_context, t.created_at"""

UPDATE_TAIL = """
UPDATE tasks AS t
SET state = 'running',
    attempts = t.attempts + 1,
    max_attempts = coalesce(t.max_attempts, $6::int),
    worker_id = $3,
    lease_token = token.value,
    lease_expires_at = now() + make_interval(secs => $4::float8),
    started_at = now()
FROM got, token
WHERE t.id = got.id""" + RETURNING

# The WFQ virtual-time advance, folded into a claim: per priority claimed, the queue's
# vtime moves up to the largest fairness key claimed. SKIP LOCKED: if another claimer holds
# the row it is advancing it too, so this claim leaves it (vtime only ever grows).
VT_CTES = """
, vt_lock AS MATERIALIZED (
    SELECT c.priority FROM queue_clocks AS c
    WHERE c.queue = $1 AND c.priority IN (SELECT priority FROM got)
    FOR UPDATE SKIP LOCKED
), vt AS (
    UPDATE queue_clocks AS c SET vtime = m.k
    FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
          WHERE g.priority IN (SELECT priority FROM vt_lock) GROUP BY g.priority) AS m
    WHERE c.queue = $1 AND c.priority = m.priority AND c.vtime < m.k
)"""

# Single-queue FIFO/WFQ claim without caps (the repo claim for one queue, plus vtime).
# $1 queue, $2 n, $3 worker, $4 lease s, $5 scan (unused), $6 default attempts
CLAIM_PLAIN_VT = """
WITH got AS MATERIALIZED (
    SELECT id, tenant_id, priority, fairness_key FROM tasks
    WHERE queue = $1 AND state = 'queued' AND $5::int > 0
    ORDER BY priority, fairness_key, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)""" + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL

HEAD_SCAN = """
    SELECT id, tenant_id, priority, fairness_key
    FROM tasks
    WHERE queue = $1 AND state = 'queued'
    ORDER BY priority, fairness_key, id
    LIMIT $5"""

PICK_AND_LOCK = """
, pick AS MATERIALIZED (
    SELECT x.id FROM (
        SELECT c.id, c.priority, c.fairness_key, s.free,
               row_number() OVER (PARTITION BY c.tenant_id
                                  ORDER BY c.priority, c.fairness_key, c.id) AS rn
        FROM cand AS c JOIN slot AS s ON s.tenant_id = c.tenant_id
    ) AS x
    WHERE x.rn <= x.free
    ORDER BY x.priority, x.fairness_key, x.id
    LIMIT $2
), got AS MATERIALIZED (
    SELECT t.id, t.tenant_id, t.priority, t.fairness_key
    FROM tasks AS t
    WHERE t.id IN (SELECT id FROM pick) AND t.state = 'queued'
    FOR UPDATE SKIP LOCKED
)"""

# (a) counters: tenant_running rows of head tenants with a free slot are locked SKIP LOCKED
# (a row another claimer or a finisher holds is skipped, never waited for); FOR UPDATE
# returns the newest committed version, so `free` is exact; the increment is in the same
# statement.
CLAIM_COUNTERS = ("WITH cand AS MATERIALIZED (" + HEAD_SCAN + """
), slot AS MATERIALIZED (
    SELECT r.tenant_id, r.cap - r.running AS free
    FROM tenant_running AS r
    WHERE r.queue = $1 AND r.running < r.cap
      AND r.tenant_id IN (SELECT DISTINCT tenant_id FROM cand)
    ORDER BY r.tenant_id
    FOR UPDATE SKIP LOCKED
)""" + PICK_AND_LOCK + """
, bump AS (
    UPDATE tenant_running AS r SET running = r.running + g.k
    FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS g
    WHERE r.queue = $1 AND r.tenant_id = g.tenant_id
)""" + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL)

# (a-rate) counters + a GCRA bucket on the same row: a tenant may start
# k = min(cap - running, floor((now + burst*T - max(tat, now)) / T)) tasks; tat moves
# forward by k*T. Same skip semantics as caps.
CLAIM_COUNTERS_RATE = ("WITH cand AS MATERIALIZED (" + HEAD_SCAN + """
), slot0 AS MATERIALIZED (
    SELECT r.tenant_id, r.cap - r.running AS cap_free, r.rate_interval AS ri,
           greatest(coalesce(r.tat, now()), now()) AS tat0, r.rate_burst
    FROM tenant_running AS r
    WHERE r.queue = $1 AND r.running < r.cap
      AND (r.rate_interval IS NULL
           OR coalesce(r.tat, now()) < now() + r.rate_burst * make_interval(secs => r.rate_interval))
      AND r.tenant_id IN (SELECT DISTINCT tenant_id FROM cand)
    ORDER BY r.tenant_id
    FOR UPDATE SKIP LOCKED
), slot AS (
    SELECT tenant_id, tat0, ri,
           CASE WHEN ri IS NULL THEN cap_free
                ELSE least(cap_free, floor(extract(epoch FROM
                     (now() + rate_burst * make_interval(secs => ri)) - tat0) / ri)::int)
           END AS free
    FROM slot0
)""" + PICK_AND_LOCK + """
, bump AS (
    UPDATE tenant_running AS r
    SET running = r.running + g.k,
        tat = CASE WHEN r.rate_interval IS NULL THEN r.tat
                   ELSE s.tat0 + g.k * make_interval(secs => r.rate_interval) END
    FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS g
    JOIN slot AS s ON s.tenant_id = g.tenant_id
    WHERE r.queue = $1 AND r.tenant_id = g.tenant_id
)""" + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL)

# finish_batch plus the decrement. Counter rows are locked in (queue, tenant_id) order
# first so two finishers cannot deadlock on them.
FINISH_COUNTERS = """
WITH input AS (
    SELECT i.id, i.token, i.final_state,
           nullif(i.result, 'null'::jsonb) AS result, nullif(i.error, 'null'::jsonb) AS error
    FROM ROWS FROM (
        unnest($1::bigint[]), unnest($2::bigint[]), unnest($3::text[]),
        jsonb_array_elements($4::jsonb), jsonb_array_elements($5::jsonb)
    ) AS i(id, token, final_state, result, error)
), done AS (
    DELETE FROM tasks AS t
    USING input AS i
    WHERE t.id = i.id AND t.lease_token = i.token
    RETURNING t.*, i.final_state, i.result AS final_result, i.error AS final_error
), archived AS (
    INSERT INTO task_history (
        id, tenant_id, queue, state, priority, attempts, max_attempts, timeout_seconds,
        idempotency_key, parent_id, group_id, payload, trace_context, result, last_error,
        worker_id, created_at, started_at
    )
    SELECT id, tenant_id, queue, final_state, priority, attempts, max_attempts, timeout_seconds,
           idempotency_key, parent_id, group_id, payload, trace_context, final_result,
           coalesce(final_error, last_error), worker_id, created_at, started_at
    FROM done
    RETURNING id, tenant_id, queue
), d AS MATERIALIZED (
    SELECT queue, tenant_id, count(*) AS k FROM archived GROUP BY queue, tenant_id
), dec_lock AS MATERIALIZED (
    SELECT r.queue, r.tenant_id FROM tenant_running AS r
    WHERE (r.queue, r.tenant_id) IN (SELECT queue, tenant_id FROM d)
    ORDER BY r.queue, r.tenant_id
    FOR UPDATE
), dec AS (
    UPDATE tenant_running AS r SET running = r.running - d.k
    FROM d JOIN dec_lock AS l ON (l.queue, l.tenant_id) = (d.queue, d.tenant_id)
    WHERE r.queue = d.queue AND r.tenant_id = d.tenant_id
)
SELECT id FROM archived"""

# (b1) one statement: advisory lock per head tenant, then count its running rows through
# the partial index. The count reads the statement's snapshot, taken BEFORE the lock: a
# claim that committed in between is invisible. Expected to be racy; measured to show it.
CLAIM_ADVISORY_ONE = ("WITH cand AS MATERIALIZED (" + HEAD_SCAN + """
), tl AS MATERIALIZED (
    SELECT d.tenant_id, c.cap
    FROM (SELECT DISTINCT tenant_id FROM cand) AS d
    JOIN tenant_caps AS c ON c.queue = $1 AND c.tenant_id = d.tenant_id
    WHERE pg_try_advisory_xact_lock(hashtextextended($1 || '/' || d.tenant_id, 0))
), slot AS MATERIALIZED (
    SELECT tl.tenant_id,
           tl.cap - (SELECT count(*) FROM tasks AS r
                     WHERE r.queue = $1 AND r.tenant_id = tl.tenant_id
                       AND r.state = 'running') AS free
    FROM tl
)""" + PICK_AND_LOCK + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL)

RUNNING_INDEX = (
    "CREATE INDEX tasks_running_tenant_idx ON tasks (queue, tenant_id) WHERE state = 'running'"
)

# (b2) the same in a plpgsql function: statement 1 locks the head tenants, statement 2 runs
# under a NEW snapshot (READ COMMITTED, volatile function), so every claim of a locked
# tenant that committed before we got its lock is counted.
CLAIM_ADVISORY_FN_DDL = """
CREATE FUNCTION claim_b2(q text, n int, worker text, lease float8, scan int, dflt int)
RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
DECLARE
    locked text[];
BEGIN
    SELECT array_agg(d.tenant_id) INTO locked
    FROM (SELECT DISTINCT h.tenant_id FROM (
              SELECT tenant_id FROM tasks
              WHERE queue = q AND state = 'queued'
              ORDER BY priority, fairness_key, id
              LIMIT scan) AS h) AS d
    WHERE pg_try_advisory_xact_lock(hashtextextended(q || '/' || d.tenant_id, 0));
    IF locked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT h.* FROM (
            SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
            WHERE t.queue = q AND t.state = 'queued'
            ORDER BY t.priority, t.fairness_key, t.id
            LIMIT scan) AS h
        WHERE h.tenant_id = ANY (locked)
    ), slot AS MATERIALIZED (
        SELECT c.tenant_id,
               c.cap - (SELECT count(*) FROM tasks AS r
                        WHERE r.queue = q AND r.tenant_id = c.tenant_id
                          AND r.state = 'running') AS free
        FROM tenant_caps AS c
        WHERE c.queue = q AND c.tenant_id = ANY (locked)
    ), pick AS MATERIALIZED (
        SELECT x.id FROM (
            SELECT c.id, c.priority, c.fairness_key, s.free,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM cand AS c JOIN slot AS s ON s.tenant_id = c.tenant_id
        ) AS x
        WHERE x.rn <= x.free
        ORDER BY x.priority, x.fairness_key, x.id
        LIMIT n
    ), got AS MATERIALIZED (
        SELECT t.id, t.tenant_id, t.priority, t.fairness_key
        FROM tasks AS t
        WHERE t.id IN (SELECT pick.id FROM pick) AND t.state = 'queued'
        FOR UPDATE SKIP LOCKED
    ), vt_lock AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), vt AS (
        UPDATE queue_clocks AS c SET vtime = m.k
        FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
              WHERE g.priority IN (SELECT vt_lock.priority FROM vt_lock)
              GROUP BY g.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority AND c.vtime < m.k
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
CLAIM_ADVISORY_FN = "SELECT * FROM claim_b2($1, $2, $3, $4, $5, $6)"

# (a2) counters, pick-then-lock: choose from a snapshot read of the counters, then lock only
# the counters of tenants actually picked (SKIP LOCKED), re-check with their newest values.
CLAIM_COUNTERS_PICK = ("WITH cand AS MATERIALIZED (" + HEAD_SCAN + """
), snap AS MATERIALIZED (
    SELECT r.tenant_id, r.cap - r.running AS free
    FROM tenant_running AS r
    WHERE r.queue = $1 AND r.running < r.cap
      AND r.tenant_id IN (SELECT DISTINCT tenant_id FROM cand)
), pick0 AS MATERIALIZED (
    SELECT x.id, x.tenant_id, x.rn FROM (
        SELECT c.id, c.tenant_id, c.priority, c.fairness_key, s.free,
               row_number() OVER (PARTITION BY c.tenant_id
                                  ORDER BY c.priority, c.fairness_key, c.id) AS rn
        FROM cand AS c JOIN snap AS s ON s.tenant_id = c.tenant_id
    ) AS x
    WHERE x.rn <= x.free
    ORDER BY x.priority, x.fairness_key, x.id
    LIMIT $2
), slot AS MATERIALIZED (
    SELECT r.tenant_id, r.cap - r.running AS free
    FROM tenant_running AS r
    WHERE r.queue = $1 AND r.running < r.cap
      AND r.tenant_id IN (SELECT DISTINCT tenant_id FROM pick0)
    ORDER BY r.tenant_id
    FOR UPDATE SKIP LOCKED
), got AS MATERIALIZED (
    SELECT t.id, t.tenant_id, t.priority, t.fairness_key
    FROM tasks AS t
    WHERE t.id IN (SELECT p.id FROM pick0 AS p JOIN slot AS s ON s.tenant_id = p.tenant_id
                   WHERE p.rn <= s.free)
      AND t.state = 'queued'
    FOR UPDATE SKIP LOCKED
), bump AS (
    UPDATE tenant_running AS r SET running = r.running + g.k
    FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS g
    WHERE r.queue = $1 AND r.tenant_id = g.tenant_id
)""" + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL)

# (a3) counters, lock-as-you-scan: the head scan itself takes rows FOR UPDATE SKIP LOCKED
# (like the repo claim) but passes over tenants whose counter says they are at their cap;
# then the counters of the tenants found are locked SKIP LOCKED and re-checked.
LOCKING_SCAN_FILTERED = """
    SELECT t.id, t.tenant_id, t.priority, t.fairness_key
    FROM tasks AS t
    WHERE t.queue = $1 AND t.state = 'queued'
      AND NOT EXISTS (SELECT 1 FROM tenant_running AS r
                      WHERE r.queue = $1 AND r.tenant_id = t.tenant_id
                        AND r.running >= r.cap)
    ORDER BY t.priority, t.fairness_key, t.id
    LIMIT $2 + 0 * $5::int
    FOR UPDATE OF t SKIP LOCKED"""

CLAIM_COUNTERS_SCANLOCK = ("WITH cand AS MATERIALIZED (" + LOCKING_SCAN_FILTERED + """
), slot AS MATERIALIZED (
    SELECT r.tenant_id, r.cap - r.running AS free
    FROM tenant_running AS r
    WHERE r.queue = $1 AND r.running < r.cap
      AND r.tenant_id IN (SELECT DISTINCT tenant_id FROM cand)
    ORDER BY r.tenant_id
    FOR UPDATE SKIP LOCKED
), got AS MATERIALIZED (
    SELECT x.id, x.tenant_id, x.priority, x.fairness_key FROM (
        SELECT c.id, c.tenant_id, c.priority, c.fairness_key, s.free,
               row_number() OVER (PARTITION BY c.tenant_id
                                  ORDER BY c.priority, c.fairness_key, c.id) AS rn
        FROM cand AS c JOIN slot AS s ON s.tenant_id = c.tenant_id
    ) AS x
    WHERE x.rn <= x.free
), bump AS (
    UPDATE tenant_running AS r SET running = r.running + g.k
    FROM (SELECT tenant_id, count(*) AS k FROM got GROUP BY tenant_id) AS g
    WHERE r.queue = $1 AND r.tenant_id = g.tenant_id
)""" + VT_CTES + """
, token AS (SELECT nextval('lease_token_seq') AS value)""" + UPDATE_TAIL)

# (b3) advisory locks + running index in a function, lock-as-you-scan: statement 1 locks
# head rows (SKIP LOCKED) of tenants not at cap in its snapshot and try-locks their tenants;
# statement 2, under a new snapshot, counts running rows of the locked tenants and takes
# what fits.
CLAIM_ADVISORY_FN2_DDL = """
CREATE FUNCTION claim_b3(q text, n int, worker text, lease float8, scan int, dflt int)
RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
DECLARE
    ids bigint[];
    locked text[];
BEGIN
    WITH capped AS MATERIALIZED (
        SELECT r.tenant_id FROM tasks AS r
        JOIN tenant_caps AS c ON c.queue = q AND c.tenant_id = r.tenant_id
        WHERE r.queue = q AND r.state = 'running'
        GROUP BY r.tenant_id, c.cap HAVING count(*) >= c.cap
    ), cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id FROM tasks AS t
        WHERE t.queue = q AND t.state = 'queued'
          AND t.tenant_id NOT IN (SELECT tenant_id FROM capped)
        ORDER BY t.priority, t.fairness_key, t.id
        LIMIT n
        FOR UPDATE OF t SKIP LOCKED
    )
    SELECT array_agg(c.id), array_agg(DISTINCT c.tenant_id) INTO ids, locked FROM cand AS c;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(d.t) INTO locked FROM unnest(locked) AS d(t)
    WHERE pg_try_advisory_xact_lock(hashtextextended(q || '/' || d.t, 0));
    IF locked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT t.id, t.tenant_id, t.priority, t.fairness_key FROM tasks AS t
        WHERE t.id = ANY (ids) AND t.tenant_id = ANY (locked)
    ), slot AS MATERIALIZED (
        SELECT c.tenant_id,
               c.cap - (SELECT count(*) FROM tasks AS r
                        WHERE r.queue = q AND r.tenant_id = c.tenant_id
                          AND r.state = 'running') AS free
        FROM tenant_caps AS c
        WHERE c.queue = q AND c.tenant_id = ANY (locked)
    ), got AS MATERIALIZED (
        SELECT x.id, x.tenant_id, x.priority, x.fairness_key FROM (
            SELECT c.id, c.tenant_id, c.priority, c.fairness_key, s.free,
                   row_number() OVER (PARTITION BY c.tenant_id
                                      ORDER BY c.priority, c.fairness_key, c.id) AS rn
            FROM cand AS c JOIN slot AS s ON s.tenant_id = c.tenant_id
        ) AS x
        WHERE x.rn <= x.free
    ), vt_lock AS MATERIALIZED (
        SELECT c.priority FROM queue_clocks AS c
        WHERE c.queue = q AND c.priority IN (SELECT got.priority FROM got)
        FOR UPDATE SKIP LOCKED
    ), vt AS (
        UPDATE queue_clocks AS c SET vtime = m.k
        FROM (SELECT g.priority, max(g.fairness_key) AS k FROM got AS g
              WHERE g.priority IN (SELECT vt_lock.priority FROM vt_lock)
              GROUP BY g.priority) AS m
        WHERE c.queue = q AND c.priority = m.priority AND c.vtime < m.k
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
CLAIM_ADVISORY_FN2 = "SELECT * FROM claim_b3($1, $2, $3, $4, $5, $6)"
