-- Live LLM output (migrations/0018_task_chunks.sql).

-- name: append_chunks
-- A relay's batch, as one JSON array of rows; a repeated (task, run, seq) is ignored (a
-- flush retried after a lost reply).
INSERT INTO task_chunks (task_id, run, seq, tenant_id, kind, text)
SELECT c.task_id, c.run, c.seq, c.tenant_id, c.kind, c.text
FROM jsonb_to_recordset($1::jsonb) AS c(
    task_id bigint, run bigint, seq integer, tenant_id text, kind text, text text)
ON CONFLICT DO NOTHING;

-- name: chunks_after
-- For each watched task ($1) the rows after its cursor ((run $2, seq $3)), in order,
-- at most $4 rows in all: one statement for every viewer of an API process. The tenant
-- ($5, aligned with the tasks) is required: another tenant's task has no chunks.
SELECT c.task_id, c.run, c.seq, c.kind, c.text
FROM unnest($1::bigint[], $2::bigint[], $3::int[], $5::text[]) AS w(task_id, run, seq, tenant_id)
JOIN LATERAL (
    SELECT k.task_id, k.run, k.seq, k.kind, k.text FROM task_chunks AS k
    WHERE k.task_id = w.task_id AND k.tenant_id = w.tenant_id
      AND (k.run, k.seq) > (w.run, w.seq)
    ORDER BY k.run, k.seq
    LIMIT $4
) AS c ON true
ORDER BY c.task_id, c.run, c.seq;

-- name: tasks_ended
-- Which of the watched tasks ($1) are no longer active (finished, or never existed).
SELECT w.id FROM unnest($1::bigint[]) AS w(id)
WHERE NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = w.id);

-- name: prune_chunks
-- Rows of tasks that ended before the cutoff, in a bounded batch. The retention counts from
-- the task's end (task_history.finished_at, found by its key), not from the row's own
-- time: output streamed early in a long run stays replayable after the run ends. A row is
-- never newer than its task's end, so `at < cutoff` narrows the scan by the index first.
DELETE FROM task_chunks AS c
WHERE c.ctid = ANY (ARRAY(
    SELECT k.ctid FROM task_chunks AS k
    WHERE k.at < $1 AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = k.task_id)
      AND NOT EXISTS (
          SELECT 1 FROM task_history AS h
          WHERE h.tenant_id = k.tenant_id AND h.id = k.task_id AND h.finished_at >= $1)
    LIMIT $2
));
