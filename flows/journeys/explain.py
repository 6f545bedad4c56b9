"""Why a journey would or would not act on one customer today: the trigger and limit checks.

``vipcare rules explain`` shows the audience condition by condition (rules
package); this module adds what the journey itself checks — the birthday date,
the balance threshold, usage and savings, the callback due date, open tasks,
cooldowns and whether this occurrence was already decided. It reads one
customer, writes nothing, and reuses the journeys' own functions so it cannot
drift from what a run does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm.errors import NotFound
from crm.models import CallTask, Customer, GracePeriod, JourneyOccurrence, MonthlyUsage
from flows.journeys.base import OPEN_TASK_STATUSES
from flows.journeys.birthday import birthday_mmdds
from flows.journeys.callback import last_closed_cycle
from flows.journeys.plan_fit import best_alternative, full_months_before, load_plans


@dataclass(frozen=True)
class Check:
    check: str
    actual: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trigger_checks(
    session: Session, ruleset: Any, journey: str, customer_ref: str, as_of: date
) -> list[Check]:
    """The journey's own checks for ``customer_ref`` on ``as_of``, in the order a run uses them."""
    customer = session.scalars(
        select(Customer).where(Customer.external_id == customer_ref)
    ).one_or_none()
    if customer is None:
        raise NotFound(f"no customer with customer_id {customer_ref!r}")
    rule = ruleset.journey(journey)
    explainer = _EXPLAINERS.get(journey)
    return [] if explainer is None else explainer(session, rule, customer, as_of)


def _decided(session: Session, journey: str, customer: Customer, occurrence: str) -> Check:
    row = session.execute(
        select(JourneyOccurrence.decided_at, JourneyOccurrence.run_id).where(
            JourneyOccurrence.journey == journey,
            JourneyOccurrence.customer_id == customer.id,
            JourneyOccurrence.occurrence == occurrence,
        )
    ).first()
    actual = (
        "not yet"
        if row is None
        else f"decided {row.decided_at:%Y-%m-%d %H:%M} UTC (run {row.run_id})"
    )
    return Check(f"{occurrence} not decided before (once per occurrence)", actual, row is None)


def _open_task(session: Session, customer: Customer, kind: str) -> Check:
    task = session.execute(
        select(CallTask.id, CallTask.status, CallTask.scheduled_on).where(
            CallTask.customer_id == customer.id,
            CallTask.kind == kind,
            CallTask.status.in_(OPEN_TASK_STATUSES),
        )
    ).first()
    actual = (
        "none" if task is None else f"task {task.id} ({task.status}, planned {task.scheduled_on})"
    )
    return Check(f"no open {kind} task", actual, task is None)


def _call_allowed(customer: Customer) -> Check:
    return Check(
        "not on the do-not-call list",
        "do-not-call" if customer.do_not_call else "callable",
        not customer.do_not_call,
    )


def _birthday(session: Session, rule: Any, customer: Customer, as_of: date) -> list[Check]:
    birthday_on = as_of - timedelta(days=rule.trigger.offset_days)
    wanted = birthday_mmdds(birthday_on, rule.trigger.feb29_in_common_years)
    has = customer.birth_mmdd is not None and customer.birth_mmdd in wanted
    actual = "unknown" if customer.birthday is None else customer.birthday.strftime("%m-%d")
    return [
        Check(f"birthday greeted on {as_of} (birthday {birthday_on:%m-%d})", actual, has),
        _decided(session, rule.journey, customer, f"birthday:{birthday_on.year}"),
    ]


def _grace(session: Session, rule: Any, customer: Customer, as_of: date) -> list[Check]:
    trigger = rule.trigger
    amount = trigger.amount_by_tier.get(customer.tier)
    open_grace = session.execute(
        select(GracePeriod.id, GracePeriod.deadline).where(
            GracePeriod.customer_id == customer.id, GracePeriod.status == "open"
        )
    ).first()
    checks = [
        Check(
            f"balance below {trigger.threshold}",
            str(customer.balance),
            customer.balance < trigger.threshold,
        ),
        Check(
            "the tier has a grace credit",
            f"{customer.tier}: {amount or 'none'}",
            amount is not None,
        ),
        Check(
            "no grace already open",
            "none"
            if open_grace is None
            else f"grace {open_grace.id}, deadline {open_grace.deadline}",
            open_grace is None,
        ),
        _decided(session, rule.journey, customer, f"grace:{as_of:%Y-%m}"),
    ]
    return checks


def _plan_fit(session: Session, rule: Any, customer: Customer, as_of: date) -> list[Check]:
    trigger = rule.trigger
    months = full_months_before(as_of, trigger.months)
    usage = session.execute(
        select(MonthlyUsage.voice_minutes, MonthlyUsage.data_mb, MonthlyUsage.sms)
        .where(MonthlyUsage.customer_id == customer.id, MonthlyUsage.month.in_(months))
        .order_by(MonthlyUsage.month)
    ).all()
    declined = session.scalar(
        select(func.max(CallTask.completed_at)).where(
            CallTask.customer_id == customer.id,
            CallTask.kind == "plan_fit",
            CallTask.outcome == "declined",
        )
    )
    cooldown = rule.limits.cooldown_after_decline_days
    cooling = declined is not None and declined.date() > as_of - timedelta(days=cooldown)
    checks = [
        Check(
            "has a plan", customer.plan.code if customer.plan else "none", customer.plan is not None
        ),
        _call_allowed(customer),
        Check(
            f"{trigger.months} full months of usage ({months[0]:%Y-%m}..{months[-1]:%Y-%m})",
            f"{len(usage)} month(s)",
            len(usage) == len(months),
        ),
        _open_task(session, customer, "plan_fit"),
        Check(
            f"no decline in the last {cooldown} days",
            "never declined" if declined is None else f"declined {declined:%Y-%m-%d}",
            not cooling,
        ),
    ]
    if customer.plan is not None and len(usage) == len(months):
        plans = load_plans(session)
        current = plans[customer.plan.id]
        ordered = sorted(plans.values(), key=lambda p: p.fee)
        best = best_alternative(
            current,
            customer.tier,
            [(u[0], u[1], u[2]) for u in usage],
            ordered,
            trigger.min_saving_share,
            trigger.min_saving_amount,
        )
        wanted = (
            f"saves at least {trigger.min_saving_amount}/month and {trigger.min_saving_share:.0%}"
        )
        if best is None:
            checks.append(Check(f"a cheaper eligible plan {wanted}", "no plan saves enough", False))
        else:
            d = best.details(current)
            checks.append(
                Check(
                    f"a cheaper eligible plan {wanted}",
                    f"{d['suggested_plan']} saves {d['monthly_saving']}/month "
                    f"({d['current_monthly_cost']} → {d['suggested_monthly_cost']})",
                    True,
                )
            )
    checks.append(_decided(session, rule.journey, customer, f"plan_fit:{as_of:%Y-%m}"))
    return checks


def _callback(session: Session, rule: Any, customer: Customer, as_of: date) -> list[Check]:
    cadence = rule.trigger.cadence_days.get(customer.tier)
    if cadence is None:
        return [Check("the tier has a callback cadence", customer.tier, False)]
    anchors = {
        "last contact": customer.last_contact_on,
        "joined": customer.joined_on,
        "last callback cycle closed": last_closed_cycle(session, [customer.id]).get(customer.id),
    }
    known = {k: v for k, v in anchors.items() if v is not None}
    anchor = max(known.values()) if known else None
    due = as_of if anchor is None else anchor + timedelta(days=cadence)
    basis = "never contacted"
    if anchor is not None:
        basis = next(f"{k} {v}" for k, v in known.items() if v == anchor)
    return [
        _call_allowed(customer),
        Check(
            f"callback due (every {cadence} days for {customer.tier})",
            f"{basis}: due {due}",
            due <= as_of,
        ),
        _open_task(session, customer, "callback"),
        _decided(session, rule.journey, customer, f"callback:{due.isoformat()}"),
    ]


def _precall(session: Session, rule: Any, customer: Customer, as_of: date) -> list[Check]:
    return [
        _call_allowed(customer),
        Check(
            "gets the pre-call SMS (else the task is marked no_notice)",
            "opted out of SMS" if customer.sms_opt_out else "SMS allowed",
            not customer.sms_opt_out,
        ),
    ]


_EXPLAINERS = {
    "birthday": _birthday,
    "grace_credit": _grace,
    "plan_fit": _plan_fit,
    "callback": _callback,
    "precall_notice": _precall,
}
