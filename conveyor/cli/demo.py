"""``conveyor demo``: the agency demo on the embedded server or DATABASE_URL."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import DatabaseUrl, out
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings


def demo(
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="Tasks to submit.")] = 2000,
    tenants: Annotated[int, typer.Option("--tenants", min=1, help="Tenants to simulate.")] = 12,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the agency demo: submit a multi-tenant batch, process it, show what happened."""
    from conveyor.demo import run_demo

    _run(run_demo(_settings(database_url), tasks=tasks, tenants=tenants, console=out))
