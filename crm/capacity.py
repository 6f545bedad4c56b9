"""A manager's daily call capacity: how many calls sit on each working day.

Capacity is ``managers.daily_call_capacity`` calls per working day (Monday to
Friday). Every kind of task counts — callbacks, plan-fit suggestions, birthday
calls, grace follow-ups, care calls — and the load of a day is counted in
**calls**: the customers with an open task (``awaiting_notice`` or ``ready``)
planned that day. A customer with two tasks on one day is one call, under one
pre-call text. Reads only; the task owner (:mod:`crm.tasks`) and the journeys
decide with these numbers (:class:`CapacityPlanner` for many tasks at once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from crm.models import CallTask, Manager
from crm.statuses import TaskStatus

OPEN_TASK_STATUSES: tuple[str, ...] = (TaskStatus.AWAITING_NOTICE.value, TaskStatus.READY.value)
"""Tasks that still occupy a slot in a manager's day."""
HORIZON_DAYS = 90
"""How far ahead :func:`next_day_with_room` looks before giving up."""


def is_working_day(day: date) -> bool:
    return day.weekday() < 5


def working_day_on_or_after(day: date) -> date:
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def load_by_day(session: Session, manager_id: int, first: date, last: date) -> dict[date, int]:
    """Open tasks per scheduled day in ``[first, last]``; days without tasks are absent.

    One grouped query over ``ix_call_tasks_manager_status`` (manager, status, day).
    """
    rows = session.execute(
        select(CallTask.scheduled_on, func.count(distinct(CallTask.customer_id)))
        .where(
            CallTask.manager_id == manager_id,
            CallTask.status.in_(OPEN_TASK_STATUSES),
            CallTask.scheduled_on >= first,
            CallTask.scheduled_on <= last,
        )
        .group_by(CallTask.scheduled_on)
    )
    return {day: int(count) for day, count in rows}


def day_load(session: Session, manager_id: int, day: date) -> int:
    return load_by_day(session, manager_id, day, day).get(day, 0)


def has_room(session: Session, manager_id: int, capacity: int, day: date) -> bool:
    """A working day with fewer calls than the capacity."""
    return is_working_day(day) and day_load(session, manager_id, day) < capacity


def next_day_with_room(
    session: Session,
    manager_id: int,
    capacity: int,
    on_or_after: date,
    horizon_days: int = HORIZON_DAYS,
    skip: date | None = None,
) -> date | None:
    """The first working day from ``on_or_after`` whose load is below ``capacity``.

    ``skip`` leaves out one day (the day a task is being moved away from). None
    when nothing within the horizon has room (or the capacity is 0).
    """
    if capacity <= 0:
        return None
    last = on_or_after + timedelta(days=horizon_days)
    load = load_by_day(session, manager_id, on_or_after, last)
    day = working_day_on_or_after(on_or_after)
    while day <= last:
        if day != skip and load.get(day, 0) < capacity:
            return day
        day = working_day_on_or_after(day + timedelta(days=1))
    return None


PLANNER_HORIZON_DAYS = 366
"""How far ahead the planner searches a manager's calendar for a free slot."""


class CapacityPlanner:
    """Plans new call tasks from ``as_of`` on, within each manager's ``daily_call_capacity``."""

    def __init__(self, session: Session, as_of: date) -> None:
        self.as_of = as_of
        self._session = session
        self._capacity: dict[int, int] | None = None
        self._load: Counter[tuple[int, date]] = Counter()
        self.customer_day: dict[int, date] = {}
        self._checked: set[int] = set()

    def snapshot(self) -> None:
        """Read the managers' capacity and planned calls, once, before the first plan.

        Deferred until a journey has a call to plan (or a line to suspend, which
        cancels calls): a journey that plans none never pays for reading every
        open task. The writer takes it before any write that could change the load.
        """
        if self._capacity is not None:
            return
        session = self._session
        self._capacity = dict(
            session.execute(select(Manager.id, Manager.daily_call_capacity)).tuples().all()
        )
        rows = session.execute(
            select(
                CallTask.manager_id,
                CallTask.scheduled_on,
                func.count(distinct(CallTask.customer_id)),
            )
            .where(
                CallTask.status.in_(OPEN_TASK_STATUSES),
                CallTask.scheduled_on >= self.as_of,
                CallTask.manager_id.is_not(None),
            )
            .group_by(CallTask.manager_id, CallTask.scheduled_on)
        )
        for manager_id, day, calls in rows:
            if manager_id is not None:
                self._load[(manager_id, day)] = calls

    @property
    def capacity(self) -> dict[int, int]:
        self.snapshot()
        assert self._capacity is not None
        return self._capacity

    @property
    def load(self) -> Counter[tuple[int, date]]:
        self.snapshot()
        return self._load

    def prefetch(self, customer_ids: Iterable[int]) -> None:
        """Learn, in one query, which of these customers already have an open call planned."""
        self.snapshot()
        wanted = sorted(set(customer_ids) - self._checked)
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            rows = self._session.execute(
                select(CallTask.customer_id, func.min(CallTask.scheduled_on))
                .where(
                    CallTask.customer_id.in_(chunk),
                    CallTask.status.in_(OPEN_TASK_STATUSES),
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
        self.snapshot()
        start = working_day_on_or_after(max(earliest, self.as_of))
        joined = self._open_day(customer_id)
        if joined is not None and joined >= start:
            return joined  # one call covers both: no more capacity used
        if manager_id is None:
            self.customer_day[customer_id] = start
            return start
        capacity = self.capacity.get(manager_id, 0)
        load = self._load
        day = start
        last = self.as_of + timedelta(days=PLANNER_HORIZON_DAYS)
        while capacity > 0 and load[(manager_id, day)] >= capacity and day < last:
            day = working_day_on_or_after(day + timedelta(days=1))
        if capacity <= 0:
            day = start
        load[(manager_id, day)] += 1
        self.customer_day[customer_id] = day
        return day
