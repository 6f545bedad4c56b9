"""Messages that must no longer be sent end ``expired``, with a reason, audited.

A message is valid until its ``valid_until`` (set by its journey: the end of the
customer's local birthday, a grace notice's top-up deadline, ...). A pre-call
notice is also valid only while a call task waiting for it is still open: "your
manager will call you soon" is untrue once the call is off. The dispatcher
expires such messages instead of sending them late; a call task waiting for an
expired notice becomes ready at once, marked ``no_notice`` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from crm import audit, tasks
from crm.audit import Actor
from crm.db import is_sqlite
from crm.models import CallTask
from crm.statuses import ReasonCode
from notifications.outbox.rows import (
    MESSAGE_COLUMNS,
    MESSAGES,
    DueMessage,
    due_from_row,
    load_customer_facts,
    message_entry,
)
from notifications.outbox.states import EXPIRED, QUEUED, check_transition

PAST_VALIDITY = ReasonCode.VALID_UNTIL.value
CALL_CLOSED = ReasonCode.CALL_CLOSED.value
WINDOW_AFTER_VALIDITY = ReasonCode.WINDOW_AFTER_VALIDITY.value


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def past_validity(m: DueMessage) -> str:
    assert m.valid_until is not None
    return f"{PAST_VALIDITY}: not sent before it stopped being valid at {stamp(m.valid_until)}"


def window_after_validity(m: DueMessage, window_opens: datetime) -> str:
    assert m.valid_until is not None
    return (
        f"{WINDOW_AFTER_VALIDITY}: the customer's next send window opens at "
        f"{stamp(window_opens)}, after it stops being valid at {stamp(m.valid_until)}"
    )


CALL_NO_LONGER_PLANNED = f"{CALL_CLOSED}: the call it announced is no longer planned"


def notice_tasks(session: Session, message_ids: Iterable[int]) -> dict[int, bool]:
    """For each of ``message_ids`` that call tasks wait for: is one of those tasks still open?

    Messages no task refers to are not in the result (they are not pre-call notices).
    """
    ids = sorted(set(message_ids))
    out: dict[int, bool] = {}
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(CallTask.notice_message_id, CallTask.status).where(
                CallTask.notice_message_id.in_(ids[start : start + 1000])
            )
        )
        for message_id, status in rows:
            if message_id is not None:
                out[message_id] = out.get(message_id, False) or status in tasks.OPEN
    return out


def expire(
    session: Session,
    expired: Sequence[tuple[DueMessage, str]],
    at: datetime,
    actor: Actor,
    *,
    from_status: str = QUEUED,
) -> int:
    """``from_status → expired(reason)`` for rows still in ``from_status``; audited.

    The caller holds the rows (a claim transaction, or :func:`expire_overdue`'s
    lock). Tasks waiting for an expired notice become ready, ``no_notice``.
    Returns how many rows moved.
    """
    if not expired:
        return 0
    check_transition(from_status, EXPIRED)
    by_id = {m.id: (m, reason) for m, reason in expired}
    still = set(
        session.execute(
            select(MESSAGES.c.id).where(
                MESSAGES.c.id.in_(sorted(by_id)), MESSAGES.c.status == from_status
            )
        ).scalars()
    )
    moved = [by_id[i] for i in sorted(still)]
    if not moved:
        return 0
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("m_id"), MESSAGES.c.status == from_status)
        .values(
            status=EXPIRED,
            status_reason=bindparam("m_reason"),
            next_attempt_at=None,
            updated_at=at,
        ),
        [{"m_id": m.id, "m_reason": reason[:500]} for m, reason in moved],
    )
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.expired",
                m.id,
                m.customer_id,
                m.customer_ref,
                m.journey,
                m.rule_hash,
                {
                    "from": from_status,
                    "reason": reason,
                    "valid_until": m.valid_until,
                    "channel": m.channel,
                    "template": m.template,
                },
            )
            for m, reason in moved
        ],
    )
    tasks.ready_without_notice(
        session, {m.id: reason for m, reason in moved}, at, actor, status_word=EXPIRED
    )
    return len(moved)


def expire_overdue(session: Session, at: datetime, actor: Actor, limit: int = 1000) -> int:
    """Expire up to ``limit`` queued messages whose ``valid_until`` is at or before ``at``.

    Whether or not they are due (a retry waiting for ``next_attempt_at``, a row
    deferred to a window): past its validity a message is never sent. Rows
    another dispatcher holds are skipped (``SKIP LOCKED``), not waited for.
    """
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(
            MESSAGES.c.status == QUEUED,
            MESSAGES.c.valid_until.is_not(None),
            MESSAGES.c.valid_until <= at,
        )
        .order_by(MESSAGES.c.id)
        .limit(limit)
    )
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    rows = session.execute(stmt).all()
    if not rows:
        return 0
    customers = load_customer_facts(session, (r.customer_id for r in rows), lock=False)
    due = [due_from_row(r, customers) for r in rows]
    return expire(session, [(m, past_validity(m)) for m in due], at, actor)
