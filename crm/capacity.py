"""A manager's daily call capacity: how many open calls sit on each working day.

Capacity is ``managers.daily_call_capacity`` calls per working day (Monday to
Friday). The load of a day is the number of open tasks (``awaiting_notice`` or
``ready``) scheduled on it. Reads only; the task owner (:mod:`crm.tasks`) and the
journeys' planner decide with these numbers.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import CallTask

OPEN_TASK_STATUSES: tuple[str, ...] = ("awaiting_notice", "ready")
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
        select(CallTask.scheduled_on, func.count())
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
    """A working day with fewer open tasks than the capacity."""
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
