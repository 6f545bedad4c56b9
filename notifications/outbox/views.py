"""Reading the outbox: ``vipcare messages list``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.models import Customer, OutboundMessage
from crm.phones import mask
from notifications.outbox.states import TRANSITIONS


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


def count_due(session: Session, at: datetime) -> int:
    """Queued messages due at ``at`` (what a dispatch now would take, before the policy)."""
    m = OutboundMessage
    return int(
        session.execute(
            select(func.count()).where(
                m.status == "queued",
                m.scheduled_for <= at,
                m.next_attempt_at.is_(None) | (m.next_attempt_at <= at),
            )
        ).scalar_one()
    )
