"""The outbox: every SMS/voice notice as a row, moved through a guarded state machine.

::

    queued ──▶ sending ──▶ sent ──▶ delivered | undelivered | failed
      │  ▲        │
      │  └────────┤ (transient failure: retry later; crash reconciliation)
      ▼           ▼
  suppressed    failed (permanent, or retries exhausted)

Every move goes through :func:`check_transition`, which refuses an illegal one
with :class:`crm.errors.InvalidTransition` and a reason a person can act on.
The dispatcher moves rows in bulk (one ``UPDATE`` per chunk, guarded by the
expected status and attempt id) and audits each chunk with one
:func:`crm.audit.append`; single-row moves (:func:`move`,
:func:`apply_provider_status`) are for webhooks and operators.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, and_, bindparam, func, literal, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from crm import audit, consent
from crm.audit import Actor, AuditEntry
from crm.db import is_sqlite
from crm.errors import InvalidTransition, NotFound
from crm.models import CallTask, Customer, OutboundMessage
from crm.phones import mask

log = logging.getLogger(__name__)

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
UNDELIVERED = "undelivered"
FAILED = "failed"
SUPPRESSED = "suppressed"

TRANSITIONS: Mapping[str, frozenset[str]] = {
    QUEUED: frozenset({SENDING, SUPPRESSED}),
    SENDING: frozenset({SENT, QUEUED, FAILED}),
    SENT: frozenset({DELIVERED, UNDELIVERED, FAILED}),
    DELIVERED: frozenset(),
    UNDELIVERED: frozenset(),
    FAILED: frozenset(),
    SUPPRESSED: frozenset(),
}
"""Allowed moves; anything else is refused."""

TERMINAL: frozenset[str] = frozenset({DELIVERED, UNDELIVERED, FAILED, SUPPRESSED})
"""States a message never leaves."""

ACCEPTED: tuple[str, ...] = (SENT, DELIVERED, UNDELIVERED)
"""The provider took the message: these count towards frequency caps."""

_SPECIFIC_REASONS: Mapping[tuple[str, str], str] = {
    (QUEUED, SENT): "a queued message must be claimed (sending) before it can be marked sent",
    (
        QUEUED,
        DELIVERED,
    ): "a queued message has not been sent yet; delivery needs sending and sent first",
    (QUEUED, UNDELIVERED): "a queued message has not been sent yet, so it cannot be undelivered",
    (QUEUED, FAILED): "a queued message has not been tried; only a send attempt can fail "
    "(use suppressed to stop it)",
    (SENDING, DELIVERED): "the provider has not confirmed acceptance yet; mark it sent first",
    (SENDING, UNDELIVERED): "the provider has not confirmed acceptance yet; mark it sent first",
    (
        SENDING,
        SUPPRESSED,
    ): "the message is already with the provider; it can no longer be suppressed",
    (SENT, QUEUED): "the provider accepted the message; sending it again would double-send",
    (SENT, SENDING): "the provider accepted the message; sending it again would double-send",
    (SENT, SUPPRESSED): "the provider accepted the message; it can no longer be suppressed",
}


def transition_reason(current: str, target: str) -> str | None:
    """Why ``current → target`` is illegal, or ``None`` when it is allowed."""
    if current not in TRANSITIONS:
        return f"unknown current status {current!r}"
    if target not in TRANSITIONS:
        return f"unknown status {target!r}; expected one of {', '.join(TRANSITIONS)}"
    if target in TRANSITIONS[current]:
        return None
    if current == target:
        return f"the message is already {current}"
    specific = _SPECIFIC_REASONS.get((current, target))
    if specific:
        return specific
    if current in TERMINAL:
        return f"{current} is final; a message never leaves it"
    allowed = ", ".join(sorted(TRANSITIONS[current]))
    return f"from {current} a message can only go to {allowed}"


def check_transition(current: str, target: str, entity: str = "message") -> None:
    """Raise :class:`InvalidTransition` when ``current → target`` is not allowed."""
    reason = transition_reason(current, target)
    if reason is not None:
        raise InvalidTransition(entity, current, target, reason)


# ---------------------------------------------------------------------------
# Single-row moves (operators, webhooks)
# ---------------------------------------------------------------------------


def _customer_ref(session: Session, customer_id: int) -> str | None:
    return session.scalar(select(Customer.external_id).where(Customer.id == customer_id))


def _entry(
    action: str,
    message_id: int,
    customer_id: int,
    customer_ref: str | None,
    rule_id: str | None,
    rule_hash: str | None,
    details: dict[str, Any],
) -> AuditEntry:
    return AuditEntry(
        action=action,
        details={"message_id": message_id, **details},
        customer_id=customer_id,
        customer_ref=customer_ref,
        entity=f"message:{message_id}",
        rule_id=rule_id,
        rule_hash=rule_hash,
    )


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
            _entry(
                f"message.{target}",
                msg.id,
                msg.customer_id,
                _customer_ref(session, msg.customer_id),
                msg.journey,
                msg.rule_hash,
                {"from": previous, "reason": reason, "error_code": error_code},
            )
        ],
    )
    if target in (FAILED, UNDELIVERED, SUPPRESSED):
        tasks_without_notice(session, {msg.id: reason or target}, at, actor, status_word=target)
    return msg


_PROVIDER_RANK: Mapping[str, int] = {
    QUEUED: 1,  # queued *at the provider*: it has accepted the message
    SENT: 1,
    DELIVERED: 2,
    UNDELIVERED: 2,
    FAILED: 2,
}
_ROW_RANK: Mapping[str, int] = {SENDING: 0, SENT: 1, DELIVERED: 2, UNDELIVERED: 2, FAILED: 2}

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
        msg = session.scalar(
            select(OutboundMessage)
            .where(
                OutboundMessage.id == message_id,
                OutboundMessage.attempt_id == attempt_id,
                OutboundMessage.status == SENDING,
            )
            .with_for_update()
        )
        if msg is not None:
            msg.provider_message_id = provider_message_id
            msg.provider = msg.provider or provider
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
    customer_ref = _customer_ref(session, msg.customer_id)
    entries: list[AuditEntry] = []
    if msg.status == SENDING:  # the callback beat the dispatcher's own write-back
        check_transition(SENDING, SENT, entity)
        msg.status = SENT
        msg.sent_at = msg.sent_at or at
        entries.append(
            _entry(
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
    if target != msg.status:
        check_transition(msg.status, target, entity)
        msg.status = target
        if target == DELIVERED:
            msg.delivered_at = at
        if target in (UNDELIVERED, FAILED):
            msg.error_code = error_code
            msg.status_reason = reason or _describe(error_code)
        entries.append(
            _entry(
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
        set_tasks_ready_at(session, {msg.id: msg.sent_at or at}, lead_time)
    if target in (UNDELIVERED, FAILED):
        tasks_without_notice(
            session, {msg.id: msg.status_reason or target}, at, actor, status_word=target
        )
    return msg


def _describe(code: str | None) -> str:
    try:
        from notifications.errors import describe_code
    except ImportError:  # pragma: no cover - the adapters ship with this package
        return f"provider error {code}" if code else "no error code given"
    return describe_code(code)


# ---------------------------------------------------------------------------
# Bulk moves for the dispatcher
# ---------------------------------------------------------------------------

_T = cast(Table, OutboundMessage.__table__)
_C = cast(Table, Customer.__table__)
_TASKS = cast(Table, CallTask.__table__)


@dataclass
class DueMessage:
    """A message row plus the customer facts the contact policy needs at send time."""

    id: int
    customer_id: int
    customer_ref: str
    channel: str
    category: str
    template: str
    journey: str
    occurrence: str
    locale: str
    to_phone: str
    body: str
    scheduled_for: datetime
    attempts: int
    rule_hash: str | None
    timezone: str = "UTC"
    sms_opt_out: bool = False
    do_not_call: bool = False
    attempt_id: str | None = None
    sending_at: datetime | None = None
    provider: str | None = None
    provider_message_id: str | None = None

    def __repr__(self) -> str:  # never print a phone number whole
        return f"DueMessage(id={self.id}, customer={self.customer_ref}, to={mask(self.to_phone)})"


_MESSAGE_COLUMNS = (
    _T.c.id,
    _T.c.customer_id,
    _T.c.channel,
    _T.c.category,
    _T.c.template,
    _T.c.journey,
    _T.c.occurrence,
    _T.c.locale,
    _T.c.to_phone,
    _T.c.body,
    _T.c.scheduled_for,
    _T.c.attempts,
    _T.c.rule_hash,
    _T.c.attempt_id,
    _T.c.sending_at,
    _T.c.provider,
    _T.c.provider_message_id,
)


def _due_from_row(row: Any, customers: Mapping[int, Any]) -> DueMessage:
    cust = customers[row.customer_id]
    return DueMessage(
        id=row.id,
        customer_id=row.customer_id,
        customer_ref=cust.external_id,
        channel=row.channel,
        category=row.category,
        template=row.template,
        journey=row.journey,
        occurrence=row.occurrence,
        locale=row.locale,
        to_phone=row.to_phone,
        body=row.body,
        scheduled_for=row.scheduled_for,
        attempts=row.attempts,
        rule_hash=row.rule_hash,
        timezone=cust.timezone,
        sms_opt_out=bool(cust.sms_opt_out),
        do_not_call=bool(cust.do_not_call),
        attempt_id=row.attempt_id,
        sending_at=row.sending_at,
        provider=row.provider,
        provider_message_id=row.provider_message_id,
    )


def _load_customers(session: Session, ids: Iterable[int], lock: bool) -> dict[int, Any]:
    """Customer facts, fresh. With ``lock`` on PostgreSQL, takes ``FOR NO KEY UPDATE``.

    Locking the customers (in id order, so two dispatchers cannot deadlock)
    serialises the frequency-cap check per customer across dispatchers, while
    still letting journeys insert new messages that reference them.
    """
    wanted = sorted(set(ids))
    stmt = (
        select(_C.c.id, _C.c.external_id, _C.c.timezone, _C.c.sms_opt_out, _C.c.do_not_call)
        .where(_C.c.id.in_(wanted))
        .order_by(_C.c.id)
    )
    if lock and not is_sqlite(session):
        stmt = stmt.with_for_update(key_share=True)
    return {r.id: r for r in session.execute(stmt)}


def claim_due(session: Session, at: datetime, limit: int) -> list[DueMessage]:
    """Select up to ``limit`` due queued messages and lock them for this transaction.

    Due means ``status='queued' AND scheduled_for <= at AND (next_attempt_at IS
    NULL OR next_attempt_at <= at)``, oldest first. On PostgreSQL the rows are
    taken ``FOR UPDATE SKIP LOCKED`` (a second dispatcher gets other rows, never
    waits); SQLite has no row locks but vipcare opens every transaction with
    ``BEGIN IMMEDIATE``, so the whole claim transaction is serialised. The
    caller decides per row (policy) and then calls :func:`begin_sending`,
    :func:`suppress` and :func:`defer` in the same transaction.
    """
    if limit <= 0:
        return []
    stmt = (
        select(*_MESSAGE_COLUMNS)
        .where(
            _T.c.status == QUEUED,
            _T.c.scheduled_for <= at,
            (_T.c.next_attempt_at.is_(None)) | (_T.c.next_attempt_at <= at),
        )
        .order_by(_T.c.scheduled_for, _T.c.id)
        .limit(limit)
    )
    if not is_sqlite(session):
        stmt = stmt.with_for_update(skip_locked=True)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    customers = _load_customers(session, (r.customer_id for r in rows), lock=True)
    return [_due_from_row(r, customers) for r in rows]


def attempt_id_for(token: str, message_id: int) -> str:
    """The per-row attempt id of a claim: the providers match on it, so it must be unique."""
    return f"{token}:{message_id}"


def begin_sending(
    session: Session, messages: Sequence[DueMessage], token: str, at: datetime
) -> list[DueMessage]:
    """``queued → sending`` for ``messages`` with fresh attempt ids; returns those moved.

    One conditional ``UPDATE ... WHERE status='queued' AND id IN (...)`` sets
    ``attempt_id = token:id`` (unique per row and per try), then the rows are
    selected back by it: a row another dispatcher took in between is simply not
    returned. Commit before calling the provider.
    """
    if not messages:
        return []
    ids = [m.id for m in messages]
    session.execute(
        update(_T)
        .where(_T.c.id.in_(ids), _T.c.status == QUEUED)
        .values(
            status=SENDING,
            attempt_id=literal(f"{token}:", String) + sql_cast(_T.c.id, String),
            sending_at=at,
            updated_at=at,
            attempts=_T.c.attempts + 1,
        )
    )
    moved = {
        r.id
        for r in session.execute(
            select(_T.c.id, _T.c.attempt_id).where(_T.c.id.in_(ids), _T.c.status == SENDING)
        )
        if r.attempt_id == attempt_id_for(token, r.id)
    }
    out: list[DueMessage] = []
    for m in messages:
        if m.id in moved:
            m.attempt_id = attempt_id_for(token, m.id)
            m.sending_at = at
            m.attempts += 1
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
        update(_T)
        .where(_T.c.id == bindparam("m_id"), _T.c.status == QUEUED)
        .values(status=SUPPRESSED, status_reason=bindparam("m_reason"), updated_at=at),
        [{"m_id": m.id, "m_reason": reason[:500]} for m, reason in suppressed],
    )
    policy_id, policy_hash = policy_ref
    audit.append(
        session,
        actor,
        at,
        [
            _entry(
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
    tasks_without_notice(
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
        update(_T)
        .where(_T.c.id == bindparam("m_id"), _T.c.status == QUEUED)
        .values(scheduled_for=bindparam("m_until"), updated_at=at),
        [{"m_id": m.id, "m_until": until} for m, until, _ in deferred],
    )
    audit.append(
        session,
        actor,
        at,
        [
            _entry(
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


def move_queued(
    session: Session, message_id: int, until: datetime, at: datetime, actor: Actor, reason: str
) -> bool:
    """Send a still-queued message at ``until`` instead (a rescheduled call's pre-call notice).

    Audited as ``message.deferred``. False, and nothing changes, when the message has
    left ``queued`` meanwhile (it went out or was suppressed) or is already due then.
    """
    msg = session.execute(
        select(OutboundMessage).where(OutboundMessage.id == message_id).with_for_update()
    ).scalar_one_or_none()
    if msg is None or msg.status != QUEUED or msg.scheduled_for == until:
        return False
    was = msg.scheduled_for
    msg.scheduled_for = until
    msg.updated_at = at
    audit.append(
        session,
        actor,
        at,
        [
            _entry(
                "message.deferred",
                msg.id,
                msg.customer_id,
                _customer_ref(session, msg.customer_id),
                msg.journey,
                msg.rule_hash,
                {"until": until, "was": was, "reason": reason},
            )
        ],
    )
    return True


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
        select(_T.c.id, _T.c.attempt_id)
        .where(_T.c.id.in_(sorted(wanted)), _T.c.status == SENDING)
        .order_by(_T.c.id)
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
class WriteBack:
    """What one chunk's write-back did (counts of rows actually moved)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost: list[int] = field(default_factory=list)


def write_back(
    session: Session,
    at: datetime,
    actor: Actor,
    *,
    sent: Sequence[SentOutcome] = (),
    retried: Sequence[RetryOutcome] = (),
    failed: Sequence[FailedOutcome] = (),
    requeued: Sequence[DueMessage] = (),
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
    pairs = [(m.id, m.attempt_id) for m in touched]
    mine = owned(session, pairs)
    lost = {mid for mid, _ in pairs} - mine
    if lost and sent:
        # A status callback may have recorded our own send first: that is not lost.
        ours = {o.message.id: o.provider_message_id for o in sent if o.message.id in lost}
        # Any status, 'failed' included (a 30008 report can come first): the
        # matching provider id is what proves the row records our own send.
        recorded = session.execute(
            select(_T.c.id, _T.c.provider_message_id).where(
                _T.c.id.in_(sorted(ours)), _T.c.status.in_((*ACCEPTED, FAILED))
            )
        ).all()
        already = {r.id for r in recorded if r.provider_message_id == ours[r.id]}
        result.sent += len(already)
        lost -= already
        set_tasks_ready_at(
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
    entries: list[AuditEntry] = []

    guard = and_(_T.c.id == bindparam("m_id"), _T.c.status == SENDING)
    if sent:
        check_transition(SENDING, SENT)
        session.execute(
            update(_T)
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
            _entry(
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
            update(_T)
            .where(guard)
            .values(
                status=QUEUED,
                next_attempt_at=bindparam("m_next"),
                status_reason=bindparam("m_reason"),
                attempts=_T.c.attempts - bindparam("m_refund"),
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
            _entry(
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
            update(_T).where(guard).values(status=QUEUED, next_attempt_at=None, updated_at=at),
            [{"m_id": m.id} for m in requeued],
        )
        entries += [
            _entry(
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
            update(_T)
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
            _entry(
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
        set_tasks_ready_at(session, {o.message.id: o.sent_at for o in sent}, lead_time)
    if failed:
        tasks_without_notice(
            session, {o.message.id: o.reason for o in failed}, at, actor, status_word=FAILED
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


# ---------------------------------------------------------------------------
# Pre-call tasks waiting for their notice
# ---------------------------------------------------------------------------


def set_tasks_ready_at(
    session: Session, sent_at_by_message: Mapping[int, datetime], lead_time: timedelta
) -> int:
    """A notice went out: its waiting tasks become ready at ``sent_at + lead_time``.

    The task stays ``awaiting_notice``; :func:`promote_ready_tasks` flips it
    when the time comes. Returns the number of tasks scheduled.
    """
    if not sent_at_by_message:
        return 0
    ids = sorted(sent_at_by_message)
    waiting = session.execute(
        select(_TASKS.c.id, _TASKS.c.notice_message_id).where(
            _TASKS.c.notice_message_id.in_(ids),
            _TASKS.c.status == "awaiting_notice",
            _TASKS.c.ready_at.is_(None),
        )
    ).all()
    if not waiting:
        return 0
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("t_id"))
        .values(ready_at=bindparam("t_ready")),
        [
            {"t_id": t.id, "t_ready": sent_at_by_message[t.notice_message_id] + lead_time}
            for t in waiting
        ],
    )
    return len(waiting)


def tasks_without_notice(
    session: Session,
    reason_by_message: Mapping[int, str],
    at: datetime,
    actor: Actor,
    *,
    status_word: str,
) -> int:
    """The notice will never arrive: its waiting tasks become ``ready`` now, ``no_notice``.

    The reason goes into the task's details so the manager knows the call is
    unannounced. Audited as ``task.ready``.
    """
    if not reason_by_message:
        return 0
    rows = session.execute(
        select(
            _TASKS.c.id,
            _TASKS.c.notice_message_id,
            _TASKS.c.details,
            _TASKS.c.customer_id,
            _TASKS.c.journey,
            _TASKS.c.rule_hash,
            _C.c.external_id,
        )
        .join(_C, _C.c.id == _TASKS.c.customer_id)
        .where(
            _TASKS.c.notice_message_id.in_(sorted(reason_by_message)),
            _TASKS.c.status == "awaiting_notice",
        )
        .order_by(_TASKS.c.id)
    ).all()
    if not rows:
        return 0
    params = []
    entries = []
    for t in rows:
        reason = f"notice {status_word}: {reason_by_message[t.notice_message_id]}"
        details = dict(t.details or {})
        details["no_notice_reason"] = reason
        params.append({"t_id": t.id, "t_details": details})
        entries.append(
            AuditEntry(
                action="task.ready",
                details={
                    "task_id": t.id,
                    "no_notice": True,
                    "reason": reason,
                    "notice_message_id": t.notice_message_id,
                },
                customer_id=t.customer_id,
                customer_ref=t.external_id,
                entity=f"task:{t.id}",
                rule_id=t.journey,
                rule_hash=t.rule_hash,
            )
        )
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("t_id"), _TASKS.c.status == "awaiting_notice")
        .values(status="ready", no_notice=True, ready_at=at, details=bindparam("t_details")),
        params,
    )
    audit.append(session, actor, at, entries)
    return len(rows)


def promote_ready_tasks(
    session: Session, at: datetime, actor: Actor = audit.SYSTEM, batch: int = 5000
) -> int:
    """``awaiting_notice → ready`` for every task whose ``ready_at <= at``; audited.

    Set-based in batches; returns how many tasks became ready.
    """
    total = 0
    last_id = 0
    while True:
        rows = session.execute(
            select(
                _TASKS.c.id,
                _TASKS.c.customer_id,
                _TASKS.c.journey,
                _TASKS.c.rule_hash,
                _TASKS.c.ready_at,
                _TASKS.c.notice_message_id,
                _C.c.external_id,
            )
            .join(_C, _C.c.id == _TASKS.c.customer_id)
            .where(
                _TASKS.c.status == "awaiting_notice",
                _TASKS.c.ready_at.is_not(None),
                _TASKS.c.ready_at <= at,
                _TASKS.c.id > last_id,
            )
            .order_by(_TASKS.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return total
        last_id = rows[-1].id
        session.execute(
            update(_TASKS)
            .where(_TASKS.c.id.in_([r.id for r in rows]), _TASKS.c.status == "awaiting_notice")
            .values(status="ready")
        )
        audit.append(
            session,
            actor,
            at,
            [
                AuditEntry(
                    action="task.ready",
                    details={
                        "task_id": r.id,
                        "no_notice": False,
                        "ready_at": r.ready_at,
                        "notice_message_id": r.notice_message_id,
                    },
                    customer_id=r.customer_id,
                    customer_ref=r.external_id,
                    entity=f"task:{r.id}",
                    rule_id=r.journey,
                    rule_hash=r.rule_hash,
                )
                for r in rows
            ],
        )
        total += len(rows)


# ---------------------------------------------------------------------------
# Reconciliation and listing
# ---------------------------------------------------------------------------


def stuck_sending(
    session: Session, older_than: datetime | None, limit: int, after_id: int = 0
) -> list[DueMessage]:
    """Rows left in ``sending`` (by a crash): sending_at at or before ``older_than``.

    ``older_than=None`` takes every sending row (``--reconcile-all``).
    """
    stmt = (
        select(*_MESSAGE_COLUMNS)
        .where(_T.c.status == SENDING, _T.c.id > after_id)
        .order_by(_T.c.id)
        .limit(limit)
    )
    if older_than is not None:
        stmt = stmt.where(_T.c.sending_at <= older_than)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    customers = _load_customers(session, (r.customer_id for r in rows), lock=False)
    return [_due_from_row(r, customers) for r in rows]


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
    when = func.coalesce(_T.c.sent_at, _T.c.sending_at)
    stmt = select(_T.c.customer_id, _T.c.category, when.label("when")).where(
        _T.c.customer_id.in_(ids),
        _T.c.status.in_((SENDING, *ACCEPTED)),
        when >= since,
    )
    excluded = sorted(set(exclude_ids))
    if excluded:
        stmt = stmt.where(_T.c.id.not_in(excluded))
    out: list[tuple[int, str, datetime]] = []
    for r in session.execute(stmt):
        stamp = r.when
        if isinstance(stamp, str):  # coalesce() loses the column type on SQLite
            stamp = datetime.fromisoformat(stamp)
        out.append((r.customer_id, r.category, _aware(stamp)))
    return out


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class MessageView:
    """One outbox row as ``vipcare messages list`` shows it (phone masked)."""

    id: int
    customer_id: str
    channel: str
    category: str
    template: str
    journey: str
    occurrence: str
    status: str
    status_reason: str | None
    error_code: str | None
    provider_message_id: str | None
    scheduled_for: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    to: str
    attempts: int
    body: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_messages(
    session: Session,
    customer_ref: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[MessageView]:
    """Newest messages first, optionally for one customer (external id) or status."""
    if status is not None and status not in TRANSITIONS:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(TRANSITIONS)}")
    stmt = (
        select(OutboundMessage, Customer.external_id)
        .join(Customer, Customer.id == OutboundMessage.customer_id)
        .order_by(OutboundMessage.id.desc())
        .limit(limit)
    )
    if customer_ref is not None:
        stmt = stmt.where(Customer.external_id == customer_ref)
    if status is not None:
        stmt = stmt.where(OutboundMessage.status == status)
    return [
        MessageView(
            id=m.id,
            customer_id=ref,
            channel=m.channel,
            category=m.category,
            template=m.template,
            journey=m.journey,
            occurrence=m.occurrence,
            status=m.status,
            status_reason=m.status_reason,
            error_code=m.error_code,
            provider_message_id=m.provider_message_id,
            scheduled_for=m.scheduled_for,
            sent_at=m.sent_at,
            delivered_at=m.delivered_at,
            to=mask(m.to_phone),
            attempts=m.attempts,
            body=m.body,
        )
        for m, ref in session.execute(stmt).all()
    ]


def count_messages(
    session: Session, customer_ref: str | None = None, status: str | None = None
) -> int:
    """How many messages :func:`list_messages` would show without a limit."""
    stmt = select(func.count()).select_from(OutboundMessage)
    if customer_ref is not None:
        stmt = stmt.join(Customer, Customer.id == OutboundMessage.customer_id).where(
            Customer.external_id == customer_ref
        )
    if status is not None:
        stmt = stmt.where(OutboundMessage.status == status)
    return int(session.scalar(stmt) or 0)
