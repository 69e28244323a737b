"""``conveyor enqueue``, ``show``, ``cancel``, ``signal`` and ``group``: one task, or one
campaign."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    INT32_MAX,
    INT64_MAX,
    SPEND_MAX,
    DatabaseUrl,
    TaskId,
    counter_document,
    out,
)
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.agent_definition import AgentDefinition
from conveyor.core.durations import parse_duration
from conveyor.core.llm_caps import CapScope, LLMCaps
from conveyor.core.prompt_template import MissingField, TemplateProblem
from conveyor.core.waits import check_signal_name
from conveyor.errors import ConveyorError, UndeclaredQueue
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import CapCounter, GroupStatus


def enqueue(
    queue: Annotated[str, typer.Argument(help="The agent role, e.g. copywriter.")],
    payload: Annotated[str, typer.Option("--payload", help="JSON object.")] = "{}",
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    priority: Annotated[int, typer.Option("--priority", help="1 urgent .. 10 batch.")] = 5,
    delay: Annotated[str | None, typer.Option("--delay", help="Start later, e.g. 30s.")] = None,
    key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", max=INT32_MAX, help="Default: the agent's policy."),
    ] = None,
    cap_calls: Annotated[
        int | None,
        typer.Option("--cap-calls", min=0, max=INT64_MAX, help="Cap on its LLM calls."),
    ] = None,
    cap_tokens: Annotated[
        int | None,
        typer.Option("--cap-tokens", min=0, max=INT64_MAX, help="Cap on its LLM tokens."),
    ] = None,
    cap_cost: Annotated[
        float | None,
        typer.Option("--cap-cost", min=0, max=SPEND_MAX, help="Cap on its LLM spend in USD."),
    ] = None,
    allow_undeclared: Annotated[
        bool,
        typer.Option(
            "--allow-undeclared",
            help="Submit even if nothing declares QUEUE yet (workers not deployed so far).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Submit one task and print its id.

    QUEUE must be declared (conveyor queues list): by a worker that served it, a plan, a
    tenant override, a periodic task or `conveyor queues declare`. A typo would otherwise
    wait forever. For a declarative agent, the payload must render into its prompt.
    """
    body = _json_object(payload)
    try:
        run_at = datetime.now(UTC) + parse_duration(delay) if delay else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--delay") from None
    except OverflowError:
        raise typer.BadParameter(f"{delay} is past the year 9999", param_hint="--delay") from None
    try:
        task = NewTask(
            queue=queue,
            payload=body,
            tenant_id=tenant,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            idempotency_key=key,
            llm_caps=LLMCaps(
                cap_calls, cap_tokens, None if cap_cost is None else Decimal(str(cap_cost))
            ),
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def go(store: PostgresStore) -> None:
        if not allow_undeclared:
            try:
                await store.require_declared_queues([task.queue])
            except UndeclaredQueue as exc:
                raise ConveyorError(f"{exc}, or submit it anyway (--allow-undeclared)") from None
        await check_declarative_payload(store, task.queue, task.payload)
        result = await store.enqueue(task)
        out.print(f"{result.task_id} {'created' if result.created else 'already existed'}")

    _run(_with_store(_settings(database_url), go))


def _json_object(text: str) -> dict[str, Any]:
    """The --payload text as a dict; strict JSON (PostgreSQL refuses NaN and Infinity)."""
    body = _json(text, "--payload")
    if not isinstance(body, dict):
        raise typer.BadParameter(
            f'must be a JSON object such as \'{{"brief": "spring sale"}}\', got {text!r}',
            param_hint="--payload",
        )
    return body


def _json(text: str, flag: str) -> Any:
    """Strict JSON (PostgreSQL refuses NaN and Infinity), or an error naming ``flag``."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON (PostgreSQL refuses it); use null or a string")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=flag) from None


def show(task_id: TaskId, database_url: DatabaseUrl = None) -> None:
    """Print one task (active or finished) as JSON, with ``llm_caps``: its caps in force
    (who set each) and the LLM calls, tokens and USD they counted (null: uncapped)."""

    async def go(store: PostgresStore) -> None:
        record = await store.get_task(task_id)
        counter = await store.llm_cap_counter(record.tenant_id, CapScope.RUN, str(task_id))
        document = {**asdict(record), "llm_caps": counter_document(counter)}
        out.print_json(json.dumps(document, default=str))

    _run(_with_store(_settings(database_url), go))


def cancel(task_id: TaskId, database_url: DatabaseUrl = None) -> None:
    """Cancel a task: at once if it waits, by asking its worker if it runs."""

    async def go(store: PostgresStore) -> None:
        state = await store.cancel(task_id, reason="cancelled from the CLI")
        out.print(
            f"task {task_id}: {'cancel requested (running)' if state == 'running' else state}"
        )

    _run(_with_store(_settings(database_url), go))


def signal(
    task_id: TaskId,
    name: Annotated[str, typer.Argument(help="The signal's name, as in ctx.wait_for(NAME).")],
    data: Annotated[
        str, typer.Option("--data", help="The payload: any JSON document (default null).")
    ] = "null",
    database_url: DatabaseUrl = None,
) -> None:
    """Deliver signal NAME to a task (any tenant's): a task waiting for it resumes.

    The first signal of a name holds: the same --data again changes nothing, other data is
    refused, as is a signal to a finished task or after the wait timed out.
    """
    payload = _json(data, "--data")
    try:
        check_signal_name(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from None

    async def go(store: PostgresStore) -> None:
        sent = await store.deliver_signal(task_id, name, payload)
        if sent.duplicate:
            what = "already delivered with this data; nothing changed"
        elif sent.resumed:
            what = "delivered; the task resumes"
        else:
            what = f"delivered; kept for when the task waits for it (now {sent.state})"
        out.print(f"task {task_id}: signal {name!r} {what}")

    _run(_with_store(_settings(database_url), go))


def group(
    group_id: str,
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    database_url: DatabaseUrl = None,
) -> None:
    """A campaign's tasks by state, its completion, and its LLM caps with what they counted."""

    async def go(store: PostgresStore) -> tuple[GroupStatus, CapCounter | None]:
        status = await store.group_status(tenant, group_id)
        return status, await store.llm_cap_counter(tenant, CapScope.GROUP, group_id)

    status, counter = _run(_with_store(_settings(database_url), go))
    counts = ", ".join(f"{state.value} {n}" for state, n in sorted(status.counts.items()))
    done = f"completed {status.completed_at:%Y-%m-%d %H:%M:%S}" if status.completed_at else "open"
    follow = f", follow-up task {status.follow_up_id}" if status.follow_up_id else ""
    out.print(f"group {group_id} ({tenant}): {counts or 'no tasks yet'}; {done}{follow}")
    if counter is not None:
        out.print(f"LLM caps: {json.dumps(counter_document(counter))}")


async def check_declarative_payload(
    store: PostgresStore, queue: str, payload: dict[str, Any]
) -> None:
    """Refuse, as the API does, a payload a declarative role's prompt template cannot render."""
    stored = await store.agent_definition(queue)
    if stored is None:
        return
    try:
        AgentDefinition.from_document(queue, stored.definition).check_payload(payload)
    except MissingField as exc:
        raise ConveyorError(
            f"--payload: {exc.field}: {exc}, which the prompt template of agent {queue!r} "
            f"(version {stored.version}) uses"
        ) from None
    except TemplateProblem as exc:
        raise ConveyorError(
            f"--payload: does not render into the prompt of agent {queue!r} "
            f"(version {stored.version}): {exc}"
        ) from None
