"""The HTTP API's throughput and latency: one ``conveyor api`` process, a load generator in
another process, on the same machine and the same PostgreSQL.

Three phases, each against a fresh scratch database's declared queue, with a tenant key:

- max single submits/s: C connections each sending ``POST /v1/tasks`` back to back
  (closed loop), each with its own ``Idempotency-Key`` as ``conveyor.Client`` sends;
- latency at a fixed rate: submits started on a schedule (open loop, 1,000/s by default),
  latency counted from the scheduled start, so a stall is not hidden by waiting for it;
- batch tasks/s: C connections sending ``POST /v1/tasks/batch`` of 1,000 tasks each.

Targets on the 2-core machine: >= 3,000 single submits/s, p99 <= 50 ms at 1,000/s,
>= 50,000 tasks/s in batches. The load generator (aiohttp, one process) shares the cores
with the API and PostgreSQL: the numbers are what one box does with all three on it.
Prints a table; asserts nothing.

Usage::

    PYTHONPATH=. python benchmarks/api.py                # DATABASE_URL, or the embedded server
    PYTHONPATH=. python benchmarks/api.py --seconds 5 --connections 32 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_server import start_api  # noqa: E402
from scratch import scratch_database, server_dsn  # noqa: E402

QUEUE = "bench"
TARGETS = {"single": 3_000.0, "p99_ms": 50.0, "batch": 50_000.0}


# -- the load generator (runs in its own process: --generate) ------------------------------


async def generate(url: str, token: str, mode: str, seconds: float, conns: int, rate: float,
                   batch: int) -> dict[str, Any]:  # fmt: skip
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    single = json.dumps({"queue": QUEUE, "payload": {"brief": "spring sale"}}).encode()
    many = json.dumps(
        {"tasks": [{"queue": QUEUE, "payload": {"n": n}} for n in range(batch)]}
    ).encode()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def send(path: str, body: bytes, started: float, keyed: bool) -> None:
            nonlocal done
            extra = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
            try:
                async with session.post(path, data=body, headers=extra) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if status >= 300:
                errors[str(status)] = errors.get(str(status), 0) + 1
                return
            latencies.append(time.perf_counter() - started)
            done += 1

        start = time.perf_counter()
        end = start + seconds
        if mode == "rate":
            pending: set[asyncio.Task[None]] = set()
            n = 0
            while (due := start + n / rate) < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(send("/v1/tasks", single, due, True))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
            await asyncio.gather(*pending)
        else:
            path, body = ("/v1/tasks/batch", many) if mode == "batch" else ("/v1/tasks", single)

            async def loop() -> None:
                while time.perf_counter() < end:
                    await send(path, body, time.perf_counter(), mode == "single")

            await asyncio.gather(*(loop() for _ in range(conns)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(int(q * len(latencies)), len(latencies) - 1)] * 1000 if latencies else 0
        )

    return {"requests": done, "seconds": elapsed, "per_s": done / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": errors}  # fmt: skip


# -- the conductor -----------------------------------------------------------------------------


def run_generator(url: str, token: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--generate", mode, "--url", url, "--token", token,
               "--seconds", str(args.seconds), "--connections", str(args.connections),
               "--rate", str(args.rate), "--batch", str(args.batch)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def prepare(dsn: str) -> str:
    from conveyor.core.api_keys import new_key
    from conveyor.store.postgres import PostgresStore

    store = await PostgresStore.open(dsn, min_size=1, max_size=2)
    try:
        await store.declare_queues([QUEUE])
        await store.create_tenant("bench", None, None)
        issued = new_key(secrets.token_bytes)
        await store.create_api_key(issued.key_id, "bench", issued.secret_hash, "bench")
        return issued.token
    finally:
        await store.close()


def measure(scratch: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    token = asyncio.run(prepare(scratch))
    # The API's own speed, not the per-key limit's (100 rps by default): pass
    # --env CONVEYOR_API_KEY_RPS 100 to measure with it.
    server, url, _ = start_api(scratch, dict(args.env))
    try:
        results = {}
        run_generator(url, token, "single", argparse.Namespace(**{**vars(args), "seconds": 1}))
        for mode in ("single", "rate", "batch"):
            results[mode] = run_generator(url, token, mode, args)
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"conveyor api, 1 process, {os.cpu_count()} cores, {args.label}")
    for column in ("phase", "rate", "p50 ms", "p99 ms", "target", "errors"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    single, rate, batch = results["single"], results["rate"], results["batch"]
    table.add_row(f"single submits, {args.connections} conns", f"{single['per_s']:,.0f}/s",
                  f"{single['p50_ms']:.1f}", f"{single['p99_ms']:.1f}",
                  f">= {TARGETS['single']:,.0f}/s", str(single["errors"] or ""))  # fmt: skip
    table.add_row(f"single submits at {args.rate:,.0f}/s", f"{rate['per_s']:,.0f}/s",
                  f"{rate['p50_ms']:.1f}", f"{rate['p99_ms']:.1f}",
                  f"p99 <= {TARGETS['p99_ms']:.0f} ms", str(rate["errors"] or ""))  # fmt: skip
    table.add_row(f"batches of {args.batch:,}, {args.connections} conns",
                  f"{batch['per_s'] * args.batch:,.0f} tasks/s", f"{batch['p50_ms']:.1f}",
                  f"{batch['p99_ms']:.1f}", f">= {TARGETS['batch']:,.0f} tasks/s",
                  str(batch["errors"] or ""))  # fmt: skip
    Console().print(table)


async def with_scratch(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    async with server_dsn(args.dsn) as dsn, scratch_database(dsn) as scratch:
        return await asyncio.to_thread(measure, scratch, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL or embedded)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0, help="the open-loop phase's")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--label", default="", help="a name for this run in the title")
    parser.add_argument("--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="an environment variable for the API process")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--generate", choices=("single", "rate", "batch"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        result = asyncio.run(generate(args.url, args.token, args.generate, args.seconds,
                                      args.connections, args.rate, args.batch))  # fmt: skip
        print(json.dumps(result))
        return
    results = asyncio.run(with_scratch(args))
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
