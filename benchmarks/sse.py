"""Event streams at scale: one ``conveyor api`` process holding many SSE clients.

1,000 tasks are leased to a stand-in worker (they stay running); client processes open
``GET /v1/tasks/{id}/events`` on them, ten clients per task by default (10,000 in all), and
a producer appends agent events (``kind`` "tick") to those tasks at a fixed rate, 1,000
events/s by default, each in its own short transaction. The producer notes when each
event's transaction committed; the clients note when its frame arrived; the table gives
the p50/p99/max of the difference, the API process's peak RSS and its CPU (share of one core)
while the events flowed. Every client is checked to have received every event of its task,
in order. Targets: p99 <= 250 ms, RSS <= 1 GB.

The clients (aiohttp) and the producer share the machine with the API and PostgreSQL: on 2
cores the delays include waiting for a core. Prints a table; asserts nothing.

Usage::

    PYTHONPATH=. python benchmarks/sse.py                  # DATABASE_URL, or the embedded server
    PYTHONPATH=. python benchmarks/sse.py --tasks 100 --clients-per-task 10 --seconds 10
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_server import start_api  # noqa: E402
from scratch import scratch_database, server_dsn  # noqa: E402

QUEUE = "bench"
TARGETS = {"p99_ms": 250.0, "rss_mb": 1024.0}


# -- clients (each generator process runs --clients) -----------------------------------------


async def clients(url: str, token: str, task_ids: list[int], per_task: int, seconds: float,
                  ramp_per_s: float) -> dict[str, Any]:  # fmt: skip
    """Open ``per_task`` streams on each task; record (seq, arrival) of every tick.

    The collector is off: its full passes over the growing arrival lists paused a client
    process for up to 0.4 s, and those pauses were counted as delays of the server."""
    import gc

    import aiohttp

    gc.disable()

    arrivals: dict[int, list[tuple[int, float, float]]] = {}
    connected = 0
    failures: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}

    async def one(client: int, task_id: int, session: aiohttp.ClientSession) -> None:
        nonlocal connected
        got: list[tuple[int, float, float]] = []
        arrivals[client] = got
        try:
            async with session.get(f"{url}/v1/tasks/{task_id}/events", headers=headers) as resp:
                if resp.status != 200:
                    failures[str(resp.status)] = failures.get(str(resp.status), 0) + 1
                    return
                connected += 1
                event = ""
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "tick":
                        data = json.loads(line[6:])["data"]
                        got.append((data["seq"], time.time(), data.get("t", 0.0)))
        except (TimeoutError, aiohttp.ClientError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        streams = []
        client = 0
        for task_id in task_ids:
            for _ in range(per_task):
                streams.append(asyncio.create_task(one(client, task_id, session)))
                client += 1
                if client % 100 == 0:
                    await asyncio.sleep(100 / ramp_per_s)
        while connected + sum(failures.values()) < len(streams):
            await asyncio.sleep(0.1)
        print(json.dumps({"ready": connected}), flush=True)
        # listen from the moment the events start (a line on stdin), not from being ready:
        # one process may be ready seconds before the other
        await asyncio.to_thread(sys.stdin.readline)
        await asyncio.sleep(seconds)
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    task_of = [t for t in task_ids for _ in range(per_task)]
    return {
        "connected": connected,
        "failures": failures,
        "arrivals": {str(task_of[c]) + ":" + str(c): got for c, got in arrivals.items()},
    }


# -- the producer and the process under test ----------------------------------------------


async def prepare(dsn: str, tasks: int) -> tuple[str, list[int]]:
    """A tenant with a key, and ``tasks`` running tasks (leased for an hour)."""
    from conveyor.core.api_keys import new_key
    from conveyor.store.params import ClaimRequest, NewTask
    from conveyor.store.postgres import PostgresStore

    store = await PostgresStore.open(dsn, min_size=1, max_size=2)
    try:
        await store.declare_queues([QUEUE])
        await store.create_tenant("bench", None, None)
        issued = new_key(secrets.token_bytes)
        await store.create_api_key(issued.key_id, "bench", issued.secret_hash, "bench")
        bound = store.for_tenant("bench")
        made = await bound.enqueue_batch([NewTask(QUEUE, {"n": n}) for n in range(tasks)])
        claimed = await store.claim(ClaimRequest((QUEUE,), tasks, "bench-worker", 3600.0))
        assert len(claimed) == tasks
        return issued.token, sorted(r.task_id for r in made)
    finally:
        await store.close()


async def produce(dsn: str, task_ids: list[int], rate: float, seconds: float) -> dict[int, float]:
    """Append ``rate`` tick events a second round-robin over the tasks, ten per transaction;
    the commit time of each event's seq."""
    from conveyor.store.event_records import NewEvent
    from conveyor.store.postgres import PostgresStore

    store = await PostgresStore.open(dsn, min_size=2, max_size=4)
    committed: dict[int, float] = {}
    per_batch = 10
    period = per_batch / rate
    seq = 0
    began = time.perf_counter()
    try:
        n = 0
        while time.perf_counter() - began < seconds:
            due = began + n * period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = []
            for _ in range(per_batch):
                task_id = task_ids[seq % len(task_ids)]
                batch.append(NewEvent("bench", task_id, QUEUE, None, "tick", 1, {"seq": seq}))
                seq += 1
            await store.append_events(batch)
            now = time.time()
            for event in batch:
                committed[event.data["seq"]] = now
            n += 1
    finally:
        await store.close()
    return committed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(scratch: str, args: argparse.Namespace) -> dict[str, Any]:
    token, task_ids = asyncio.run(prepare(scratch, args.tasks))
    server, url, env = start_api(scratch)
    generators: list[subprocess.Popen[str]] = []
    try:
        shares = [task_ids[i :: args.generators] for i in range(args.generators)]
        listen = args.seconds + 3
        for share in shares:
            generators.append(subprocess.Popen(
                [sys.executable, __file__, "--clients", "--url", url, "--token", token,
                 "--task-ids", ",".join(map(str, share)), "--clients-per-task",
                 str(args.clients_per_task), "--seconds", str(listen)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
            ))  # fmt: skip
        connected = 0
        for generator in generators:
            assert generator.stdout is not None
            connected += json.loads(generator.stdout.readline())["ready"]
        go(generators)
        print(f"{connected:,} clients connected; events flowing for {args.seconds:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        cpu_before = cpu_seconds(server.pid)
        wall_before = time.perf_counter()
        committed = asyncio.run(produce(scratch, task_ids, args.rate, args.seconds))
        cpu = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - wall_before)
        results = collect(generators, listen + 60)
        rss = peak_rss_mb(server.pid)
    finally:
        stop_all(server, generators)
    return summarize(committed, results, task_ids, connected, cpu, rss, args)


def go(generators: list[subprocess.Popen[str]]) -> None:
    """Tell the client processes that the events start now."""
    for generator in generators:
        assert generator.stdin is not None
        generator.stdin.write("go\n")
        generator.stdin.flush()


def collect(generators: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Each client process's report (its last line), once it has ended."""
    results = []
    for generator in generators:
        out, _ = generator.communicate(timeout=timeout)
        results.append(json.loads(out.splitlines()[-1]))
    return results


def stop_all(server: subprocess.Popen[Any], generators: list[subprocess.Popen[str]]) -> None:
    """Kill the client processes still running, then stop the server."""
    for generator in generators:
        if generator.poll() is None:
            generator.kill()
    server.terminate()
    server.wait(timeout=30)


def summarize(committed: dict[int, float], results: list[dict[str, Any]], task_ids: list[int],
              connected: int, cpu: float, rss: float, args: argparse.Namespace
              ) -> dict[str, Any]:  # fmt: skip
    index = {task_id: i for i, task_id in enumerate(task_ids)}
    delays: list[float] = []
    incomplete = out_of_order = 0
    for result in results:
        for key, got in result["arrivals"].items():
            task_id = int(key.split(":")[0])
            expected = [s for s in committed if s % len(task_ids) == index[task_id]]
            seqs = [seq for seq, _, _ in got]
            if seqs != sorted(seqs):
                out_of_order += 1
            if sorted(set(seqs)) != sorted(expected):
                incomplete += 1
            delays.extend(at - committed[seq] for seq, at, _ in got if seq in committed)
    delays.sort()

    def pct(q: float) -> float:
        return 1000 * delays[min(len(delays) - 1, int(q * len(delays)))] if delays else 0.0

    return {
        "clients": args.tasks * args.clients_per_task,
        "connected": connected,
        "failures": [r["failures"] for r in results if r["failures"]],
        "events": len(committed),
        "deliveries": len(delays),
        "incomplete_clients": incomplete,
        "out_of_order_clients": out_of_order,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * delays[-1] if delays else 0.0,
        "api_cpu": cpu,
        "api_rss_mb": rss,
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"conveyor api, 1 process, {os.cpu_count()} cores: SSE fan-out")
    for column in ("clients", "events/s", "deliveries", "p50 ms", "p99 ms", "max ms",
                   "API RSS", "API CPU", "missed/out of order"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        f"{result['connected']:,} / {result['clients']:,}", f"{args.rate:,.0f}",
        f"{result['deliveries']:,}", f"{result['p50_ms']:.0f}", f"{result['p99_ms']:.0f}",
        f"{result['max_ms']:.0f}", f"{result['api_rss_mb']:.0f} MB",
        f"{result['api_cpu']:.0%}",
        f"{result['incomplete_clients']} / {result['out_of_order_clients']}",
    )  # fmt: skip
    console = Console(width=140)
    console.print(table)
    if result["failures"]:
        console.print(f"connection failures: {result['failures']}")
    for name, met in (
        (f"p99 <= {TARGETS['p99_ms']:.0f} ms", result["p99_ms"] <= TARGETS["p99_ms"]),
        (f"RSS <= {TARGETS['rss_mb']:.0f} MB", result["api_rss_mb"] <= TARGETS["rss_mb"]),
        ("every client got every event, in order",
         not result["incomplete_clients"] and not result["out_of_order_clients"]),
    ):  # fmt: skip
        console.print(f"target {name}: {'[green]met[/green]' if met else '[red]missed[/red]'}")


async def with_scratch(args: argparse.Namespace) -> dict[str, Any]:
    async with server_dsn(args.dsn) as dsn, scratch_database(dsn) as scratch:
        return await asyncio.to_thread(measure, scratch, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL or embedded)")
    parser.add_argument("--tasks", type=int, default=1000, help="running tasks watched")
    parser.add_argument("--clients-per-task", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long events flow")
    parser.add_argument("--generators", type=int, default=2, help="client processes")
    parser.add_argument("--ramp", type=float, default=2000.0, help="connections opened per s")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--clients", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--task-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        ids = [int(i) for i in args.task_ids.split(",") if i]
        result = asyncio.run(
            clients(args.url, args.token, ids, args.clients_per_task, args.seconds, args.ramp)
        )
        print(json.dumps(result))
        return
    result = asyncio.run(with_scratch(args))
    report(result, args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
