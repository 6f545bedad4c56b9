"""Customers' consent flags (``sms_opt_out``, ``do_not_call``): the one module that changes them.

It also owns ``inbound_messages``, the record of keyword SMS (STOP, START, ...)
that makes each one count once and in the order the customer sent them.

An inbound STOP, a provider's "unsubscribed" error, a CSV import and an
operator all end here, so every change is guarded the same way and audited
once: a flag is only written where it actually changes, and each changed
customer gets one audit row naming the source. Inserting a new customer row
with its initial flags (import, seed) is creation, not a change, and stays with
the importer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.bulk import insert_ignoring_conflicts
from crm.errors import CrmError
from crm.models import Customer, InboundMessage

Flag = Literal["sms_opt_out", "do_not_call"]
FLAGS: tuple[Flag, ...] = ("sms_opt_out", "do_not_call")

TRANSITIONS: Mapping[tuple[Flag, bool], str] = {
    ("sms_opt_out", True): "customer.sms_opt_out",
    ("sms_opt_out", False): "customer.sms_opt_in",
    ("do_not_call", True): "customer.do_not_call",
    ("do_not_call", False): "customer.do_not_call_lifted",
}
"""Every allowed change: (flag, new value) → the audit action that records it."""

Source = Literal["inbound_sms", "provider", "import", "operator"]


class ConsentError(CrmError):
    """A consent change that is not allowed (unknown flag)."""


@dataclass(frozen=True)
class ConsentChange:
    """One customer whose flag changed."""

    customer_id: int
    customer_ref: str
    flag: Flag
    value: bool


def set_flag(
    session: Session,
    flag: Flag,
    value: bool,
    who: Iterable[int] | ColumnElement[bool],
    at: datetime,
    actor: Actor,
    *,
    source: Source,
    details: Mapping[str, Any] | None = None,
    per_customer: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[ConsentChange]:
    """Set ``flag`` to ``value`` for the customers ``who`` names, where it differs; audit each.

    ``who`` is a collection of customer ids or a WHERE clause over ``customers``.
    ``details`` go into every audit row, ``per_customer`` adds to one customer's
    row. Runs in the caller's transaction; returns the customers that changed.
    """
    action = TRANSITIONS.get((flag, value))
    if action is None:
        raise ConsentError(f"unknown consent flag {flag!r}; expected one of {', '.join(FLAGS)}")
    column = getattr(Customer, flag)
    where = who if isinstance(who, ColumnElement) else Customer.id.in_(sorted(set(who)))
    changed: list[ConsentChange] = []
    rows = session.execute(
        update(Customer)
        .where(where, column.is_(not value))
        .values({flag: value})
        .returning(Customer.id, Customer.external_id),
        execution_options={"synchronize_session": False},
    ).all()
    for customer_id, ref in sorted(rows):
        changed.append(ConsentChange(customer_id, ref, flag, value))
    if not changed:
        return changed
    extra = per_customer or {}
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action=action,
                details={
                    flag: value,
                    "source": source,
                    **(details or {}),
                    **extra.get(c.customer_id, {}),
                },
                customer_id=c.customer_id,
                customer_ref=c.customer_ref,
                entity=f"customer:{c.customer_ref}",
            )
            for c in changed
        ],
    )
    return changed


def flags_of(session: Session, customer_ids: Iterable[int]) -> dict[int, tuple[bool, bool]]:
    """(sms_opt_out, do_not_call) per customer id."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Customer.id, Customer.sms_opt_out, Customer.do_not_call).where(Customer.id.in_(ids))
    )
    return {cid: (bool(sms), bool(dnc)) for cid, sms, dnc in rows}


InboundResult = Literal["applied", "unchanged", "superseded", "duplicate"]


@dataclass(frozen=True)
class InboundOutcome:
    """What one inbound keyword did: ``applied`` (flags changed), ``unchanged`` (already so),
    ``superseded`` (a newer keyword from that phone already counts) or ``duplicate``
    (this provider message id was seen before; nothing happened)."""

    outcome: InboundResult
    changed: int
    changes: tuple[ConsentChange, ...] = ()


def apply_inbound_keyword(
    session: Session,
    *,
    provider_message_id: str,
    phone: str,
    keyword: str,
    opt_out: bool,
    message_at: datetime,
    received_at: datetime,
    actor: Actor,
) -> InboundOutcome:
    """Apply an inbound opt-out / opt-in keyword once, in message-time order.

    A provider message id already recorded is a replay or a re-delivery: nothing
    changes. A keyword sent before the newest recorded keyword of the same phone
    is kept as ``superseded`` and changes nothing, so a replayed or late START
    never undoes a later STOP. Otherwise ``sms_opt_out`` of every customer with
    that phone is set through :func:`set_flag` (audited). Runs in the caller's
    transaction; ``message_at`` is the message's own time when the provider
    gives one, else the time it was first received.
    """
    # Serialise the instructions of one phone: lock its customers (PostgreSQL;
    # SQLite's BEGIN IMMEDIATE already holds the database's write lock).
    session.execute(select(Customer.id).where(Customer.phone == phone).with_for_update())
    won = insert_ignoring_conflicts(
        session,
        InboundMessage,
        [
            {
                "provider_message_id": provider_message_id,
                "phone": phone,
                "keyword": keyword[:32],
                "action": "opt_out" if opt_out else "opt_in",
                "message_at": message_at,
                "received_at": received_at,
                "outcome": "unchanged",
                "customers_changed": 0,
            }
        ],
        returning="id",
    )
    if not won:
        return InboundOutcome("duplicate", 0)
    (row_id,) = won
    newest = session.scalar(
        select(func.max(InboundMessage.message_at)).where(
            InboundMessage.phone == phone,
            InboundMessage.outcome != "superseded",
            InboundMessage.id != row_id,
        )
    )
    result: InboundOutcome
    if newest is not None and message_at < newest:
        result = InboundOutcome("superseded", 0)
    else:
        changes = set_flag(
            session,
            "sms_opt_out",
            opt_out,
            Customer.phone == phone,
            received_at,
            actor,
            source="inbound_sms",
            details={"keyword": keyword[:32], "provider_message_id": provider_message_id},
        )
        result = InboundOutcome("applied" if changes else "unchanged", len(changes), tuple(changes))
    session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == row_id)
        .values(outcome=result.outcome, customers_changed=result.changed)
    )
    return result
