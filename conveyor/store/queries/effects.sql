-- name: claim_effect
-- Take ownership of a key no one has started: the caller's lease runs the effect.
INSERT INTO effects (tenant_id, key, state, task_id, lease_token)
VALUES ($1, $2, 'pending', $3, $4)
ON CONFLICT (tenant_id, key) DO NOTHING
RETURNING key;

-- name: read_effect
-- The entry, and whether the lease that owns a pending entry still runs.
SELECT e.state, e.result, e.task_id, e.lease_token,
       EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id AND t.lease_token = e.lease_token)
           AS owner_running
FROM effects AS e
WHERE e.tenant_id = $1 AND e.key = $2;

-- name: take_over_effect
-- A pending entry whose owner is gone (crashed, retried, finished) passes to the caller.
UPDATE effects SET task_id = $3, lease_token = $4
WHERE tenant_id = $1 AND key = $2 AND state = 'pending'
  AND lease_token IS NOT DISTINCT FROM $5
RETURNING key;

-- name: complete_effect
UPDATE effects SET state = 'done', result = $5
WHERE tenant_id = $1 AND key = $2 AND state = 'pending'
  AND task_id = $3 AND lease_token = $4
RETURNING result;

-- name: abandon_effect
-- The effect failed: drop the pending entry so the next attempt can run it.
DELETE FROM effects
WHERE tenant_id = $1 AND key = $2 AND state = 'pending' AND task_id = $3 AND lease_token = $4;

-- name: get_effect
SELECT result FROM effects WHERE tenant_id = $1 AND key = $2 AND state = 'done';

-- name: record_effect
-- The first result recorded for a key wins; a racing second call reads it back.
WITH inserted AS (
    INSERT INTO effects (tenant_id, key, state, task_id, result)
    VALUES ($1, $2, 'done', $3, $4)
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING result
)
SELECT result, true AS recorded FROM inserted
UNION ALL
SELECT result, false FROM effects
WHERE tenant_id = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: record_step
-- A durable step's result, in one statement with an asynchronous commit: set_config(...,
-- true) lasts until this statement's own transaction commits, so the commit does not wait
-- for the WAL flush. Losing such a write to a server crash only means the step runs again
-- (at-least-once), which a step tolerates; task outcomes and once-effects stay durable.
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), inserted AS (
    INSERT INTO effects (tenant_id, key, state, task_id, result)
    SELECT $1, $2, 'done', $3, $4 FROM relaxed
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING result
), logged AS (
    -- The `step` event of the task's log (0014), written only by the first record; the
    -- key is "step:<task id>:<name>" (TaskContext.step).
    INSERT INTO task_events (tenant_id, task_id, queue, group_id, kind, attempt, data)
    SELECT t.tenant_id, t.id, t.queue, t.group_id, 'step', t.attempts,
           jsonb_build_object('step', substr($2, length('step:' || $3::text || ':') + 1))
    FROM inserted, tasks AS t
    WHERE t.id = $3
      AND t.queue <> ALL (ARRAY(SELECT s.name FROM queues AS s WHERE NOT s.events))
)
SELECT result FROM inserted
UNION ALL
SELECT result FROM effects
WHERE tenant_id = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: take_effect_in_transaction
-- Inside the caller's transaction: a pending entry that no one else sees until it commits
-- together with the effect's own writes. A second transaction taking the same key waits
-- on this row until the first ends; it then takes the key (the first rolled back) or finds
-- it taken (the first committed) and reads the result with a statement of its own.
INSERT INTO effects (tenant_id, key, state, task_id)
VALUES ($1, $2, 'pending', $3)
ON CONFLICT (tenant_id, key) DO NOTHING
RETURNING key;

-- name: complete_effect_in_transaction
UPDATE effects SET state = 'done', result = $3
WHERE tenant_id = $1 AND key = $2 AND state = 'pending';
