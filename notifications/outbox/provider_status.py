"""Single-row moves: an operator's move and a provider's delivery report (status callback)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm import audit, tasks
from crm.audit import Actor, AuditEntry
from crm.errors import InvalidTransition, NotFound
from crm.models import OutboundMessage
from notifications.errors import VALIDITY_EXPIRED
from notifications.outbox.rows import customer_ref_of, message_entry
from notifications.outbox.states import (
    DELIVERED,
    EXPIRED,
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    TERMINAL,
    UNDELIVERED,
    check_transition,
)

log = logging.getLogger(__name__)


def move(
    session: Session,
    message_id: int,
    target: str,
    at: datetime,
    actor: Actor,
    *,
    reason: str | None = None,
    error_code: str | None = None,
) -> OutboundMessage:
    """Move one message to ``target`` (guarded, audited, in the caller's transaction).

    For operators and tests; the dispatcher uses the bulk functions below. The
    row is locked first (``FOR UPDATE`` on PostgreSQL) so the guard holds.
    """
    msg = session.scalar(
        select(OutboundMessage).where(OutboundMessage.id == message_id).with_for_update()
    )
    if msg is None:
        raise NotFound(f"no message with id {message_id}")
    check_transition(msg.status, target, f"message {message_id}")
    previous = msg.status
    msg.status = target
    msg.updated_at = at
    if reason is not None:
        msg.status_reason = reason
    if error_code is not None:
        msg.error_code = error_code
    if target == SENDING:
        msg.sending_at = at
        msg.attempts += 1
    elif target == SENT and msg.sent_at is None:
        msg.sent_at = at
    elif target == DELIVERED:
        msg.delivered_at = at
    session.flush()
    audit.append(
        session,
        actor,
        at,
        [
            message_entry(
                f"message.{target}",
                msg.id,
                msg.customer_id,
                customer_ref_of(session, msg.customer_id),
                msg.journey,
                msg.rule_hash,
                {"from": previous, "reason": reason, "error_code": error_code},
            )
        ],
    )
    if target in (FAILED, UNDELIVERED, SUPPRESSED):
        tasks.ready_without_notice(
            session, {msg.id: reason or target}, at, actor, status_word=target
        )
    return msg


_PROVIDER_RANK: Mapping[str, int] = {
    QUEUED: 1,  # queued *at the provider*: it has accepted the message
    SENT: 1,
    DELIVERED: 2,
    UNDELIVERED: 2,
    FAILED: 2,
}
_ROW_RANK: Mapping[str, int] = {
    SENDING: 0,
    SENT: 1,
    DELIVERED: 2,
    UNDELIVERED: 2,
    FAILED: 2,
    EXPIRED: 2,
}

WEBHOOK = Actor("webhook", "provider-status")
DEFAULT_LEAD_TIME = timedelta(hours=2)
"""Pre-call tasks become ready this long after their notice was sent."""


def apply_provider_status(
    session: Session,
    provider_message_id: str,
    status: str,
    error_code: str | None,
    at: datetime,
    *,
    reason: str | None = None,
    actor: Actor = WEBHOOK,
    message_id: int | None = None,
    attempt_id: str | None = None,
    provider: str | None = None,
    lead_time: timedelta = DEFAULT_LEAD_TIME,
) -> OutboundMessage:
    """Apply a provider's delivery report (status callback) to the message it names.

    ``status`` is the normalised provider word (``queued``, ``sent``,
    ``delivered``, ``undelivered``, ``failed``). Callbacks arrive late, twice
    and out of order, so one that would move the message backwards or out of a
    final state ('sent' after 'delivered') is ignored and the row returned as
    is. Unknown ``provider_message_id`` raises :class:`NotFound`; a report for
    a message that never reached a provider (queued, suppressed) or an unknown
    status raises :class:`InvalidTransition`.

    A callback can beat the dispatcher's own write-back of the provider id. The
    dispatcher therefore puts ``message_id`` and ``attempt_id`` in the status
    callback URL's query; pass them here and a row still ``sending`` under that
    attempt is found (and gets the provider id, and ``provider`` when given)
    even before the write-back. ``lead_time`` schedules the waiting pre-call
    task of a notice this report shows accepted, as the dispatcher would.
    """
    msg = session.scalar(
        select(OutboundMessage)
        .where(OutboundMessage.provider_message_id == provider_message_id)
        .order_by(OutboundMessage.id.desc())
        .limit(1)
        .with_for_update()
    )
    if msg is None and message_id is not None and attempt_id:
        # By row and attempt, whatever its status: a concurrent report of the same
        # message may hold the lock and move the row on (PostgreSQL re-checks the
        # WHERE on the row it waited for, so "still sending" would lose this one).
        msg = session.scalar(
            select(OutboundMessage)
            .where(OutboundMessage.id == message_id, OutboundMessage.attempt_id == attempt_id)
            .with_for_update()
        )
        if msg is not None and msg.provider_message_id is None and msg.status == SENDING:
            msg.provider_message_id = provider_message_id
            msg.provider = msg.provider or provider
        elif msg is not None and msg.provider_message_id != provider_message_id:
            msg = None  # the attempt's row names another provider message: not this one
    if msg is None:
        raise NotFound(f"no message with provider id {provider_message_id!r}")
    entity = f"message {msg.id}"
    if status not in _PROVIDER_RANK:
        raise InvalidTransition(
            entity,
            msg.status,
            status,
            f"unknown provider status; expected one of {', '.join(_PROVIDER_RANK)}",
        )
    if msg.status not in _ROW_RANK:
        raise InvalidTransition(
            entity, msg.status, status, f"a {msg.status} message was never accepted by a provider"
        )
    if _PROVIDER_RANK[status] <= _ROW_RANK[msg.status] or msg.status in TERMINAL:
        log.info(
            "ignoring late or duplicate %r report for message %s (already %s)",
            status,
            msg.id,
            msg.status,
        )
        return msg
    previous = msg.status
    customer_ref = customer_ref_of(session, msg.customer_id)
    entries: list[AuditEntry] = []
    if msg.status == SENDING:  # the callback beat the dispatcher's own write-back
        check_transition(SENDING, SENT, entity)
        msg.status = SENT
        msg.sent_at = msg.sent_at or at
        entries.append(
            message_entry(
                "message.sent",
                msg.id,
                msg.customer_id,
                customer_ref,
                msg.journey,
                msg.rule_hash,
                {
                    "from": SENDING,
                    "via": "provider status",
                    "provider_message_id": provider_message_id,
                },
            )
        )
    target = SENT if status == QUEUED else status
    if target in (UNDELIVERED, FAILED) and str(error_code or "") == VALIDITY_EXPIRED:
        target = EXPIRED  # the provider dropped it when its validity period ran out
    if target != msg.status:
        check_transition(msg.status, target, entity)
        msg.status = target
        if target == DELIVERED:
            msg.delivered_at = at
        if target in (UNDELIVERED, FAILED, EXPIRED):
            msg.error_code = error_code
            msg.status_reason = reason or _describe(error_code)
        entries.append(
            message_entry(
                f"message.{target}",
                msg.id,
                msg.customer_id,
                customer_ref,
                msg.journey,
                msg.rule_hash,
                {
                    "from": previous,
                    "provider_message_id": provider_message_id,
                    "error_code": error_code,
                    "reason": msg.status_reason if target != DELIVERED else None,
                },
            )
        )
    msg.updated_at = at
    session.flush()
    audit.append(session, actor, at, entries)
    if target in (SENT, DELIVERED):
        # The report may beat the dispatcher's write-back (or the dispatcher may
        # have died): schedule the waiting task now; a scheduled one is kept.
        tasks.schedule_ready(session, {msg.id: msg.sent_at or at}, lead_time)
    if target in (UNDELIVERED, FAILED, EXPIRED):
        tasks.ready_without_notice(
            session, {msg.id: msg.status_reason or target}, at, actor, status_word=target
        )
    return msg


def _describe(code: str | None) -> str:
    try:
        from notifications.errors import describe_code
    except ImportError:  # pragma: no cover - the adapters ship with this package
        return f"provider error {code}" if code else "no error code given"
    return describe_code(code)
