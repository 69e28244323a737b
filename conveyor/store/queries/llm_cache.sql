-- name: llm_cache_get
-- The reply stored under (tenant, key) if it has not expired, counting the hit in the same
-- statement. An expired row is a miss and is left for prune_llm_cache.
UPDATE llm_cache
SET hits = hits + 1
WHERE tenant_id = $1 AND key = $2 AND expires_at > now()
RETURNING reply;

-- name: llm_cache_put
-- Stores a reply for $4 seconds, replacing whatever (tenant, key) held. Replacing a live
-- row (two workers missed the same key at once) keeps its hit count; replacing an expired
-- one starts over from zero. $4 <= 0 writes a row that is already expired.
INSERT INTO llm_cache AS c (tenant_id, key, reply, expires_at)
VALUES ($1, $2, $3::jsonb, now() + make_interval(secs => $4::float8))
ON CONFLICT (tenant_id, key) DO UPDATE
SET reply = excluded.reply,
    created_at = excluded.created_at,
    expires_at = excluded.expires_at,
    hits = CASE WHEN c.expires_at > now() THEN c.hits ELSE 0 END;

-- name: prune_llm_cache
-- Expired rows, at most $1 per statement so no statement runs long.
DELETE FROM llm_cache
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM llm_cache WHERE expires_at <= now() LIMIT $1
));
