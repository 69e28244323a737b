-- 0015: durable waits (ctx.wait_for) and the signals that end them.
--
-- A task that waits for a signal leaves 'running' for 'waiting': no lease, no worker, no
-- slot. waiting_for names the signal, wait_until is the deadline (NULL: no timeout); both
-- are cleared when the wait ends. The claim takes only 'queued' rows, so it is unchanged.
ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('scheduled', 'queued', 'running', 'waiting'));
ALTER TABLE tasks ADD COLUMN waiting_for text;
ALTER TABLE tasks ADD COLUMN wait_until timestamptz;
-- The maintenance loop's sweep of waits past their deadline (expire_waits).
CREATE INDEX tasks_wait_until_idx ON tasks (wait_until) WHERE state = 'waiting';

-- Signals, write-once per (task, name): the first delivery is what every run of the task
-- gets from ctx.wait_for(name); timed_out marks a wait whose deadline passed first (a
-- later signal of that name is refused). Kept after the task finishes, like its steps in
-- the effects ledger, so a replayed task sees the same answers; retention prunes them.
CREATE TABLE task_signals (
    tenant_id   text NOT NULL,
    task_id     bigint NOT NULL,
    name        text NOT NULL,
    payload     jsonb,
    timed_out   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, name)
);
CREATE INDEX task_signals_created_idx ON task_signals (created_at);
