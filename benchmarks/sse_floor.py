"""The floor under ``benchmarks/sse.py``: the same clients and event rate against a bare SSE
server, so the numbers say what any Python SSE server could do on this machine.

The server is a minimal ASGI app under the same uvicorn (uvloop, httptools) as ``conveyor
api``: no database, no authentication, no middleware, no log. A ticker inside it makes
``--rate`` events a second round-robin over ``--tasks`` ids and hands each event's frame to
every connection watching that id; each connection's own task writes what it was handed
(the shape of any ASGI SSE server). Each frame carries the moment it was made, so the delay
measured is from the making of an event to its arrival at a client: the part of
``sse.py``'s delay that no server of this shape avoids. Prints a table; asserts nothing.

Usage::

    PYTHONPATH=. python benchmarks/sse_floor.py                      # 10,000 clients
    PYTHONPATH=. python benchmarks/sse_floor.py --tasks 100 --seconds 10
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
from sse import collect, cpu_seconds, go, peak_rss_mb  # noqa: E402

# -- the bare server (uvicorn imports this module as benchmarks.sse_floor:app) -------------


class Watcher:
    """One connection's pending frames and the event that wakes its task."""

    __slots__ = ("frames", "ready")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ready = asyncio.Event()


_watchers: dict[int, set[Watcher]] = {}
_tickers: list[asyncio.Task[None]] = []


async def _tick(rate: float, tasks: int, seconds: float, per_batch: int = 10) -> None:
    """``rate`` events a second for ``seconds``, in bursts of ``per_batch`` (as sse.py's
    producer makes them)."""
    seq, began = 0, time.perf_counter()
    while seq < rate * seconds:
        await asyncio.sleep(max(0.0, began + seq / rate - time.perf_counter()))
        for _ in range(per_batch):
            data = json.dumps({"data": {"seq": seq, "t": time.time()}})
            payload = f"id: {seq}\nevent: tick\ndata: {data}\n\n".encode()
            for watcher in _watchers.get(seq % tasks + 1, ()):
                watcher.frames.append(payload)
                watcher.ready.set()
            seq += 1


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /v1/tasks/{id}/events`` as SSE; ``POST /start?rate,tasks,seconds`` starts it."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/start":
        rate, tasks, seconds = (float(x) for x in scope["query_string"].decode().split(","))
        _tickers.append(asyncio.create_task(_tick(rate, int(tasks), seconds)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    task_id = int(path.split("/")[3])
    watcher = Watcher()
    _watchers.setdefault(task_id, set()).add(watcher)
    try:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while True:
            await watcher.ready.wait()
            watcher.ready.clear()
            body, watcher.frames = b"".join(watcher.frames), []
            await send({"type": "http.response.body", "body": body, "more_body": True})
    except OSError:  # the client left (ASGI 2.4: send raises)
        return
    finally:
        _watchers[task_id].discard(watcher)


# -- the run -------------------------------------------------------------------------------


def _start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.sse_floor:app", "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
         "--no-access-log", "--backlog", "16384", "--timeout-graceful-shutdown", "1"],
        env=env, cwd=ROOT,
    )  # fmt: skip
    for _ in range(300):  # until it accepts connections
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the floor server did not start")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = _start_server(port, env)
    generators: list[subprocess.Popen[str]] = []
    try:
        ids = list(range(1, args.tasks + 1))
        listen = args.seconds + 3
        for i in range(args.generators):
            generators.append(subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "sse.py"), "--clients", "--url", url,
                 "--token", "none", "--task-ids", ",".join(map(str, ids[i :: args.generators])),
                 "--clients-per-task", str(args.clients_per_task), "--seconds", str(listen)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
            ))  # fmt: skip
        connected = 0
        for generator in generators:
            assert generator.stdout is not None
            line = generator.stdout.readline()
            if not line:
                raise SystemExit("a client process failed before it was ready")
            connected += json.loads(line)["ready"]
        go(generators)
        before, began = cpu_seconds(server.pid), time.perf_counter()
        httpx.post(f"{url}/start?{args.rate},{args.tasks},{args.seconds}", timeout=30)
        time.sleep(args.seconds)
        cpu = (cpu_seconds(server.pid) - before) / (time.perf_counter() - began)
        results = collect(generators, listen + 60)
        rss = peak_rss_mb(server.pid)
    finally:
        for generator in generators:
            if generator.poll() is None:
                generator.kill()
        server.kill()
        server.wait(timeout=30)
    delays = sorted(at - t for r in results for got in r["arrivals"].values() for _, at, t in got)

    def pct(q: float) -> float:
        return 1000 * delays[min(len(delays) - 1, int(q * len(delays)))] if delays else 0.0

    return {
        "connected": connected,
        "expected": int(args.rate * args.seconds) * args.clients_per_task,
        "deliveries": len(delays),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "cpu": cpu,
        "rss_mb": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="ids watched")
    parser.add_argument("--clients-per-task", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long events flow")
    parser.add_argument("--generators", type=int, default=2, help="client processes")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    result = measure(args)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bare SSE server (the floor), 1 process, {os.cpu_count()} cores")
    for column in ("clients", "events/s", "deliveries", "p50 ms", "p99 ms", "max ms", "RSS",
                   "CPU"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        f"{result['connected']:,}", f"{args.rate:,.0f}",
        f"{result['deliveries']:,} / ~{result['expected']:,}", f"{result['p50_ms']:.0f}",
        f"{result['p99_ms']:.0f}", f"{result['max_ms']:.0f}", f"{result['rss_mb']:.0f} MB",
        f"{result['cpu']:.0%}",
    )  # fmt: skip
    Console(width=140).print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
