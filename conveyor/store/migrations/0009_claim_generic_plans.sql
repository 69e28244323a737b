-- 0009: the claim functions run their statements on generic plans.
--
-- plpgsql plans each statement of a function with the call's values (a custom plan) until
-- it judges a generic plan no dearer, and for several of the claim's statements it never
-- did: every claim paid their planning again (measured with auto_explain: 2.9 ms per claim
-- of 100, 1.1 ms of it executing). The statements filter by queue and by arrays of ids,
-- for which one plan serves every value (the claim index, the primary key), so the
-- planning is skipped: 2.4 ms per claim, and claim+complete 13 % faster in
-- benchmarks/queue_throughput.py.
ALTER FUNCTION conveyor_claim_queue(
    text, integer, text, double precision, integer, bigint, double precision
) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION conveyor_claim(text[], integer, text, double precision, integer[])
    SET plan_cache_mode = force_generic_plan;
