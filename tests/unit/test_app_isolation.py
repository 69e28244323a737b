"""Registering an isolated agent: defaults of the caps, and refusals that name the agent."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import App, ConfigurationError, TaskContext
from conveyor.worker.isolation import ProcessLimits


async def handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """A module-level handler, importable by a child process."""


def test_isolated_agent_gets_default_caps_and_an_import_reference() -> None:
    app = App()
    app.agent("iso", isolation="process")(handler)
    spec = app.agents["iso"]
    assert (spec.isolation, spec.memory_limit_mb, spec.cpu_limit_seconds) == ("process", 512, 60)
    assert spec.handler_reference == f"{__name__}:handler"
    assert ProcessLimits.of(spec) == ProcessLimits(512, 60.0)


def test_cpu_cap_defaults_to_the_timeout_and_explicit_caps_win() -> None:
    app = App()
    app.agent("timed", isolation="process", timeout=20)(handler)
    app.agent("capped", isolation="process", timeout=20, memory_limit_mb=128, cpu_limit_seconds=2)(
        handler
    )
    assert app.agents["timed"].cpu_limit_seconds == 20
    capped = app.agents["capped"]
    assert (capped.memory_limit_mb, capped.cpu_limit_seconds) == (128, 2)


def test_agent_without_isolation_has_no_caps() -> None:
    app = App()
    app.agent("plain")(handler)
    spec = app.agents["plain"]
    assert (spec.isolation, spec.memory_limit_mb, spec.cpu_limit_seconds) == (None, None, None)
    with pytest.raises(ValueError, match="not registered with isolation"):
        ProcessLimits.of(spec)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"isolation": "thread"}, 'isolation must be "process" or None'),
        ({"memory_limit_mb": 256}, 'apply only with isolation="process"'),
        ({"cpu_limit_seconds": 5}, 'apply only with isolation="process"'),
        ({"isolation": "process", "memory_limit_mb": 32}, "memory_limit_mb must be"),
        ({"isolation": "process", "memory_limit_mb": 100.5}, "memory_limit_mb must be"),
        ({"isolation": "process", "memory_limit_mb": True}, "memory_limit_mb must be"),
        ({"isolation": "process", "cpu_limit_seconds": 0}, "cpu_limit_seconds must be"),
        ({"isolation": "process", "cpu_limit_seconds": float("inf")}, "cpu_limit_seconds must"),
        ({"isolation": "process", "cpu_limit_seconds": float("nan")}, "cpu_limit_seconds must"),
    ],
)
def test_bad_isolation_options_are_refused_naming_the_agent(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match="agent 'iso'") as caught:
        App().agent("iso", **options)
    assert message in str(caught.value)


def test_handlers_a_child_cannot_import_are_refused() -> None:
    async def nested(ctx: TaskContext, payload: dict[str, Any]) -> None:
        pass

    def main_handler(ctx: TaskContext, payload: dict[str, Any]) -> None:
        pass

    main_handler.__module__ = "__main__"
    app = App()
    for refused in (nested, lambda ctx, payload: None, main_handler):
        with pytest.raises(ConfigurationError, match=r"agent 'iso'.*module-level function"):
            app.agent("iso", isolation="process")(refused)
    assert "iso" not in app.agents
    app.agent("plain")(nested)  # without isolation, anything callable is fine


def test_stall_timeout_is_refused_for_isolated_agents() -> None:
    app = App("t")
    with pytest.raises(ConfigurationError, match="stall_timeout"):
        app.agent("x", isolation="process", stall_timeout=5)(handler)
