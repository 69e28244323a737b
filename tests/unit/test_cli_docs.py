"""The command list in docs/operations.md names every command the CLI has, and no other."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from conveyor.cli import cli

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def command_names() -> set[str]:
    """``migrate``, ``dlq list``, ...: every leaf command of the ``conveyor`` app."""
    root = typer.main.get_command(cli)
    names = set()
    for name, command in getattr(root, "commands", {}).items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            names |= {f"{name} {sub}" for sub in subcommands}
        else:
            names.add(name)
    return names


def documented_names() -> set[str]:
    text = OPERATIONS.read_text("utf-8")
    paragraph = text[text.index("The command has these subcommands:") :].split("\n\n")[0]
    listed = paragraph.split("`conveyor COMMAND --help`")[0]
    return set(re.findall(r"`([a-z][a-z -]*)`", listed))


def test_operations_md_lists_every_command() -> None:
    assert len(command_names()) > 20  # the walk found the groups' commands
    assert documented_names() == command_names()
