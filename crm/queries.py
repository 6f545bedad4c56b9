"""Read queries for lists and exports: plain functions taking a session.

Rows come back as small frozen dataclasses whose ``to_json()`` uses the CSV
column names, so what ``vipcare ... list --json`` prints can be fed back to
``vipcare import``. Customer ids are always the external ids; internal keys never
leave this module. Large lists stream in keyset-paginated batches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.errors import NotFound
from crm.jsonable import jsonable
from crm.models import TIERS, Customer, CustomerClub, Manager, Plan, PlanTier


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    name: str
    phone: str
    locale: str
    timezone: str
    birthday: date | None
    tier: str
    clubs: list[str]
    plan_code: str | None
    account_manager_id: str | None
    balance: Decimal
    balance_as_of: datetime | None
    credit_limit: Decimal
    status: str
    sms_opt_out: bool
    do_not_call: bool
    joined_on: date | None
    last_contact_on: date | None
    points: int

    def to_json(self) -> dict[str, Any]:
        """CSV column names; money as strings like "-5.00", dates ISO, clubs a list."""
        return dict(jsonable(asdict(self)))


@dataclass(frozen=True)
class PlanRow:
    plan_code: str
    name: str
    monthly_fee: Decimal
    voice_minutes: int
    data_mb: int
    sms: int
    voice_overage_per_min: Decimal
    data_overage_per_mb: Decimal
    sms_overage: Decimal
    tiers: list[str]

    def to_json(self) -> dict[str, Any]:
        return dict(jsonable(asdict(self)))


@dataclass(frozen=True)
class ManagerRow:
    manager_id: str
    name: str
    phone: str
    email: str | None
    daily_call_capacity: int
    customers: int
    name_latin: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(jsonable(asdict(self)))


def manager_id_for(session: Session, manager_ref: str) -> int:
    """The internal key of a manager's external id; :class:`NotFound` when unknown."""
    found = session.scalar(select(Manager.id).where(Manager.external_id == manager_ref))
    if found is None:
        raise NotFound(f"unknown manager {manager_ref!r} (see `vipcare managers list`)")
    return found


def count_customers(session: Session, tier: str | None = None, manager: str | None = None) -> int:
    stmt = select(func.count()).select_from(Customer)
    if tier is not None:
        stmt = stmt.where(Customer.tier_rank == TIERS.index(tier))
    if manager is not None:
        stmt = stmt.where(Customer.manager_id == manager_id_for(session, manager))
    return session.scalar(stmt) or 0


def iter_customers(
    session: Session,
    *,
    tier: str | None = None,
    manager: str | None = None,
    limit: int | None = None,
    batch: int = 5_000,
) -> Iterator[CustomerRow]:
    """Customers ordered by ``customer_id``, filtered, a batch at a time (bounded memory).

    ``manager`` is the manager's external id; an unknown one raises :class:`NotFound`.
    """
    if tier is not None and tier not in TIERS:
        raise NotFound(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
    manager_key = manager_id_for(session, manager) if manager is not None else None
    table = Customer.__table__.c
    base = (
        select(
            table.id,
            table.external_id,
            table.name,
            table.phone,
            table.locale,
            table.timezone,
            table.birthday,
            table.tier,
            Plan.code,
            Manager.external_id.label("manager_ref"),
            table.balance,
            table.balance_as_of,
            table.credit_limit,
            table.status,
            table.sms_opt_out,
            table.do_not_call,
            table.joined_on,
            table.last_contact_on,
            table.points,
        )
        .select_from(Customer.__table__)
        .outerjoin(Plan, table.plan_id == Plan.id)
        .outerjoin(Manager, table.manager_id == Manager.id)
        .order_by(table.external_id)
    )
    if tier is not None:
        base = base.where(table.tier_rank == TIERS.index(tier))
    if manager_key is not None:
        base = base.where(table.manager_id == manager_key)
    remaining = limit
    last: str | None = None
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        stmt = base if last is None else base.where(table.external_id > last)
        rows = session.execute(stmt.limit(size)).all()
        if not rows:
            return
        clubs: dict[int, list[str]] = defaultdict(list)
        for cid, club in session.execute(
            select(CustomerClub.customer_id, CustomerClub.club)
            .where(CustomerClub.customer_id.in_([r.id for r in rows]))
            .order_by(CustomerClub.customer_id, CustomerClub.club)
        ):
            clubs[cid].append(club)
        for r in rows:
            yield CustomerRow(
                customer_id=r.external_id,
                name=r.name,
                phone=r.phone,
                locale=r.locale,
                timezone=r.timezone,
                birthday=r.birthday,
                tier=r.tier,
                clubs=clubs.get(r.id, []),
                plan_code=r.code,
                account_manager_id=r.manager_ref,
                balance=r.balance,
                balance_as_of=r.balance_as_of,
                credit_limit=r.credit_limit,
                status=r.status,
                sms_opt_out=bool(r.sms_opt_out),
                do_not_call=bool(r.do_not_call),
                joined_on=r.joined_on,
                last_contact_on=r.last_contact_on,
                points=r.points,
            )
        last = rows[-1].external_id
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            return


def list_customers(
    session: Session,
    *,
    tier: str | None = None,
    manager: str | None = None,
    limit: int | None = None,
) -> list[CustomerRow]:
    return list(iter_customers(session, tier=tier, manager=manager, limit=limit))


def list_plans(session: Session) -> list[PlanRow]:
    """Every plan with its eligible tiers (in tier order), by plan code."""
    tiers: dict[int, list[str]] = defaultdict(list)
    for plan_id, tier in session.execute(select(PlanTier.plan_id, PlanTier.tier)):
        tiers[plan_id].append(tier)
    plans = session.execute(select(Plan.__table__).order_by(Plan.code)).all()
    return [
        PlanRow(
            plan_code=p.code,
            name=p.name,
            monthly_fee=p.monthly_fee,
            voice_minutes=p.voice_minutes,
            data_mb=p.data_mb,
            sms=p.sms,
            voice_overage_per_min=p.voice_overage_per_min,
            data_overage_per_mb=p.data_overage_per_mb,
            sms_overage=p.sms_overage,
            tiers=sorted(tiers.get(p.id, []), key=TIERS.index),
        )
        for p in plans
    ]


def list_managers(session: Session) -> list[ManagerRow]:
    """Every account manager with how many customers they hold, by manager id."""
    stmt = (
        select(Customer.manager_id, func.count())
        .where(Customer.manager_id.is_not(None))
        .group_by(Customer.manager_id)
    )
    counts: dict[int, int] = {mid: n for mid, n in session.execute(stmt) if mid is not None}
    managers = session.execute(select(Manager.__table__).order_by(Manager.external_id)).all()
    return [
        ManagerRow(
            manager_id=m.external_id,
            name=m.name,
            phone=m.phone,
            email=m.email,
            daily_call_capacity=m.daily_call_capacity,
            customers=int(counts.get(m.id, 0)),
            name_latin=m.name_latin,
        )
        for m in managers
    ]
