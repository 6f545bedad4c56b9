"""Job runs: the one owner of ``job_runs`` (what ran, when, how it ended).

Every scheduled operation (the care day, each journey in it, the dispatcher, the
escalation sweep) records a row when it starts and closes it when it ends, so
``vipcare status`` can say what ran last and whether it worked, whoever ran it
(the embedded scheduler, a Prefect worker, an operator at the command line).
A row left ``running`` by a crashed process is reported as interrupted.

Each write is its own short transaction: a run's record must survive the
rollback of the work it describes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from crm.bulk import table_of
from crm.db import transaction
from crm.jsonable import jsonable
from crm.models import JobRun
from crm.statuses import RunStatus

RUNNING = RunStatus.RUNNING.value
SUCCEEDED = RunStatus.SUCCEEDED.value
FAILED = RunStatus.FAILED.value
SKIPPED = RunStatus.SKIPPED.value
_RUNS = table_of(JobRun)


def start(
    engine: Engine,
    kind: str,
    name: str,
    at: datetime,
    *,
    care_day: date | None = None,
    shard: tuple[int, int] | None = None,
    owner: str | None = None,
) -> int:
    """Record that a run began; returns its id for :func:`finish`."""
    with transaction(engine) as session:
        run_id = session.execute(
            _RUNS.insert()
            .values(
                kind=kind,
                name=name,
                care_day=care_day,
                shard=f"{shard[0]}/{shard[1]}" if shard else None,
                status=RUNNING,
                started_at=at,
                owner=owner,
                details={},
            )
            .returning(_RUNS.c.id)
        ).scalar_one()
    return int(run_id)


def finish(
    engine: Engine,
    run_id: int,
    at: datetime,
    status: str,
    *,
    details: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Close a run (only a ``running`` one: a record is written once)."""
    if status not in (SUCCEEDED, FAILED, SKIPPED):
        raise ValueError(f"a run ends succeeded, failed or skipped, not {status!r}")
    with transaction(engine) as session:
        session.execute(
            update(_RUNS)
            .where(_RUNS.c.id == run_id, _RUNS.c.status == RUNNING)
            .values(
                status=status,
                finished_at=at,
                details=jsonable(dict(details or {})),
                error=error[:4000] if error else None,
            )
        )


def record(
    engine: Engine,
    kind: str,
    name: str,
    at: datetime,
    status: str,
    *,
    care_day: date | None = None,
    details: Mapping[str, Any] | None = None,
    error: str | None = None,
    owner: str | None = None,
) -> int:
    """A run that started and ended at once (a skipped day, a failure found before starting)."""
    run_id = start(engine, kind, name, at, care_day=care_day, owner=owner)
    finish(engine, run_id, at, status, details=details, error=error)
    return run_id


class RunFailed(Exception):
    """Raised inside :func:`recorded` to end a run ``failed`` with a message, not a traceback."""


@dataclass
class Recording:
    """The handle :func:`recorded` yields: put the run's summary in ``details``."""

    run_id: int
    details: dict[str, Any]
    status: str = SUCCEEDED
    error: str | None = None

    def fail(self, error: str) -> None:
        """End the run ``failed`` without raising (the work itself did not crash)."""
        self.status, self.error = FAILED, error


@contextmanager
def recorded(
    engine: Engine,
    kind: str,
    name: str,
    clock: Any,
    *,
    care_day: date | None = None,
    shard: tuple[int, int] | None = None,
    owner: str | None = None,
) -> Iterator[Recording]:
    """Record the run of the block: ``succeeded``, or ``failed`` with the exception's text.

    ``clock()`` gives the start and end times (the caller's clock: wall or injected).
    The exception still propagates.
    """
    rec = Recording(
        start(engine, kind, name, clock(), care_day=care_day, shard=shard, owner=owner), {}
    )
    try:
        yield rec
    except BaseException as exc:
        text = str(exc) or type(exc).__name__
        finish(engine, rec.run_id, clock(), FAILED, details=rec.details, error=text)
        raise
    finish(engine, rec.run_id, clock(), rec.status, details=rec.details, error=rec.error)


@dataclass(frozen=True)
class RunView:
    """A run as ``vipcare status`` shows it."""

    id: int
    kind: str
    name: str
    care_day: date | None
    shard: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    owner: str | None
    details: dict[str, Any]
    error: str | None


def latest(engine: Engine, kinds: tuple[str, ...]) -> list[RunView]:
    """The newest run of each (kind, name) among ``kinds`` (one row per journey or job)."""
    newest = (
        select(_RUNS.c.kind, _RUNS.c.name, func.max(_RUNS.c.id).label("id"))
        .where(_RUNS.c.kind.in_(kinds))
        .group_by(_RUNS.c.kind, _RUNS.c.name)
        .subquery()
    )
    with transaction(engine) as session:
        rows = session.execute(
            select(_RUNS)
            .join(newest, newest.c.id == _RUNS.c.id)
            .order_by(_RUNS.c.kind, _RUNS.c.name)
        ).all()
    return [RunView(**row._asdict()) for row in rows]


def prune(engine: Engine, kinds: tuple[str, ...], before: datetime) -> int:
    """Delete finished runs of ``kinds`` that started before ``before`` (the log stays small)."""
    from sqlalchemy import delete

    with transaction(engine) as session:
        result = session.execute(
            delete(_RUNS).where(
                _RUNS.c.kind.in_(kinds), _RUNS.c.started_at < before, _RUNS.c.status != RUNNING
            )
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
