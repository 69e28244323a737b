"""The API's bodies of the runaway guards: caps on LLM use set at submit or on a group, and
a task's or group's caps in force with what they counted (``TaskView.caps``,
``GroupView.caps``). Shared by the server and the Python client like ``models.py``."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from conveyor.core.llm_caps import LLMCaps


class CapLimits(BaseModel):
    """Caps on LLM use (the runaway guard); a field left out is no cap on that dimension.

    A call that would cross one is refused before it is sent (``LLMCapExceeded``): the
    task fails for good, or its agent handles it. See docs/agents.md.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    calls: StrictInt | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Attempts sent to a provider (retries count)."
    )
    tokens: StrictInt | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Prompt plus completion tokens."
    )
    cost: Decimal | None = Field(
        default=None, ge=0, le=Decimal("9999999999.9999"), description="USD, a decimal string."
    )

    def caps(self) -> LLMCaps:
        """As the core value object."""
        return LLMCaps(self.calls, self.tokens, self.cost)


class CapInForce(BaseModel):
    """One cap: its limit, and who set it (role, plan, submit or group)."""

    limit: Decimal = Field(description="Calls, tokens, or USD (a decimal string).")
    source: str


class CapsView(BaseModel):
    """A task's or a group's runaway guard: the caps in force (as of the last LLM call: the
    role's and the plan's come with each call), what its attempts used, and the worst case
    its attempts in flight hold."""

    calls: CapInForce | None = None
    tokens: CapInForce | None = None
    cost: CapInForce | None = None
    used_calls: int
    used_tokens: int
    used_cost: Decimal = Field(description="USD, a decimal string.")
    in_flight_calls: int
    in_flight_tokens: int
    in_flight_cost: Decimal = Field(description="USD, a decimal string.")
