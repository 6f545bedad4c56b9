"""Reading the credit ledger (writes happen in the journeys' bulk writer)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.models import CreditLedger, Customer


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
