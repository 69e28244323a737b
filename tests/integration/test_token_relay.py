"""The token relay writing live output to a real PostgreSQL: a run's rows keep counting
however long it pauses between streamed calls, and a finished run's count is let go."""

from __future__ import annotations

import gc

from conveyor.gateway.chat import ChatChunk
from conveyor.gateway.hooks import AttemptInfo
from conveyor.gateway.model_routes import Target
from conveyor.gateway.scope import CallScope
from conveyor.store.postgres import PostgresStore
from conveyor.streams.token_relay import TokenRelay
from tests.integration.helpers import enqueue_many


def attempt(scope: CallScope) -> AttemptInfo:
    return AttemptInfo(scope, "fast", Target("mock", "fast"), 1, 1, True)


async def test_a_run_keeps_counting_while_it_lives_and_is_forgotten_after(
    store: PostgresStore,
) -> None:
    [paused, *others] = await enqueue_many(store, 4)
    relay = TokenRelay(store, interval=0.0)
    run = CallScope(tenant_id="default", task_id=paused, run=7)
    relay.on_chunk(ChatChunk("first "), attempt(run))
    await relay.aclose()
    # other runs stream and end while this one waits (a long tool call, any length)
    for number, task_id in enumerate(others, start=8):
        relay.on_chunk(ChatChunk("x"), attempt(CallScope("default", task_id, run=number)))
        await relay.aclose()
    gc.collect()
    assert relay.runs_counted == 1  # the ended runs' counts are gone, the paused one's kept
    relay.on_chunk(ChatChunk("second"), attempt(run))
    await relay.aclose()
    rows = await store.chunks_after([("default", paused, (0, -1))])
    assert [(r.run, r.seq, r.text) for r in rows] == [(7, 0, "first "), (7, 1, "second")]
    del run
    gc.collect()
    assert relay.runs_counted == 0
