-- The webhook adapter's callback tokens (0020): issued by the worker with a delivery,
-- checked by the API's callback routes. Only a token's SHA-256 is ever stored or compared.

-- name: issue_callback_token
-- A delivery's token for the task's attempt $4; a redelivery of the same attempt (the run
-- that sent the first died before recording it) replaces the token it had, unless the
-- runtime already reported with it.
INSERT INTO callback_tokens (token_hash, tenant_id, task_id, attempt, queue, group_id, signal,
                             timeout, expires_at, max_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
        now() + make_interval(secs => $8), now() + make_interval(secs => $9))
ON CONFLICT (task_id, attempt) DO UPDATE
SET token_hash = excluded.token_hash, expires_at = excluded.expires_at,
    max_until = excluded.max_until, created_at = now()
WHERE callback_tokens.used_at IS NULL
RETURNING expires_at;

-- name: find_callback_token
-- The token's row and whether it is still live ($1: its hash).
SELECT token_hash, tenant_id, task_id, attempt, queue, group_id, signal, timeout, expires_at,
       used_at, expires_at > now() AS live
FROM callback_tokens
WHERE token_hash = $1;

-- name: use_callback_token
-- Marks the token used, if it still is live and unused: the result is reported once.
UPDATE callback_tokens
SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING token_hash;

-- name: extend_callback_token
-- A heartbeat: the deadline moves to $2 seconds from now, never past max_until, never back;
-- the task's wait for the callback moves with it (if it waits already).
WITH token AS (
    UPDATE callback_tokens
    SET expires_at = greatest(expires_at, least(now() + make_interval(secs => $2), max_until))
    WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
    RETURNING tenant_id, task_id, signal, expires_at
), task AS (
    UPDATE tasks AS t
    SET wait_until = token.expires_at
    FROM token
    WHERE t.id = token.task_id AND t.tenant_id = token.tenant_id
      AND t.state = 'waiting' AND t.waiting_for = token.signal
    RETURNING t.id
)
SELECT token.expires_at FROM token;

-- name: prune_callback_tokens
-- Tokens whose last possible deadline is older than the cutoff.
DELETE FROM callback_tokens
WHERE ctid = ANY (ARRAY(
    SELECT c.ctid FROM callback_tokens AS c WHERE c.max_until < $1 LIMIT $2
));

-- name: webhook_adapter_overrides
-- Tenants whose use of a role goes to an external runtime (adapter_override 'webhook:<url>').
SELECT tenant_id, queue, adapter_override FROM tenant_agents
WHERE adapter_override LIKE 'webhook:%' AND enabled AND queue = ANY ($1::text[]);
