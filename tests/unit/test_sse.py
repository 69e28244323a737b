"""SSE on the wire: what the server frames, the client decodes back, whatever the text;
keep-alives fill silences; the client's reader resumes after the last id and stops at a
task's end."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.api.sse import KEEPALIVE, comment, frame, with_keepalive
from conveyor.client.sse import EventReader, ServerSentEvent, SSEDecoder

FIELD = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
).filter(lambda s: not s.startswith(" "))


def decode(wire: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    found = [decoder.feed(line) for line in re.split(r"\r\n|\r|\n", wire.decode())]
    return [e for e in found if e is not None]


@given(
    data=st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    event=FIELD.filter(bool),
    event_id=FIELD.filter(lambda s: "\0" not in s),
)
def test_a_frame_decodes_to_what_was_framed(data: str, event: str, event_id: str) -> None:
    [decoded] = decode(frame(data, event=event, event_id=event_id) + comment("keep-alive"))
    assert decoded.event == event and decoded.id == event_id
    assert decoded.data == data.replace("\r\n", "\n").replace("\r", "\n")


def test_fields_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        frame("x", event="a\nb")
    with pytest.raises(ValueError, match="line break"):
        frame("x", event_id="1\r2")


def test_the_decoder_follows_the_whatwg_rules() -> None:
    wire = b"retry: 2000\n: a comment\ndata:first\ndata: second\n\nid: 7-1\ndata: x\n\nevent: y\n\n"
    decoder = SSEDecoder()
    events = [e for e in (decoder.feed(line) for line in wire.decode().split("\n")) if e]
    assert events == [
        ServerSentEvent("message", "first\nsecond", None, 2000),
        ServerSentEvent("message", "x", "7-1", 2000),
    ]  # an event without data is not dispatched
    assert decoder.last_id == "7-1" and decoder.retry == 2000


def _event_line(position: str, kind: str, task_id: int = 1) -> list[str]:
    body = {"id": position, "task_id": task_id, "kind": kind, "at": "2026-12-06T00:00:00+00:00"}
    body |= {"queue": "q"}
    return [f"id: {position}", f"event: {kind}", f"data: {json.dumps(body)}", ""]


def test_the_reader_keeps_the_resume_point_and_stops_at_the_end() -> None:
    reader = EventReader(None, ends=True)
    assert "Last-Event-ID" not in reader.headers()
    lines = [*_event_line("5-1", "created"), "data: half a fra"]
    seen = [e for e in (reader.feed(line) for line in lines) if e]
    assert [e.kind for e in seen] == ["created"] and reader.headers()["Last-Event-ID"] == "5-1"
    reader.reconnected()  # the half frame of the lost connection is dropped
    lines = [*_event_line("6-2", "succeeded"), "event: end", 'data: {"task_id": 1}', ""]
    seen = [e for e in (reader.feed(line) for line in lines) if e]
    assert [e.kind for e in seen] == ["succeeded"] and seen[0].final and reader.done
    tenant_wide = EventReader("6-2", ends=False)
    for line in _event_line("7-1", "succeeded"):
        tenant_wide.feed(line)
    assert not tenant_wide.done and tenant_wide.last_event_id == "7-1"


async def test_keepalives_fill_silence_without_losing_the_pending_frame() -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()
        yield b"second"

    stream = with_keepalive(slow(), keepalive_seconds=0.01)
    assert await anext(stream) == b"first"
    assert await anext(stream) == KEEPALIVE  # the source is silent
    assert await anext(stream) == KEEPALIVE
    release.set()
    rest = [chunk async for chunk in stream]
    assert rest[-1] == b"second" and set(rest[:-1]) <= {KEEPALIVE}
