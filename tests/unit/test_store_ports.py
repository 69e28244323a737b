"""The store seam by caller: the engine and the tenant view satisfy their protocols."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from conveyor.gateway.stores import GatewayStore
from conveyor.store import ports
from conveyor.store.postgres import PostgresStore
from conveyor.store.tenant import TenantStore
from conveyor.worker.ports import WorkerStore

ENGINE_PROTOCOLS = [
    ports.TenantScopedStore,
    ports.WorkerLeases,
    ports.Maintenance,
    ports.EventLog,
    ports.Admin,
    GatewayStore,
    WorkerStore,
]


def members(protocol: type) -> dict[str, Any]:
    """The methods and properties a protocol declares, its bases' included."""
    found: dict[str, Any] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                found[name] = value
    return found


def assert_conforms(impl: Any, protocol: type) -> None:
    """Every member exists on ``impl`` and accepts every call the protocol allows."""
    for name, declared in members(protocol).items():
        assert hasattr(impl, name), f"{type(impl).__name__} lacks {protocol.__name__}.{name}"
        if isinstance(declared, property):
            continue
        wanted = inspect.signature(declared).parameters
        offered = inspect.signature(getattr(impl, name)).parameters
        is_async = inspect.iscoroutinefunction(declared)
        assert inspect.iscoroutinefunction(getattr(impl, name)) is is_async, name
        for param in list(wanted.values())[1:]:  # past self
            assert param.name in offered, f"{name}() lacks {param.name!r}"
            assert offered[param.name].kind == param.kind, f"{name}({param.name}) kind"
            if param.default is not inspect.Parameter.empty:
                assert offered[param.name].default == param.default, f"{name}({param.name})"
        for extra in set(offered) - set(wanted):
            assert offered[extra].default is not inspect.Parameter.empty, f"{name}({extra})"


@pytest.mark.parametrize("protocol", ENGINE_PROTOCOLS, ids=lambda p: p.__name__)
def test_the_engine_satisfies_every_callers_protocol(protocol: type) -> None:
    engine = PostgresStore(pool=None, dsn="postgresql://nobody@nowhere/db")  # type: ignore[arg-type]
    assert_conforms(engine, protocol)


def test_the_tenant_view_satisfies_tenant_tasks() -> None:
    engine = PostgresStore(pool=None, dsn="postgresql://nobody@nowhere/db")  # type: ignore[arg-type]
    view = engine.for_tenant("acme")
    assert isinstance(view, TenantStore)
    assert view.tenant_id == "acme"
    assert_conforms(view, ports.TenantTasks)


def test_a_tenant_view_refuses_a_malformed_tenant_id() -> None:
    from conveyor.errors import InvalidTask

    engine = PostgresStore(pool=None, dsn="postgresql://nobody@nowhere/db")  # type: ignore[arg-type]
    with pytest.raises(InvalidTask):
        engine.for_tenant("../other")
