"""Cron schedules: validation and tick arithmetic for periodic tasks.

A tick is the instant a cron expression fires. Periodic tasks are enqueued once per tick;
when no worker ran through several ticks, only the latest missed one is enqueued (catching
up a backlog of identical runs is rarely what anyone wants).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from croniter import croniter

from conveyor.errors import ConfigurationError

# croniter's `R` draws a random value each time an expression is read, so every worker (and
# every call) would see different ticks and a tick could fire twice or never.
_RANDOM_FIELD = re.compile(r"(?:^|[ ,])[rR](?:$|[ ,(/])")


def validate_cron(expression: str) -> str:
    """Return ``expression`` stripped, or raise ConfigurationError saying how to fix it."""
    cleaned = " ".join(expression.split())
    fields = cleaned.split(" ")
    five_fields = len(fields) == 5 or (len(fields) == 1 and cleaned.startswith("@"))
    if _RANDOM_FIELD.search(cleaned):
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: random fields (R) are not supported; "
            "write the minute or hour out, e.g. '17 * * * *'"
        )
    # strict: refuse dates that never exist, such as '0 0 31 2 *', which would never fire.
    if not five_fields or not croniter.is_valid(cleaned, strict=True):
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: use five fields "
            "(minute hour day-of-month month day-of-week) naming a date that exists, "
            "e.g. '*/5 * * * *'"
        )
    return cleaned


def latest_tick(expression: str, now: datetime) -> datetime:
    """The most recent tick at or before ``now`` (UTC)."""
    moment = now.astimezone(UTC)
    if croniter.match(expression, moment.replace(second=0, microsecond=0)) and (
        moment.second == 0 and moment.microsecond == 0
    ):
        return moment
    previous: datetime = croniter(expression, moment).get_prev(datetime)
    return previous.astimezone(UTC)


def next_tick(expression: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (UTC)."""
    following: datetime = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    return following.astimezone(UTC)
