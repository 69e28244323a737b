"""WFQ enqueue SQL (clock upsert + insert in one statement) used by q1.py."""

# Uniform batch: one tenant, queue, priority; $1 ids, $2 tenant, $3 queue, $4 priority,
# $5 payloads (json array). The tenant's clock moves once per batch; the batch's tasks get
# start + i/weight, i = 1..n, where start = max(tenant clock, queue virtual time).
ENQUEUE_UNIFORM_WFQ = """
WITH qc AS (
    INSERT INTO queue_clocks (queue, priority) VALUES ($3, $4)
    ON CONFLICT DO NOTHING
), w AS (
    SELECT coalesce((SELECT weight FROM tenants WHERE id = $2), 1)::float8 AS w,
           coalesce((SELECT vtime FROM queue_clocks WHERE queue = $3 AND priority = $4), 0) AS v,
           cardinality($1::bigint[]) AS n
), clock AS (
    INSERT INTO tenant_clocks AS c (queue, priority, tenant_id, clock)
    SELECT $3, $4, $2, w.v + w.n / w.w FROM w
    ON CONFLICT (queue, priority, tenant_id) DO UPDATE
    SET clock = greatest(c.clock, (SELECT v FROM w)) + (SELECT n / w FROM w)
    RETURNING c.clock
)
INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
SELECT i.id, $2, $3, 'queued', $4,
       clock.clock - (w.n - i.ord) / w.w,
       i.payload
FROM clock, w,
     ROWS FROM (unnest($1::bigint[]), jsonb_array_elements($5::jsonb))
         WITH ORDINALITY AS i(id, payload, ord)
"""

ENQUEUE_UNIFORM_PLAIN = """
INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
SELECT i.id, $2, $3, 'queued', $4, 0, i.payload
FROM ROWS FROM (unnest($1::bigint[]), jsonb_array_elements($5::jsonb)) AS i(id, payload)
"""

# Mixed batch: rows of many tenants (and queues/priorities). One clock row per
# (queue, priority, tenant) group, taken in key order (no deadlock between batches).
# $1 json array of {id, tenant_id, queue, priority, payload}
ENQUEUE_MIXED_WFQ = """
WITH i AS MATERIALIZED (
    SELECT r.*, row_number() OVER (PARTITION BY r.queue, r.priority, r.tenant_id
                                   ORDER BY r.id) AS ord
    FROM json_to_recordset($1::json) AS r(id bigint, tenant_id text, queue text,
                                         priority smallint, payload jsonb)
), g AS MATERIALIZED (
    SELECT i.queue, i.priority, i.tenant_id, count(*)::float8 AS n,
           coalesce(max(t.weight), 1)::float8 AS w,
           coalesce(max(q.vtime), 0) AS v
    FROM i
    LEFT JOIN tenants AS t ON t.id = i.tenant_id
    LEFT JOIN queue_clocks AS q ON q.queue = i.queue AND q.priority = i.priority
    GROUP BY i.queue, i.priority, i.tenant_id
), qc AS (
    INSERT INTO queue_clocks (queue, priority)
    SELECT DISTINCT queue, priority FROM g ORDER BY 1, 2
    ON CONFLICT DO NOTHING
), clock AS (
    INSERT INTO tenant_clocks AS c (queue, priority, tenant_id, clock)
    SELECT g.queue, g.priority, g.tenant_id, g.v + g.n / g.w FROM g
    ORDER BY g.queue, g.priority, g.tenant_id
    ON CONFLICT (queue, priority, tenant_id) DO UPDATE
    SET clock = greatest(
        c.clock + (SELECT g2.n / g2.w FROM g AS g2
                   WHERE (g2.queue, g2.priority, g2.tenant_id)
                       = (excluded.queue, excluded.priority, excluded.tenant_id)),
        excluded.clock)
    RETURNING c.queue, c.priority, c.tenant_id, c.clock
)
INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
SELECT i.id, i.tenant_id, i.queue, 'queued', i.priority,
       clock.clock - (g.n - i.ord) / g.w, coalesce(i.payload, '{}')
FROM i
JOIN g USING (queue, priority, tenant_id)
JOIN clock USING (queue, priority, tenant_id)
"""

ENQUEUE_MIXED_PLAIN = """
INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
SELECT r.id, r.tenant_id, r.queue, 'queued', r.priority, 0, coalesce(r.payload, '{}')
FROM json_to_recordset($1::json) AS r(id bigint, tenant_id text, queue text,
                                     priority smallint, payload jsonb)
"""
