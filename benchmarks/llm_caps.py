"""What the runaway guards cost a call, and whether a campaign's cap holds under load.

Phase "cost": one ``Gateway.with_store`` (what a worker builds) against the mock provider
in this process, fault-free and instant, sends --calls sequential chat calls of each kind,
interleaved: a task's call that nothing caps (after its first call, the gateway remembers
that: no round trip), and a task's call in a capped group with run caps (one reservation
before the call, one settle per scope after it, in the background). The difference of the
p50s is what a cap adds to a call.

Phase "campaign": --tasks concurrent looping agents of one group (--gateways gateways,
each with its own pool, as separate worker processes would have) call until the group's
token cap refuses them. Printed: calls admitted, tokens used against the cap, and the
overshoot (must be 0).

Usage::

    python benchmarks/llm_caps.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from conveyor import LLMCapExceeded, LLMCaps
from conveyor.core.llm_caps import CapScope
from conveyor.gateway import CallScope, Gateway, load_gateway_config
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn

MESSAGES = [{"role": "user", "content": "one more tool call"}]


def config(url: str) -> Any:
    return load_gateway_config(
        {"providers": {"openai": {"kind": "openai", "base_url": url, "api_key": "k"}}}
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def cost(store: PostgresStore, url: str, calls: int) -> dict[str, list[float]]:
    await store.create_group("bench", "capped", caps=LLMCaps(calls=10**12))
    kinds = {
        "uncapped": CallScope(tenant_id="bench", task_id=1, group_id="free"),
        "capped (run + group)": CallScope(
            tenant_id="bench", task_id=2, group_id="capped", run_caps=LLMCaps(tokens=10**12)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    async with Gateway.with_store(config(url), store, environ={}) as gw:
        for round_ in range(calls + 20):  # 20 warm-up rounds, not counted
            for name, scope in kinds.items():
                started = time.perf_counter()
                await gw.chat(model="openai/mock-gpt", messages=MESSAGES, scope=scope)
                if round_ >= 20:
                    times[name].append((time.perf_counter() - started) * 1000)
    return times


async def campaign(
    stores: list[PostgresStore], url: str, tasks: int, cap: int
) -> tuple[int, int, int]:
    await stores[0].create_group("bench", "launch", caps=LLMCaps(tokens=cap))
    gateways = [Gateway.with_store(config(url), s, environ={}) for s in stores]
    refused = 0

    async def agent(n: int) -> None:
        nonlocal refused
        gw = gateways[n % len(gateways)]
        scope = CallScope(tenant_id="bench", task_id=1000 + n, group_id="launch")
        try:
            while True:
                await gw.chat(model="openai/mock-gpt", messages=MESSAGES, scope=scope)
        except LLMCapExceeded:
            refused += 1

    try:
        await asyncio.gather(*(agent(n) for n in range(tasks)))
    finally:
        for gw in gateways:
            await gw.aclose()
    counter = await stores[0].llm_cap_counter("bench", CapScope.GROUP, "launch")
    assert counter is not None
    return counter.used.calls, counter.used.tokens, refused


async def amain(args: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 110)
    async with server_dsn(args.dsn) as dsn, scratch_database(dsn) as scratch:
        stores = [
            await PostgresStore.open(scratch, min_size=4, max_size=20) for _ in range(args.gateways)
        ]
        try:
            await stores[0].create_tenant("bench")
            async with MockLLM(MockConfig()) as mock:
                times = await cost(stores[0], mock.url, args.calls)
                calls, tokens, refused = await campaign(stores, mock.url, args.tasks, args.cap)
        finally:
            for store in stores:
                await store.close()
    table = Table(title=f"one call through Gateway.with_store, sequential (n={args.calls} each)")
    for column in ("call", "p50 ms", "p99 ms"):
        table.add_column(column)
    for name, values in times.items():
        table.add_row(name, f"{statistics.median(values):.2f}", f"{percentile(values, 0.99):.2f}")
    console.print(table)
    added = statistics.median(times["capped (run + group)"]) - statistics.median(times["uncapped"])
    console.print(f"a cap adds {added:.2f} ms to a call at p50")
    console.print(
        f"campaign: {args.tasks} looping agents on {args.gateways} gateways, group cap "
        f"{args.cap:,} tokens: {calls:,} calls admitted, {tokens:,} tokens used, "
        f"{refused} agents stopped by the cap, overshoot {max(tokens - args.cap, 0):,}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default: DATABASE_URL, or embedded)")
    parser.add_argument("--calls", type=int, default=500, help="calls of each kind (cost)")
    parser.add_argument("--tasks", type=int, default=200, help="looping agents (campaign)")
    parser.add_argument("--gateways", type=int, default=2, help="gateways, each its own pool")
    parser.add_argument("--cap", type=int, default=100_000, help="the group's token cap")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(amain(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
