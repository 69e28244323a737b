"""The LLM gateway under load: thousands of agents against a rate-limited, faulty provider.

Phase "load": --workers `conveyor worker` processes (--concurrency slots each: 2 x 1,000 =
2,000 agents in flight) run --tasks tasks of `benchmarks.gateway_agents`, one `ctx.llm.chat`
each, against the mock provider in its own process: --latency s per reply, 10 % injected
429s (Retry-After 1 s), 2 % 503s, and its own sliding limit of --rpm requests per 60 s,
whose excess it answers with 429s of its own (`limit_429s`). The gateway's shared budget
(PostgreSQL drip buckets) is set to the same --rpm. Printed: calls completed and failed,
attempts and retries, the mock's counters, the call's wall time p50/p99 as the agent saw it
(mostly the wait for a budget slot: --rpm / 60 requests a second for all agents together)
and the latency of the answering attempt. --tasks defaults to 8,000 so that the run
outlasts the mock's 60 s window: a shorter run cannot exceed the limit whatever the budget
does.

Phase "overhead": the same mock, reconfigured fault-free and unlimited, answers
--overhead-calls calls each way from --overhead-concurrency slots in this process, each slot
alternating a raw httpx POST and a call through `Gateway.with_store` (what a worker builds:
policies, spend and shared budget on the same PostgreSQL, the call log) whose budget is too
large ever to wait. The difference of the p50s (and p99s) is what the gateway adds to a call.

Targets: every call completes; 0 of the mock's limit 429s; overhead <= 1 ms at p50.
See docs/benchmarks.md for what each row means and measured numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from httpx_aiohttp import AiohttpTransport
from rich.console import Console
from rich.table import Table

from conveyor.core.drip import DripRate
from conveyor.gateway import Gateway, load_gateway_config
from conveyor.gateway.budgets.budget import CombinedBudget
from conveyor.gateway.budgets.shared import SharedBudget
from conveyor.gateway.budgets.slot_leases import SlotLeases
from conveyor.gateway.scope import CallScope
from conveyor.observability.gateway_metrics import GatewayMetrics
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "chat"
FAULTS = {"429": 0.10, "503": 0.02}
WINDOW = 60.0  # the mock's and the budget's window, seconds
MODEL = "mock/mock-gpt"
MESSAGES = [{"role": "user", "content": "Write a tagline for campaign 42."}]


class Child:
    """A child process with its output in a temp file; ``stop`` always ends it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix=f"conveyor-bench-{name}-", suffix=".log"
        )
        self.process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.events: Counter[tuple[str, str]] = Counter()
        self.blocked_at: Counter[str] = Counter()
        self.final: dict[str, Any] = {}

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def check_alive(self) -> None:
        """RuntimeError with the tail of its output if it has exited."""
        if self.process.poll() is not None:
            tail = "\n".join(self.output().splitlines()[-30:])
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL; count its JSON log events (once)."""
        if self.log.closed:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for line in self.output().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    name = event.get("event", "?")
                    self.events[(event.get("level", "?"), name)] += 1
                    if name == "event_loop_blocked":
                        self.blocked_at[event.get("where", "?")] += 1
                    elif name == "worker_stopped":
                        self.final = event
        self.log.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child (and of the benchmark's own gateway): buckets in
    PostgreSQL, whatever REDIS_URL the shell has."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("REDIS_URL", None)
    return env


async def start_mock(latency: float, rpm: int) -> tuple[Child, str]:
    """`conveyor mock-llm` on a free port, with the load phase's faults and limit."""
    rates = ",".join(f"{fault}={rate}" for fault, rate in FAULTS.items())
    argv = [
        sys.executable, "-m", "conveyor.cli", "mock-llm", "--port", "0",
        "--latency", f"{latency}s", "--error-rate", rates, "--retry-after", "1s",
        "--rate-limit-rpm", str(rpm),
    ]  # fmt: skip
    mock = Child("mock", argv, child_env())
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on (http://\S+)", mock.output())):
        mock.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the mock did not start:\n{mock.output()}")
        await asyncio.sleep(0.05)
    return mock, found.group(1)


def gateway_config(mock_url: str, rpm: int, concurrency: int) -> dict[str, Any]:
    """One OpenAI-kind provider at the mock with a shared request budget of ``rpm``."""
    return {
        "providers": {
            "mock": {
                "kind": "openai",
                "base_url": mock_url,
                "max_concurrency": concurrency,
                "requests_per_minute": rpm,
                "rate_window": WINDOW,
            }
        },
        # 5 attempts: a call fails only if all draw a fault (0.12^5, 1 in 40,000).
        "retry": {"max_attempts": 5, "base": 0.5, "cap": 4.0, "max_retry_after": 60},
        # 429s are the budget's business, not the breaker's; 2 % 503s must not open it.
        "breaker": {"window": 100, "min_calls": 50, "failure_rate": 0.5,
                    "count_rate_limits": False},
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


async def sample_admitted(
    client: httpx.AsyncClient, stop: asyncio.Event
) -> list[tuple[float, int]]:
    """Every 0.5 s: (time, requests the mock admitted so far), for the busiest window."""
    samples: list[tuple[float, int]] = []
    while not stop.is_set():
        stats = (await client.get("/mock/stats")).json()
        samples.append((time.monotonic(), stats["requests_total"] - stats["limit_429s"]))
        await asyncio.sleep(0.5)
    return samples


def busiest_window(samples: list[tuple[float, int]], window: float) -> int:
    """Most admitted requests between two samples at most ``window`` s apart."""
    best, start = 0, 0
    for t, count in samples:
        while t - samples[start][0] > window:
            start += 1
        best = max(best, count - samples[start][1])
    return best


async def wait_registered(control: asyncpg.Connection, workers: list[Child]) -> None:
    running = "SELECT count(*) FROM workers WHERE state = 'running'"
    while await control.fetchval(running) < len(workers):
        for worker in workers:
            worker.check_alive()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # past the first empty claims: the workers are idle now


async def wait_drained(
    control: asyncpg.Connection, total: int, workers: list[Child], give_up_s: float
) -> int:
    began = time.monotonic()
    while (done := await control.fetchval("SELECT count(*) FROM task_history")) < total:
        for worker in workers:
            worker.check_alive()
        if time.monotonic() - began > give_up_s:
            break
        await asyncio.sleep(0.05)
    return int(done)


async def call_log_outcomes(control: asyncpg.Connection) -> dict[str, int] | None:
    """What the workers' call log (``llm_calls``, written on shutdown at the latest) says of
    each attempt: a cross-check of the mock's counters. None where there is no call log."""
    try:
        rows = await control.fetch(
            "SELECT outcome || coalesce(' ' || status, '') AS what, count(*) AS n "
            "FROM llm_calls GROUP BY 1 ORDER BY 2 DESC"
        )
    except asyncpg.UndefinedTableError:
        return None
    return {r["what"]: r["n"] for r in rows}


async def load_phase(
    scratch: str, args: argparse.Namespace, mock: httpx.AsyncClient, config_path: Path
) -> dict[str, Any]:
    store = await PostgresStore.open(scratch)
    control = await asyncpg.connect(scratch)
    workers: list[Child] = []
    stop = asyncio.Event()
    try:
        # Paused while the workers boot, so the clock measures the calls, not start-up.
        await store.pause_queue(QUEUE)
        for start in range(0, args.tasks, 10_000):
            count = min(10_000, args.tasks - start)
            await store.enqueue_batch([NewTask(QUEUE, {"n": start + i}) for i in range(count)])
        await control.execute("ANALYZE")
        env = child_env(DATABASE_URL=scratch, CONVEYOR_LLM_CONFIG=str(config_path))
        argv = [
            sys.executable, "-m", "conveyor.cli", "worker",
            "--app", "benchmarks.gateway_agents:app", "--queue", QUEUE,
            "--concurrency", str(args.concurrency), "--claim-batch", "500",
            "--no-migrate", "--log-level", "INFO",
        ]  # fmt: skip
        workers = [Child(f"worker{i}", argv, env) for i in range(args.workers)]
        await wait_registered(control, workers)
        (await mock.post("/mock/reset")).raise_for_status()
        sampler = asyncio.create_task(sample_admitted(mock, stop))
        began = time.monotonic()
        await store.resume_queue(QUEUE)
        done = await wait_drained(control, args.tasks, workers, args.give_up)
        wall = time.monotonic() - began
        stop.set()
        samples = await sampler
        stats = (await mock.get("/mock/stats")).json()
        history = "SELECT state, result, last_error FROM task_history WHERE queue = $1"
        rows = await control.fetch(history, QUEUE)
        for worker in workers:
            worker.stop()  # their call logs write what they still buffer
        outcomes = await call_log_outcomes(control)
    finally:
        stop.set()
        for worker in workers:
            worker.stop()
        await store.close()
        await control.close()
    deaths = Counter(
        (error.get("type", "?"), str(error.get("message", ""))[:160])
        for error in (json.loads(r["last_error"]) for r in rows if r["state"] != "succeeded")
    )
    results = [json.loads(r["result"]) if r["result"] else None for r in rows]
    replies = [r for r in results if r and r["ok"]]
    return {
        "wall": wall,
        "finished": done,
        "dead": sum(1 for r in rows if r["state"] != "succeeded"),
        "deaths": deaths,
        "call_log": outcomes,
        "worker_events": sum((w.events for w in workers), Counter()),
        "blocked_at": sum((w.blocked_at for w in workers), Counter()),
        "loop_lag": [w.final for w in workers],
        "completed": len(replies),
        "no_reply": [r for r in results if r and not r["ok"]],
        "attempts": sum(r["attempts"] for r in results if r),
        "retried": sum(r["attempts"] - 1 for r in results if r and r["attempts"]),
        "call_wall": [r["wall"] for r in replies],
        "attempt_latency": [r["latency"] for r in replies],
        "own": [r["own"] for r in replies],
        "stats": stats,
        "busiest": busiest_window(samples, WINDOW),
    }


async def interleaved(
    paths: Mapping[str, Callable[[], Awaitable[float | None]]], calls: int, concurrency: int
) -> dict[str, list[tuple[float, float | None]]]:
    """``calls`` calls of each path from ``concurrency`` slots, each slot alternating the
    paths: both see the same waves, the same neighbours and the same drift of the machine.
    Per path: each call's wall time and what it returned."""
    names = list(paths)
    timings: dict[str, list[tuple[float, float | None]]] = {name: [] for name in names}
    total = calls * len(names)

    async def slot(index: int) -> None:
        turns = total // concurrency + (index < total % concurrency)
        for turn in range(turns):
            name = names[(index + turn) % len(names)]  # neighbours start on different paths
            began = time.perf_counter()
            value = await paths[name]()
            timings[name].append((time.perf_counter() - began, value))

    await asyncio.gather(*(slot(i) for i in range(concurrency)))
    return timings


def leases_of(gateway: Gateway) -> SlotLeases | None:
    """The slot leases of a ``Gateway.with_store`` gateway's shared budget, if any."""
    budget = gateway.budget
    parts = budget.parts if isinstance(budget, CombinedBudget) else (budget,)
    for part in parts:
        if isinstance(part, SharedBudget):
            return part.leases
    return None


class TimedBuckets:
    """The store, with the time of each budget reservation's round trip written down."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.reserve_times: list[float] = []

    async def reserve_llm_budget(self, draws: Any) -> list[float]:
        began = time.perf_counter()
        try:
            return await self._store.reserve_llm_budget(draws)
        finally:
            self.reserve_times.append(time.perf_counter() - began)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def overhead_phase(
    scratch: str, args: argparse.Namespace, mock: httpx.AsyncClient, mock_url: str
) -> dict[str, Any]:
    changes = {"fault_rates": {}, "rate_limit_rpm": None, "latency": args.latency}
    (await mock.post("/mock/config", json=changes)).raise_for_status()
    (await mock.post("/mock/reset")).raise_for_status()
    conc = args.overhead_concurrency
    # A budget this large never makes a call wait, but every attempt still takes its slot
    # in PostgreSQL: the round trip is part of what is measured.
    config = load_gateway_config(gateway_config(mock_url, 1_000_000_000, conc))
    store = await PostgresStore.open(scratch)
    timed_store = TimedBuckets(store)
    # With the metrics plugin, as the worker's composition root builds it.
    gateway = Gateway.with_store(config, timed_store, environ=child_env(), hooks=[GatewayMetrics()])
    # The same HTTP stack the gateway sends with (httpx over aiohttp's pool), so the
    # difference is the gateway's own work: routing, budget, breaker, records.
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    raw = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits, timeout=60)
    body = {"model": "mock-gpt", "messages": MESSAGES, "max_tokens": 32, "stream": False}
    scope = CallScope(tenant_id="default", queue=QUEUE)  # what a task's ctx.llm passes

    async def via_raw() -> None:
        response = await raw.post(f"{mock_url}/v1/chat/completions", json=body)
        response.raise_for_status()
        response.json()

    async def via_gateway() -> float:
        result = await gateway.chat(model=MODEL, messages=MESSAGES, max_tokens=32, scope=scope)
        return result.latency

    paths = {"raw": via_raw, "gateway": via_gateway}
    leases = leases_of(gateway)
    try:
        await interleaved(paths, conc, conc)  # warm-up: connections open, caches filled
        warm_served, warm_trips = (leases.served if leases else 0), len(timed_store.reserve_times)
        timings = await interleaved(paths, args.overhead_calls, conc)
        served = (leases.served if leases else 0) - warm_served
        trips = len(timed_store.reserve_times) - warm_trips
    finally:
        await raw.aclose()
        await gateway.aclose()
        await store.close()
    stats = (await mock.get("/mock/stats")).json()
    return {
        "reserve": timed_store.reserve_times[-trips:] if trips else [0.0],
        "leased": served,
        "round_trips": trips,
        "raw": [wall for wall, _ in timings["raw"]],
        "gateway": [wall for wall, _ in timings["gateway"]],
        "outside": [wall - (latency or 0.0) for wall, latency in timings["gateway"]],
        "stats": stats,
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def verdict(met: bool) -> str:
    return "[green]met[/green]" if met else "[red]missed[/red]"


def print_load(console: Console, load: dict[str, Any], args: argparse.Namespace) -> None:
    stats = load["stats"]
    injected = stats.get("injected", {})
    calls = args.tasks
    rate = DripRate(args.rpm, WINDOW)
    floor = max(0.0, load["attempts"] - rate.burst) * rate.emission
    table = Table(
        title=f"Load: {calls:,} calls by {args.workers} x {args.concurrency:,} agents; mock "
        f"{args.latency:g} s, 429 {FAULTS['429']:.0%}, 503 {FAULTS['503']:.0%}, limit "
        f"{args.rpm:,}/min; gateway budget {args.rpm:,}/min, max_concurrency "
        f"{args.pool or args.concurrency:,} per worker"
    )
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    failed = calls - load["completed"]
    attempts, retried = load["attempts"], load["retried"]
    matches = "matches" if stats["requests_total"] == attempts else "[yellow]differs[/yellow]"
    limit_429s = stats["limit_429s"]
    call_wall, latency = load["call_wall"], load["attempt_latency"]
    unfinished = calls - load["finished"]
    rows = [
        ("completed (a reply)", f"{load['completed']:,} of {calls:,}", "all", verdict(not failed)),
        ("failed: no reply / task dead / unfinished",
         f"{len(load['no_reply'])} / {load['dead']} / {unfinished}", "0", ""),
        ("attempts / retried (sum of attempts - 1)", f"{attempts:,} / {retried:,}", "", ""),
        ("mock requests_total", f"{stats['requests_total']:,}", "= attempts", matches),
        ("mock 429s for exceeding its limit", f"{limit_429s:,}", "0", verdict(limit_429s == 0)),
        ("injected 429s / 503s", f"{injected.get('429', 0):,} / {injected.get('503', 0):,}",
         f"~{FAULTS['429']:.0%} / ~{FAULTS['503']:.0%}", ""),
        ("busiest 60 s at the mock (sampled)", f"~{load['busiest']:,}", f"<= {args.rpm:,}", ""),
        ("wall time (resume to last task)", f"{load['wall']:.1f} s", f">= {floor:.1f} s", ""),
        ("achieved requests/min at the mock",
         f"{stats['requests_total'] / load['wall'] * 60:,.0f}", f"<= {args.rpm:,}", ""),
        ("call wall time p50 / p99 (budget wait incl.)",
         f"{pct(call_wall, 0.5):.2f} s / {pct(call_wall, 0.99):.2f} s", "", ""),
        ("answering attempt latency p50 / p99",
         f"{ms(pct(latency, 0.5))} / {ms(pct(latency, 0.99))}",
         f"~{args.latency * 1000:,.0f} ms", ""),
        ("gateway's own time per call p50 / p99 (under this load)",
         f"{ms(pct(load['own'], 0.5))} / {ms(pct(load['own'], 0.99))}", "p50 <= 1 ms",
         verdict(pct(load["own"], 0.5) <= 0.001)),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"The call wall time is mostly queueing for the shared budget: {args.rpm:,}/min is "
        f"{args.rpm / WINDOW:g} requests/s for all {args.workers * args.concurrency:,} agents "
        "together, and a retry takes a new slot at the back of the queue. It is not the "
        "gateway's overhead: its own time is the wall time less the time inside its "
        "attempts and less those waits (ChatResult.sent and .waited)."
    )
    if load["wall"] < WINDOW:
        console.print(
            f"[yellow]The run lasted {load['wall']:.0f} s, less than the mock's {WINDOW:g} s "
            f"window, so it could never hold more than {args.rpm:,} requests: 0 limit 429s "
            "says nothing here. Run --tasks 8000 or more.[/yellow]"
        )
    if load["call_log"] is not None:
        logged = ", ".join(f"{what} {n:,}" for what, n in load["call_log"].items())
        console.print(f"llm_calls (the workers' call log) by outcome: {logged}")
    slowest = pct(load["attempt_latency"], 0.99)
    if slowest > 2 * args.latency:
        console.print(
            f"[yellow]Answering attempts took up to {slowest:.1f} s (p99) against a mock that "
            f"answers in {args.latency:g} s: the workers' side (CPU, HTTP client pool) is a "
            "bottleneck, and a request that leaves its budget slot late may crowd the mock's "
            "window.[/yellow]"
        )
    for failure in load["no_reply"][:3]:
        console.print(f"no reply: {failure['error']}")
    for (kind, message), count in load["deaths"].most_common(3):
        console.print(f"[red]{count:,} tasks dead[/red] with {kind}: {message}")
    lags = "; ".join(
        f"p50 {f.get('loop_lag_p50_ms', float('nan')):,.0f} ms, p99 "
        f"{f.get('loop_lag_p99_ms', float('nan')):,.0f} ms, max "
        f"{f.get('loop_lag_max_ms', float('nan')):,.0f} ms"
        for f in load["loop_lag"]
    )
    console.print(f"workers' event-loop lag: {lags}")
    warnings = [(k, n) for k, n in load["worker_events"].most_common() if k[0] != "info"]
    for (level, event), count in warnings[:5]:
        console.print(f"worker log: {count:,} x {level} {event}")
    for where, count in load["blocked_at"].most_common(3):
        console.print(f"  blocked at {where} ({count:,} x)")


def print_overhead(console: Console, over: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(
        title=f"Gateway overhead: {len(over['gateway']):,} calls each way from "
        f"{args.overhead_concurrency} slots alternating raw and gateway; mock {args.latency:g} s, "
        "no faults, no limit"
    )
    for column in ("path", "p50", "p99", "mean", "p50 over the mock's latency", "target"):
        table.add_column(column, justify="right")
    for name, walls in (("raw httpx POST", over["raw"]), ("gateway.chat", over["gateway"])):
        table.add_row(
            name, ms(pct(walls, 0.5)), ms(pct(walls, 0.99)), ms(statistics.fmean(walls)),
            ms(pct(walls, 0.5) - args.latency), "",
        )  # fmt: skip
    p50 = pct(over["gateway"], 0.5) - pct(over["raw"], 0.5)
    p99 = pct(over["gateway"], 0.99) - pct(over["raw"], 0.99)
    mean = statistics.fmean(over["gateway"]) - statistics.fmean(over["raw"])
    table.add_row(
        "[bold]overhead (gateway - raw)[/bold]", ms(p50), ms(p99), ms(mean), "", "p50 <= 1 ms"
    )
    for name, values in (
        ("gateway time outside its attempt", over["outside"]),
        ("budget round trips (the calls' own and the lease renewals)", over["reserve"]),
    ):
        table.add_row(
            name, ms(pct(values, 0.5)), ms(pct(values, 0.99)), ms(statistics.fmean(values)), "", ""
        )
    console.print(table)
    console.print(
        "outside its attempt = wall of gateway.chat - ChatResult.latency: the tenant policy "
        "lookup, the budget's reservation, routing and the call record. "
        f"Calls that took a leased slot (no round trip on their path): {over['leased']:,} of "
        f"{len(over['gateway']):,}; round trips to the bucket: {over['round_trips']:,}. "
        f"Mock requests in this phase (warm-up included): {over['stats']['requests_total']:,}, "
        f"statuses {over['stats']['by_status']}"
    )
    console.print(f"target gateway overhead p50 <= 1 ms: {verdict(p50 <= 0.001)}")


async def main(args: argparse.Namespace) -> None:
    console = Console(width=120)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: every finally stops its children.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    mock_process: Child | None = None
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-gateway-") as tmp:
        try:
            mock_process, mock_url = await start_mock(args.latency, args.rpm)
            config_path = Path(tmp) / "llm.json"
            config = gateway_config(mock_url, args.rpm, args.pool or args.concurrency)
            config_path.write_text(json.dumps(config, indent=2))
            async with (
                server_dsn(args.dsn) as dsn,
                scratch_database(dsn) as scratch,
                httpx.AsyncClient(base_url=mock_url, timeout=30) as mock,
            ):
                probe = await asyncpg.connect(dsn)
                facts = await server_facts(probe)
                await probe.close()
                load = await load_phase(scratch, args, mock, config_path)
                over = await overhead_phase(scratch, args, mock, mock_url)
        finally:
            if mock_process is not None:
                mock_process.stop(grace=5)
    console.print("[bold]Conveyor LLM gateway under load[/bold]")
    console.print(
        f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}, "
        f"synchronous_commit={facts['synchronous_commit']}; the mock in its own process"
    )
    print_load(console, load, args)
    print_overhead(console, over, args)
    console.print(f"target every call completes: {verdict(load['completed'] == args.tasks)}")
    console.print(
        f"target 0 limit 429s: {verdict(load['stats']['limit_429s'] == 0)} (the busiest 60 s "
        f"held ~{load['busiest']:,} requests of the {args.rpm:,} allowed)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument(
        "--tasks", type=int, default=8000, help="calls (8,000: the run outlasts one 60 s window)"
    )
    parser.add_argument("--concurrency", type=int, default=1000, help="agents per worker")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--pool", type=int, default=0, help="gateway max_concurrency (default: --concurrency)"
    )
    parser.add_argument("--latency", type=float, default=1.0, help="mock reply time, seconds")
    parser.add_argument("--rpm", type=int, default=6000, help="mock limit = gateway budget")
    parser.add_argument("--overhead-calls", type=int, default=500, help="calls each way")
    parser.add_argument(
        "--overhead-concurrency", type=int, default=20, help="calls in flight, both paths"
    )
    parser.add_argument("--give-up", type=float, default=900, help="stop waiting after (s)")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted: the mock and the workers were stopped, the database dropped")
