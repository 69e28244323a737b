"""The process's gateway: the one every task's ``ctx.llm`` uses.

A worker process has one gateway, so the breakers, the host pools and their concurrency
limits are shared by all its tasks. ``set_gateway`` installs one built in code (tests, an
embedding application); otherwise the first ``get_gateway`` builds it from
``CONVEYOR_LLM_CONFIG``. ``close_gateway`` closes its connections at shutdown.
"""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.gateway.gateway import Gateway
from conveyor.gateway.stores import GatewayStore

_current: Gateway | None = None


def set_gateway(gateway: Gateway | None) -> None:
    """Make ``gateway`` the process's (None forgets it; it is not closed)."""
    global _current
    _current = gateway


def get_gateway(
    environ: Mapping[str, str] | None = None, *, store: GatewayStore | None = None
) -> Gateway:
    """The process's gateway, built from ``CONVEYOR_LLM_CONFIG`` on first use if none is set.

    Raises ConfigurationError ("no LLM gateway configured; set CONVEYOR_LLM_CONFIG ...")
    when there is neither.
    """
    global _current
    if _current is None:
        _current = Gateway.from_env(environ, store=store)
    return _current


async def close_gateway() -> None:
    """Close the process's gateway, if there is one, and forget it."""
    global _current
    gateway, _current = _current, None
    if gateway is not None:
        await gateway.aclose()
