-- name: queue_declarations
-- Every declared queue with what declares it (or only those of $1 when it is not NULL).
-- A queue is declared by a row in `queues` (an operator's `queues declare/set/pause/resume`,
-- or a worker that registered serving it: see upsert_worker), a registered worker, a plan
-- that allows it by name, a tenant's override of it, or a periodic schedule that targets it.
-- A task for any other queue would wait forever: nothing is going to serve it.
SELECT d.name, array_agg(DISTINCT d.source ORDER BY d.source) AS sources
FROM (
    SELECT name, 'declared' AS source FROM queues
    UNION ALL SELECT unnest(queues), 'worker' FROM workers
    UNION ALL SELECT unnest(allowed_roles), 'plan' FROM plans
    UNION ALL SELECT queue, 'tenant override' FROM tenant_agents
    UNION ALL SELECT queue, 'periodic task' FROM periodic_tasks
) AS d
WHERE $1::text[] IS NULL OR d.name = ANY ($1)
GROUP BY d.name
ORDER BY d.name;

-- name: declare_queues
-- A row of defaults in `queues` (active, no global cap, the default aging) declares a queue
-- without changing how it is claimed. Returns the names that had no row yet.
INSERT INTO queues (name)
SELECT DISTINCT unnest($1::text[])
ON CONFLICT (name) DO NOTHING
RETURNING name;
