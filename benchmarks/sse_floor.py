"""The floor under ``benchmarks/sse.py``: the same clients and the same event rate against a
bare SSE server, so the numbers say what any design could do on this machine.

The server is a minimal ASGI app under the same uvicorn (uvloop, httptools) as ``conveyor
api``: no database, no authentication, no middleware, no log; a ticker inside it makes
``--rate`` events a second round-robin over ``--tasks`` ids and puts each event's frame on the
queue of every connection watching that id. Each frame carries the moment it was made, so
the delay measured is from the making of the event to its arrival at a client, the part
of ``sse.py``'s delay no server can avoid. Prints a table; asserts nothing.

Usage::

    PYTHONPATH=. python benchmarks/sse_floor.py --tasks 1000 --clients-per-task 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_server import free_port  # noqa: E402
from sse import cpu_seconds, peak_rss_mb, stop_all  # noqa: E402

# -- the bare server (uvicorn imports this module as benchmarks.sse_floor:app) -------------

_watchers: dict[int, set[asyncio.Queue[bytes]]] = {}
_ticker: asyncio.Task[None] | None = None


async def _tick(rate: float, tasks: int) -> None:
    seq = 0
    began = time.perf_counter()
    while True:
        for _ in range(10):
            frame = json.dumps({"data": {"seq": seq, "t": time.time()}})
            payload = f"id: {seq}\nevent: tick\ndata: {frame}\n\n".encode()
            for queue in _watchers.get(seq % tasks + 1, ()):
                queue.put_nowait(payload)
            seq += 1
        await asyncio.sleep(max(0.0, began + seq / rate - time.perf_counter()))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /v1/tasks/{id}/events`` as SSE; ``POST /start`` starts the ticker."""
    global _ticker
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/start":
        rate, tasks = (float(x) for x in scope["query_string"].decode().split(","))
        _ticker = asyncio.create_task(_tick(rate, int(tasks)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    task_id = int(path.split("/")[3])
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    _watchers.setdefault(task_id, set()).add(queue)
    try:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while True:
            await send({"type": "http.response.body", "body": await queue.get(), "more_body": True})
    finally:
        _watchers[task_id].discard(queue)


# -- the run -------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.sse_floor:app", "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
         "--no-access-log"], env=env, cwd=ROOT,
    )  # fmt: skip
    generators: list[subprocess.Popen[str]] = []
    try:
        for _ in range(300):  # until the server accepts connections
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                raise SystemExit("the floor server did not start")
            time.sleep(0.1)
        ids = list(range(1, args.tasks + 1))
        listen = args.seconds + 3
        for i in range(args.generators):
            generators.append(subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "sse.py"), "--clients", "--url", url,
                 "--token", "-", "--task-ids", ",".join(map(str, ids[i :: args.generators])),
                 "--clients-per-task", str(args.clients_per_task), "--seconds", str(listen)],
                stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
            ))  # fmt: skip
        connected = sum(json.loads(g.stdout.readline())["ready"] for g in generators if g.stdout)
        before, began = cpu_seconds(server.pid), time.perf_counter()
        httpx.post(f"{url}/start?{args.rate},{args.tasks}")
        time.sleep(args.seconds)
        cpu = (cpu_seconds(server.pid) - before) / (time.perf_counter() - began)
        results = [json.loads(g.communicate(timeout=listen + 60)[0].splitlines()[-1])
                   for g in generators]  # fmt: skip
        rss = peak_rss_mb(server.pid)
    finally:
        stop_all(server, generators)
    delays = sorted(at - t for r in results for got in r["arrivals"].values() for _, at, t in got)

    def pct(q: float) -> float:
        return 1000 * delays[min(len(delays) - 1, int(q * len(delays)))] if delays else 0.0

    return {"connected": connected, "deliveries": len(delays), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "max_ms": pct(1.0), "cpu": cpu, "rss_mb": rss}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--clients-per-task", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--generators", type=int, default=2)
    args = parser.parse_args()
    result = measure(args)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bare SSE server (floor), 1 process, {os.cpu_count()} cores")
    for column in ("clients", "events/s", "deliveries", "p50 ms", "p99 ms", "max ms", "RSS",
                   "CPU"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(f"{result['connected']:,}", f"{args.rate:,.0f}", f"{result['deliveries']:,}",
                  f"{result['p50_ms']:.0f}", f"{result['p99_ms']:.0f}", f"{result['max_ms']:.0f}",
                  f"{result['rss_mb']:.0f} MB", f"{result['cpu']:.0%}")  # fmt: skip
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
