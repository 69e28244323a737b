"""Named SQL statements: parsing the files, and the shape of every shipped statement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import conveyor
from conveyor.store.sql import parse_named_statements, q, queries

SAMPLE = """\
-- A preamble that belongs to no statement.

-- name: first_one
-- Explains the first statement.
SELECT 1 FROM t WHERE a = $1;

-- name: second
UPDATE t SET a = $1
WHERE b = $2;;
--name:third
SELECT 3
"""


def test_blocks_are_split_by_name_lines() -> None:
    assert parse_named_statements(SAMPLE) == {
        "first_one": "-- Explains the first statement.\nSELECT 1 FROM t WHERE a = $1",
        "second": "UPDATE t SET a = $1\nWHERE b = $2",
        "third": "SELECT 3",
    }


def test_text_before_the_first_name_is_ignored() -> None:
    parsed = parse_named_statements(SAMPLE)
    assert all("preamble" not in body for body in parsed.values())
    assert parse_named_statements("-- just a comment\nSELECT 1;") == {}


def test_trailing_semicolons_and_whitespace_are_stripped() -> None:
    assert parse_named_statements("-- name: a\n\n  SELECT 1 ;;  \n\n") == {"a": "SELECT 1"}


def test_a_repeated_name_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="'twice' is defined twice"):
        parse_named_statements("-- name: twice\nSELECT 1;\n-- name: twice\nSELECT 2;")


@pytest.mark.parametrize(
    "line", ["-- name: claimBatch", "-- name: two words", "-- name:", "-- name: 1st"]
)
def test_a_malformed_name_line_is_rejected_not_glued_onto_the_previous_statement(
    line: str,
) -> None:
    with pytest.raises(ValueError, match="malformed SQL name line"):
        parse_named_statements(f"-- name: ok\nSELECT 1;\n{line}\nSELECT 2;")


# --- every shipped statement ---------------------------------------------------------------

_COMMENT = re.compile(r"--[^\n]*")
_STRING = re.compile(r"'(?:[^']|'')*'")
_DOLLAR_QUOTED = re.compile(r"\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$", re.DOTALL)
_IDENTIFIER = re.compile(r'"(?:[^"]|"")*"')
_PARAMETER = re.compile(r"\$(\d+)")
# Placeholders of other drivers or of Python formatting; asyncpg speaks only $n.
_FOREIGN_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|\{\w*\}|(?<![:\w]):[A-Za-z_]\w*")


def code_only(sql: str) -> str:
    """``sql`` without comments, string literals and quoted identifiers."""
    for pattern in (_DOLLAR_QUOTED, _STRING, _IDENTIFIER, _COMMENT):
        sql = pattern.sub(" ", sql)
    return sql


def test_code_only_removes_literals_and_comments() -> None:
    sql = "SELECT '{}'::jsonb, format('%s;', $1) -- uses %s\nFROM \"we;ird\" WHERE $$a;b$$ = $2"
    stripped = code_only(sql)
    assert ";" not in stripped
    assert "%s" not in stripped
    assert "{" not in stripped
    assert _PARAMETER.findall(stripped) == ["1", "2"]


ALL_STATEMENTS = sorted(queries())


def test_statements_are_shipped() -> None:
    assert len(ALL_STATEMENTS) >= 10
    assert {"claim_batch", "finish_batch", "insert_tasks"} <= set(ALL_STATEMENTS)


@pytest.mark.parametrize("name", ALL_STATEMENTS)
def test_statement_is_one_nonempty_statement(name: str) -> None:
    code = code_only(queries()[name])
    assert code.strip(), f"{name} is empty"
    # asyncpg prepares each statement: a second one in the same text is an error at run time.
    assert ";" not in code, f"{name} holds more than one statement"


@pytest.mark.parametrize("name", ALL_STATEMENTS)
def test_statement_uses_only_numbered_parameters_without_gaps(name: str) -> None:
    code = code_only(queries()[name])
    assert not _FOREIGN_PLACEHOLDER.search(code), f"{name} has a non-$n placeholder"
    numbers = {int(n) for n in _PARAMETER.findall(code)}
    # PostgreSQL cannot infer the type of a parameter that is never referenced.
    assert numbers == set(range(1, len(numbers) + 1)), f"{name} skips a parameter: {numbers}"


def test_q_returns_the_named_statement_and_names_a_missing_one() -> None:
    assert q("claim_batch") == queries()["claim_batch"]
    with pytest.raises(KeyError, match="no_such_statement"):
        q("no_such_statement")


def _statement_names_used_in_code() -> dict[str, str]:
    """``{statement name: module path}`` of every literal ``q("...")`` call in conveyor."""
    used: dict[str, str] = {}
    root = Path(conveyor.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name | ast.Attribute)
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "q"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                used[node.args[0].value] = str(path.relative_to(root.parent))
    return used


def test_every_statement_the_code_asks_for_exists() -> None:
    used = _statement_names_used_in_code()
    assert used, "found no q(...) calls: the scan is broken"
    missing = {name: where for name, where in used.items() if name not in queries()}
    assert not missing, f"q() names statements no .sql file defines: {missing}"
