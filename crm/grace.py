"""Grace periods (停机关怀): the one module that opens and closes them.

A grace is a temporary advance that keeps a line open while the customer tops
up: ``open → repaid`` (a real top-up), ``open → suspended`` (the deadline
passed, the line was suspended), ``open → expired`` (the deadline passed and
the rule suspends nothing) or ``open → cancelled`` (the operator suspended or
closed the line meanwhile). Every close is guarded by ``status = 'open'`` with
``RETURNING``, so of two concurrent runs exactly one closes (and audits) it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from crm.bulk import insert_many, table_of
from crm.errors import InvalidTransition
from crm.models import GracePeriod

OPEN = "open"
TRANSITIONS: Mapping[str, frozenset[str]] = {
    OPEN: frozenset({"repaid", "suspended", "expired", "cancelled"}),
    "repaid": frozenset(),
    "suspended": frozenset(),
    "expired": frozenset(),
    "cancelled": frozenset(),
}


@dataclass(frozen=True)
class NewGrace:
    customer_id: int
    occurrence: str
    amount: Decimal
    granted_on: date
    granted_at: datetime
    deadline: date
    rule_hash: str | None


def open_graces(session: Session, graces: Sequence[NewGrace]) -> int:
    """Record newly granted graces (status ``open``)."""
    rows: list[dict[str, Any]] = [
        {
            "customer_id": g.customer_id,
            "occurrence": g.occurrence,
            "amount": g.amount,
            "granted_on": g.granted_on,
            "granted_at": g.granted_at,
            "deadline": g.deadline,
            "status": OPEN,
            "rule_hash": g.rule_hash,
        }
        for g in graces
    ]
    if rows:
        insert_many(session, table_of(GracePeriod), rows)
    return len(rows)


def close(session: Session, grace_ids: Sequence[int], status: str, on: date) -> set[int]:
    """``open → status`` for the graces still open; returns the ids this call closed."""
    if status not in TRANSITIONS[OPEN]:
        raise InvalidTransition(
            "grace", OPEN, status, f"a grace closes as {', '.join(sorted(TRANSITIONS[OPEN]))}"
        )
    closed: set[int] = set()
    ids = sorted(set(grace_ids))
    for start in range(0, len(ids), 1000):
        closed.update(
            session.execute(
                update(GracePeriod)
                .where(GracePeriod.id.in_(ids[start : start + 1000]), GracePeriod.status == OPEN)
                .values(status=status, closed_on=on)
                .returning(GracePeriod.id),
                execution_options={"synchronize_session": False},
            ).scalars()
        )
    return closed
