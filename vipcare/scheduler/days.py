"""The last day each daily job completed: the owner of ``job_days``.

Catch-up after downtime starts the day after it. The mark only moves forward
(a guarded ``UPDATE … WHERE last_day < :day``), so a late or repeated write
can never make a completed day run again.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Engine, select, update

from crm.bulk import insert_ignoring_conflicts, table_of
from crm.db import transaction
from crm.models import JobDay

_DAYS = table_of(JobDay)


def last_completed(engine: Engine, job: str) -> date | None:
    with transaction(engine) as session:
        found = session.execute(select(_DAYS.c.last_day).where(_DAYS.c.job == job)).scalar()
    return found


def mark_completed(engine: Engine, job: str, day: date, at: datetime) -> None:
    """Record that ``job`` completed ``day`` (and so every day before it)."""
    with transaction(engine) as session:
        row = {"job": job, "last_day": day, "completed_at": at}
        if insert_ignoring_conflicts(session, JobDay, [row], returning="job"):
            return
        session.execute(
            update(_DAYS)
            .where(_DAYS.c.job == job, _DAYS.c.last_day < day)
            .values(last_day=day, completed_at=at)
        )
