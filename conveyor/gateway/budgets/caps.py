"""The runaway guards: caps on a task run's and a group's LLM calls, tokens and money.

Before each attempt, ``CapsBudget`` reserves its worst case (one call, the prompt estimate
plus ``max_tokens``, and their price) in the task's row and the group's row of
``llm_caps``, in one statement that refuses what would cross the tightest cap of each
(``conveyor/core/llm_caps.py``): the role's (carried in the call's scope), the plan's
(the tenant's policy), and the row's own (set at submit, or when the group was created).
Concurrent attempts of one group, on any number of workers, cannot all slip under its cap.
After the attempt, the reservation goes back and what it used is counted; an attempt never
sent (a later budget refused it) is released without being counted.

A refusal raises ``LLMCapExceeded`` naming the cap, its limit, what is used and who set
it: a ``PermanentError``, so the task fails for good instead of looping into the cap again,
unless the agent catches it. A task (or group) that nothing caps costs one round trip at
its first attempt, which finds no row; that answer is remembered for ``ttl`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from conveyor.core.llm_caps import (
    CapBreach,
    CapScope,
    CapSet,
    CapSource,
    attempt_ask,
    breach,
)
from conveyor.errors import LLMCapExceeded
from conveyor.gateway.budgets.budget import BudgetAsk, Reservation
from conveyor.store.params import CapReserve, CapSettle
from conveyor.store.records import CapReservation

DEFAULT_UNCAPPED_TTL = 30.0
MAX_ENTRIES = 50_000
ATTEMPTS = 3
"""Reservations tried while a refusal finds every cap with room when it is read (other
attempts of the group settled in between); then it is raised as it is."""

HOW_TO_RAISE = {
    CapSource.ROLE: "raise caps= of the agent's @app.agent(...) and restart its workers",
    CapSource.PLAN: "raise the plan's cap (conveyor plans set PLAN --run-... / --group-...)",
    CapSource.SUBMIT: "submit it again with higher caps",
    CapSource.GROUP: "register the group again with higher caps (POST /v1/groups)",
}


class CapStore(Protocol):
    """What the caps need of the store (PostgresStore has it)."""

    async def reserve_llm_caps(self, ask: CapReserve) -> CapReservation: ...

    async def settle_llm_caps(self, done: CapSettle) -> None: ...


@dataclass(frozen=True, slots=True)
class _Held:
    tenant_id: str
    keys: tuple[tuple[CapScope, str], ...]
    tokens: int
    cost: Decimal


class CapsBudget:
    """The ``Budget`` of the runaway guards (per task run and per group)."""

    def __init__(
        self,
        store: CapStore,
        *,
        ttl: float = DEFAULT_UNCAPPED_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._no_caps: dict[tuple[str, CapScope, str], float] = {}

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """Reserve the attempt's worst case in its run and group, or raise LLMCapExceeded."""
        scope, tenant = ask.scope, ask.tenant_id
        if not tenant:
            return Reservation(ask)
        plan_run = ask.policy.run_caps if ask.policy is not None else None
        plan_group = ask.policy.group_caps if ask.policy is not None else None
        run = CapSet.tightest(
            CapScope.RUN, [(CapSource.ROLE, scope.run_caps), (CapSource.PLAN, plan_run)]
        )
        group = CapSet.tightest(CapScope.GROUP, [(CapSource.PLAN, plan_group)])
        task_id, group_id = scope.task_id, scope.group_id
        if task_id is not None and run.empty and self._uncapped(tenant, CapScope.RUN, task_id):
            task_id = None
        if (
            group_id is not None
            and group.empty
            and self._uncapped(tenant, CapScope.GROUP, group_id)
        ):
            group_id = None
        if task_id is None and group_id is None:
            return Reservation(ask)
        request = CapReserve(
            tenant, task_id, group_id, ask.provider, ask.model, ask.prompt_tokens,
            ask.max_tokens, run, group,
        )  # fmt: skip
        attempt = 1
        while True:
            got = await self._store.reserve_llm_caps(request)
            self._remember(tenant, request, got)
            if got.ok:
                return self._held(ask, tenant, request, got)
            found = _explain(ask, request, got)
            if found is not None:
                raise _error(ask, tenant, found)
            if attempt == ATTEMPTS:  # refused, yet every cap has room: the counters moved
                raise LLMCapExceeded(
                    tenant,
                    ask.provider,
                    f"task {scope.task_id} kept being refused by an LLM cap of its run or "
                    "group whose room other calls took and gave back meanwhile",
                    scope="run" if got.run_status == "refused" else "group",
                    dimension="calls",
                    limit=None,
                    used=None,
                    needed=None,
                    source="unknown",
                )
            attempt += 1

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Give the reservation back and count the attempt: one call and these tokens."""
        await self._finish(reservation, max(prompt_tokens, 0), max(completion_tokens, 0), True)

    async def release(self, reservation: Reservation) -> None:
        """Give back the reservation of an attempt never sent, counting nothing."""
        await self._finish(reservation, 0, 0, False)

    async def _finish(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, sent: bool
    ) -> None:
        if not reservation.holds:
            return
        held = reservation.holds[0]
        assert isinstance(held, _Held)
        ask = reservation.ask
        await self._store.settle_llm_caps(
            CapSettle(
                tenant_id=held.tenant_id,
                held=tuple((scope.value, key) for scope, key in held.keys),
                provider=ask.provider,
                model=ask.model,
                reserved_tokens=held.tokens,
                reserved_cost=held.cost,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                sent=sent,
            )
        )

    def _held(
        self, ask: BudgetAsk, tenant: str, request: CapReserve, got: CapReservation
    ) -> Reservation:
        keys: list[tuple[CapScope, str]] = []
        if got.run_status == "ok" and request.task_id is not None:
            keys.append((CapScope.RUN, str(request.task_id)))
        if got.group_status == "ok" and request.group_id is not None:
            keys.append((CapScope.GROUP, request.group_id))
        if not keys:
            return Reservation(ask)
        return Reservation(ask, (_Held(tenant, tuple(keys), ask.estimated_tokens, got.estimate),))

    def _uncapped(self, tenant: str, scope: CapScope, key: object) -> bool:
        until = self._no_caps.get((tenant, scope, str(key)))
        return until is not None and until > self._clock()

    def _remember(self, tenant: str, request: CapReserve, got: CapReservation) -> None:
        """Remember which scopes have no row and no cap: their next attempts skip the trip."""
        if len(self._no_caps) >= MAX_ENTRIES:
            self._no_caps.clear()
        until = self._clock() + self._ttl
        if request.task_id is not None and got.run_status == "none":
            self._no_caps[(tenant, CapScope.RUN, str(request.task_id))] = until
        if request.group_id is not None and got.group_status == "none":
            self._no_caps[(tenant, CapScope.GROUP, request.group_id)] = until


def _explain(ask: BudgetAsk, request: CapReserve, got: CapReservation) -> CapBreach | None:
    """The cap the refused attempt would cross, with the rows' own caps counted in."""
    need = attempt_ask(ask.estimated_tokens, got.estimate)
    if got.run_status == "refused":
        return breach(request.run.tightened(CapSource.SUBMIT, got.run_caps), got.run_used, need)
    group = request.group.tightened(CapSource.GROUP, got.group_caps)
    return breach(group, got.group_used, need)


def _error(ask: BudgetAsk, tenant: str, found: CapBreach) -> LLMCapExceeded:
    cap, scope = found.cap, ask.scope
    whose = f"task {scope.task_id}"
    if cap.scope is CapScope.GROUP:
        whose += f" of group {scope.group_id!r}"
    reason = (
        f"{whose}: {found.describe()} ({ask.provider}/{ask.model}). The task fails for good, "
        f"as a retry would loop into the same cap: {HOW_TO_RAISE[cap.source]} and replay it "
        "from the dead-letter queue, or catch LLMCapExceeded in the agent"
    )
    return LLMCapExceeded(
        tenant,
        ask.provider,
        reason,
        scope=cap.scope.value,
        dimension=cap.dimension.value,
        limit=cap.limit,
        used=found.used,
        needed=found.needed,
        source=cap.source.value,
    )
