-- 0008: the LLM gateway's shared response cache. One row per (tenant, request key): the
-- stored reply of a deterministic call (temperature 0), served instead of a provider call
-- until it expires. tenant_id leads the key so one tenant never reads another's replies;
-- '' is calls made without a tenant. Expired rows are pruned in batches by expires_at.
CREATE TABLE llm_cache (
    tenant_id   text NOT NULL,
    key         bytea NOT NULL,
    reply       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    hits        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX llm_cache_expires_idx ON llm_cache (expires_at);
