"""CLI errors print their message as it is: brackets in it are text, not rich markup."""

from __future__ import annotations

import pytest

from conveyor.cli.common import print_error


@pytest.mark.parametrize(
    "message",
    [
        "queues ['a', 'b'] are not declared",
        "payload field [bold] is missing",
        "a closing tag [/red] alone",
    ],
)
def test_brackets_in_an_error_are_printed_as_they_are(
    message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    print_error(message)
    printed = capsys.readouterr().err
    assert printed.replace("\n", " ").strip() == f"error: {message}"
