"""The API's metrics middleware on a real FastAPI app (in process, over ASGI): requests are
counted per route template, not per path; unknown methods and unmatched paths fold into
one label each; an error that escapes the app is a 5xx; GET /metrics answers the text
format, or OpenMetrics with the trace id as an exemplar when a span is active."""

from __future__ import annotations

import secrets

import httpx
import pytest
from fastapi import FastAPI

from conveyor.observability.http_metrics import HttpMetrics
from conveyor.observability.metrics import REGISTRY


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def app_with_metrics(prefix: str) -> FastAPI:
    app = FastAPI()

    @app.get(prefix + "/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get(prefix + "/boom")
    async def boom() -> None:
        raise RuntimeError("escapes the app")

    app.add_middleware(HttpMetrics)
    return app


async def test_requests_are_counted_by_route_template_method_and_status_class() -> None:
    prefix = f"/t{secrets.token_hex(3)}"
    transport = httpx.ASGITransport(app=app_with_metrics(prefix), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for item_id in (1, 2, 3):
            assert (await client.get(f"{prefix}/items/{item_id}")).status_code == 200
        assert (await client.get(f"{prefix}/items/nope")).status_code == 422
        assert (await client.request("BREW", f"{prefix}/items/1")).status_code == 405
        assert (await client.get(f"{prefix}/boom")).status_code == 500
        before = sample(
            "conveyor_http_requests_total", method="GET", route="unmatched", status_class="4xx"
        )
        assert (await client.get(f"{prefix}/nowhere/{secrets.token_hex(4)}")).status_code == 404

    route = prefix + "/items/{item_id}"
    assert (
        sample("conveyor_http_requests_total", method="GET", route=route, status_class="2xx") == 3
    )
    assert (
        sample("conveyor_http_requests_total", method="GET", route=route, status_class="4xx") == 1
    )
    assert (
        sample("conveyor_http_requests_total", method="other", route=route, status_class="4xx") == 1
    )
    assert (
        sample(
            "conveyor_http_requests_total", method="GET", route=prefix + "/boom", status_class="5xx"
        )
        == 1
    )
    after = sample(
        "conveyor_http_requests_total", method="GET", route="unmatched", status_class="4xx"
    )
    assert after == before + 1  # the raw path made no series of its own
    assert sample("conveyor_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert sample("conveyor_http_requests_in_flight") == 0


async def test_metrics_are_served_as_text_or_openmetrics_with_trace_exemplars() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    prefix = f"/t{secrets.token_hex(3)}"
    transport = httpx.ASGITransport(app=app_with_metrics(prefix))
    tracer = sdk.TracerProvider().get_tracer("test")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with tracer.start_as_current_span("request") as span:
            await client.get(f"{prefix}/items/7")
            trace_id = format(span.get_span_context().trace_id, "032x")
        text = await client.get("/metrics")
        openmetrics = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert trace.get_current_span().get_span_context().is_valid is False
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert f'route="{prefix}/items/{{item_id}}"' in text.text
    assert "trace_id" not in text.text  # the text format has no exemplars
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert f'# {{trace_id="{trace_id}"}}' in openmetrics.text
    assert openmetrics.text.rstrip().endswith("# EOF")


async def test_a_metrics_token_is_required_when_set() -> None:
    app = FastAPI()
    app.add_middleware(HttpMetrics, token="s" * 32)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32})
        served = await client.get("/metrics", headers={"Authorization": "Bearer " + "s" * 32})
    assert refused.status_code == wrong.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "CONVEYOR_METRICS_TOKEN" in refused.text and "s" * 32 not in refused.text
    assert served.status_code == 200 and "conveyor_http_requests_total" in served.text
