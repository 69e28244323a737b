-- name: queue_loads
-- The load of every queue with a depth threshold, in one statement (the API's refresher
-- runs it about once a second). The depth is the queue's ready tasks (state 'queued', all
-- tenants), counted through tasks_claim_idx and only up to $2 x threshold + 1: past that
-- mark every priority is refused, so counting on would cost without deciding anything.
-- A queue from half its threshold up is measured for its drain rate (tasks finished in
-- the last $1 seconds, through task_history_finished_brin): a process may accept enough
-- between two reads to cross the mark, and its Retry-After needs the rate then. The CASE
-- evaluates the subquery only for those.
SELECT s.name, s.depth_threshold, d.depth,
       CASE WHEN d.depth * 2 >= s.depth_threshold THEN (
           SELECT count(*) FROM task_history AS h
           WHERE h.queue = s.name AND h.finished_at > now() - make_interval(secs => $1)
       ) END AS finished
FROM queues AS s
CROSS JOIN LATERAL (
    SELECT count(*) AS depth FROM (
        SELECT 1 FROM tasks AS t
        WHERE t.queue = s.name AND t.state = 'queued'
        LIMIT s.depth_threshold::bigint * $2::int + 1
    ) AS counted
) AS d
WHERE s.depth_threshold IS NOT NULL
ORDER BY s.name;
