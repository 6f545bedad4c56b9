"""Supervisor reports: per-manager workload and results, and the 30-day series behind
the charts. Read-only, grouped in SQL.

Days are the reader's: rows are grouped by UTC hour in SQL (a few hundred groups
for a month) and the hours are then placed on the reader's calendar in Python,
which is exact for every zone with whole-hour offsets (all of China).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from crm.capacity import OPEN_TASK_STATUSES
from crm.models import TIERS, CallTask, Customer, Manager, OutboundMessage


@dataclass(frozen=True)
class ManagerStats:
    manager_id: int
    manager_ref: str
    name: str
    capacity: int
    open_tasks: int
    overdue: int
    due_in_window: int
    done_in_window: int
    satisfaction: Decimal | None
    rated: int

    @property
    def completion_rate(self) -> Decimal | None:
        """Of the calls planned in the window (not cancelled), the share done."""
        if not self.due_in_window:
            return None
        return (Decimal(self.done_in_window) / self.due_in_window).quantize(Decimal("0.001"))


def _avg(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def team(
    session: Session, today: date, days: int = 30, manager_id: int | None = None
) -> list[ManagerStats]:
    """Per manager: open tasks (workload), overdue, the window's completion and satisfaction.

    The window is the ``days`` days up to and including ``today``.
    """
    first = today - timedelta(days=days - 1)
    scope: list[ColumnElement[bool]] = [CallTask.manager_id.is_not(None)]
    if manager_id is not None:
        scope.append(CallTask.manager_id == manager_id)
    workload = {
        mid: (int(n), int(late or 0))
        for mid, n, late in session.execute(
            select(
                CallTask.manager_id,
                func.count(),
                func.sum(case((CallTask.scheduled_on < today, 1), else_=0)),
            )
            .where(*scope, CallTask.status.in_(OPEN_TASK_STATUSES))
            .group_by(CallTask.manager_id)
        )
    }
    planned = {
        mid: (int(n), int(done or 0), _avg(sat), int(rated or 0))
        for mid, n, done, sat, rated in session.execute(
            select(
                CallTask.manager_id,
                func.count(),
                func.sum(case((CallTask.status == "done", 1), else_=0)),
                func.avg(CallTask.satisfaction),
                func.count(CallTask.satisfaction),
            )
            .where(
                *scope,
                CallTask.status != "cancelled",
                CallTask.scheduled_on >= first,
                CallTask.scheduled_on <= today,
            )
            .group_by(CallTask.manager_id)
        )
    }
    managers = select(
        Manager.id, Manager.external_id, Manager.name, Manager.daily_call_capacity
    ).order_by(Manager.external_id)
    if manager_id is not None:
        managers = managers.where(Manager.id == manager_id)
    out = []
    for mid, ref, name, capacity in session.execute(managers):
        n_open, late = workload.get(mid, (0, 0))
        due, done, sat, rated = planned.get(mid, (0, 0, None, 0))
        if not (n_open or due or capacity):
            continue  # supervisors and managers without any calls
        out.append(ManagerStats(mid, ref, name, capacity, n_open, late, due, done, sat, rated))
    return out


def _hour_key(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H", column)
    return func.to_char(column, "YYYY-MM-DD HH24")


def _local_day(hour_key: str, tz: ZoneInfo) -> date:
    start = datetime.strptime(hour_key, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return start.astimezone(tz).date()


def window(today: date, days: int, tz: ZoneInfo) -> tuple[list[date], datetime, datetime]:
    """The local days of the window and its UTC bounds [start, end)."""
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tz).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), time(0), tz).astimezone(UTC)
    return [first + timedelta(days=i) for i in range(days)], start, end


def completed_per_day(
    session: Session, today: date, tz: ZoneInfo, days: int = 30
) -> list[tuple[date, int]]:
    """Calls completed per local day over the window (zero days included)."""
    day_list, start, end = window(today, days, tz)
    key = _hour_key(session, CallTask.completed_at)
    counts: dict[date, int] = defaultdict(int)
    for hour, n in session.execute(
        select(key, func.count())
        .where(CallTask.completed_at >= start, CallTask.completed_at < end)
        .group_by(key)
    ):
        counts[_local_day(hour, tz)] += int(n)
    return [(d, counts.get(d, 0)) for d in day_list]


def messages_per_day(
    session: Session, today: date, tz: ZoneInfo, days: int = 30
) -> tuple[list[date], dict[str, list[int]]]:
    """Messages per local day (when sent, else when due) by status: {status: counts}."""
    day_list, start, end = window(today, days, tz)
    when = func.coalesce(OutboundMessage.sent_at, OutboundMessage.scheduled_for)
    key = _hour_key(session, when)
    counts: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for status, hour, n in session.execute(
        select(OutboundMessage.status, key, func.count())
        .where(OutboundMessage.scheduled_for < end, when >= start, when < end)
        .group_by(OutboundMessage.status, key)
    ):
        counts[status][_local_day(hour, tz)] += int(n)
    return day_list, {s: [c.get(d, 0) for d in day_list] for s, c in sorted(counts.items())}


def satisfaction_by(
    session: Session, today: date, tz: ZoneInfo, by: str, days: int = 30
) -> list[tuple[str, Decimal, int]]:
    """Average satisfaction of calls completed in the window, by ``tier`` or ``journey``:
    (group, average, calls rated), tiers in tier order."""
    _days, start, end = window(today, days, tz)
    column: Any = Customer.tier if by == "tier" else CallTask.journey
    stmt = (
        select(column, func.avg(CallTask.satisfaction), func.count(CallTask.satisfaction))
        .where(
            CallTask.completed_at >= start,
            CallTask.completed_at < end,
            CallTask.satisfaction.is_not(None),
        )
        .group_by(column)
    )
    if by == "tier":
        stmt = stmt.join(Customer, Customer.id == CallTask.customer_id)
    elif by != "journey":
        raise ValueError(f"satisfaction_by: by must be 'tier' or 'journey', got {by!r}")
    rows = [(str(g), _avg(a) or Decimal(0), int(n)) for g, a, n in session.execute(stmt)]
    if by == "tier":
        rows.sort(key=lambda r: TIERS.index(r[0]) if r[0] in TIERS else 99)
    else:
        rows.sort()
    return rows
