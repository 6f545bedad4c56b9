"""Plan-fit suggestion: cost recent usage under every eligible plan, suggest a cheaper one.

The last ``months`` full calendar months of usage are costed under the current
plan and under every plan open to the customer's tier: monthly fee plus voice,
data and SMS overage. When the cheapest alternative saves at least the share and
the amount per month that the rule asks for, a ``plan_fit`` call task is created
(preceded by the pre-call SMS). Arithmetic is exact: integer units of 0.0001,
and the thresholds are compared on totals so no division ever rounds a decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, case, false, func, literal, or_, select, true, type_coerce
from sqlalchemy.orm import Session

from crm.models import Customer, MonthlyUsage, Plan, PlanTier
from crm.types import to_minor
from flows.journeys.context import CustomerRow, RunContext
from flows.journeys.predicates import (
    callable_customer,
    no_decline_since,
    no_open_task,
    not_decided,
)
from flows.journeys.protocol import Candidate, Journey, Predicate, Skip, TaskPlan
from rules.models import JourneyBase, PlanFitRule

SCALE = 4
CENT = Decimal("0.01")


@dataclass(frozen=True)
class PlanCost:
    """A plan's price list in units of 0.0001."""

    id: int
    code: str
    name: str
    fee: int
    voice: int
    data: int
    sms: int
    voice_rate: int
    data_rate: int
    sms_rate: int
    tiers: frozenset[str]

    def month_cost(self, voice: int, data: int, sms: int) -> int:
        return (
            self.fee
            + max(0, voice - self.voice) * self.voice_rate
            + max(0, data - self.data) * self.data_rate
            + max(0, sms - self.sms) * self.sms_rate
        )


def full_months_before(as_of: date, count: int) -> list[date]:
    """The first days of the ``count`` full calendar months before ``as_of``'s month."""
    months = []
    day = as_of.replace(day=1)
    for _ in range(count):
        day = (day - timedelta(days=1)).replace(day=1)
        months.append(day)
    return sorted(months)


def load_plans(session: Session) -> dict[int, PlanCost]:
    tiers: dict[int, set[str]] = defaultdict(set)
    for plan_id, tier in session.execute(select(PlanTier.plan_id, PlanTier.tier)):
        tiers[plan_id].add(tier)
    return {
        p.id: PlanCost(
            id=p.id,
            code=p.code,
            name=p.name,
            fee=to_minor(p.monthly_fee, SCALE),
            voice=p.voice_minutes,
            data=p.data_mb,
            sms=p.sms,
            voice_rate=to_minor(p.voice_overage_per_min, SCALE),
            data_rate=to_minor(p.data_overage_per_mb, SCALE),
            sms_rate=to_minor(p.sms_overage, SCALE),
            tiers=frozenset(tiers[p.id]),
        )
        for p in session.scalars(select(Plan))
    }


def to_money(units: int | Decimal, divisor: int = 1) -> Decimal:
    return (Decimal(units) / Decimal(divisor)).scaleb(-SCALE).quantize(CENT, ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Suggestion:
    plan: PlanCost
    current_total: int
    suggested_total: int
    months: int

    @property
    def saving_total(self) -> int:
        return self.current_total - self.suggested_total

    def details(self, current: PlanCost) -> dict[str, object]:
        return {
            "current_plan": current.code,
            "current_plan_name": current.name,
            "suggested_plan": self.plan.code,
            "suggested_plan_name": self.plan.name,
            "current_monthly_cost": to_money(self.current_total, self.months),
            "suggested_monthly_cost": to_money(self.suggested_total, self.months),
            "monthly_saving": to_money(self.saving_total, self.months),
            "months": self.months,
        }


def best_alternative(
    current: PlanCost,
    tier: str,
    usage: list[tuple[int, int, int]],
    plans: list[PlanCost],
    min_share: Decimal,
    min_amount: Decimal,
) -> Suggestion | None:
    """The cheapest eligible plan, if it beats the thresholds; exact integer comparisons.

    ``plans`` must be sorted by fee: a plan whose fees alone reach the best total
    found so far (or leave no room for the saving) ends the search.
    """
    months = len(usage)
    current_total = sum(current.month_cost(*u) for u in usage)
    needed = to_minor(min_amount, SCALE) * months
    ceiling = current_total - needed  # an alternative must cost at most this
    best_plan: PlanCost | None = None
    for plan in plans:
        if plan.fee * months > ceiling:
            break  # this and every dearer plan cannot save enough (or beat the best)
        if plan.id == current.id or tier not in plan.tiers:
            continue
        total = 0
        for voice, data, sms in usage:
            total += plan.month_cost(voice, data, sms)
            if total > ceiling:
                break
        if total <= ceiling:
            best_plan, ceiling = plan, total - 1 if total > 0 else total
    if best_plan is None:
        return None
    best = Suggestion(
        best_plan, current_total, sum(best_plan.month_cost(*u) for u in usage), months
    )
    saving = best.saving_total
    if saving < needed or Decimal(saving) < min_share * Decimal(current_total):
        return None
    return best


def _units(column: Any) -> Any:
    """A Money column's stored integer (minor units), for arithmetic inside SQL."""
    return type_coerce(column, BigInteger)


def _over(used: Any, included: Any, rate: Any) -> Any:
    return case((used > included, (used - included) * _units(rate)), else_=literal(0))


def _least(dialect: str, *values: Any) -> Any:
    """The smallest of several values: ``min(a, b)`` in SQLite, ``LEAST`` elsewhere."""
    if len(values) == 1:
        return values[0]
    return func.min(*values) if dialect == "sqlite" else func.least(*values)


NO_PLAN = 10**15
"""Stands in for the cost of a plan the customer may not take (min() must not see NULL)."""


def known_usage(known_at: datetime | None) -> Any:
    """Usage figures that had arrived by ``known_at`` (seeded ones: known since ever)."""
    if known_at is None:
        return true()
    return or_(MonthlyUsage.received_at.is_(None), MonthlyUsage.received_at <= known_at)


def could_save_enough(
    plans: list[PlanCost],
    months: list[date],
    min_share: Decimal,
    min_amount: Decimal,
    dialect: str,
    known_at: datetime | None = None,
) -> Any:
    """The plan-fit test in SQL, set-based: one correlated subquery per customer.

    Over the customer's usage rows of ``months`` it sums the cost under the
    current plan (C) and under every other plan (one SUM per plan, a huge stand-in
    for plans the tier may not take), takes the cheapest (B) and returns one
    margin that is >= 0 exactly when the saving S = C - B meets both thresholds
    and every month has usage: ``min(S*10000 - C*share, (S - needed)*10000,
    (months_present - months)*10000)``. The share is floored to basis points, so
    the filter is never stricter than the rule; Python re-checks the few rows
    that pass with exact Decimal arithmetic.
    """
    if not plans:
        return false()
    m = MonthlyUsage

    def over(used: Any, included: int, rate: int) -> Any:
        return case((used > included, (used - included) * rate), else_=literal(0))

    current = func.sum(
        _units(Plan.monthly_fee) * 100
        + _over(m.voice_minutes, Plan.voice_minutes, Plan.voice_overage_per_min)
        + _over(m.data_mb, Plan.data_mb, Plan.data_overage_per_mb)
        + _over(m.sms, Plan.sms, Plan.sms_overage)
    )
    alternatives = [
        case(
            (
                and_(Customer.tier.in_(sorted(p.tiers)), Customer.plan_id != p.id),
                func.sum(
                    literal(p.fee)
                    + over(m.voice_minutes, p.voice, p.voice_rate)
                    + over(m.data_mb, p.data, p.data_rate)
                    + over(m.sms, p.sms, p.sms_rate)
                ),
            ),
            else_=literal(NO_PLAN),
        )
        for p in plans
    ]
    saving = current - _least(dialect, *alternatives)
    needed = to_minor(min_amount, SCALE) * len(months)
    share_bp = int((min_share * 10_000).to_integral_value(ROUND_FLOOR))
    margin = (
        select(
            _least(
                dialect,
                saving * 10_000 - current * share_bp,
                (saving - needed) * 10_000,
                (func.count() - len(months)) * 10_000,
            )
        )
        .where(
            m.customer_id == Customer.id,
            m.month.in_(months),
            Plan.id == Customer.plan_id,
            known_usage(known_at),
        )
        .correlate(Customer)
        .scalar_subquery()
    )
    return margin >= 0


class PlanFit(Journey):
    id = "plan_fit"
    rule_type = PlanFitRule

    def _rule(self, rule: JourneyBase) -> PlanFitRule:
        assert isinstance(rule, PlanFitRule)
        return rule

    def pass_period(self, ctx: RunContext) -> str:
        """Usage is monthly: one full pass per month is enough."""
        return f"{ctx.as_of.year:04d}-{ctx.as_of.month:02d}"

    def occurrence(self, ctx: RunContext) -> str:
        return f"plan_fit:{self.pass_period(ctx)}"

    def predicates(self, session: Session, ctx: RunContext, rule: JourneyBase) -> list[Predicate]:
        r = self._rule(rule)
        trigger = r.trigger
        months = full_months_before(ctx.as_of, trigger.months)
        cooldown = r.limits.cooldown_after_decline_days
        return [
            Predicate(
                "has a plan",
                Customer.plan_id.is_not(None),
                select(Plan.code).where(Plan.id == Customer.plan_id).scalar_subquery(),
                lambda v: "none" if v is None else str(v),
            ),
            callable_customer(),
            no_open_task("plan_fit"),
            no_decline_since("plan_fit", ctx.at - timedelta(days=cooldown), cooldown),
            not_decided(rule.journey, self.occurrence(ctx)),
            Predicate(
                f"{trigger.months} full months of usage ({months[0]:%Y-%m}..{months[-1]:%Y-%m})"
                f" and a cheaper eligible plan may save {trigger.min_saving_amount}/month and"
                f" {trigger.min_saving_share:.0%}",
                could_save_enough(
                    sorted(load_plans(session).values(), key=lambda p: p.fee),
                    months,
                    trigger.min_saving_share,
                    trigger.min_saving_amount,
                    session.get_bind().dialect.name,
                    ctx.at,
                ),
                select(func.count())
                .select_from(MonthlyUsage)
                .where(
                    MonthlyUsage.customer_id == Customer.id,
                    MonthlyUsage.month.in_(months),
                    known_usage(ctx.at),
                )
                .scalar_subquery(),
                lambda v: f"{v} month(s) of usage",
            ),
        ]

    def columns(self, ctx: RunContext, rule: JourneyBase) -> list[Any]:
        return [Customer.plan_id.label("plan_id")]

    def refine(
        self, session: Session, ctx: RunContext, rule: JourneyBase, batch: list[CustomerRow]
    ) -> Iterable[Candidate | Skip]:
        trigger = self._rule(rule).trigger
        months = full_months_before(ctx.as_of, trigger.months)
        plans = load_plans(session)
        plan_list = sorted(plans.values(), key=lambda p: p.fee)
        usage: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for cid, _month, voice, data, sms in session.execute(
            select(
                MonthlyUsage.customer_id,
                MonthlyUsage.month,
                MonthlyUsage.voice_minutes,
                MonthlyUsage.data_mb,
                MonthlyUsage.sms,
            )
            .where(
                MonthlyUsage.customer_id.in_([c.id for c in batch]),
                MonthlyUsage.month.in_(months),
                known_usage(ctx.at),  # figures received after the day's instant were not known
            )
            .order_by(MonthlyUsage.customer_id, MonthlyUsage.month)
        ):
            usage[cid].append((voice, data, sms))
        for c in batch:
            history = usage.get(c.id, [])
            current = plans.get(c.extra["plan_id"])
            if current is None or len(history) < len(months):
                yield Skip(c, "not_enough_usage", "fewer full months of usage than the rule needs")
                continue
            best = best_alternative(
                current,
                c.tier,
                history,
                plan_list,
                trigger.min_saving_share,
                trigger.min_saving_amount,
            )
            if best is None:
                yield Skip(c, "no_saving", "no eligible plan saves enough")
                continue
            details = best.details(current)
            yield Candidate(
                customer=c,
                occurrence=self.occurrence(ctx),
                details=details,
                variables={
                    "current_plan": current.name,
                    "suggested_plan": best.plan.name,
                    "saving": str(details["monthly_saving"]),
                    "current_cost": str(details["current_monthly_cost"]),
                    "suggested_cost": str(details["suggested_monthly_cost"]),
                },
                task=TaskPlan(
                    due_on=ctx.as_of,
                    earliest=ctx.as_of,
                    details={"reason": "plan_fit", **details},
                ),
            )
