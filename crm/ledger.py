"""The credit ledger: the one module that posts credits and reversals to balances.

Append-only: a grace advance, a birthday perk, a grace reversal are each a row
with the balance after it, and each moves ``customers.balance`` in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from crm.audit import AuditEntry
from crm.bulk import insert_many, table_of
from crm.models import CreditLedger, Customer
from crm.types import Money


def list_entries(
    session: Session, customer_ref: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    stmt = (
        select(CreditLedger, Customer.external_id)
        .join(Customer, Customer.id == CreditLedger.customer_id)
        .order_by(CreditLedger.id)
        .limit(limit)
    )
    if customer_ref is not None:
        stmt = stmt.where(Customer.external_id == customer_ref)
    return [
        {
            "id": entry.id,
            "customer_id": ref,
            "amount": entry.amount,
            "balance_after": entry.balance_after,
            "kind": entry.kind,
            "journey": entry.journey,
            "occurrence": entry.occurrence,
            "rule_hash": entry.rule_hash,
            "created_at": entry.created_at,
        }
        for entry, ref in session.execute(stmt)
    ]


@dataclass(frozen=True)
class Posting:
    """One credit (or reversal, negative) to post to a customer's balance."""

    customer_id: int
    customer_ref: str
    amount: Decimal
    kind: str
    journey: str
    occurrence: str
    rule_id: str
    rule_hash: str | None


def post(
    session: Session, postings: Sequence[Posting], balances: dict[int, Decimal], at: datetime
) -> list[AuditEntry]:
    """Append ledger rows and move the balances; returns the ``ledger.credit`` audit entries.

    ``balances`` holds each customer's balance before the postings and is
    updated in place (a decision's several postings chain). The caller appends
    the audit entries in the same transaction. The unique key (journey,
    customer, occurrence, kind) makes posting the same thing twice impossible.
    """
    rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    entries: list[AuditEntry] = []
    for p in postings:
        after = balances[p.customer_id] + p.amount
        balances[p.customer_id] = after
        rows.append(
            {
                "customer_id": p.customer_id,
                "amount": p.amount,
                "balance_after": after,
                "kind": p.kind,
                "journey": p.journey,
                "occurrence": p.occurrence,
                "rule_hash": p.rule_hash,
                "created_at": at,
            }
        )
        updates.append({"cid": p.customer_id, "amt": p.amount})
        entries.append(
            AuditEntry(
                action="ledger.credit" if p.amount >= 0 else "ledger.reversal",
                details={"amount": p.amount, "kind": p.kind, "balance_after": after},
                customer_id=p.customer_id,
                customer_ref=p.customer_ref,
                entity=f"occurrence:{p.journey}:{p.occurrence}",
                rule_id=p.rule_id,
                rule_hash=p.rule_hash,
            )
        )
    if rows:
        insert_many(session, table_of(CreditLedger), rows)
        customers = table_of(Customer)
        session.execute(
            update(customers)
            .where(customers.c.id == bindparam("cid"))
            .values(balance=customers.c.balance + bindparam("amt", type_=Money(2))),
            updates,
            execution_options={"synchronize_session": False},
        )
    return entries
