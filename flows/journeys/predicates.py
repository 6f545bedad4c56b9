"""Predicates several journeys share, each defined once (SQL over ``customers``).

Each comes with the value ``explain`` shows beside it: the decision it found,
the open task, the date of the last decline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from crm import tasks
from crm.models import CallTask, Customer, GracePeriod, JourneyOccurrence
from flows.journeys.protocol import Predicate


def _when(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return str(value)


def not_decided(journey: str, occurrence: Any) -> Predicate:
    """The (journey, customer, occurrence) key is not taken: skip what is already decided."""
    found = select(JourneyOccurrence.decided_at).where(
        JourneyOccurrence.journey == journey,
        JourneyOccurrence.customer_id == Customer.id,
        JourneyOccurrence.occurrence == occurrence,
    )
    text = occurrence if isinstance(occurrence, str) else "this occurrence"
    return Predicate(
        f"{text} not decided before (once per occurrence)",
        ~found.exists(),
        found.limit(1).scalar_subquery(),
        lambda v: "not yet" if v is None else f"decided {_when(v)}",
    )


def no_open_task(kind: str) -> Predicate:
    """No open call task of ``kind`` (never two open suggestions or callbacks)."""
    found = select(CallTask.id).where(
        CallTask.customer_id == Customer.id,
        CallTask.kind == kind,
        CallTask.status.in_(tasks.OPEN),
    )
    return Predicate(
        f"no open {kind} task",
        ~found.exists(),
        found.limit(1).scalar_subquery(),
        lambda v: "none" if v is None else f"task {v} is open",
    )


def callable_customer() -> Predicate:
    """Not on the do-not-call list: a journey whose point is a call skips them."""
    return Predicate(
        "not on the do-not-call list",
        Customer.do_not_call.is_(False),
        Customer.do_not_call,
        lambda v: "do-not-call" if v else "callable",
    )


def no_open_grace() -> Predicate:
    found = select(GracePeriod.deadline).where(
        GracePeriod.customer_id == Customer.id, GracePeriod.status == "open"
    )
    return Predicate(
        "no grace already open",
        ~found.exists(),
        found.limit(1).scalar_subquery(),
        lambda v: "none" if v is None else f"open, deadline {v}",
    )


def no_decline_since(kind: str, since: datetime, days: int) -> Predicate:
    """No ``declined`` outcome of a ``kind`` call at or after ``since`` (the cooldown)."""
    last = (
        select(func.max(CallTask.completed_at))
        .where(
            CallTask.customer_id == Customer.id,
            CallTask.kind == kind,
            CallTask.outcome == "declined",
        )
        .scalar_subquery()
    )
    declined = select(CallTask.id).where(
        CallTask.customer_id == Customer.id,
        CallTask.kind == kind,
        CallTask.outcome == "declined",
        CallTask.completed_at >= since,
    )
    return Predicate(
        f"no decline in the last {days} days (since {_when(since)})",
        ~declined.exists(),
        last,
        lambda v: "never declined" if v is None else f"declined {_when(v)}",
    )
