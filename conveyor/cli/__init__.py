"""Conveyor: run workers and the demo, and operate the queue."""

from __future__ import annotations

import platform
from typing import Annotated

import typer

import conveyor
from conveyor.cli import api, database, demo, events, mock_llm, status, tasks, worker
from conveyor.cli.common import ID_ARGUMENT
from conveyor.cli.dlq import dlq_cli
from conveyor.cli.llm import llm_cli
from conveyor.cli.plans import plans_cli
from conveyor.cli.queues import queues_cli
from conveyor.cli.tenants import tenants_cli

cli = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        # The imported package's version: the code that runs, wherever it was installed from.
        typer.echo(f"conveyor {conveyor.__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Conveyor: run workers and the demo, and operate the queue."""


cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(queues_cli, name="queues")
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(plans_cli, name="plans")
cli.add_typer(llm_cli, name="llm")
cli.add_typer(api.keys_cli, name="keys")

cli.command()(database.migrate)
cli.command()(status.status)
cli.command()(database.retention)
cli.command()(tasks.enqueue)
cli.command(context_settings=ID_ARGUMENT)(tasks.show)
cli.command(context_settings=ID_ARGUMENT)(tasks.cancel)
cli.command(context_settings=ID_ARGUMENT)(tasks.signal)
cli.command(context_settings=ID_ARGUMENT)(events.events)
cli.command()(tasks.group)
cli.command(
    "mock-llm",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(mock_llm.mock_llm)
cli.command()(worker.worker)
cli.command()(api.api)
cli.command()(demo.demo)


def main() -> None:
    """Entry point of the ``conveyor`` script."""
    cli(prog_name="conveyor")
