"""A digest of everything seeding writes, keyed by external ids (not internal keys).

Two databases with the same digest hold the same CRM data, whatever their
backend; the reproducibility test and the benchmark compare these.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Engine, Select, select

from crm.models import Customer, CustomerClub, Manager, MonthlyUsage, Plan, PlanTier


def _statements() -> list[tuple[str, Select[Any]]]:
    plan_code = Plan.code.label("plan_code")
    return [
        (
            "plans",
            select(
                Plan.code,
                Plan.name,
                Plan.monthly_fee,
                Plan.voice_minutes,
                Plan.data_mb,
                Plan.sms,
                Plan.voice_overage_per_min,
                Plan.data_overage_per_mb,
                Plan.sms_overage,
            ).order_by(Plan.code),
        ),
        (
            "plan_tiers",
            select(Plan.code, PlanTier.tier).join(Plan).order_by(Plan.code, PlanTier.tier),
        ),
        (
            "managers",
            select(
                Manager.external_id,
                Manager.name,
                Manager.name_latin,
                Manager.phone,
                Manager.email,
                Manager.daily_call_capacity,
            ).order_by(Manager.external_id),
        ),
        (
            "customers",
            select(
                Customer.external_id,
                Customer.name,
                Customer.phone,
                Customer.locale,
                Customer.timezone,
                Customer.birthday,
                Customer.birth_mmdd,
                Customer.tier,
                Customer.tier_rank,
                plan_code,
                Manager.external_id,
                Customer.balance,
                Customer.balance_as_of,
                Customer.credit_limit,
                Customer.status,
                Customer.sms_opt_out,
                Customer.do_not_call,
                Customer.joined_on,
                Customer.last_contact_on,
                Customer.points,
            )
            .outerjoin(Plan, Customer.plan_id == Plan.id)
            .outerjoin(Manager, Customer.manager_id == Manager.id)
            .order_by(Customer.external_id),
        ),
        (
            "customer_clubs",
            select(Customer.external_id, CustomerClub.club)
            .join(Customer)
            .order_by(Customer.external_id, CustomerClub.club),
        ),
        (
            "monthly_usage",
            select(
                Customer.external_id,
                MonthlyUsage.month,
                MonthlyUsage.voice_minutes,
                MonthlyUsage.data_mb,
                MonthlyUsage.sms,
            )
            .join(Customer)
            .order_by(Customer.external_id, MonthlyUsage.month),
        ),
    ]


def digest(engine: Engine) -> str:
    """SHA-256 over every seeded table, streamed in batches (bounded memory)."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for label, stmt in _statements():
            h.update(f"\x1e{label}\n".encode())
            result = conn.execution_options(yield_per=10_000).execute(stmt)
            for row in result:
                h.update(("\x1f".join(repr(v) for v in row) + "\n").encode())
    return h.hexdigest()
