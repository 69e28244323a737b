-- 0006: drip buckets the LLM gateway shares across every worker: the clock (theoretical
-- arrival time) of each provider's request and token budget. tenant_id '' is the provider's
-- global bucket; per-tenant buckets use the same table.
CREATE TABLE llm_buckets (
    tenant_id  text NOT NULL DEFAULT '',
    provider   text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('requests', 'tokens')),
    tat        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider, kind)
);
