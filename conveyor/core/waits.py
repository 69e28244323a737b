"""Durable waits, the pure part: what a wait's name and timeout may be, and what a signal
does when one of the same name was delivered before.

A signal is write-once per (task, name): the first delivery (or the timeout of the wait of
that name) is what every run of the task sees at ``ctx.wait_for(name)``, the way a
completed ``ctx.step`` returns its recorded result. So a rerun cannot see a different
answer than the run before it. This module decides; ``store/waits.py`` does the I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A signal's name: 1-128 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or
digit. Names with a ``:`` are Conveyor's own (the webhook adapter's callback, for one)."""

RESERVED_PREFIX = "conveyor:"
"""Names of Conveyor's own waits start with this; tenants cannot signal them directly."""

MAX_WAIT_SECONDS = 366 * 86400.0
"""The longest timeout a wait may have (a year and a day)."""

_NAME = re.compile(SIGNAL_NAME_PATTERN)
_RESERVED = re.compile(r"^conveyor:[A-Za-z0-9][A-Za-z0-9_.:-]{0,118}$")


def check_signal_name(name: object, *, reserved: bool = False) -> str:
    """``name`` if it is a valid signal name, else ValueError saying what one looks like.

    ``reserved`` admits the ``conveyor:`` names of Conveyor's own waits, and only those.
    """
    if isinstance(name, str):
        if _NAME.fullmatch(name):
            return name
        if reserved and _RESERVED.fullmatch(name):
            return name
    raise ValueError(
        f"{name!r} is not a signal name: 1-128 letters, digits, '_', '.' or '-', starting "
        "with a letter or digit (e.g. 'approval')"
    )


def check_wait_timeout(timeout: object) -> float | None:
    """The timeout of a wait in seconds (None: wait for ever), else ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
    seconds = float(timeout)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_WAIT_SECONDS:
        raise ValueError(
            f"timeout must be more than 0 and at most {MAX_WAIT_SECONDS:g} seconds, not {timeout!r}"
        )
    return seconds


class Delivery(StrEnum):
    """What a signal does, given what the task holds under its name already."""

    NEW = "new"
    """Nothing yet: it is stored (and wakes the task if it waits for it)."""
    DUPLICATE = "duplicate"
    """The same payload was delivered before (a retried request): nothing changes."""
    CONFLICT = "conflict"
    """Another payload was delivered before; the first holds, this one is refused."""
    TOO_LATE = "timed-out"
    """The wait of that name timed out before; the signal is refused."""


@dataclass(frozen=True, slots=True)
class Held:
    """What a task holds under a signal name: a delivered payload or a timeout."""

    payload: Any
    timed_out: bool


def classify_delivery(held: Held | None, payload: Any) -> Delivery:
    """What a signal carrying ``payload`` does, given ``held`` (None: nothing yet)."""
    if held is None:
        return Delivery.NEW
    if held.timed_out:
        return Delivery.TOO_LATE
    return Delivery.DUPLICATE if same_document(held.payload, payload) else Delivery.CONFLICT


def same_document(a: Any, b: Any) -> bool:
    """Equal as JSON documents: key order aside, and a bool never equal to a number
    (Python's ``True == 1`` is not JSON's)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_document(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_document(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b
