"""New messages from the journeys, and withdrawing queued ones that must no longer go out.

A journey's writer builds rows with :func:`new_row` (queued, or suppressed up
front for an opted-out customer) and inserts them with :func:`enqueue`.
:func:`withdraw` ends queued messages ``expired`` with the reason — a notice
for a call that was cancelled, anything still queued for a suspended or closed
line — audited as ``message.expired``. :func:`rewrite_queued` gives queued
messages new wording (a customer moved to another manager), audited as
``message.rerendered``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select, true, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor
from crm.bulk import insert_many
from notifications.outbox.rows import CUSTOMERS, MESSAGES, customer_ref_of, message_entry
from notifications.outbox.states import EXPIRED, QUEUED, SUPPRESSED, check_transition


@dataclass(frozen=True)
class NewMessage:
    """One message a journey decided to send."""

    customer_id: int
    channel: str
    category: str
    template: str
    journey: str
    occurrence: str
    locale: str
    to_phone: str
    body: str
    scheduled_for: datetime
    valid_until: datetime | None
    rule_hash: str | None
    sms_opt_out: bool = False
    do_not_call: bool = False
    variables: Mapping[str, str] | None = None
    """What ``body`` was rendered with (kept, to render a queued text again)."""


def new_row(m: NewMessage, at: datetime) -> dict[str, Any]:
    """The outbox row for ``m``: queued, or suppressed now when the customer cannot get it."""
    status, reason = QUEUED, None
    if m.channel == "sms" and m.sms_opt_out:
        status, reason = SUPPRESSED, "opt_out: customer opted out of SMS"
    elif m.channel == "voice" and m.do_not_call:
        status, reason = SUPPRESSED, "do_not_call: customer is on the do-not-call list"
    return {
        "customer_id": m.customer_id,
        "channel": m.channel,
        "category": m.category,
        "template": m.template,
        "journey": m.journey,
        "occurrence": m.occurrence,
        "locale": m.locale,
        "to_phone": m.to_phone,
        "body": m.body,
        "variables": dict(m.variables) if m.variables is not None else None,
        "scheduled_for": m.scheduled_for,
        "valid_until": m.valid_until,
        "status": status,
        "status_reason": reason,
        "attempts": 0,
        "rule_hash": m.rule_hash,
        "created_at": at,
        "updated_at": at,
    }


def enqueue(session: Session, rows: Sequence[dict[str, Any]], with_ids: bool = False) -> list[int]:
    """Insert new message rows (from :func:`new_row`); with ``with_ids``, their ids in order.

    A plain executemany, then (when ids are wanted) one lookup by the natural
    key (journey, customer, occurrence, template): RETURNING with ordered rows
    makes SQLite fall back to one statement per row.
    """
    if not rows:
        return []
    for row in rows:
        if row["status"] not in (QUEUED, SUPPRESSED):
            raise ValueError(f"a new message starts queued or suppressed, not {row['status']}")
    insert_many(session, MESSAGES, rows)
    if not with_ids:
        return []
    found: dict[tuple[str, int, str, str], int] = {}
    keys = sorted({(r["journey"], r["customer_id"]) for r in rows})
    occurrences = sorted({r["occurrence"] for r in rows})
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        stmt = select(
            MESSAGES.c.id,
            MESSAGES.c.journey,
            MESSAGES.c.customer_id,
            MESSAGES.c.occurrence,
            MESSAGES.c.template,
        ).where(
            MESSAGES.c.journey.in_(sorted({j for j, _ in chunk})),
            MESSAGES.c.customer_id.in_([c for _, c in chunk]),
            MESSAGES.c.occurrence.in_(occurrences) if len(occurrences) <= 500 else true(),
        )
        for mid, journey, cid, occurrence, template in session.execute(stmt):
            found[(journey, cid, occurrence, template)] = mid
    return [found[(r["journey"], r["customer_id"], r["occurrence"], r["template"])] for r in rows]


def withdraw(
    session: Session,
    message_ids: Iterable[int],
    at: datetime,
    actor: Actor,
    reason: str,
) -> list[int]:
    """``queued → expired`` for ``message_ids`` still queued; audited; returns the ids moved."""
    ids = sorted(set(message_ids))
    if not ids:
        return []
    return _expire(session, MESSAGES.c.id.in_(ids), at, actor, reason)


def withdraw_for_customers(
    session: Session,
    customers: ColumnElement[bool],
    at: datetime,
    actor: Actor,
    reason: str,
    *,
    categories: Sequence[str] | None = None,
) -> list[int]:
    """Expire the queued messages (of ``categories``, or all) of the customers selected."""
    where: ColumnElement[bool] = MESSAGES.c.customer_id.in_(select(CUSTOMERS.c.id).where(customers))
    if categories is not None:
        where = and_(where, MESSAGES.c.category.in_(list(categories)))
    return _expire(session, where, at, actor, reason)


def _expire(
    session: Session, where: ColumnElement[bool], at: datetime, actor: Actor, reason: str
) -> list[int]:
    check_transition(QUEUED, EXPIRED)
    rows = session.execute(
        update(MESSAGES)
        .where(where, MESSAGES.c.status == QUEUED)
        .values(status=EXPIRED, status_reason=reason[:500], updated_at=at)
        .returning(
            MESSAGES.c.id,
            MESSAGES.c.customer_id,
            MESSAGES.c.journey,
            MESSAGES.c.rule_hash,
            MESSAGES.c.template,
        )
    ).all()
    if not rows:
        return []
    refs = dict(
        session.execute(
            select(CUSTOMERS.c.id, CUSTOMERS.c.external_id).where(
                CUSTOMERS.c.id.in_(sorted({r.customer_id for r in rows}))
            )
        )
        .tuples()
        .all()
    )
    ordered = sorted(rows, key=lambda r: r.id)
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.expired",
                r.id,
                r.customer_id,
                refs.get(r.customer_id),
                r.journey,
                r.rule_hash,
                {"reason": reason, "template": r.template},
            )
            for r in ordered
        ],
    )
    return [r.id for r in ordered]


def move_queued(
    session: Session, message_id: int, until: datetime, at: datetime, actor: Actor, reason: str
) -> bool:
    """Send a still-queued message at ``until`` instead (a rescheduled call's pre-call notice).

    Audited as ``message.deferred``. False, and nothing changes, when the message has
    left ``queued`` meanwhile (it went out or was suppressed) or is already due then.
    """
    row = session.execute(
        select(MESSAGES.c.status, MESSAGES.c.scheduled_for, MESSAGES.c.customer_id,
               MESSAGES.c.journey, MESSAGES.c.rule_hash)
        .where(MESSAGES.c.id == message_id)
        .with_for_update()
    ).first()  # fmt: skip
    if row is None or row.status != QUEUED or row.scheduled_for == until:
        return False
    moved = session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == message_id, MESSAGES.c.status == QUEUED)
        .values(scheduled_for=until, updated_at=at)
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        return False
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.deferred",
                message_id,
                row.customer_id,
                customer_ref_of(session, row.customer_id),
                row.journey,
                row.rule_hash,
                {"until": until, "was": row.scheduled_for, "reason": reason},
            )
        ],
    )
    return True


@dataclass(frozen=True)
class NewText:
    """A queued message's new wording, and what it was rendered with."""

    message_id: int
    body: str
    variables: Mapping[str, str]
    details: Mapping[str, Any]
    """For the audit row (for example the manager it names now)."""


def rewrite_queued(
    session: Session, texts: Sequence[NewText], at: datetime, actor: Actor, reason: str
) -> list[int]:
    """Queued messages get a new body (their customer moved to another manager); audited
    ``message.rerendered``. A message that left ``queued`` meanwhile is left as it is.

    The caller locks the rows first (``SELECT … FOR UPDATE``), so that a dispatcher
    cannot claim a text between its new wording being decided and written.
    """
    if not texts:
        return []
    by_id = {t.message_id: t for t in texts}
    still = session.execute(
        select(
            MESSAGES.c.id, MESSAGES.c.customer_id, MESSAGES.c.journey, MESSAGES.c.rule_hash
        ).where(MESSAGES.c.id.in_(sorted(by_id)), MESSAGES.c.status == QUEUED)
    ).all()
    if not still:
        return []
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("m_id"), MESSAGES.c.status == QUEUED)
        .values(body=bindparam("m_body"), variables=bindparam("m_vars"), updated_at=at),
        [
            {"m_id": r.id, "m_body": by_id[r.id].body, "m_vars": dict(by_id[r.id].variables)}
            for r in still
        ],
    )
    refs: dict[int, str] = dict(
        session.execute(
            select(CUSTOMERS.c.id, CUSTOMERS.c.external_id).where(
                CUSTOMERS.c.id.in_(sorted({r.customer_id for r in still}))
            )
        )
        .tuples()
        .all()
    )
    ordered = sorted(still, key=lambda r: r.id)
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.rerendered",
                r.id,
                r.customer_id,
                refs.get(r.customer_id),
                r.journey,
                r.rule_hash,
                {"reason": reason, **by_id[r.id].details},
            )
            for r in ordered
        ],
    )
    return [r.id for r in ordered]
