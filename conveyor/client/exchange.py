"""One call's exchange with the API, shared by both clients: the headers every request
carries, whether an answer is final, and how a final answer becomes a result or an error."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx

from conveyor.client.calls import Call, T
from conveyor.client.problems import api_error, unreachable
from conveyor.client.retries import ClientRetries
from conveyor.core.llm_errors import parse_retry_after

USER_AGENT = "conveyor-client/0.1"

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""30 s to answer (a batch of 10,000 is written in well under that), 5 s to connect."""

STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""An event stream's: 60 s without a byte (the server sends a keep-alive every 15 s by
default) is a lost connection, resumed with ``Last-Event-ID``."""

# The client's errors while sending that it retries: nothing reached the API, or the
# request may have but no answer came back (safe: every call is idempotent).
# Failures a later try can get past (a refused or reset connection, a timeout, a server
# gone mid-answer); not a wrong URL scheme or a request httpx itself refuses.
RETRIED_TRANSPORT_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def headers(api_key: str) -> dict[str, str]:
    """The headers of every request."""
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def request_of(client: httpx.Client | httpx.AsyncClient, call: Call[T]) -> httpx.Request:
    """The httpx request for ``call`` (built once; a retry sends the same bytes)."""
    return client.build_request(
        call.method, call.path, json=call.json, params=dict(call.params), headers=call.headers
    )


def wait_before_retry(
    retries: ClientRetries,
    attempt: int,
    response: httpx.Response | None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``; None when ``response`` (None: no
    answer came) is final or the attempts are spent."""
    if attempt >= retries.attempts:
        return None
    if response is None:
        return retries.after_connection_error(attempt, rng)
    return retries.after_status(response.status_code, response.headers, rng)


def outcome(call: Call[T], response: httpx.Response, *, exhausted: bool) -> T:
    """The call's result from a 2xx answer; otherwise raise its error."""
    if response.is_success:
        return call.parse(response)
    after = parse_retry_after(response.headers.get("retry-after"), None, time.time())
    raise api_error(response, retry_after=after, exhausted=exhausted)


def no_answer(exc: httpx.TransportError, request: httpx.Request) -> Exception:
    """The error for a call whose every attempt went unanswered."""
    return unreachable(exc, request)


def stream_pause(retries: ClientRetries, failures: int) -> float:
    """Seconds before reconnecting a stream that closed with nothing new (``failures`` such
    closes in a row): at once the first time (a slow client cut off), then backing off."""
    if failures <= 1:
        return 0.0
    return retries.after_connection_error(min(failures - 1, 6), random.random)
