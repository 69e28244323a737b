"""Human durations such as ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a timedelta; raise ValueError with an example on bad input."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or not _WHOLE.fullmatch(cleaned):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (w, d, h, m, s), e.g. 90d or 1h30m"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"invalid duration {text!r}: longer than timedelta can hold") from exc


def parse_rate(text: str) -> tuple[int, float]:
    """Parse a rate such as ``10/1m`` (10 per minute) or ``5/s`` into (count, seconds).

    Raises ValueError with an example on bad input.
    """
    count_text, sep, period = text.strip().replace(" ", "").partition("/")
    if not sep or not count_text.isdigit() or int(count_text) < 1 or not period:
        raise ValueError(
            f"invalid rate {text!r}: use COUNT/DURATION with COUNT >= 1, e.g. 10/1m or 5/s"
        )
    if period[0].isalpha():
        period = "1" + period  # "5/s" reads as 5 per 1 s
    seconds = parse_duration(period).total_seconds()
    if seconds <= 0:
        raise ValueError(f"invalid rate {text!r}: the period must be longer than zero")
    return int(count_text), seconds


def format_rate(count: int, seconds: float) -> str:
    """The inverse of :func:`parse_rate`, in the shortest whole unit."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{count}/{int(seconds / size)}{unit}"
    return f"{count}/{seconds:g}s"
