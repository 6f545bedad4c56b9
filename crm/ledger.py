"""The credit ledger: the one module that posts credits and reversals to balances.

Append-only: a grace advance, a birthday perk, a grace reversal are each a row
with the balance after it, and each moves ``customers.balance`` in the same
transaction. ``created_at`` is when a posting was really made: the balances feed
is reconciled against it (:mod:`crm.balances`: a feed value as of T already holds
the postings made before T, and vipcare adds those made after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from crm.audit import AuditEntry
from crm.bulk import insert_many, table_of
from crm.db import is_sqlite
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
            "care_day": entry.care_day,
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
    session: Session,
    postings: Sequence[Posting],
    at: datetime,
    *,
    care_day: date | None = None,
) -> tuple[list[AuditEntry], dict[int, Decimal]]:
    """Append ledger rows and move the balances; returns the audit entries and the balances after.

    ``at`` is when the postings are really made (the wall clock: a back-dated or
    caught-up care day posts *today*), ``care_day`` the day that decided them; both
    are stamped on every row and its ``ledger.credit`` audit entry. The balance after
    each posting follows from the customer's stored balance (read under a row lock),
    so the ledger chains with whatever the balances feed set meanwhile. The caller
    appends the audit entries in the same transaction. The unique key (journey,
    customer, occurrence, kind) makes posting the same thing twice impossible.
    """
    if not postings:
        return [], {}
    customers = table_of(Customer)
    ids = sorted({p.customer_id for p in postings})
    balances: dict[int, Decimal] = {}
    for start in range(0, len(ids), 1000):
        stmt = select(customers.c.id, customers.c.balance).where(
            customers.c.id.in_(ids[start : start + 1000])
        )
        if not is_sqlite(session):
            stmt = stmt.with_for_update()
        balances.update(session.execute(stmt).tuples().all())
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
                "care_day": care_day,
            }
        )
        updates.append({"cid": p.customer_id, "amt": p.amount})
        details: dict[str, Any] = {"amount": p.amount, "kind": p.kind, "balance_after": after}
        if care_day is not None:
            details["care_day"] = care_day
        entries.append(
            AuditEntry(
                action="ledger.credit" if p.amount >= 0 else "ledger.reversal",
                details=details,
                customer_id=p.customer_id,
                customer_ref=p.customer_ref,
                entity=f"occurrence:{p.journey}:{p.occurrence}",
                rule_id=p.rule_id,
                rule_hash=p.rule_hash,
            )
        )
    insert_many(session, table_of(CreditLedger), rows)
    session.execute(
        update(customers)
        .where(customers.c.id == bindparam("cid"))
        .values(balance=customers.c.balance + bindparam("amt", type_=Money(2))),
        updates,
        execution_options={"synchronize_session": False},
    )
    return entries, balances
