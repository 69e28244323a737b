"""Dependencies point one way: every import in conveyor/ is checked against a small table.

types/errors <- core <- store <- worker/gateway <- client <- api/cli. To allow a new arrow,
edit the tables below; a wrong-way import anywhere (even inside a function or under
TYPE_CHECKING) fails with the module, the line, and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import conveyor

# Layers that may import only these parts of conveyor (a layer may always import itself).
ALLOWED_INTERNAL: dict[str, tuple[str, ...]] = {
    "conveyor.types": (),
    "conveyor.errors": ("conveyor.types",),
    "conveyor.core": ("conveyor.types", "conveyor.errors"),
    # The mock provider stands alone: a gateway tested against its own code proves nothing.
    "conveyor.mock_llm": ("conveyor.types", "conveyor.errors", "conveyor.core"),
}

# Parts of conveyor a layer must never import: they sit above it.
FORBIDDEN_INTERNAL: dict[str, tuple[str, ...]] = {
    "conveyor.store": (
        "conveyor.worker",
        "conveyor.gateway",
        "conveyor.client",
        "conveyor.api",
        "conveyor.cli",
    ),
    "conveyor.gateway": (
        "conveyor.worker",
        "conveyor.client",
        "conveyor.api",
        "conveyor.cli",
    ),
}

# Third-party packages only one layer may import.
OWNED_PACKAGES: dict[str, str] = {
    "asyncpg": "conveyor.store",
    "psycopg": "conveyor.store",
    "psycopg2": "conveyor.store",
    "psycopg_pool": "conveyor.store",
    "fastapi": "conveyor.api",
    "starlette": "conveyor.api",
    "aiohttp": "conveyor.mock_llm",
    "redis": "conveyor.gateway.budgets.redis_buckets",
}

# The pure core may use the standard library and these only.
CORE_THIRD_PARTY: frozenset[str] = frozenset({"croniter"})

ROOT = Path(conveyor.__file__).parent


@dataclass(frozen=True)
class Import:
    """One imported module name, where it was imported."""

    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def within(name: str, prefix: str) -> bool:
    """True when module ``name`` is ``prefix`` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every module ``source`` imports, relative imports resolved against ``module``."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from conveyor import worker` imports conveyor.worker: record each name below.
            found += [Import(module, f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def violations(found: list[Import]) -> list[str]:
    """The rules of the tables that ``found`` breaks, one line each."""
    broken = []
    for edge in found:
        importer, imported = edge.importer, edge.imported
        top = imported.split(".")[0]
        for layer, allowed in ALLOWED_INTERNAL.items():
            if (
                within(importer, layer)
                and within(imported, "conveyor")
                and not any(within(imported, ok) for ok in (layer, *allowed))
            ):
                others = ", ".join(allowed) or "nothing else"
                broken.append(f"{edge}: of conveyor, {layer} may import only itself and {others}")
        for layer, forbidden in FORBIDDEN_INTERNAL.items():
            if within(importer, layer) and any(within(imported, bad) for bad in forbidden):
                broken.append(f"{edge}: {layer} must not depend on a layer above it")
        owner = OWNED_PACKAGES.get(top)
        if owner is not None and not within(importer, owner):
            broken.append(f"{edge}: only {owner} may import {top}")
        if (
            within(importer, "conveyor.core")
            and top != "conveyor"
            and top not in sys.stdlib_module_names
            and top not in CORE_THIRD_PARTY
        ):
            broken.append(
                f"{edge}: conveyor.core is pure; it may use only the stdlib and "
                f"{sorted(CORE_THIRD_PARTY)}"
            )
    return broken


def all_imports() -> list[Import]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        found += imports_of(
            path.read_text("utf-8"), module_name(path), is_package=path.name == "__init__.py"
        )
    return found


# --- the checker itself ---------------------------------------------------------------------


def test_scan_sees_the_whole_package() -> None:
    importers = {edge.importer for edge in all_imports()}
    assert {"conveyor.core.failure", "conveyor.store.sql", "conveyor.settings"} <= importers


def test_relative_and_nested_imports_are_resolved() -> None:
    source = (
        "from . import backoff\n"
        "from ..store import sql\n"
        "def late():\n"
        "    import asyncpg\n"
        "    from conveyor import worker\n"
    )
    names = {edge.imported for edge in imports_of(source, "conveyor.core.failure")}
    assert names == {"conveyor.core.backoff", "conveyor.store.sql", "asyncpg", "conveyor.worker"}


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        ("conveyor.core.cron", "conveyor.store.sql", "conveyor.core may import only"),
        ("conveyor.core.cron", "conveyor.settings", "conveyor.core may import only"),
        ("conveyor.core.cron", "pydantic", "conveyor.core is pure"),
        ("conveyor.types", "conveyor.errors", "conveyor.types may import only itself and nothing"),
        ("conveyor.mock_llm.exchange", "conveyor.gateway.chat", "conveyor.mock_llm may import"),
        ("conveyor.store.leases", "conveyor.worker.runtime", "must not depend on a layer above"),
        ("conveyor.store.admin", "conveyor.cli", "must not depend on a layer above"),
        ("conveyor.worker.runtime", "asyncpg", "only conveyor.store may import asyncpg"),
        ("conveyor.cli", "psycopg.rows", "only conveyor.store may import psycopg"),
        ("conveyor.store.postgres", "fastapi", "only conveyor.api may import fastapi"),
        (
            "conveyor.worker.process",
            "starlette.responses",
            "only conveyor.api may import starlette",
        ),
    ],
)
def test_a_wrong_way_import_is_caught(importer: str, imported: str, rule: str) -> None:
    broken = violations([Import(importer, imported, 1)])
    assert len(broken) == 1
    assert rule in broken[0]


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("conveyor.core.failure", "conveyor.core.backoff"),
        ("conveyor.core.cron", "croniter"),
        ("conveyor.core.cron", "datetime"),
        ("conveyor.core.state_machine", "conveyor.types.TaskState"),
        ("conveyor.store.postgres", "asyncpg"),
        ("conveyor.store.periodic", "conveyor.core.cron"),
        ("conveyor.worker.runtime", "conveyor.store.postgres"),
        ("conveyor.api.app", "fastapi"),
    ],
)
def test_a_right_way_import_is_allowed(importer: str, imported: str) -> None:
    assert violations([Import(importer, imported, 1)]) == []


# --- the package ----------------------------------------------------------------------------


def test_no_module_imports_the_wrong_way() -> None:
    broken = violations(all_imports())
    assert not broken, "wrong-way imports:\n" + "\n".join(broken)
