"""What ``conveyor status --watch`` shows, gathered and drawn: queues, workers, breakers and
the last minute's throughput and errors.

``gather`` reads one ``StatusView`` (three store reads, and the breakers from the workers'
``/metrics`` when URLs are given); ``render`` draws it as rich tables. ``watch`` redraws
it in place with ``rich.live`` every period until Ctrl-C (or ``refreshes`` redraws, for a
test).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conveyor.core.worker_health import WorkerHealth
from conveyor.observability.breaker_reader import BreakerView, merge_breakers, read_breakers
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import QueueStatus, QueueSummary, WorkerStatus

WINDOW_SECONDS = 60.0
"""The throughput and errors shown are those of tasks finished in the last minute."""


@dataclass(frozen=True, slots=True)
class StatusView:
    """One reading of the system."""

    queues: Sequence[QueueStatus]
    finished: dict[str, QueueSummary]
    """Per queue, tasks finished in the last minute."""
    workers: Sequence[tuple[WorkerStatus, WorkerHealth]]
    breakers: Sequence[BreakerView] | None
    """None: no ``--metrics-url`` given, so no breaker was read."""
    unreachable: Sequence[str]
    """Metrics URLs that did not answer."""
    at: datetime


def fetch_metrics(url: str, timeout: float = 2.0) -> str:
    """The text of ``url`` (a worker's ``/metrics``); OSError when it does not answer."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        text: str = reply.read().decode("utf-8", "replace")
        return text


async def gather(
    store: PostgresStore,
    judge: Callable[[WorkerStatus], WorkerHealth],
    metrics_urls: Sequence[str] = (),
) -> StatusView:
    """Read the queues, the workers, the last minute's outcomes and the breakers now."""
    now = datetime.now(UTC)
    queues = await store.queue_status()
    finished = await store.history_summary(now - timedelta(seconds=WINDOW_SECONDS))
    workers = await store.list_workers()
    scrapes: dict[str, dict[tuple[str, str], int]] = {}
    unreachable: list[str] = []
    for url, text in zip(
        metrics_urls,
        await asyncio.gather(
            *(asyncio.to_thread(fetch_metrics, url) for url in metrics_urls),
            return_exceptions=True,
        ),
        strict=True,
    ):
        if isinstance(text, BaseException):
            unreachable.append(url)
        else:
            scrapes[url] = read_breakers(text)
    return StatusView(
        queues=queues,
        finished={s.queue: s for s in finished},
        workers=[(w, judge(w)) for w in workers],
        breakers=merge_breakers(scrapes) if metrics_urls else None,
        unreachable=unreachable,
        at=now,
    )


def render(view: StatusView) -> Group:
    """The view as tables: queues, workers, breakers."""
    queues = Table(title=f"queues (last {WINDOW_SECONDS:.0f} s)", title_justify="left")
    for column in ("queue", "queued", "running", "oldest", "done/min", "dead/min", "retries/min"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    names = sorted({q.queue for q in view.queues} | set(view.finished))
    by_name = {q.queue: q for q in view.queues}
    for name in names:
        q, f = by_name.get(name), view.finished.get(name)
        age = None if q is None else q.oldest_queued_seconds
        dead = 0 if f is None else f.dead
        queues.add_row(
            name + (" (paused)" if q is not None and q.paused else ""),
            str(0 if q is None else q.queued),
            str(0 if q is None else q.running),
            "-" if age is None else f"{age:.1f}s",
            str(0 if f is None else f.succeeded),
            f"[red]{dead}[/red]" if dead else "0",
            str(0 if f is None else f.retries),
        )
    workers = Table(title="workers", title_justify="left")
    for column in ("id", "host", "health", "holds", "free", "last outcome"):
        workers.add_column(column)
    for w, health in view.workers:
        shown = health.value if health is WorkerHealth.OK else f"[red]{health.value}[/red]"
        workers.add_row(
            w.id,
            w.host,
            shown,
            f"{w.running}/{w.concurrency}",
            str(max(w.concurrency - w.running, 0)),
            f"{w.seconds_since_outcome:.0f}s ago",
        )
    parts: list[Table | Text] = [queues, workers]
    if view.breakers is None:
        parts.append(Text("breakers: give --metrics-url of the workers to see them", style="dim"))
    else:
        breakers = Table(title="breakers", title_justify="left")
        for column in ("provider", "model", "state", "open in"):
            breakers.add_column(column)
        for b in view.breakers:
            state = b.state if b.worst == 0 else f"[red]{b.state}[/red]"
            breakers.add_row(b.provider, b.model, state, ", ".join(b.open_in))
        parts.append(breakers)
        if view.unreachable:
            parts.append(Text(f"no answer from: {', '.join(view.unreachable)}", style="yellow"))
    parts.append(Text(f"at {view.at:%H:%M:%S} UTC; Ctrl-C to quit", style="dim"))
    return Group(*parts)


async def watch(
    store: PostgresStore,
    judge: Callable[[WorkerStatus], WorkerHealth],
    console: Console,
    *,
    every: float,
    metrics_urls: Sequence[str] = (),
    refreshes: int | None = None,
) -> None:
    """Redraw the view every ``every`` seconds until cancelled (or ``refreshes`` times)."""
    drawn = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while refreshes is None or drawn < refreshes:
            view = await gather(store, judge, metrics_urls)
            live.update(render(view), refresh=True)
            drawn += 1
            if refreshes is None or drawn < refreshes:
                await asyncio.sleep(every)
