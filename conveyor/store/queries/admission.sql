-- name: admission_rules
-- For each (tenant, queue) of a submission: whether the tenant exists and what its plan and
-- override say. One row per requested pair; unknown tenants come back with known = false.
SELECT r.tenant_id, r.queue,
       t.id IS NOT NULL AS known,
       t.plan_id,
       p.allowed_roles,
       p.monthly_task_limit AS plan_limit,
       ta.enabled,
       ta.monthly_task_limit AS role_limit,
       coalesce(t.weight, 1) * coalesce(p.weight, 1) AS weight
FROM unnest($1::text[], $2::text[]) AS r(tenant_id, queue)
LEFT JOIN tenants AS t ON t.id = r.tenant_id
LEFT JOIN plans AS p ON p.id = t.plan_id
LEFT JOIN tenant_agents AS ta ON ta.tenant_id = r.tenant_id AND ta.queue = r.queue;

-- name: count_usage
-- Adds accepted tasks to this month's counters and returns the new totals. Rows are taken
-- in one order (tenant, queue), so concurrent submitters queue up on the same rows instead
-- of deadlocking; the row locks also make the limit checks race-free.
INSERT INTO tenant_usage AS u (tenant_id, month, queue, tasks)
SELECT i.tenant_id, $4::date, i.queue, i.n
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS i(tenant_id, queue, n)
ORDER BY i.tenant_id, i.queue
ON CONFLICT (tenant_id, month, queue) DO UPDATE SET tasks = u.tasks + excluded.tasks
RETURNING u.tenant_id, u.queue, u.tasks;
