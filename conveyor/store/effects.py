"""The effects ledger: results of side effects and durable steps, run once per key.

A key is owned while its effect runs: ``begin_effect`` either returns the recorded result,
makes the caller's lease the owner, or says another running lease owns it (wait and ask
again). An owner that disappears (its task crashed, was retried or finished) is taken over,
so a crash never wedges a key; a failed effect is abandoned so the next attempt runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.errors import StoreError
from conveyor.store.connection import Conn, mark_users_error
from conveyor.store.params import EffectOwner
from conveyor.store.records import EffectRecord, EffectStatus
from conveyor.store.sql import q


async def begin_effect(conn: Conn, owner: EffectOwner) -> EffectRecord:
    """Look the key up and take it if nobody holds it (or its holder is gone)."""
    args = (owner.tenant_id, owner.key, owner.task_id, owner.lease_token)
    for _ in range(5):  # each pass loses a race to a change it then sees
        if await conn.fetchval(q("claim_effect"), *args) is not None:
            return EffectRecord(EffectStatus.OWNED)
        row = await conn.fetchrow(q("read_effect"), owner.tenant_id, owner.key)
        if row is None:
            continue  # abandoned meanwhile: try to claim again
        if row["state"] == "done":
            return EffectRecord(EffectStatus.DONE, row["result"])
        if (row["task_id"], row["lease_token"]) == (owner.task_id, owner.lease_token):
            return EffectRecord(EffectStatus.OWNED)
        if row["owner_running"]:
            return EffectRecord(EffectStatus.BUSY)
        taken = await conn.fetchval(q("take_over_effect"), *args, row["lease_token"])
        if taken is not None:
            return EffectRecord(EffectStatus.OWNED)
    return EffectRecord(EffectStatus.BUSY)


async def complete_effect(conn: Conn, owner: EffectOwner, result: Any) -> EffectRecord:
    """Record the owner's result; if the key was taken over meanwhile, what holds now."""
    args = (owner.tenant_id, owner.key, owner.task_id, owner.lease_token)
    stored = await conn.fetchrow(q("complete_effect"), *args, result)
    if stored is not None:
        return EffectRecord(EffectStatus.DONE, stored["result"])
    found = await get_effect(conn, owner.tenant_id, owner.key)
    return found if found is not None else EffectRecord(EffectStatus.BUSY)


async def abandon_effect(conn: Conn, owner: EffectOwner) -> None:
    """Give up a key whose effect failed, so a later attempt runs it."""
    args = (owner.tenant_id, owner.key, owner.task_id, owner.lease_token)
    await conn.execute(q("abandon_effect"), *args)


async def get_effect(conn: Conn, tenant_id: str, key: str) -> EffectRecord | None:
    """The recorded result of ``key``, or None when none is recorded."""
    row = await conn.fetchrow(q("get_effect"), tenant_id, key)
    return None if row is None else EffectRecord(EffectStatus.DONE, row["result"])


async def record_step(
    conn: Conn, tenant_id: str, key: str, task_id: int, result: Any
) -> EffectRecord:
    """Record a durable step's result with an asynchronous commit; the result that holds.

    A step has one owner (the task's current lease), so it needs no ownership protocol: the
    first result recorded wins, and a late zombie gets that one back.
    """
    row = await conn.fetchrow(q("record_step"), tenant_id, key, task_id, result)
    assert row is not None
    return EffectRecord(EffectStatus.DONE, row["result"])


async def record_effect(
    conn: Conn, tenant_id: str, key: str, task_id: int | None, result: Any
) -> tuple[EffectRecord, bool]:
    """Record ``result`` unless a result is there; the entry that holds and whether this
    call recorded it."""
    row = await conn.fetchrow(q("record_effect"), tenant_id, key, task_id, result)
    assert row is not None  # one branch of the UNION always yields the row
    return EffectRecord(EffectStatus.DONE, row["result"]), bool(row["recorded"])


async def run_effect_in_transaction(
    conn: Conn,
    tenant_id: str,
    key: str,
    task_id: int | None,
    effect: Callable[[Conn], Awaitable[Any]],
) -> EffectRecord:
    """Run ``effect(conn)`` and record its result in one transaction, once per key.

    The ledger entry and whatever ``effect`` writes through ``conn`` commit together or not
    at all: a crash, a lost connection or a raised error before the commit leaves neither,
    and the next run does it afresh; after the commit every run gets the recorded result.
    """
    async with conn.transaction():
        if await conn.fetchval(q("take_effect_in_transaction"), tenant_id, key, task_id) is None:
            found = await get_effect(conn, tenant_id, key)  # a new snapshot sees the winner
            if found is None:
                raise StoreError(
                    f"effect key {key!r} is held by another form of the ledger; "
                    "use one form (ctx.once or ctx.once_in_transaction) per key"
                )
            return found
        try:
            result = await effect(conn)
        except BaseException as exc:
            mark_users_error(exc, conn)  # fn's own error: the task's, not a lost database
            raise
        await conn.execute(q("complete_effect_in_transaction"), tenant_id, key, result)
    return EffectRecord(EffectStatus.DONE, result)
