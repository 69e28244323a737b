-- 0018: live LLM output of running tasks, for GET /v1/tasks/{id}/stream.
--
-- Each row is a slice of the text an agent's ctx.llm.stream produced, in the order the
-- worker's token relay wrote it: (task_id, run, seq). `run` is the lease token of the run
-- that produced it (a later run of the task, a retry or a task handed back and claimed
-- again, has a greater one), `seq` counts up from 0 within the run. kind 'end' marks the
-- end of one streamed call. UNLOGGED: no WAL is written for it; a server crash empties it,
-- which costs live viewers the replay of partial output, never any task state.
-- Maintenance deletes a task's rows once the task has ended and they are older than the
-- stream retention (CONVEYOR_STREAM_RETENTION_SECONDS).
CREATE UNLOGGED TABLE task_chunks (
    task_id    bigint NOT NULL,
    run        bigint NOT NULL,
    seq        integer NOT NULL,
    tenant_id  text NOT NULL,
    kind       text NOT NULL DEFAULT 'chunk' CHECK (kind IN ('chunk', 'end')),
    text       text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, run, seq)
);
CREATE INDEX task_chunks_at_idx ON task_chunks (at);
