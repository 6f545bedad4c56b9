"""Grace periods (停机关怀): the one module that opens and closes them.

A grace is a temporary advance that keeps a line open while the customer tops
up: ``open → repaid`` (a real top-up), ``open → suspended`` (the deadline
passed, the line was suspended), ``open → expired`` (the deadline passed and
the rule suspends nothing) or ``open → cancelled`` (the operator suspended or
closed the line meanwhile). Every close is guarded by ``status = 'open'`` with
``RETURNING``, so of two concurrent runs exactly one closes (and audits) it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm.bulk import insert_many, table_of
from crm.errors import InvalidTransition
from crm.models import GracePeriod, OutboundMessage

OPEN = "open"
MIN_TOPUP_WINDOW = timedelta(hours=24)
"""How long before its deadline ended a grace's notice must have reached the customer for
the line to be suspended at the deadline: the customer had a real chance to top up."""
ACCEPTED = ("sent", "delivered", "undelivered")
"""Statuses of a notice the provider took (the outbox's own list, kept in step)."""
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


def deadline_end(deadline: date, timezone: str) -> datetime:
    """The first instant after the deadline day in the customer's zone (aware UTC)."""
    return datetime.combine(deadline + timedelta(days=1), time(0), tzinfo=ZoneInfo(timezone))


def notice_told(
    *,
    status: str,
    channel: str,
    sent_at: datetime | None,
    sms_opt_out: bool,
    do_not_call: bool,
    deadline: date,
    timezone: str,
) -> bool:
    """Did this grace notice give the customer a real chance to top up before the deadline?

    Yes when the provider took it at least :data:`MIN_TOPUP_WINDOW` before the
    deadline ended, or when the customer chose no texts on its channel (it was
    suppressed for their opt-out). A notice that expired, failed or still waits
    told them nothing: the line is not suspended on it.
    """
    if status == "suppressed":
        return sms_opt_out if channel == "sms" else do_not_call
    if status not in ACCEPTED or sent_at is None:
        return False
    return sent_at <= deadline_end(deadline, timezone) - MIN_TOPUP_WINDOW


JOURNEY = "grace_credit"
"""The journey whose messages are the grace notices (``occurrence`` = the grace's)."""


def notices_of(
    session: Session, graces: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], list[Any]]:
    """The notices of each (customer, grace occurrence): channel, status and sent time."""
    wanted = set(graces)
    found: dict[tuple[int, str], list[Any]] = {}
    customers = sorted({cid for cid, _ in wanted})
    for start in range(0, len(customers), 1000):
        rows = session.execute(
            select(
                OutboundMessage.customer_id,
                OutboundMessage.occurrence,
                OutboundMessage.channel,
                OutboundMessage.status,
                OutboundMessage.sent_at,
            ).where(
                OutboundMessage.journey == JOURNEY,
                OutboundMessage.customer_id.in_(customers[start : start + 1000]),
                OutboundMessage.occurrence.in_(sorted({occ for _, occ in wanted})),
            )
        )
        for n in rows:
            if (n.customer_id, n.occurrence) in wanted:
                found.setdefault((n.customer_id, n.occurrence), []).append(n)
    return found
