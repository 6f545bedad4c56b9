"""Shared pieces of the outbox modules: table handles, the due-message row and audit entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from crm.audit import AuditEntry
from crm.db import is_sqlite
from crm.models import Customer, OutboundMessage
from crm.phones import mask


def customer_ref_of(session: Session, customer_id: int) -> str | None:
    return session.scalar(select(Customer.external_id).where(Customer.id == customer_id))


def message_entry(
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


MESSAGES = cast(Table, OutboundMessage.__table__)
CUSTOMERS = cast(Table, Customer.__table__)


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
    valid_until: datetime | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None

    def __repr__(self) -> str:  # never print a phone number whole
        return f"DueMessage(id={self.id}, customer={self.customer_ref}, to={mask(self.to_phone)})"


MESSAGE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.customer_id,
    MESSAGES.c.channel,
    MESSAGES.c.category,
    MESSAGES.c.template,
    MESSAGES.c.journey,
    MESSAGES.c.occurrence,
    MESSAGES.c.locale,
    MESSAGES.c.to_phone,
    MESSAGES.c.body,
    MESSAGES.c.scheduled_for,
    MESSAGES.c.attempts,
    MESSAGES.c.rule_hash,
    MESSAGES.c.attempt_id,
    MESSAGES.c.sending_at,
    MESSAGES.c.provider,
    MESSAGES.c.provider_message_id,
    MESSAGES.c.valid_until,
    MESSAGES.c.claimed_by,
    MESSAGES.c.claimed_at,
)


def due_from_row(row: Any, customers: Mapping[int, Any]) -> DueMessage:
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
        valid_until=row.valid_until,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
    )


def load_customer_facts(session: Session, ids: Iterable[int], lock: bool) -> dict[int, Any]:
    """Customer facts, fresh. With ``lock`` on PostgreSQL, takes ``FOR NO KEY UPDATE``.

    Locking the customers (in id order, so two dispatchers cannot deadlock)
    serialises the frequency-cap check per customer across dispatchers, while
    still letting journeys insert new messages that reference them.
    """
    wanted = sorted(set(ids))
    stmt = (
        select(
            CUSTOMERS.c.id,
            CUSTOMERS.c.external_id,
            CUSTOMERS.c.timezone,
            CUSTOMERS.c.sms_opt_out,
            CUSTOMERS.c.do_not_call,
        )
        .where(CUSTOMERS.c.id.in_(wanted))
        .order_by(CUSTOMERS.c.id)
    )
    if lock and not is_sqlite(session):
        stmt = stmt.with_for_update(key_share=True)
    return {r.id: r for r in session.execute(stmt)}
