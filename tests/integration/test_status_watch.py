"""``conveyor status --watch``'s view on a real database: queues with the last minute's
throughput and errors, workers with their health, and breakers read from a worker's
/metrics over real HTTP (one open); drawn twice into a recording console."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import pytest
from rich.console import Console

from conveyor.cli.status_view import watch
from conveyor.core.breaker import BreakerOutcome, BreakerSettings
from conveyor.core.worker_health import WorkerHealth
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.observability.gateway_metrics import watch_breakers
from conveyor.observability.metrics import serve_metrics
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask, WorkerInfo
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import WorkerStatus
from conveyor.types import TaskState


@pytest.fixture
def metrics_server() -> Iterator[WSGIServer]:
    served = serve_metrics(0, "127.0.0.1")
    yield served
    served.shutdown()
    served.server_close()


def cells(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in text.splitlines():
        found = [c.strip() for c in line.strip().strip("│").split("│")]
        if found and found[0] == first:
            return found
    raise AssertionError(f"no row {first!r} in:\n{text}")


def healthy(worker: WorkerStatus) -> WorkerHealth:
    return WorkerHealth.OK


async def test_the_watch_view_shows_queues_throughput_workers_and_breakers(
    store: PostgresStore, metrics_server: WSGIServer
) -> None:
    provider = f"watched-{secrets.token_hex(3)}"
    breakers = BreakerRegistry(BreakerSettings(window=1, min_calls=1))
    watch_breakers(breakers)
    ticket = breakers.allow(provider, "gpt-x")
    assert ticket is not None
    breakers.record(provider, "gpt-x", ticket, BreakerOutcome.FAILURE)  # opens it
    await store.register_worker(WorkerInfo("w-watch", "host-a", 42, ("mail",), 8))
    await store.enqueue_batch([NewTask(queue="mail", payload={})] * 5)
    claimed = await store.claim(ClaimRequest(("mail",), 3, "w-watch", 30.0))
    await store.finish(
        [Finish(LeaseRef(claimed[0].id, claimed[0].lease_token), TaskState.SUCCEEDED)]
        + [Finish(LeaseRef(t.id, t.lease_token), TaskState.DEAD) for t in claimed[1:]]
    )
    url = f"http://127.0.0.1:{metrics_server.server_port}/metrics"
    dead_url = "http://127.0.0.1:1/metrics"
    console = Console(record=True, width=160, force_terminal=False)

    await watch(store, healthy, console, every=0.05, metrics_urls=[url, dead_url], refreshes=2)

    text = console.export_text()
    _queue, queued, running, _oldest, done, dead, retries = cells(text, "mail")
    assert (queued, running, done, dead, retries) == ("2", "0", "1", "2", "0"), text
    assert cells(text, "w-watch")[1:5] == ["host-a", "ok", "0/8", "8"], text
    assert cells(text, provider)[1:] == ["gpt-x", "open", url], text
    assert f"no answer from: {dead_url}" in text
    assert "Ctrl-C to quit" in text


async def test_without_metrics_urls_the_view_says_where_breakers_come_from(
    store: PostgresStore,
) -> None:
    console = Console(record=True, width=120, force_terminal=False)
    await watch(store, healthy, console, every=0.05, refreshes=1)
    assert "give --metrics-url of the workers" in console.export_text()
