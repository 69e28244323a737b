"""Declared queues: which queue names something is going to serve.

A task for a queue that no worker serves, and that no plan, override, schedule or
operator names, waits forever without an error; a typo in a queue name looks exactly like
that. Submitters that take names from people (``conveyor enqueue`` today, the HTTP API
once it exists) check them here first. The rule itself is one statement, ``queue_declarations`` in
``queries/declarations.sql``; enqueue does not apply it, so code that submits work before
its workers ever started (a fresh deployment) keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from conveyor.errors import UndeclaredQueue
from conveyor.store.connection import Conn
from conveyor.store.records import QueueDeclaration
from conveyor.store.sql import q


async def queue_declarations(
    conn: Conn, names: Sequence[str] | None = None
) -> list[QueueDeclaration]:
    """Declared queues (all, or those of ``names``) with what declares each, by name."""
    rows = await conn.fetch(q("queue_declarations"), None if names is None else list(names))
    return [QueueDeclaration(row["name"], tuple(row["sources"])) for row in rows]


async def declare_queues(conn: Conn, names: Sequence[str]) -> list[str]:
    """Declare ``names`` (an operator's say-so); returns those that had no row yet."""
    rows = await conn.fetch(q("declare_queues"), list(names))
    return sorted(row["name"] for row in rows)


async def require_declared(conn: Conn, names: Sequence[str]) -> None:
    """Raise UndeclaredQueue naming every queue of ``names`` that nothing declares."""
    declared = {d.name for d in await queue_declarations(conn, names)}
    missing = sorted(set(names) - declared)
    if not missing:
        return
    known = [d.name for d in await queue_declarations(conn)]
    close = {
        name: match[0]
        for name in missing
        if (match := difflib.get_close_matches(name, known, n=1, cutoff=0.75))
    }
    raise UndeclaredQueue(missing, close)
