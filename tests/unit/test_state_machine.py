"""The task state machine: complete, terminating, and in step with the SQL schema."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.state_machine import INITIAL_STATES, TRANSITIONS, is_legal, reachable_from
from conveyor.store.sql import queries
from conveyor.types import ACTIVE_STATES, TERMINAL_STATES, TaskState

S = TaskState
ALL_STATES = frozenset(TaskState)
states = st.sampled_from(sorted(TaskState))

# The only edge out of a terminal state: replaying a dead task from the dead-letter queue.
REPLAY = (S.DEAD, S.QUEUED)


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(TRANSITIONS) == ALL_STATES
    for targets in TRANSITIONS.values():
        assert targets <= ALL_STATES


def test_terminal_and_active_states_partition_all_states() -> None:
    assert TERMINAL_STATES | ACTIVE_STATES == ALL_STATES
    assert not TERMINAL_STATES & ACTIVE_STATES
    assert {s for s in TaskState if s.is_terminal} == TERMINAL_STATES


def test_terminal_states_only_leave_by_replay() -> None:
    edges = {(s, t) for s in TaskState if s.is_terminal for t in TRANSITIONS[s]}
    assert edges == {REPLAY}


def test_active_states_can_always_move() -> None:
    for state in ACTIVE_STATES:
        assert TRANSITIONS[state], f"{state} is a dead end outside task_history"


def test_no_state_moves_to_itself() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets


def test_initial_states_are_active() -> None:
    assert INITIAL_STATES
    assert INITIAL_STATES <= ACTIVE_STATES


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_a_terminal_state_is_reachable_from_every_active_state(state: TaskState) -> None:
    # Not only "some" terminal state: every way a task can end must stay possible.
    assert reachable_from(state) >= TERMINAL_STATES


def test_every_state_is_reachable_from_an_initial_state() -> None:
    reached = set(INITIAL_STATES)
    for state in INITIAL_STATES:
        reached |= reachable_from(state)
    assert reached == ALL_STATES


def test_succeeded_and_cancelled_are_final() -> None:
    assert reachable_from(S.SUCCEEDED) == frozenset()
    assert reachable_from(S.CANCELLED) == frozenset()


@given(states)
def test_reachable_set_is_closed_under_transitions(state: TaskState) -> None:
    reached = reachable_from(state)
    assert TRANSITIONS[state] <= reached
    for other in reached:
        assert TRANSITIONS[other] <= reached


@given(states, states)
def test_is_legal_agrees_with_the_table(source: TaskState, target: TaskState) -> None:
    assert is_legal(source, target) == (target in TRANSITIONS[source])
    if is_legal(source, target):
        assert target in reachable_from(source)


@given(st.sampled_from(sorted(INITIAL_STATES)), st.lists(st.integers(0, 10), max_size=60))
def test_random_walks_stay_legal_and_in_one_table(start: TaskState, choices: list[int]) -> None:
    """Follow legal edges at random and mirror where the row lives (hot table or history).

    A task must always be in exactly one of the two tables, move between them only on an
    edge that crosses the terminal boundary, and never reach a state reachable_from denies.
    """
    state = start
    in_history = False
    allowed = reachable_from(start) | {start}
    for choice in choices:
        targets = sorted(TRANSITIONS[state])
        if not targets:
            assert state.is_terminal
            break
        target = targets[choice % len(targets)]
        assert is_legal(state, target)
        assert target in allowed
        if target.is_terminal != state.is_terminal:
            # Crossing the boundary is a move between tables: into history, or a replay out.
            in_history = target.is_terminal
            assert in_history or (state, target) == REPLAY
        state = target
        assert in_history == state.is_terminal


# --- the SQL schema and statements agree with the table --------------------------------------

_STATE_CHECK = re.compile(
    r"CREATE TABLE (?P<table>\w+) \((?P<body>.*?)\n\)", re.DOTALL | re.IGNORECASE
)
_STATE_VALUES = re.compile(
    r"^\s*state\s+text\b[^\n]*CHECK \(state IN \((?P<values>[^)]*)\)\)", re.M
)


_ALTERED_CHECK = re.compile(
    r"ALTER TABLE (?P<table>\w+) ADD CONSTRAINT \w+\s+CHECK \(state IN \((?P<values>[^)]*)\)\)",
    re.IGNORECASE,
)


def _state_checks(sql: str) -> dict[str, frozenset[str]]:
    """Each table's state check: from its CREATE TABLE, replaced by any later
    ``ALTER TABLE ... ADD CONSTRAINT ... CHECK (state IN (...))`` (0015 added 'waiting')."""
    checks = {}
    for table in _STATE_CHECK.finditer(sql):
        found = _STATE_VALUES.search(table["body"])
        if found is not None:
            checks[table["table"]] = frozenset(re.findall(r"'([a-z_]+)'", found["values"]))
    for altered in _ALTERED_CHECK.finditer(sql):
        checks[altered["table"]] = frozenset(re.findall(r"'([a-z_]+)'", altered["values"]))
    return checks


def _migrations_sql() -> str:
    folder = resources.files("conveyor.store") / "migrations"
    files = sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))
    return "\n".join((folder / name).read_text("utf-8") for name in files)


@pytest.mark.parametrize("source", ["migrations", "schema.sql"])
def test_table_checks_split_states_into_active_and_terminal(source: str) -> None:
    if source == "migrations":
        sql = _migrations_sql()
    else:
        sql = (resources.files("conveyor.store") / source).read_text("utf-8")
    checks = _state_checks(sql)
    assert checks["tasks"] == {s.value for s in ACTIVE_STATES}
    assert checks["task_history"] == {s.value for s in TERMINAL_STATES}


def test_state_check_parser_reads_a_table() -> None:
    sql = "CREATE TABLE t (\n    id int,\n    state text NOT NULL CHECK (state IN ('a', 'b'))\n);"
    assert _state_checks(sql) == {"t": frozenset({"a", "b"})}
    widened = (
        sql + "\nALTER TABLE t ADD CONSTRAINT t_state_check\n    CHECK (state IN ('a', 'b', 'c'));"
    )
    assert _state_checks(widened) == {"t": frozenset({"a", "b", "c"})}


# Each statement that changes a task's state, with the edges it performs. The source state
# must appear in the statement (it only matches rows in that state) and each edge be legal.
# Matching the lease token stands for 'running': only a claim sets a token, and every way
# out of 'running' clears it (see leases.sql).
STATEMENT_EDGES: dict[str, set[tuple[TaskState, TaskState]]] = {
    "claim_batch": {(S.QUEUED, S.RUNNING)},
    "promote_due": {(S.SCHEDULED, S.QUEUED)},
    "retry_batch": {(S.RUNNING, S.SCHEDULED), (S.RUNNING, S.QUEUED)},
    "release_leases": {(S.RUNNING, S.QUEUED)},
    "finish_batch": {(S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.DEAD), (S.RUNNING, S.CANCELLED)},
    "cancel_waiting": {
        (S.SCHEDULED, S.CANCELLED),
        (S.QUEUED, S.CANCELLED),
        (S.WAITING, S.CANCELLED),
    },
    "suspend_leases": {(S.RUNNING, S.WAITING)},
    "wake_signalled": {(S.WAITING, S.SCHEDULED)},
    "wake_on_signal": {(S.WAITING, S.SCHEDULED)},
    "expire_waits": {(S.WAITING, S.SCHEDULED)},
    "reap_expired_leases": {(S.RUNNING, S.QUEUED), (S.RUNNING, S.DEAD), (S.RUNNING, S.CANCELLED)},
    "replay_dead": {REPLAY},
}


def _function_body(name: str) -> str:
    """The source of a plpgsql function of schema.sql (the claim lives in one)."""
    sql = (resources.files("conveyor.store") / "schema.sql").read_text("utf-8")
    start = sql.index(f"CREATE FUNCTION {name}(")
    return sql[start : sql.index("$fn$;", start)]


def test_the_claim_statement_is_the_claim_function() -> None:
    assert "conveyor_claim_v2(" in queries()["claim_batch"]
    assert "conveyor_claim_queue_v2(" in _function_body("conveyor_claim_v2")


@pytest.mark.parametrize("name", sorted(STATEMENT_EDGES))
def test_state_changing_statements_perform_only_legal_edges(name: str) -> None:
    statement = queries()[name]
    if name == "claim_batch":
        statement = _function_body("conveyor_claim_queue_v2")
    for source, target in STATEMENT_EDGES[name]:
        assert is_legal(source, target), f"{name}: {source} -> {target} is not in TRANSITIONS"
        filters = f"'{source.value}'" in statement or (
            source is S.RUNNING and "lease_token = " in statement
        )
        assert filters, f"{name} does not filter on {source}"


@pytest.mark.parametrize(
    "name", ["retry_batch", "release_leases", "reap_expired_leases", "suspend_leases"]
)
def test_every_way_out_of_running_that_keeps_the_row_clears_the_token(name: str) -> None:
    # Lease statements match on the token alone; a token left behind on a queued row would
    # let a stale worker finish a task it no longer holds.
    assert "lease_token = NULL" in queries()[name]
