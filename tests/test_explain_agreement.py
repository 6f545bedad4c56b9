"""Property: ``rules explain`` predicts exactly what a run then does, customer by customer.

Generated customers cover what tripped the old explain: a plan-fit decline at
the cooldown's boundary instant (05:00Z on the boundary day, one second either
side), open tasks, open graces, suspended lines, do-not-call, birthdays on
29 February and the day before. On SQLite and PostgreSQL, every journey in run
order: explain everyone, run the journey, compare.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert

from crm.db import transaction
from crm.models import (
    TIERS,
    AuditHead,
    AuditLog,
    CallTask,
    CreditLedger,
    Customer,
    GracePeriod,
    JourneyOccurrence,
    JourneyPass,
    Manager,
    MonthlyUsage,
    OutboundMessage,
    Plan,
    PlanTier,
)
from flows.journeys.context import care_day_instant
from flows.journeys.engine import run_journey
from flows.journeys.explain import explain
from flows.journeys.registry import journeys_for
from tests.builders import SHANGHAI, Crm, default_rules, months_before

RULES = default_rules()
DAYS = [date(2027, 2, 28), date(2026, 11, 23), date(2026, 12, 1)]
"""A common-year 28 February (29 February birthdays), a Monday, a month start."""
CADENCE = {"diamond": 30, "platinum": 60, "gold": 90, "silver": 180}
ORDER = [j.id for j in journeys_for(RULES) if RULES.journeys[j.id].enabled]

person = st.fixed_dictionaries(
    {
        "tier": st.sampled_from(TIERS),
        "status": st.sampled_from(["active", "active", "active", "suspended"]),
        "balance": st.sampled_from(["-25.00", "-0.01", "0.00", "5.00"]),
        "birthday": st.sampled_from(["today", "yesterday", "feb29", "none"]),
        "contact": st.sampled_from(["never", "cadence-1", "cadence", "cadence+1"]),
        "do_not_call": st.booleans(),
        "sms_opt_out": st.booleans(),
        "usage": st.sampled_from(["misfit", "fit", "short", "none"]),
        "declined": st.sampled_from([None, -1, 0, 1]),
        "open_task": st.sampled_from([None, "plan_fit", "callback"]),
        "open_grace": st.booleans(),
    }
)


def _reset(engine: Engine) -> None:
    with transaction(engine) as s:
        for model in (
            AuditLog, AuditHead, CreditLedger, GracePeriod, CallTask, OutboundMessage,
            JourneyPass, JourneyOccurrence, MonthlyUsage, Customer, PlanTier, Plan, Manager,
        ):  # fmt: skip
            s.execute(delete(model))


def _populate(engine: Engine, as_of: date, people: list[dict[str, object]]) -> list[str]:
    crm = Crm(engine, RULES)
    crm.manager("M1", capacity=2)
    big = crm.plan("BIG", fee="198.00", voice=1000, data=20480)
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    at = care_day_instant(as_of, SHANGHAI)
    refs = []
    for i, p in enumerate(people):
        ref = f"P{i}"
        refs.append(ref)
        bday = {
            "today": as_of.replace(year=1980),
            "yesterday": (as_of - timedelta(days=1)).replace(year=1980),
            "feb29": date(1992, 2, 29),
            "none": None,
        }[str(p["birthday"])]
        cadence = CADENCE[str(p["tier"])]
        contact = {
            "never": None,
            "cadence-1": as_of - timedelta(days=cadence - 1),
            "cadence": as_of - timedelta(days=cadence),
            "cadence+1": as_of - timedelta(days=cadence + 1),
        }[str(p["contact"])]
        cid = crm.customer(
            ref,
            tier=p["tier"],
            status=p["status"],
            balance=Decimal(str(p["balance"])),
            birthday=bday,
            last_contact_on=contact,
            joined_on=date(2015, 3, 2) if contact is not None else None,
            do_not_call=p["do_not_call"],
            sms_opt_out=p["sms_opt_out"],
            plan_id=big,
        )
        usage = p["usage"]
        if usage != "none":
            months = months_before(as_of)[1:] if usage == "short" else months_before(as_of)
            voice, data = (20, 100) if usage == "misfit" else (900, 18000)
            crm.usage(cid, months, voice=voice, data=data, sms=1)
        with transaction(engine) as s:
            if p["declined"] is not None:  # a decline right at the cooldown boundary instant
                boundary = at - timedelta(days=90) + timedelta(seconds=int(str(p["declined"])))
                s.execute(insert(CallTask).values(_task(cid, "plan_fit", "done", boundary, at)))
            if p["open_task"] is not None:
                s.execute(
                    insert(CallTask).values(_task(cid, str(p["open_task"]), "ready", None, at))
                )
            if p["open_grace"]:
                s.execute(
                    insert(GracePeriod).values(
                        customer_id=cid,
                        occurrence="grace:earlier",
                        amount=Decimal("10.00"),
                        granted_on=as_of - timedelta(days=1),
                        granted_at=at - timedelta(days=1),
                        deadline=as_of + timedelta(days=2),
                        status="open",
                    )
                )
    return refs


def _task(cid: int, kind: str, status: str, completed: datetime | None, at: datetime) -> dict:
    return {
        "customer_id": cid,
        "manager_id": None,
        "kind": kind,
        "journey": kind if kind != "callback" else "callback",
        "occurrence": f"seeded:{kind}:{status}",
        "status": status,
        "due_on": at.date(),
        "scheduled_on": at.date(),
        "outcome": "declined" if status == "done" else None,
        "completed_at": completed,
        "created_at": at - timedelta(days=100),
        "details": {},
    }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(as_of=st.sampled_from(DAYS), people=st.lists(person, min_size=1, max_size=5))
def test_explain_agrees_with_the_run(engine: Engine, as_of: date, people: list) -> None:
    _reset(engine)
    refs = _populate(engine, as_of, people)
    ctx = Crm(engine, RULES).context(as_of)
    for journey_id in ORDER:
        predicted = {ref: explain(engine, RULES, journey_id, ref, as_of).would_act for ref in refs}
        with transaction(engine) as s:
            before = {
                (o.customer_id, o.occurrence)
                for o in s.query(JourneyOccurrence).filter_by(journey=journey_id)
            }
        journey = next(j for j in journeys_for(RULES) if j.id == journey_id)
        run_journey(engine, ctx, journey)
        with transaction(engine) as s:
            rows = s.query(JourneyOccurrence).filter_by(journey=journey_id).all()
            refs_by_id = dict(s.query(Customer.id, Customer.external_id).all())
            decided = {
                refs_by_id[o.customer_id]
                for o in rows
                if (o.customer_id, o.occurrence) not in before
                and o.occurrence != "grace-deadline"
                and not o.occurrence.startswith("grace-deadline:")
            }
        assert {r for r, yes in predicted.items() if yes} == decided, (journey_id, people)


def test_a_decline_at_05_00z_on_the_boundary_day_cools_down_in_both(engine: Engine) -> None:
    """The drift that started it: the run tested an instant, explain a date."""
    as_of = date(2026, 11, 23)
    _reset(engine)
    (ref,) = _populate(
        engine,
        as_of,
        [
            {
                "tier": "gold", "status": "active", "balance": "5.00", "birthday": "none",
                "contact": "cadence-1", "do_not_call": False, "sms_opt_out": False,
                "usage": "misfit", "declined": None, "open_task": None, "open_grace": False,
            }
        ],
    )  # fmt: skip
    at = care_day_instant(as_of, SHANGHAI)  # 01:00Z
    boundary_day_0500 = datetime.combine(
        (at - timedelta(days=90)).date(), datetime.min.time(), UTC
    ) + timedelta(hours=5)
    with transaction(engine) as s:
        cid = s.query(Customer.id).filter_by(external_id=ref).scalar()
        s.execute(insert(CallTask).values(_task(cid, "plan_fit", "done", boundary_day_0500, at)))
    verdict = explain(engine, RULES, "plan_fit", ref, as_of)
    run_journey(engine, Crm(engine, RULES).context(as_of), journeys_for(RULES)[2])
    with transaction(engine) as s:
        acted = s.query(JourneyOccurrence).filter_by(journey="plan_fit").count()
    assert verdict.would_act is False and acted == 0
    assert verdict.reason.startswith("no decline in the last 90 days")
