-- 0002: plans as data, per-tenant agent overrides, and monthly usage for admission control.

-- A plan says which agent roles a tenant may use and how much. NULL means "no limit"
-- (allowed_roles NULL: any role, custom ones included).
CREATE TABLE plans (
    id                       text PRIMARY KEY,
    name                     text NOT NULL,
    allowed_roles            text[],
    max_concurrent_per_role  integer CHECK (max_concurrent_per_role >= 1),
    monthly_task_limit       bigint CHECK (monthly_task_limit >= 0),
    monthly_token_budget     bigint CHECK (monthly_token_budget >= 0),
    weight                   real NOT NULL DEFAULT 1 CHECK (weight > 0),
    created_at               timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (id, name, allowed_roles, max_concurrent_per_role, monthly_task_limit,
                   monthly_token_budget, weight)
VALUES
    ('free', 'Free', ARRAY['copywriter', 'seo'], 1, 1000, 2000000, 1),
    ('pro', 'Pro', ARRAY['copywriter', 'seo', 'social', 'analyst'], 2, 20000, 50000000, 2),
    ('agency', 'Agency',
     ARRAY['activity_planner', 'copywriter', 'seo', 'social', 'paid_ads', 'analyst',
           'researcher'], 4, 200000, 500000000, 4),
    ('enterprise', 'Enterprise', NULL, NULL, NULL, NULL, 8);

-- A tenant without a plan (internal and system tenants) has no plan restrictions.
ALTER TABLE tenants ADD COLUMN plan_id text REFERENCES plans (id);

-- Per-tenant, per-role overrides of the plan. NULL fields fall back to the plan.
CREATE TABLE tenant_agents (
    tenant_id           text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    queue               text NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    max_concurrent      integer CHECK (max_concurrent >= 1),
    monthly_task_limit  bigint CHECK (monthly_task_limit >= 0),
    model_override      text,
    adapter_override    text,
    PRIMARY KEY (tenant_id, queue)
);

-- Tasks accepted per tenant, month and queue; queue '*' holds the tenant's monthly total.
-- Counted in the enqueue transaction, so a refused or rolled-back submission counts nothing.
CREATE TABLE tenant_usage (
    tenant_id  text NOT NULL,
    month      date NOT NULL,
    queue      text NOT NULL,
    tasks      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month, queue)
);
