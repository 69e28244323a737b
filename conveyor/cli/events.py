"""``conveyor events ID``: print a task's event log, and follow it until the task ends.

An operator's view, read from the database (no API needed): any tenant's task. The API's
streams (docs/events.md) are the tenant-facing way to the same log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from conveyor.cli.common import DatabaseUrl, TaskId, out
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.events import ORIGIN, is_final
from conveyor.store.event_records import LogHorizon, TaskEvent
from conveyor.store.postgres import PostgresStore

POLL_SECONDS = 0.2
"""How often a followed log is read again (one process, one query: no hub needed)."""


def events(
    task_id: TaskId,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="Wait for new events until the task ends (--no-follow: print the log as "
            "it is now).",
        ),
    ] = True,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a task's events (created, started, steps, LLM calls, its own, the end)."""

    async def go(store: PostgresStore) -> None:
        record = await store.get_task(task_id)  # TaskNotFound: one line, exit status 1
        view = store.for_tenant(record.tenant_id)
        # Stop once the log's horizon has passed `mark`: without --follow, the start of
        # the command (every event committed before it is printed); with it, the moment
        # the task was seen finished (a queue with lifecycle events off writes no final
        # event). Events commit before they are readable, so a read must wait for that.
        mark = None if follow else await store.event_horizon()
        last = ORIGIN
        while True:
            complete = await _complete(store, mark)  # before the read: the read sees all
            batch = await view.task_events(task_id, last)
            for event in batch:
                _print(event, json_lines)
                last = event.position
                if is_final(event.kind):
                    return
            if len(batch) == 1000:
                continue
            if complete:
                return
            if mark is None and (await store.get_task(task_id)).state.is_terminal:
                mark = await store.event_horizon()
            await asyncio.sleep(POLL_SECONDS)

    _run(_with_store(_settings(database_url), go))


async def _complete(store: PostgresStore, mark: LogHorizon | None) -> bool:
    """Whether every transaction committed before ``mark`` was taken is readable now."""
    return mark is not None and (await store.event_horizon()).covers(mark)


def _print(event: TaskEvent, json_lines: bool) -> None:
    if json_lines:
        out.print_json(json.dumps(event.to_json(), default=str), indent=None)
        return
    attempt = f" attempt {event.attempt}" if event.attempt is not None else ""
    data = "" if event.data is None else " " + json.dumps(event.data, default=str)
    out.print(f"{event.at:%Y-%m-%d %H:%M:%S.%f} {event.kind}{attempt}{data}", markup=False)
