"""``python -m conveyor.mock_llm``: the ``conveyor mock-llm`` command on its own."""

from __future__ import annotations

import typer

from conveyor.mock_llm.cli import mock_llm_command

if __name__ == "__main__":
    typer.run(mock_llm_command)
