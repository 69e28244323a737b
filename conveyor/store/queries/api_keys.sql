-- name: create_api_key
-- A tenant key ($2 a tenant id) or an admin key ($2 NULL).
INSERT INTO api_keys (id, tenant_id, secret_hash, name)
VALUES ($1, $2, $3, $4)
RETURNING id, tenant_id, name, created_at, revoked_at;

-- name: find_api_key
-- The key with this id and its secret's hash, revoked or not (the caller decides).
SELECT id, tenant_id, secret_hash, revoked_at FROM api_keys WHERE id = $1;

-- name: list_api_keys
-- Every key, or one tenant's ($1), newest first; never the hash.
SELECT id, tenant_id, name, created_at, revoked_at FROM api_keys
WHERE $1::text IS NULL OR tenant_id = $1
ORDER BY created_at DESC, id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1
RETURNING id, tenant_id, name, created_at, revoked_at;
