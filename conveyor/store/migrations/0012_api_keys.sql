-- 0012: API keys for the HTTP API.
--
-- A key is `cvk_<id>_<secret>`; only the SHA-256 of the secret is kept. A tenant key reaches
-- its tenant's work only; an admin key (tenant_id NULL) reaches the admin routes. A revoked
-- key keeps its row (revoked_at set) so listings show what was revoked and when.
CREATE TABLE api_keys (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    tenant_id    text REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL,
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
