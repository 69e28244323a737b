-- name: register_periodic
-- New schedules start from their latest past tick ($8), so a schedule registered at 10:00
-- for "0 0 * * *" first fires at midnight, not at once. Re-registering keeps last_tick.
INSERT INTO periodic_tasks (name, cron, queue, tenant_id, payload, priority, max_attempts,
                            last_tick, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, queue = excluded.queue, tenant_id = excluded.tenant_id,
    payload = excluded.payload, priority = excluded.priority,
    max_attempts = excluded.max_attempts, updated_at = now();

-- name: list_periodic
SELECT name, cron, queue, tenant_id, payload, priority, max_attempts, last_tick
FROM periodic_tasks ORDER BY name;

-- name: advance_periodic_tick
-- Exactly once per tick: only the transaction that moves last_tick forward enqueues the run.
UPDATE periodic_tasks SET last_tick = $2
WHERE name = $1 AND (last_tick IS NULL OR last_tick < $2)
RETURNING name, queue, tenant_id, payload, priority, max_attempts;
