"""A customer's line status (``active → suspended``): the one module vipcare changes it from.

Suspension is a decision with money behind it, so it is guarded (only an
active line is suspended, and only once: the UPDATE's ``RETURNING`` says which
rows this call changed) and audited with the reason and the rule. The CRM
import may also set the status, as master data from the operator's systems.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.orm import Session

from crm import audit
from crm.audit import Actor, AuditEntry
from crm.errors import InvalidTransition
from crm.models import Customer

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "active": frozenset({"suspended", "closed"}),
    "suspended": frozenset({"active", "closed"}),
    "closed": frozenset(),
}
"""Line status moves; vipcare itself only ever suspends."""


@dataclass(frozen=True)
class Suspension:
    customer_id: int
    customer_ref: str
    balance: Decimal
    entity: str
    rule_id: str
    rule_hash: str


def suspend(
    session: Session, lines: Sequence[Suspension], at: datetime, actor: Actor, reason: str
) -> list[int]:
    """Suspend the active lines among ``lines``; audited ``customer.suspended``; returns ids."""
    if "suspended" not in TRANSITIONS["active"]:  # pragma: no cover - the table says it is
        raise InvalidTransition("line", "active", "suspended", "not allowed")
    if not lines:
        return []
    by_id = {line.customer_id: line for line in lines}
    changed = sorted(
        session.execute(
            update(Customer)
            .where(Customer.id.in_(sorted(by_id)), Customer.status == "active")
            .values(status="suspended", status_since=at)
            .returning(Customer.id),
            execution_options={"synchronize_session": False},
        ).scalars()
    )
    audit.append(
        session,
        actor,
        at,
        [
            AuditEntry(
                action="customer.suspended",
                details={"reason": reason, "balance": by_id[cid].balance},
                customer_id=cid,
                customer_ref=by_id[cid].customer_ref,
                entity=by_id[cid].entity,
                rule_id=by_id[cid].rule_id,
                rule_hash=by_id[cid].rule_hash,
            )
            for cid in changed
        ],
    )
    return changed
