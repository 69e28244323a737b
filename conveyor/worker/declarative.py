"""Running a declarative agent: render the prompt, stream the reply, validate, repair once.

A ``DeclarativeAgent`` is the handler of one role (``run`` is what the App registers); it
holds the definition in force, which the registry (``declarative_registry.py``) swaps when
a new version is stored. A run reads the definition once at its start, so a run and its
repair use one version, and that version is what the result records.

The model is called through ``ctx.llm.stream`` like any agent's call: budgets, breakers,
fallbacks and accounting apply, each chunk keeps the task's stall clock fresh and reaches
the gateway's ``on_chunk`` hooks (the task's event stream).

A run ends as:

- ``{"output": <the reply as JSON>, "agent": {"role", "version", "model", "repaired"}}``
  when the reply (or its one repair) matches the output schema; without a schema the
  output is the reply's text;
- ``InvalidAgentReply`` (permanent: the task goes to the dead-letter queue) when the
  repair fails too; the message names the version and lists the validation errors;
- ``PermanentError`` when the payload cannot be rendered (a field the template uses is
  missing: the API refuses such a submit, but a task enqueued another way may have one).

LLM errors propagate as from any agent: retried by the agent's policy unless permanent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.core.agent_definition import AgentDefinition
from conveyor.core.prompt_template import TemplateProblem
from conveyor.core.reply_schema import repair_request
from conveyor.errors import InvalidAgentReply, PermanentError

if TYPE_CHECKING:
    from conveyor.gateway.chat import ChatResult, Message
    from conveyor.worker.context import TaskContext

MAX_REPLY_IN_ERROR = 500
"""Characters of the last invalid reply kept in the task's last error."""


@dataclass(frozen=True, slots=True)
class Version:
    """A definition and the stored version it is."""

    number: int
    definition: AgentDefinition


class DeclarativeAgent:
    """The handler of one declarative role; ``current`` is the version new runs use."""

    def __init__(self, role: str, current: Version) -> None:
        self.role = role
        self.current = current

    async def run(self, ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        """One run: the App calls this as the role's handler."""
        version = self.current  # one version for the whole run, repair included
        definition = version.definition
        where = f"agent {self.role!r} v{version.number}"
        try:
            messages: list[Message] = list(definition.messages(payload))
        except TemplateProblem as exc:
            raise PermanentError(f"{where}: the payload does not fit the prompt: {exc}") from None
        reply = await _complete(ctx, definition, messages)
        meta = {
            "role": self.role,
            "version": version.number,
            "model": f"{reply.provider}/{reply.model}",
            "repaired": False,
        }
        if definition.schema is None:
            return {"output": reply.text, "agent": meta}
        value, problems = definition.schema.problems(reply.text)
        if not problems:
            return {"output": value, "agent": meta}
        ctx.log.info("agent_reply_invalid", version=version.number, problems=problems)
        repair = [
            *messages,
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": repair_request(problems, definition.schema)},
        ]
        reply = await _complete(ctx, definition, repair)
        value, problems = definition.schema.problems(reply.text)
        if problems:
            raise InvalidAgentReply(
                f"{where}: the reply does not match the output schema, after one repair: "
                f"{'; '.join(problems)} (last reply: {reply.text[:MAX_REPLY_IN_ERROR]!r})",
                problems,
            )
        meta.update(model=f"{reply.provider}/{reply.model}", repaired=True)
        return {"output": value, "agent": meta}


async def _complete(
    ctx: TaskContext, definition: AgentDefinition, messages: list[Message]
) -> ChatResult:
    """Stream one reply through the gateway; its whole result."""
    async with ctx.llm.stream(
        model=definition.model,
        messages=messages,
        max_tokens=definition.max_tokens,
        temperature=definition.temperature,
    ) as stream:
        async for chunk in stream:
            if chunk.result is not None:
                return chunk.result
    raise PermanentError("the LLM stream ended without a result")  # pragma: no cover
