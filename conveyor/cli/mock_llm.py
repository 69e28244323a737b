"""``conveyor mock-llm``: the fake LLM provider, its own flags parsed by its own command."""

from __future__ import annotations

import typer


def mock_llm(ctx: typer.Context) -> None:
    """A fake OpenAI, Anthropic and Ollama provider with latency and faults (docs/mock_llm.md).

    Run `conveyor mock-llm --help` for its flags.
    """
    # Imported here: the mock's HTTP server (aiohttp) is not needed by any other command.
    from conveyor.gateway.mock.cli import mock_llm_command

    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command.command()(mock_llm_command)
    command(args=ctx.args, prog_name="conveyor mock-llm")
