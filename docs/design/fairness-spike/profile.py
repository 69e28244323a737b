"""EXPLAIN ANALYZE of one claim (after warming with 20 claim+finish rounds) per variant."""
import asyncio, json, sys, uuid
from pathlib import Path
import asyncpg
sys.path.insert(0, '/tmp/fairness_spike')
import bench, variants as v

async def main(variant, scenario, keys):
    claim_sql, style, finish_sql, ddl = bench.VARIANTS[variant]
    name = f"fairness_spike_prof_{uuid.uuid4().hex[:6]}"
    dsn = await bench.create_db(name, ddl)
    try:
        c = await asyncpg.connect(dsn)
        await bench.seed(c, scenario, keys)
        # warm: 20 rounds of claim+finish, leaving the last claim's tasks running
        for i in range(20):
            rows = await c.fetch(claim_sql, *( ([bench.Q], 100, 'w', 30.0, [3]) if style == 'repo' else (bench.Q, 100, 'w', 30.0, 400, 3)))
            nulls = json.dumps([None]*len(rows))
            await c.fetch(finish_sql, [r['id'] for r in rows], [r['lease_token'] for r in rows], ['succeeded']*len(rows), nulls, nulls)
        await c.execute("LOAD 'auto_explain'")
        await c.execute("SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET auto_explain.log_wal = on; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice; SET auto_explain.log_timing = on")
        msgs = []
        c.add_log_listener(lambda conn, m: msgs.append(m.message))
        rows = await c.fetch(claim_sql, *( ([bench.Q], 100, 'w', 30.0, [3]) if style == 'repo' else (bench.Q, 100, 'w', 30.0, 400, 3)))
        nulls = json.dumps([None]*len(rows))
        await c.fetch(finish_sql, [r['id'] for r in rows], [r['lease_token'] for r in rows], ['succeeded']*len(rows), nulls, nulls)
        await c.close()
        for m in msgs:
            print(m[:6000]); print('-----')
    finally:
        await bench.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else 'wfq'))
