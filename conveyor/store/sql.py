"""Named SQL statements, loaded once from ``queries/*.sql``.

Each statement in a file starts with a ``-- name: some_name`` line; the statement runs until
the next name line. Keeping SQL in files makes every statement reviewable on its own and keeps
user input out of SQL text: all values travel as bind parameters.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# Any line that looks like a name line; one the strict pattern misses (a typo such as
# `-- name: claimBatch`) would otherwise glue its statement onto the one above.
_ANY_NAME_LINE = re.compile(r"^--\s*name:.*$", re.MULTILINE)


def parse_named_statements(text: str) -> dict[str, str]:
    """Split ``text`` into ``{name: statement}``; raise ValueError on a repeated or bad name."""
    statements: dict[str, str] = {}
    matches = list(_NAME_LINE.finditer(text))
    for line in _ANY_NAME_LINE.finditer(text):
        if not _NAME_LINE.fullmatch(line.group()):
            raise ValueError(
                f"malformed SQL name line {line.group()!r}: use '-- name: lower_snake_case'"
            )
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip().rstrip(";").strip()
        name = match["name"]
        if name in statements:
            raise ValueError(f"SQL statement {name!r} is defined twice")
        statements[name] = body
    return statements


@cache
def queries() -> dict[str, str]:
    """Every named statement of ``conveyor/store/queries``."""
    found: dict[str, str] = {}
    folder = resources.files("conveyor.store") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, body in parse_named_statements(entry.read_text("utf-8")).items():
                if name in found:
                    raise ValueError(f"SQL statement {name!r} is defined in two files")
                found[name] = body
    return found


def q(name: str) -> str:
    """The statement called ``name``; a KeyError names the missing statement."""
    return queries()[name]
