"""A customer's story, newest first: every message with its text, and every credit,
task, outcome, opt-out and other decision from the audit log.

Read-only. Messages come from the outbox (one entry per message, at the time it
was sent, or is due); the audit rows about a message's own progress
(``message.*``) are folded into that entry instead of repeated. Both reads use
the per-customer indexes and are bounded by ``limit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.models import AuditLog, Customer, Manager, OutboundMessage, Plan


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    """``message`` or the audit action (``task.done``, ``ledger.credit``, ...)."""
    actor: str
    details: dict[str, Any]
    text: str | None = None
    status: str | None = None
    channel: str | None = None
    template: str | None = None
    reason: str | None = None
    error_code: str | None = None
    """The provider's error code of a message that failed or was not delivered."""
    journey: str | None = None
    """The journey an audit row is about (a customer may have several tasks open)."""


def timeline(
    session: Session, customer_key: int, customer_ref: str, limit: int = 100
) -> list[Entry]:
    messages = session.execute(
        select(OutboundMessage)
        .where(OutboundMessage.customer_id == customer_key)
        .order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
        .limit(limit)
    ).scalars()
    entries = [
        Entry(
            at=m.sent_at or m.scheduled_for,
            kind="message",
            actor=m.journey,
            details={"journey": m.journey, "category": m.category, "id": m.id},
            text=m.body,
            status=m.status,
            channel=m.channel,
            template=m.template,
            reason=m.status_reason,
            error_code=m.error_code,
        )
        for m in messages
    ]
    rows = session.execute(
        select(AuditLog)
        .where(AuditLog.customer_ref == customer_ref, AuditLog.action.not_like("message.%"))
        .order_by(AuditLog.seq.desc())
        .limit(limit)
    ).scalars()
    for row in rows:
        entries.append(
            Entry(
                at=row.at,
                kind=row.action,
                actor=f"{row.actor_type}:{row.actor_id}",
                details=json.loads(row.details) if row.details else {},
                journey=row.rule_id,
            )
        )
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


@dataclass(frozen=True)
class CustomerCard:
    key: int
    ref: str
    name: str
    phone: str
    tier: str
    status: str
    locale: str
    timezone: str
    balance: Decimal
    balance_as_of: datetime | None
    last_contact_on: Any
    plan_code: str | None
    plan_name: str | None
    manager_id: int | None
    manager_ref: str | None
    manager_name: str | None
    sms_opt_out: bool
    do_not_call: bool
    clubs: list[str]


def customer_card(session: Session, ref: str, manager_id: int | None = None) -> CustomerCard | None:
    """A customer by external id; None when unknown or, given ``manager_id``, not theirs."""
    stmt = (
        select(Customer, Plan.code, Plan.name, Manager.external_id, Manager.name)
        .outerjoin(Plan, Plan.id == Customer.plan_id)
        .outerjoin(Manager, Manager.id == Customer.manager_id)
        .where(Customer.external_id == ref)
    )
    if manager_id is not None:
        stmt = stmt.where(Customer.manager_id == manager_id)
    found = session.execute(stmt).first()
    if found is None:
        return None
    c: Customer = found[0]
    return CustomerCard(
        key=c.id,
        ref=c.external_id,
        name=c.name,
        phone=c.phone,
        tier=c.tier,
        status=c.status,
        locale=c.locale,
        timezone=c.timezone,
        balance=c.balance,
        balance_as_of=c.balance_as_of,
        last_contact_on=c.last_contact_on,
        plan_code=found[1],
        plan_name=found[2],
        manager_id=c.manager_id,
        manager_ref=found[3],
        manager_name=found[4],
        sms_opt_out=c.sms_opt_out,
        do_not_call=c.do_not_call,
        clubs=c.club_names,
    )
