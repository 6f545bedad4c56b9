"""Writing a chunk of send outcomes back: sent, retried, failed, requeued; guarded by attempt."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from crm import audit, consent, tasks
from crm.audit import Actor, AuditEntry
from crm.db import is_sqlite
from crm.phones import mask
from notifications.outbox.expiry import expire
from notifications.outbox.provider_status import DEFAULT_LEAD_TIME
from notifications.outbox.rows import MESSAGES, DueMessage, message_entry
from notifications.outbox.states import ACCEPTED, FAILED, QUEUED, SENDING, SENT, check_transition

log = logging.getLogger(__name__)


def owned(session: Session, pairs: Iterable[tuple[int, str | None]]) -> set[int]:
    """Ids among ``(message_id, attempt_id)`` still ``sending`` under that attempt.

    Locks them on PostgreSQL (``FOR UPDATE``) so the write-back that follows is
    exact; on SQLite the ``BEGIN IMMEDIATE`` transaction already is. A row a
    reconciler or a status callback moved meanwhile is left alone.
    """
    wanted = {mid: att for mid, att in pairs}
    if not wanted:
        return set()
    stmt = (
        select(MESSAGES.c.id, MESSAGES.c.attempt_id)
        .where(MESSAGES.c.id.in_(sorted(wanted)), MESSAGES.c.status == SENDING)
        .order_by(MESSAGES.c.id)
    )
    if not is_sqlite(session):
        stmt = stmt.with_for_update()
    return {r.id for r in session.execute(stmt) if r.attempt_id == wanted[r.id]}


@dataclass
class SentOutcome:
    message: DueMessage
    provider: str
    provider_message_id: str
    sent_at: datetime
    via: str = "send"


@dataclass
class RetryOutcome:
    message: DueMessage
    next_attempt_at: datetime
    reason: str
    refund: bool = False
    """Nothing reached the provider (our own configuration failed): the try does not count."""


@dataclass
class FailedOutcome:
    message: DueMessage
    error_code: str | None
    reason: str
    provider: str | None = None
    opted_out: bool = False


@dataclass
class ExpiredOutcome:
    """Claimed, but its validity ran out before the provider was called: never sent."""

    message: DueMessage
    reason: str


@dataclass
class WriteBack:
    """What one chunk's write-back did (counts of rows actually moved)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    lost: list[int] = field(default_factory=list)


def renew_claims(session: Session, owner: str, wall_at: datetime) -> int:
    """Renew the lease on every row ``owner`` still holds in ``sending`` (a heartbeat)."""
    result = session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.status == SENDING, MESSAGES.c.claimed_by == owner)
        .values(claimed_at=wall_at)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def write_back(
    session: Session,
    at: datetime,
    actor: Actor,
    *,
    sent: Sequence[SentOutcome] = (),
    retried: Sequence[RetryOutcome] = (),
    failed: Sequence[FailedOutcome] = (),
    requeued: Sequence[DueMessage] = (),
    expired: Sequence[ExpiredOutcome] = (),
    lead_time: timedelta = DEFAULT_LEAD_TIME,
) -> WriteBack:
    """Record a chunk of send outcomes: one guarded executemany per outcome, one audit append.

    Only rows still ``sending`` under the same attempt id are written (see
    :func:`owned`); the rest are reported in ``lost`` (someone else moved them).
    ``requeued`` is reconciliation's ``sending → queued`` (the provider never
    got it), due again at once.
    """
    result = WriteBack()
    touched: list[DueMessage] = [o.message for o in sent]
    touched += [o.message for o in retried]
    touched += [o.message for o in failed]
    touched += list(requeued)
    touched += [o.message for o in expired]
    pairs = [(m.id, m.attempt_id) for m in touched]
    mine = owned(session, pairs)
    lost = {mid for mid, _ in pairs} - mine
    if lost and sent:
        # A status callback may have recorded our own send first: that is not lost.
        ours = {o.message.id: o.provider_message_id for o in sent if o.message.id in lost}
        # Any status, 'failed' included (a 30008 report can come first): the
        # matching provider id is what proves the row records our own send.
        recorded = session.execute(
            select(MESSAGES.c.id, MESSAGES.c.provider_message_id).where(
                MESSAGES.c.id.in_(sorted(ours)), MESSAGES.c.status.in_((*ACCEPTED, FAILED))
            )
        ).all()
        already = {r.id for r in recorded if r.provider_message_id == ours[r.id]}
        result.sent += len(already)
        lost -= already
        tasks.schedule_ready(
            session,
            {o.message.id: o.sent_at for o in sent if o.message.id in already},
            lead_time,
        )
    result.lost = sorted(lost)
    for mid in result.lost:
        log.warning("message %s is no longer ours to write back (moved by another process)", mid)
    # In message order, so the audit trail does not depend on thread timing.
    sent = sorted((o for o in sent if o.message.id in mine), key=lambda o: o.message.id)
    retried = sorted((o for o in retried if o.message.id in mine), key=lambda o: o.message.id)
    failed = sorted((o for o in failed if o.message.id in mine), key=lambda o: o.message.id)
    requeued = sorted((m for m in requeued if m.id in mine), key=lambda m: m.id)
    expired = sorted((o for o in expired if o.message.id in mine), key=lambda o: o.message.id)
    entries: list[AuditEntry] = []

    guard = and_(MESSAGES.c.id == bindparam("m_id"), MESSAGES.c.status == SENDING)
    if sent:
        check_transition(SENDING, SENT)
        session.execute(
            update(MESSAGES)
            .where(guard)
            .values(
                status=SENT,
                provider=bindparam("m_provider"),
                provider_message_id=bindparam("m_pid"),
                sent_at=bindparam("m_sent_at"),
                updated_at=at,
                status_reason=None,
                error_code=None,
                next_attempt_at=None,
            ),
            [
                {
                    "m_id": o.message.id,
                    "m_provider": o.provider,
                    "m_pid": o.provider_message_id,
                    "m_sent_at": o.sent_at,
                }
                for o in sent
            ],
        )
        entries += [
            message_entry(
                "message.sent",
                o.message.id,
                o.message.customer_id,
                o.message.customer_ref,
                o.message.journey,
                o.message.rule_hash,
                {
                    "provider": o.provider,
                    "provider_message_id": o.provider_message_id,
                    "attempt_id": o.message.attempt_id,
                    "attempts": o.message.attempts,
                    "channel": o.message.channel,
                    "template": o.message.template,
                    "to": mask(o.message.to_phone),
                    "via": o.via,
                },
            )
            for o in sent
        ]
    if retried:
        check_transition(SENDING, QUEUED)
        session.execute(
            update(MESSAGES)
            .where(guard)
            .values(
                status=QUEUED,
                next_attempt_at=bindparam("m_next"),
                status_reason=bindparam("m_reason"),
                attempts=MESSAGES.c.attempts - bindparam("m_refund"),
                updated_at=at,
            ),
            [
                {
                    "m_id": o.message.id,
                    "m_next": o.next_attempt_at,
                    "m_reason": o.reason[:500],
                    "m_refund": 1 if o.refund else 0,
                }
                for o in retried
            ],
        )
        entries += [
            message_entry(
                "message.retry",
                o.message.id,
                o.message.customer_id,
                o.message.customer_ref,
                o.message.journey,
                o.message.rule_hash,
                {
                    "attempts": o.message.attempts,
                    "next_attempt_at": o.next_attempt_at,
                    "reason": o.reason,
                },
            )
            for o in retried
        ]
    if requeued:
        check_transition(SENDING, QUEUED)
        session.execute(
            update(MESSAGES)
            .where(guard)
            .values(status=QUEUED, next_attempt_at=None, updated_at=at),
            [{"m_id": m.id} for m in requeued],
        )
        entries += [
            message_entry(
                "message.reconciled",
                m.id,
                m.customer_id,
                m.customer_ref,
                m.journey,
                m.rule_hash,
                {"outcome": "not_accepted", "attempt_id": m.attempt_id, "sending_at": m.sending_at},
            )
            for m in requeued
        ]
    if failed:
        check_transition(SENDING, FAILED)
        session.execute(
            update(MESSAGES)
            .where(guard)
            .values(
                status=FAILED,
                error_code=bindparam("m_code"),
                status_reason=bindparam("m_reason"),
                provider=bindparam("m_provider"),
                updated_at=at,
                next_attempt_at=None,
            ),
            [
                {
                    "m_id": o.message.id,
                    "m_code": (o.error_code or None) and str(o.error_code)[:32],
                    "m_reason": o.reason[:500],
                    "m_provider": o.provider,
                }
                for o in failed
            ],
        )
        entries += [
            message_entry(
                "message.failed",
                o.message.id,
                o.message.customer_id,
                o.message.customer_ref,
                o.message.journey,
                o.message.rule_hash,
                {
                    "error_code": o.error_code,
                    "reason": o.reason,
                    "attempts": o.message.attempts,
                    "provider": o.provider,
                },
            )
            for o in failed
        ]
        opted = {o.message.customer_id: o for o in failed if o.opted_out}
        audit.append(session, actor, at, entries)
        entries = []
        _opt_out_customers(session, opted, at, actor)
    audit.append(session, actor, at, entries)
    if sent:
        tasks.schedule_ready(session, {o.message.id: o.sent_at for o in sent}, lead_time)
    if failed:
        tasks.ready_without_notice(
            session, {o.message.id: o.reason for o in failed}, at, actor, status_word=FAILED
        )
    if expired:
        result.expired = expire(
            session, [(o.message, o.reason) for o in expired], at, actor, from_status=SENDING
        )
    result.sent += len(sent)
    result.retried, result.failed = len(retried), len(failed)
    return result


def _opt_out_customers(
    session: Session, opted: Mapping[int, FailedOutcome], at: datetime, actor: Actor
) -> None:
    """The provider says the recipient unsubscribed: opt them out through the consent owner."""
    if not opted:
        return
    consent.set_flag(
        session,
        "sms_opt_out",
        True,
        opted,
        at,
        actor,
        source="provider",
        per_customer={
            cid: {"error_code": o.error_code, "message_id": o.message.id}
            for cid, o in opted.items()
        },
    )
