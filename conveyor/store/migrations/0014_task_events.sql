-- 0014: the task event log.
--
-- One row per thing that happened to a task: created, started, step, llm_call, an agent's
-- own events (ctx.emit), retried, released, succeeded, dead, cancelled. Lifecycle rows are
-- written by the statement that changes the task's state (finish_batch, retry_batch, the
-- claim...), so the log and the task never disagree.
--
-- Order: an event's position is (xid, id). `id` comes from a sequence and orders the events
-- of one transaction; `xid` is the writing transaction's id. Readers take only events of
-- transactions below the horizon (the oldest transaction still running, see
-- conveyor_event_horizon): every such transaction has ended, so no event can later appear
-- before a position a reader has passed. A reader that resumes after position P misses
-- nothing and sees nothing twice. The price: an event is delivered once every write
-- transaction of this database that began before it has ended (a long write transaction
-- delays the stream; it never loses or reorders it).
--
-- Partitioned by month on `at` and dropped whole by retention, like task_history. Two
-- indexes: the position (the tail every API process reads) and the task (one task's log,
-- a handful of rows, sorted by position after the lookup; the narrow key keeps the index
-- and its WAL small).
CREATE SEQUENCE task_event_id_seq AS bigint CACHE 64;

CREATE TABLE task_events (
    xid        bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id         bigint NOT NULL DEFAULT nextval('task_event_id_seq'),
    at         timestamptz NOT NULL DEFAULT now(),
    tenant_id  text NOT NULL,
    task_id    bigint NOT NULL,
    queue      text NOT NULL,
    group_id   text,
    kind       text NOT NULL,
    attempt    integer,
    data       jsonb
) PARTITION BY RANGE (at);
CREATE INDEX task_events_position_idx ON task_events (xid, id);
CREATE INDEX task_events_task_idx ON task_events (task_id);

-- The lowest transaction id that may still commit events: events of transactions below it
-- are final. Compared as bigint, like task_events.xid. From the statement's snapshot: the
-- oldest transaction in progress, leaving out those pg_stat_activity shows working in
-- another database, and those prepared (two-phase) in another database (they cannot write
-- this database's events: a CREATE DATABASE, a long batch job or a forgotten prepared
-- transaction next door does not hold the streams back). A transaction whose database cannot
-- be seen (it just ended, or the role may not see other sessions) counts: the horizon may
-- wait a read longer than it must, never pass an event that could still commit. Call it
-- as (SELECT conveyor_event_horizon()), once per statement.
CREATE FUNCTION conveyor_event_horizon() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity AS a
             WHERE a.backend_xid IS NOT NULL
               AND a.backend_xid::text::bigint = x::text::bigint % 4294967296
               AND a.datname IS DISTINCT FROM current_database())
           AND NOT EXISTS (
             SELECT 1 FROM pg_prepared_xacts AS p
             WHERE p.transaction::text::bigint = x::text::bigint % 4294967296
               AND p.database <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
$$;

-- A queue can turn its lifecycle events off (ctx.emit events are still written).
ALTER TABLE queues ADD COLUMN events boolean NOT NULL DEFAULT true;
