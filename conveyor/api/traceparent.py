"""W3C Trace Context on a submit: a valid ``traceparent`` (and its ``tracestate``) is kept on
the task, so its run joins the submitter's trace. An invalid one is ignored, as the
specification asks of a receiver, rather than refused."""

from __future__ import annotations

import re

# version 00: 2 hex, trace id 32 hex (not all zero), parent id 16 hex (not all zero), flags
_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_context(traceparent: str | None, tracestate: str | None) -> dict[str, str] | None:
    """The context to store, or None when there is no valid ``traceparent``."""
    if traceparent is None or not _TRACEPARENT.match(traceparent.strip()):
        return None
    context = {"traceparent": traceparent.strip()}
    if tracestate and len(tracestate) <= 512:
        context["tracestate"] = tracestate.strip()
    return context
