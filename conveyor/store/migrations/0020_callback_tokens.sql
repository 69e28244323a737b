-- 0020: callback tokens of the webhook adapter (external runtimes).
--
-- The worker hands an external runtime one token per delivery (a task's attempt) and keeps
-- only its SHA-256 here. The runtime reports with it: progress and heartbeats while the
-- token is live, the result once (used_at is set in the transaction that delivers the
-- result as the task's signal `signal`, so a replayed result finds it used). expires_at is
-- the callback deadline, moved by heartbeats up to max_until and never past it. queue and
-- group_id come along so a progress report becomes an event without reading the task.
CREATE TABLE callback_tokens (
    token_hash  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    task_id     bigint NOT NULL,
    attempt     integer NOT NULL,
    queue       text NOT NULL,
    group_id    text,
    signal      text NOT NULL,
    timeout     float8 NOT NULL CHECK (timeout > 0),
    expires_at  timestamptz NOT NULL,
    max_until   timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- A redelivery of the same attempt (the worker died after sending) replaces its token.
CREATE UNIQUE INDEX callback_tokens_task_attempt_idx ON callback_tokens (task_id, attempt);
-- Maintenance prunes tokens long past their deadline.
CREATE INDEX callback_tokens_max_until_idx ON callback_tokens (max_until);
