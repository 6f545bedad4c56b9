"""Spreading call tasks over each manager's daily call capacity (working days only).

Every task kind counts — callbacks, plan-fit suggestions, birthday calls, grace
follow-ups, care calls — and capacity is counted in **calls**: a customer who
already has an open call on a day is put on that same day (one call covers both,
under one pre-call notice) without using more capacity. The current load is
read once, with one grouped query, then assignments are made in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from crm import tasks
from crm.models import CallTask, Manager

HORIZON_DAYS = 366
"""How far ahead a manager's calendar is searched for a free slot."""


def working_day_on_or_after(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class CapacityPlanner:
    """Plans new call tasks from ``as_of`` on, within each manager's ``daily_call_capacity``."""

    def __init__(self, session: Session, as_of: date) -> None:
        self.as_of = as_of
        self.capacity = dict(session.execute(select(Manager.id, Manager.daily_call_capacity)).all())
        self.load: Counter[tuple[int, date]] = Counter()
        self.customer_day: dict[int, date] = {}
        rows = session.execute(
            select(
                CallTask.manager_id,
                CallTask.scheduled_on,
                func.count(distinct(CallTask.customer_id)),
            )
            .where(
                CallTask.status.in_(tasks.OPEN),
                CallTask.scheduled_on >= as_of,
                CallTask.manager_id.is_not(None),
            )
            .group_by(CallTask.manager_id, CallTask.scheduled_on)
        )
        for manager_id, day, calls in rows:
            if manager_id is not None:
                self.load[(manager_id, day)] = calls
        self._session = session
        self._checked: set[int] = set()

    def prefetch(self, customer_ids: Iterable[int]) -> None:
        """Learn, in one query, which of these customers already have an open call planned."""
        wanted = sorted(set(customer_ids) - self._checked)
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            rows = self._session.execute(
                select(CallTask.customer_id, func.min(CallTask.scheduled_on))
                .where(
                    CallTask.customer_id.in_(chunk),
                    CallTask.status.in_(tasks.OPEN),
                    CallTask.scheduled_on >= self.as_of,
                )
                .group_by(CallTask.customer_id)
            )
            for customer_id, day in rows:
                self.customer_day.setdefault(customer_id, day)
            self._checked.update(chunk)

    def _open_day(self, customer_id: int) -> date | None:
        """The first day from ``as_of`` on which the customer already has an open call."""
        if customer_id not in self._checked:
            self.prefetch([customer_id])
        return self.customer_day.get(customer_id)

    def assign(self, manager_id: int | None, customer_id: int, earliest: date) -> date:
        """The day a new call for ``customer_id`` is planned: with room, from ``earliest``."""
        start = working_day_on_or_after(max(earliest, self.as_of))
        joined = self._open_day(customer_id)
        if joined is not None and joined >= start:
            return joined  # one call covers both: no more capacity used
        if manager_id is None:
            self.customer_day[customer_id] = start
            return start
        capacity = self.capacity.get(manager_id, 0)
        day = start
        last = self.as_of + timedelta(days=HORIZON_DAYS)
        while capacity > 0 and self.load[(manager_id, day)] >= capacity and day < last:
            day = working_day_on_or_after(day + timedelta(days=1))
        if capacity <= 0:
            day = start
        self.load[(manager_id, day)] += 1
        self.customer_day[customer_id] = day
        return day
