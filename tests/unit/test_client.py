"""The client's retries and error mapping, against httpx's in-memory transport (the real
API is in tests/e2e/test_api_client.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from conveyor import ApiError, ApiUnavailable, AsyncClient, Client, ClientRetries, TaskNotFound
from conveyor.client.calls import Call
from conveyor.errors import ApiInvalidTask, ApiQuotaExceeded, ApiTaskNotFound, InvalidTask

FAST = ClientRetries(attempts=4, backoff=0.0, max_wait=0.0)
PROBLEM = {"content-type": "application/problem+json"}


def problem(status: int, kind: str, detail: str, **extra: object) -> dict[str, object]:
    return {"type": f"urn:conveyor:problem:{kind}", "status": status, "detail": detail, **extra}


def scripted(
    answers: list[httpx.Response | Exception],
) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return seen, httpx.MockTransport(handle)


def client(transport: httpx.MockTransport, retries: ClientRetries = FAST) -> Client:
    return Client("http://api", "cvk_x_y", retries=retries, transport=transport)


def test_a_retried_submit_sends_the_same_idempotency_key() -> None:
    seen, transport = scripted(
        [
            httpx.Response(
                503, json=problem(503, "database-unavailable", "away"), headers={"Retry-After": "0"}
            ),
            httpx.ConnectError("refused"),
            httpx.Response(201, json={"id": 7, "created": True}),
        ]
    )
    with client(transport) as api:
        made = api.submit("writer", {"brief": "spring"}, priority=3)
    assert made.id == 7 and made.created
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1
    assert json.loads(seen[0].content) == {
        "queue": "writer",
        "payload": {"brief": "spring"},
        "priority": 3,
    }
    assert seen[0].headers["authorization"] == "Bearer cvk_x_y"


def test_the_caller_s_key_is_the_one_sent() -> None:
    seen, transport = scripted([httpx.Response(200, json={"id": 3, "created": False})])
    with client(transport) as api:
        assert not api.submit("writer", idempotency_key="order-1").created
    assert seen[0].headers["idempotency-key"] == "order-1"


def test_a_batch_keys_every_task_once() -> None:
    from conveyor.client import submission

    seen, transport = scripted(
        [httpx.ConnectError("reset"), httpx.Response(201, json={"tasks": []})]
    )
    with client(transport) as api:
        api.submit_batch(
            [submission("w", {"n": n}) for n in range(3)]
            + [submission("w", idempotency_key="mine")]
        )
    first, second = (json.loads(r.content)["tasks"] for r in seen)
    assert first == second  # the retry sends the same keys
    keys = [t["idempotency_key"] for t in first]
    assert len(set(keys)) == 4 and keys[3] == "mine"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, problem(404, "not-found", "task 9 not found", instance="/v1/tasks/9"), TaskNotFound),
        (
            422,
            problem(422, "validation", "priority: too big", errors=[{"field": "priority"}]),
            InvalidTask,
        ),
        (429, problem(429, "quota-exceeded", "used 10 of 10"), ApiQuotaExceeded),
        (401, problem(401, "unauthorized", "the API key is not valid"), ApiError),
        (500, "<html>oops</html>", ApiError),
    ],
)
def test_problems_become_conveyor_errors(status: int, body: object, error: type[Exception]) -> None:
    content = json.dumps(body) if isinstance(body, dict) else str(body)
    seen, transport = scripted([httpx.Response(status, content=content, headers=PROBLEM)])
    with client(transport) as api, pytest.raises(error) as caught:
        api.get(9)
    assert len(seen) == 1  # none of these is retried
    assert isinstance(caught.value, ApiError) and caught.value.status == status
    if isinstance(caught.value, ApiTaskNotFound):
        assert caught.value.task_id == 9
    if isinstance(caught.value, ApiInvalidTask):
        assert caught.value.errors == [{"field": "priority"}]


def test_retry_after_is_honoured_capped_and_then_given_up() -> None:
    retries = ClientRetries(attempts=3, max_wait=2.0)
    shed = httpx.Response(
        429, json=problem(429, "overloaded", "later"), headers={"Retry-After": "60"}
    )
    assert retries.after_status(429, shed.headers, lambda: 0.5) == 2.0  # 60 s, capped
    assert retries.after_status(429, httpx.Headers({}), lambda: 0.5) is None  # a quota
    assert retries.after_status(503, httpx.Headers({}), lambda: 0.0) == 1.0
    seen, transport = scripted([shed, shed, shed, shed])
    with (
        client(transport, ClientRetries(attempts=3, max_wait=0.0)) as api,
        pytest.raises(ApiUnavailable) as caught,
    ):
        api.cancel(5)
    assert len(seen) == 3 and caught.value.status == 429 and caught.value.retry_after == 60


def test_no_answer_at_all_is_unavailable() -> None:
    seen, transport = scripted([httpx.ConnectError("refused")] * 4)
    with client(transport) as api, pytest.raises(ApiUnavailable) as caught:
        api.get(1)
    assert len(seen) == 4 and caught.value.status == 0 and "is the API running" in str(caught.value)


def test_listing_follows_the_cursor() -> None:
    def view(n: int) -> dict[str, object]:
        return {
            "id": n,
            "queue": "w",
            "state": "queued",
            "priority": 5,
            "attempts": 0,
            "max_attempts": None,
            "payload": {},
            "created_at": "2025-01-01T00:00:00Z",
        }

    seen, transport = scripted(
        [
            httpx.Response(200, json={"tasks": [view(5), view(4)], "next_cursor": 4}),
            httpx.Response(200, json={"tasks": [view(3)], "next_cursor": None}),
        ]
    )
    with client(transport) as api:
        assert [t.id for t in api.list(queue="w", page_size=2)] == [5, 4, 3]
    assert seen[1].url.params["cursor"] == "4" and seen[1].url.params["limit"] == "2"


async def test_the_async_client_makes_the_same_calls() -> None:
    answers: list[Callable[[httpx.Request], httpx.Response]] = [
        lambda r: httpx.Response(503, json=problem(503, "database-unavailable", "x")),
        lambda r: httpx.Response(201, json={"id": 1, "created": True}),
    ]
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)(request)

    retries = ClientRetries(attempts=2, default_wait=0.0)
    async with AsyncClient(
        "http://api", "k", retries=retries, transport=httpx.MockTransport(handle)
    ) as api:
        assert (await api.submit("writer")).id == 1
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]


def test_only_a_task_s_404_is_a_missing_task_and_a_conflict_is_invalid() -> None:
    gone = problem(404, "not-found", "group g not found")
    conflict = problem(422, "idempotency-conflict", "key k was used with another request")
    seen, transport = scripted(
        [
            httpx.Response(404, json=gone, headers=PROBLEM),
            httpx.Response(422, json=conflict, headers=PROBLEM),
        ]
    )
    with client(transport) as api:
        with pytest.raises(ApiError) as missing:
            api.send(Call("GET", "/v1/groups/g", lambda response: None))
        assert not isinstance(missing.value, TaskNotFound)
        with pytest.raises(InvalidTask):
            api.submit("writer", {"n": 1}, idempotency_key="k")
    assert len(seen) == 2


def test_a_request_httpx_refuses_is_not_retried() -> None:
    seen, transport = scripted([httpx.UnsupportedProtocol("ftp is not http")] * 4)
    with client(transport) as api, pytest.raises(ApiUnavailable):
        api.get(1)
    assert len(seen) == 1


def test_a_signal_posts_its_payload_and_reads_a_refusal() -> None:
    from conveyor import SignalRefused
    from conveyor.errors import ApiSignalRefused

    delivered = {"task_id": 9, "signal": "approval", "state": "scheduled", "resumed": True}
    refusal = problem(
        409, "signal-refused", "timed out", task_id=9, signal="approval", reason="timed-out"
    )
    seen, transport = scripted(
        [
            httpx.ConnectError("refused"),  # safe to repeat: the same signal is a duplicate
            httpx.Response(201, json={**delivered, "duplicate": False}),
            httpx.Response(409, json=refusal, headers=PROBLEM),
        ]
    )
    with client(transport) as api:
        answer = api.signal(9, "approval", {"approved": True})
        assert answer.resumed and answer.state == "scheduled"
        with pytest.raises(SignalRefused) as refused:
            api.signal(9, "approval", {"approved": False})
    assert [r.url.path for r in seen] == ["/v1/tasks/9/signals/approval"] * 3
    assert json.loads(seen[1].content) == {"approved": True}
    assert isinstance(refused.value, ApiSignalRefused) and refused.value.status == 409
    assert (refused.value.task_id, refused.value.name, refused.value.reason) == (
        9,
        "approval",
        "timed-out",
    )
