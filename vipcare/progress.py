"""Rich progress on stderr for long runs: per journey of a care day, and for a dispatch.

Stdout stays clean for ``--json``. A care day runs inside Prefect (possibly in
shards), so its progress is read from the database: a small thread counts the
occurrence keys this run has written per journey, which is exactly "decided so
far". It reads through its own plain connection (no write lock on SQLite).
A dispatch reports its running summary itself after every write-back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import create_engine, func, select

from crm.models import JobRun, JourneyOccurrence
from notifications.dispatcher import DispatchSummary

POLL_SECONDS = 0.5


def _rate(count: int, started: float) -> str:
    elapsed = time.monotonic() - started
    return f"{count / elapsed:,.0f}/s" if elapsed > 0.5 and count else ""


@contextmanager
def care_day_progress(
    console: Console, database_url: str, run_id: str, journeys: Sequence[str]
) -> Iterator[None]:
    """Show decided-so-far and the rate per journey while the block runs."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<14}"),
        TextColumn("{task.completed:>9,.0f} decided"),
        TextColumn("{task.fields[rate]:>9}"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {
        j: progress.add_task(j, total=None, rate="", state="waiting") for j in journeys
    }
    first_seen: dict[str, float] = {}
    engine = create_engine(database_url)  # plain reads; never takes SQLite's write lock
    stop = threading.Event()

    def poll() -> None:
        while True:
            try:
                with engine.connect() as conn:
                    counts = dict(
                        conn.execute(
                            select(JourneyOccurrence.journey, func.count())
                            .where(JourneyOccurrence.run_id == run_id)
                            .group_by(JourneyOccurrence.journey)
                        )
                        .tuples()
                        .all()
                    )
                    finished = _finished(conn, run_id)
            except Exception:  # noqa: BLE001 - progress must never break the run
                counts, finished = {}, {}
            for journey, task_id in tasks.items():
                count = int(counts.get(journey, 0))
                if count and journey not in first_seen:
                    first_seen[journey] = time.monotonic()
                state = finished.get(journey) or ("running" if count else "waiting")
                progress.update(
                    task_id,
                    completed=count,
                    rate=_rate(count, first_seen.get(journey, time.monotonic())),
                    state=state,
                )
            if stop.wait(POLL_SECONDS):
                return

    thread = threading.Thread(target=poll, name="care-day-progress", daemon=True)
    with progress:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            engine.dispose()


def _finished(conn: Any, run_id: str) -> dict[str, str]:
    """Journeys of this run whose every recorded shard has ended: their outcome."""
    out: dict[str, str] = {}
    rows = conn.execute(
        select(JobRun.name, JobRun.status, JobRun.details)
        .where(JobRun.kind == "journey")
        .order_by(JobRun.id.desc())
        .limit(500)
    )
    for name, status, details in rows:
        if (details or {}).get("run_id") == run_id and status != "running":
            out[name] = status
    return out


class DispatchProgress:
    """Counts and send rate of one dispatch, fed by the dispatcher's ``progress`` callback."""

    def __init__(self, console: Console, due: int) -> None:
        self.started = time.monotonic()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("dispatch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "sent {task.fields[sent]:,} · failed {task.fields[failed]:,} · "
                "suppressed {task.fields[suppressed]:,} · expired {task.fields[expired]:,}"
            ),
            TextColumn("{task.fields[rate]:>8}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            "dispatch", total=max(due, 1), sent=0, failed=0, suppressed=0, expired=0, rate=""
        )

    def __enter__(self) -> DispatchProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, summary: DispatchSummary) -> None:
        done = (
            summary.sent
            + summary.failed
            + summary.suppressed
            + summary.expired
            + summary.deferred
            + summary.retried
        )
        self.progress.update(
            self.task,
            completed=done,
            sent=summary.sent,
            failed=summary.failed,
            suppressed=summary.suppressed,
            expired=summary.expired,
            rate=_rate(summary.sent, self.started),
        )
