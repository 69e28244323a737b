-- name: create_group
INSERT INTO groups (tenant_id, group_id, on_complete) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, group_id) DO UPDATE SET on_complete = excluded.on_complete
RETURNING tenant_id, group_id, created_at, completed_at, follow_up_id;

-- name: any_open_group
SELECT EXISTS (
    SELECT 1 FROM groups
    WHERE (tenant_id, group_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
      AND completed_at IS NULL
);

-- name: lock_open_groups
-- Completion checks of one group take turns: the second waits here for the first to
-- commit, and its next statement (a new snapshot) sees the first one's finished tasks.
SELECT tenant_id, group_id FROM groups
WHERE (tenant_id, group_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND completed_at IS NULL
ORDER BY tenant_id, group_id
FOR UPDATE;

-- name: complete_groups
-- Groups with no task left waiting or running, and at least one finished, are complete.
UPDATE groups AS g SET completed_at = now()
WHERE (g.tenant_id, g.group_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND g.completed_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM tasks AS t WHERE t.tenant_id = g.tenant_id AND t.group_id = g.group_id)
  AND EXISTS (
      SELECT 1 FROM task_history AS h WHERE h.tenant_id = g.tenant_id AND h.group_id = g.group_id)
RETURNING g.tenant_id, g.group_id, g.on_complete;

-- name: set_follow_up
UPDATE groups SET follow_up_id = $3 WHERE tenant_id = $1 AND group_id = $2;

-- name: open_groups
-- For the maintenance sweep: open groups, oldest first.
SELECT tenant_id, group_id FROM groups WHERE completed_at IS NULL ORDER BY created_at LIMIT $1;

-- name: group_counts
SELECT state, count(*) AS n FROM tasks WHERE tenant_id = $1 AND group_id = $2 GROUP BY state
UNION ALL
SELECT state, count(*) FROM task_history WHERE tenant_id = $1 AND group_id = $2 GROUP BY state;

-- name: get_group
SELECT tenant_id, group_id, created_at, completed_at, follow_up_id
FROM groups WHERE tenant_id = $1 AND group_id = $2;
