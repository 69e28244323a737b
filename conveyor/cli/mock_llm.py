"""``conveyor mock-llm``: the fake LLM provider, its own flags parsed by its own command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer


def mock_llm(ctx: typer.Context) -> None:
    """A fake OpenAI, Anthropic and Ollama provider with latency and faults (docs/mock_llm.md).

    Run `conveyor mock-llm --help` for its flags.
    """
    # Imported here: the mock's HTTP server (aiohttp) is not needed by any other command.
    from conveyor.mock_llm.cli import mock_llm_command

    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command.command()(checked_port(mock_llm_command))
    command(args=ctx.args, prog_name="conveyor mock-llm")


def checked_port(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` refusing a ``port`` outside 0-65535 as a usage error.

    Without this, --port 99999 reached ``socket.bind`` and ended in an OverflowError
    traceback. The signature is kept (``functools.wraps``), so typer builds the same flags.
    """

    @functools.wraps(command)
    def run(**flags: Any) -> None:
        port = flags.get("port")
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise typer.BadParameter(
                f"{port} is not a TCP port: use 1-65535, or 0 for any free port",
                param_hint="--port",
            )
        command(**flags)

    return run
