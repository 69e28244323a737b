-- name: reserve_llm_budget
-- Takes the next free slot of each bucket (scheduled ahead: the slot may lie in the future;
-- the caller waits for it). $4 is each draw's cost in seconds (units x emission). Rows are
-- locked in key order, so concurrent reservations of the same buckets queue up without
-- deadlocking. Returns how far each bucket's clock now runs ahead of the present.
-- The commit is asynchronous (set_config(..., true) lasts until this statement's commit):
-- every call of a provider updates its one row, and a WAL flush per call would queue them
-- all behind the disk (measured: 9.5 ms p50 at 10 at once, 2.5 ms without the flush). A
-- server crash can lose the last fraction of a second of bookings, letting that many
-- calls go again: a burst the size of the loss, once, after a crash.
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
)
INSERT INTO llm_buckets AS b (tenant_id, provider, kind, tat)
SELECT d.tenant_id, d.provider, d.kind, now() + make_interval(secs => d.seconds)
FROM relaxed, unnest($1::text[], $2::text[], $3::text[], $4::float8[])
    AS d(tenant_id, provider, kind, seconds)
ORDER BY d.tenant_id, d.provider, d.kind
ON CONFLICT (tenant_id, provider, kind) DO UPDATE
SET tat = greatest(b.tat, now()) + (excluded.tat - now())
RETURNING b.tenant_id, b.provider, b.kind, extract(epoch FROM b.tat - now())::float8 AS ahead;

-- name: refund_llm_budget
-- Gives back what a reservation did not use ($4 seconds per bucket); asynchronous commit
-- as above.
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE llm_buckets AS b
SET tat = b.tat - make_interval(secs => d.seconds)
FROM relaxed, unnest($1::text[], $2::text[], $3::text[], $4::float8[])
    AS d(tenant_id, provider, kind, seconds)
WHERE b.tenant_id = d.tenant_id AND b.provider = d.provider AND b.kind = d.kind
  AND d.seconds > 0;
