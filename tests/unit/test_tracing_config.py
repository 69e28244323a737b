"""Tracing is configured only by the standard OTEL_* variables, and off when they are unset."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigurationError
from conveyor.observability.tracing import exporter_names, tracing_from_env


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x"}, ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "OTLP, console,otlp"}, ("otlp", "console")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, ()),
    ],
)
def test_the_exporters_the_environment_asks_for(
    environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert exporter_names(environ) == expected


def test_unset_means_no_provider_at_all() -> None:
    assert tracing_from_env({}, "conveyor-worker", install=False) is None


def test_an_unknown_exporter_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_EXPORTER='jaeger'"):
        exporter_names({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_a_console_exporter_gives_a_provider_named_after_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = tracing_from_env({"OTEL_TRACES_EXPORTER": "console"}, "conveyor-api", install=False)
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "conveyor-api"
    finally:
        tracing.shutdown()


def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-agents")
    tracing = tracing_from_env({"OTEL_TRACES_EXPORTER": "otlp"}, "conveyor-worker", install=False)
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "billing-agents"
    finally:
        tracing.shutdown()
