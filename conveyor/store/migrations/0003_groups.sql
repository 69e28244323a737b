-- 0003: campaigns (groups) with a follow-up task enqueued once when all their tasks finish.
CREATE TABLE groups (
    tenant_id     text NOT NULL,
    group_id      text NOT NULL,
    on_complete   jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    follow_up_id  bigint,
    PRIMARY KEY (tenant_id, group_id)
);
CREATE INDEX groups_open_idx ON groups (created_at) WHERE completed_at IS NULL;
