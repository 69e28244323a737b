"""The /metrics endpoint over real HTTP: a free port, the text format, a clean shutdown."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.core.breaker import BreakerOutcome, BreakerSettings
from conveyor.errors import ConfigurationError
from conveyor.gateway.accounting.records import CallOutcome, CallRecord
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.observability.gateway_metrics import GatewayMetrics, watch_breakers
from conveyor.observability.metrics import serve_metrics


@pytest.fixture
def server() -> Iterator[WSGIServer]:
    served = serve_metrics(0, "127.0.0.1")
    yield served
    served.shutdown()
    served.server_close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_are_scraped_in_the_text_format(server: WSGIServer) -> None:
    breakers = BreakerRegistry(BreakerSettings(window=1, min_calls=1))
    watch_breakers(breakers)
    ticket = breakers.allow("scraped", "m1")
    assert ticket is not None
    breakers.record("scraped", "m1", ticket, BreakerOutcome.FAILURE)  # opens it
    await GatewayMetrics().after_attempt(
        CallRecord(
            tenant_id="t1",
            task_id=None,
            group_id=None,
            requested="scraped/m1",
            provider="scraped",
            model="m1",
            attempt=1,
            outcome=CallOutcome.SERVER_ERROR,
            stream=False,
            status=503,
            latency=0.2,
        ),
        None,
    )

    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{server.server_port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert "# HELP conveyor_llm_breaker_state" in reply.text
    found = samples(reply.text)
    target = {("provider", "scraped"), ("model", "m1")}
    assert found[("conveyor_llm_breaker_state", frozenset(target))] == 2
    outcome = frozenset({*target, ("outcome", "server_error")})
    assert found[("conveyor_llm_calls_total", outcome)] == 1
    assert not any("tenant" in dict(labels) for _, labels in found)  # bounded labels only


def test_a_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            serve_metrics(port, "127.0.0.1")
