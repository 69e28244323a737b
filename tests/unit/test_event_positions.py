"""Event positions and kinds (core/events.py): text form, order, reserved kinds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.events import (
    CHUNK_SEQ_MAX,
    FINAL_KINDS,
    LIFECYCLE_KINDS,
    EventPosition,
    check_agent_kind,
    is_final,
    parse_chunk_cursor,
)

ints = st.integers(min_value=0, max_value=2**63 - 1)


@given(ints, ints)
def test_a_position_parses_back_from_its_text(xid: int, event_id: int) -> None:
    position = EventPosition(xid, event_id)
    assert EventPosition.parse(str(position)) == position


@given(ints, ints, ints, ints)
def test_positions_order_by_transaction_then_id(a: int, b: int, c: int, d: int) -> None:
    assert (EventPosition(a, b) < EventPosition(c, d)) == ((a, b) < (c, d))


@pytest.mark.parametrize(
    "text", ["", "12", "1-", "-1", "a-b", "1-2-3", "1.2", "99999999999999999999-1", "1 -2"]
)
def test_a_malformed_position_is_refused_with_its_form(text: str) -> None:
    with pytest.raises(ValueError, match="event id"):
        EventPosition.parse(text)


def test_surrounding_blanks_are_ignored() -> None:
    assert EventPosition.parse(" 5-7 ") == EventPosition(5, 7)


@given(st.from_regex(r"[a-z][a-z0-9_.-]{0,62}", fullmatch=True))
def test_an_agent_may_emit_any_plain_kind_but_lifecycle_ones(kind: str) -> None:
    if kind in LIFECYCLE_KINDS:
        with pytest.raises(ValueError, match="written by Conveyor"):
            check_agent_kind(kind)
    else:
        assert check_agent_kind(kind) == kind


@pytest.mark.parametrize("kind", ["", "Progress", "1st", "a" * 64, "with space", "é"])
def test_a_malformed_kind_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="event kind"):
        check_agent_kind(kind)


def test_final_kinds_end_a_task_s_log() -> None:
    assert FINAL_KINDS <= LIFECYCLE_KINDS
    assert all(is_final(kind) for kind in FINAL_KINDS)
    assert not is_final("started") and not is_final("progress")


def test_a_chunk_cursor_holds_what_the_chunk_table_can() -> None:
    assert parse_chunk_cursor(f"{2**63 - 1}-{CHUNK_SEQ_MAX}") == (2**63 - 1, CHUNK_SEQ_MAX)
    # a larger seq cannot be a chunk's: refused here (a 422), not by the hub's shared read
    with pytest.raises(ValueError, match="out of range"):
        parse_chunk_cursor(f"1-{CHUNK_SEQ_MAX + 1}")
