-- 0013: backpressure, idempotency fingerprints and debounce for the HTTP API.
--
-- queues.depth_threshold: past it, new work of the queue is refused lowest priority first
-- (core/shedding.py holds the rule; NULL: never shed). The API reads the depth of such
-- queues once a second per process, never per request.
ALTER TABLE queues ADD COLUMN depth_threshold integer CHECK (depth_threshold >= 1);

-- The hash of the canonical request body that took an idempotency key: the same key with
-- another body is refused (idempotency-conflict). NULL for keys taken without one (older
-- releases, ctx.spawn, the CLI): any body matches those.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint bytea;

-- A debounced task's key: at most one task of a tenant's queue with a given key waits
-- (scheduled or queued) at a time; a submit with the key of a waiting task replaces its
-- payload instead of adding a task. Rows without a key stay out of the index.
ALTER TABLE tasks ADD COLUMN debounce_key text;
CREATE UNIQUE INDEX tasks_debounce_idx ON tasks (tenant_id, queue, debounce_key)
    WHERE debounce_key IS NOT NULL AND state IN ('scheduled', 'queued');

-- The drain rate of a queue the API sheds for: tasks that finished in the last minute.
-- BRIN: finished_at grows with the heap, so the index is a few pages and costs finishes
-- next to nothing; only queues at or past their threshold are measured.
CREATE INDEX task_history_finished_brin ON task_history USING brin (finished_at)
    WITH (pages_per_range = 32);
