-- name: ensure_month_partition
SELECT conveyor_ensure_month_partition($1::regclass, $2::date);

-- name: list_partitions
SELECT c.relname
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass
ORDER BY c.relname;

-- name: drop_partition
SELECT conveyor_drop_partition($1::regclass, $2::text);

-- name: prune_idempotency_keys
-- Keys older than the cutoff, in bounded batches so no statement runs long.
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2
));

-- name: prune_effects
DELETE FROM effects
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM effects WHERE created_at < $1 LIMIT $2
));

-- name: prune_signals
-- Signals older than the cutoff whose task has finished (a task still active keeps them).
DELETE FROM task_signals
WHERE ctid = ANY (ARRAY(
    SELECT s.ctid FROM task_signals AS s
    WHERE s.created_at < $1 AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = s.task_id)
    LIMIT $2
));
