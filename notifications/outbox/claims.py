"""Claiming due messages for sending: select and lock, suppress, defer, mark sending."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import String, bindparam, func, literal, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from crm import audit, tasks
from crm.audit import Actor
from crm.db import is_sqlite
from notifications.outbox.rows import (
    MESSAGE_COLUMNS,
    MESSAGES,
    DueMessage,
    due_from_row,
    load_customer_facts,
    message_entry,
)
from notifications.outbox.states import ACCEPTED, QUEUED, SENDING, SUPPRESSED


def claim_due(
    session: Session, at: datetime, limit: int, *, due_by: datetime | None = None
) -> list[DueMessage]:
    """Select up to ``limit`` due queued messages and lock them for this transaction.

    Due means ``status='queued' AND scheduled_for <= at AND (next_attempt_at IS
    NULL OR next_attempt_at <= at)``, oldest first; ``due_by`` (never after ``at``)
    takes only those scheduled by then. On PostgreSQL the rows are
    taken ``FOR UPDATE SKIP LOCKED`` (a second dispatcher gets other rows, never
    waits); SQLite has no row locks but vipcare opens every transaction with
    ``BEGIN IMMEDIATE``, so the whole claim transaction is serialised. The
    caller decides per row (policy) and then calls :func:`begin_sending`,
    :func:`suppress` and :func:`defer` in the same transaction.
    """
    if limit <= 0:
        return []
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(
            MESSAGES.c.status == QUEUED,
            MESSAGES.c.scheduled_for <= (at if due_by is None else min(at, due_by)),
            (MESSAGES.c.next_attempt_at.is_(None)) | (MESSAGES.c.next_attempt_at <= at),
        )
        .order_by(MESSAGES.c.scheduled_for, MESSAGES.c.id)
        .limit(limit)
    )
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    customers = load_customer_facts(session, (r.customer_id for r in rows), lock=True)
    return [due_from_row(r, customers) for r in rows]


def attempt_id_for(token: str, message_id: int) -> str:
    """The per-row attempt id of a claim: the providers match on it, so it must be unique."""
    return f"{token}:{message_id}"


def begin_sending(
    session: Session,
    messages: Sequence[DueMessage],
    token: str,
    at: datetime,
    *,
    owner: str | None = None,
    claimed_at: datetime | None = None,
) -> list[DueMessage]:
    """``queued → sending`` for ``messages`` with fresh attempt ids; returns those moved.

    One conditional ``UPDATE ... WHERE status='queued' AND id IN (...) RETURNING``
    sets ``attempt_id = token:id`` (unique per row and per try) and names the
    rows it moved: a row another dispatcher took in between is simply not
    returned. The claim is a lease: ``owner`` (a :mod:`crm.process` identity) and
    ``claimed_at`` (the *wall-clock* time; ``at`` when not given) let a later run
    tell an abandoned claim from a live one. Commit before calling the provider.
    """
    if not messages:
        return []
    ids = [m.id for m in messages]
    moved = {
        r.id
        for r in session.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id.in_(ids), MESSAGES.c.status == QUEUED)
            .values(
                status=SENDING,
                attempt_id=literal(f"{token}:", String) + sql_cast(MESSAGES.c.id, String),
                sending_at=at,
                updated_at=at,
                attempts=MESSAGES.c.attempts + 1,
                claimed_by=owner,
                claimed_at=claimed_at or at,
            )
            .returning(MESSAGES.c.id, MESSAGES.c.attempt_id)
        )
        if r.attempt_id == attempt_id_for(token, r.id)
    }
    out: list[DueMessage] = []
    for m in messages:
        if m.id in moved:
            m.attempt_id = attempt_id_for(token, m.id)
            m.sending_at = at
            m.attempts += 1
            m.claimed_by = owner
            m.claimed_at = claimed_at or at
            out.append(m)
    return out


def suppress(
    session: Session,
    suppressed: Sequence[tuple[DueMessage, str]],
    at: datetime,
    actor: Actor,
    policy_ref: tuple[str | None, str | None] = (None, None),
) -> int:
    """``queued → suppressed(reason)`` in one executemany; audited; pre-call tasks go no-notice."""
    if not suppressed:
        return 0
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("m_id"), MESSAGES.c.status == QUEUED)
        .values(status=SUPPRESSED, status_reason=bindparam("m_reason"), updated_at=at),
        [{"m_id": m.id, "m_reason": reason[:500]} for m, reason in suppressed],
    )
    policy_id, policy_hash = policy_ref
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.suppressed",
                m.id,
                m.customer_id,
                m.customer_ref,
                m.journey,
                m.rule_hash,
                {
                    "reason": reason,
                    "channel": m.channel,
                    "category": m.category,
                    "template": m.template,
                    "policy_rule_id": policy_id,
                    "policy_hash": policy_hash,
                },
            )
            for m, reason in suppressed
        ],
    )
    tasks.ready_without_notice(
        session, {m.id: reason for m, reason in suppressed}, at, actor, status_word=SUPPRESSED
    )
    return len(suppressed)


def defer(
    session: Session,
    deferred: Sequence[tuple[DueMessage, datetime, str]],
    at: datetime,
    actor: Actor,
) -> int:
    """Keep ``queued`` but move ``scheduled_for`` (outside the send window); audited."""
    if not deferred:
        return 0
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("m_id"), MESSAGES.c.status == QUEUED)
        .values(scheduled_for=bindparam("m_until"), updated_at=at),
        [{"m_id": m.id, "m_until": until} for m, until, _ in deferred],
    )
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                "message.deferred",
                m.id,
                m.customer_id,
                m.customer_ref,
                m.journey,
                m.rule_hash,
                {"until": until, "was": m.scheduled_for, "reason": reason},
            )
            for m, until, reason in deferred
        ],
    )
    return len(deferred)


@dataclass(frozen=True)
class Abandoned:
    """Which ``sending`` claims are abandoned (their lease is over) and may be reconciled.

    - ``dead_owners``: claims of a process known to be gone (same host): at once;
    - ``claimed_before``: claims whose wall-clock lease (``claimed_at``, renewed
      while the owner works) is older than this: the owner stopped renewing;
    - ``sending_before``: rows with no lease at all (moved by hand, or written
      before leases existed), judged by ``sending_at`` as before.
    """

    claimed_before: datetime
    sending_before: datetime
    dead_owners: Collection[str] = field(default_factory=frozenset)


def sending_owners(session: Session) -> set[str]:
    """The owners holding claims in ``sending`` now (to ask which of them are dead)."""
    return {
        owner
        for owner in session.execute(
            select(MESSAGES.c.claimed_by)
            .where(MESSAGES.c.status == SENDING, MESSAGES.c.claimed_by.is_not(None))
            .distinct()
        ).scalars()
        if owner
    }


def stuck_sending(
    session: Session, abandoned: Abandoned | None, limit: int, after_id: int = 0
) -> list[DueMessage]:
    """Rows left in ``sending`` whose claim is abandoned (see :class:`Abandoned`).

    ``abandoned=None`` takes every sending row (``--reconcile-all``).
    """
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(MESSAGES.c.status == SENDING, MESSAGES.c.id > after_id)
        .order_by(MESSAGES.c.id)
        .limit(limit)
    )
    if abandoned is not None:
        lease_over = MESSAGES.c.claimed_at.is_not(None) & (
            MESSAGES.c.claimed_at <= abandoned.claimed_before
        )
        no_lease = MESSAGES.c.claimed_at.is_(None) & (
            MESSAGES.c.sending_at <= abandoned.sending_before
        )
        condition = lease_over | no_lease
        if abandoned.dead_owners:
            condition = condition | MESSAGES.c.claimed_by.in_(sorted(abandoned.dead_owners))
        stmt = stmt.where(condition)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    customers = load_customer_facts(session, (r.customer_id for r in rows), lock=False)
    return [due_from_row(r, customers) for r in rows]


def accepted_counts(
    session: Session, customer_ids: Iterable[int], since: datetime, exclude_ids: Iterable[int] = ()
) -> list[tuple[int, str, datetime]]:
    """(customer_id, category, when) of every message that reached or is reaching a provider.

    ``when`` is ``sent_at`` (or ``sending_at`` for in-flight rows); only rows at
    or after ``since``. The contact policy counts these against its caps.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return []
    when = func.coalesce(MESSAGES.c.sent_at, MESSAGES.c.sending_at)
    stmt = select(MESSAGES.c.customer_id, MESSAGES.c.category, when.label("when")).where(
        MESSAGES.c.customer_id.in_(ids),
        MESSAGES.c.status.in_((SENDING, *ACCEPTED)),
        when >= since,
    )
    excluded = sorted(set(exclude_ids))
    if excluded:
        stmt = stmt.where(MESSAGES.c.id.not_in(excluded))
    out: list[tuple[int, str, datetime]] = []
    for r in session.execute(stmt):
        stamp = r.when
        if isinstance(stamp, str):  # coalesce() loses the column type on SQLite
            stamp = datetime.fromisoformat(stamp)
        out.append((r.customer_id, r.category, _aware(stamp)))
    return out


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
