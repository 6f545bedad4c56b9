"""Calendar arithmetic shared by the SQL compiler and the Python evaluator.

Derived integer fields (``tenure_days``, ``tenure_months``, ``age``,
``days_since_contact``) are never computed in SQL. Instead each ``value >= N``
becomes ``date_column <= cutoff(N)`` with the cutoff computed here from the
as-of date and bound as a parameter: portable between SQLite and PostgreSQL,
index-friendly, and provably the same as the Python evaluation, which uses the
definitions below.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, timedelta

DAY = timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, clamped to the month's end (31 Jan + 1 = 28 Feb)."""
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def months_between(start: date, as_of: date) -> int:
    """Whole months from ``start`` to ``as_of``: the largest N, add_months(start, N) <= as_of."""
    n = (as_of.year - start.year) * 12 + as_of.month - start.month
    if add_months(start, n) > as_of:
        n -= 1
    return n


def days_between(start: date, as_of: date) -> int:
    return (as_of - start).days


def years_between(start: date, as_of: date) -> int:
    """Age in whole years; a 29 February birthday counts on 28 February in common years."""
    return months_between(start, as_of) // 12


def month_cutoff(as_of: date, months: int) -> date:
    """The latest start date with months_between(start, as_of) >= months."""
    year, month0 = divmod(as_of.year * 12 + as_of.month - 1 - months, 12)
    candidate = date(year, month0 + 1, calendar.monthrange(year, month0 + 1)[1])
    while add_months(candidate, months) > as_of:
        candidate -= DAY
    return candidate


def day_cutoff(as_of: date, days: int) -> date:
    """The latest start date with days_between(start, as_of) >= days."""
    return as_of - timedelta(days=days)


def cutoff_for(field: str, as_of: date) -> Callable[[int], date]:
    """``cutoff(N)``: the derived value is >= N exactly when the date column is <= cutoff(N)."""
    if field in ("tenure_days", "days_since_contact"):
        return lambda n: day_cutoff(as_of, n)
    if field == "tenure_months":
        return lambda n: month_cutoff(as_of, n)
    if field == "age":
        return lambda n: month_cutoff(as_of, 12 * n)
    raise KeyError(field)


DERIVED: dict[str, tuple[str, Callable[[date, date], int]]] = {
    "tenure_days": ("joined_on", days_between),
    "tenure_months": ("joined_on", months_between),
    "age": ("birthday", years_between),
    "days_since_contact": ("last_contact_on", days_between),
}
"""Derived field → (the date it is computed from, how)."""
