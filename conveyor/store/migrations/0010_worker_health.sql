-- 0010: what a worker's heartbeat says about the work it holds.
--
-- A worker that keeps beating while its outcomes cannot be written holds its tasks' leases
-- without finishing anything: no reaper sees it. Each heartbeat now records how many
-- outcomes wait unwritten in the worker and when it last recorded one, so `conveyor status`
-- and the metrics can show a worker that holds more than its concurrency or is stuck.
ALTER TABLE workers
    ADD COLUMN unwritten integer NOT NULL DEFAULT 0,
    ADD COLUMN last_outcome_at timestamptz NOT NULL DEFAULT now();
