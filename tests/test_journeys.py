"""End-to-end journey behaviour on SQLite and PostgreSQL: positive and negative cases."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from crm import audit
from crm.audit import Actor
from crm.db import transaction
from crm.errors import InvalidTransition
from crm.models import CallTask, CreditLedger, GracePeriod, JourneyOccurrence, OutboundMessage, Plan
from crm.tasks import RetryPolicy, complete
from flows.journeys.engine import run_journey
from flows.journeys.registry import journey_for
from notifications.backends.mock import MockSMSBackend, MockStore, MockVoiceBackend
from notifications.dispatcher import dispatch
from tests.builders import Crm, crm_tmp_csv, months_before, utc
from vipcare.settings import Settings

MANAGER = Actor("manager", "M1")


@pytest.fixture
def crm(engine):
    c = Crm(engine)
    c.manager("M1", capacity=40)
    return c


def send_due(crm: Crm, at):
    store = MockStore()
    backends = {"sms": MockSMSBackend(store=store), "voice": MockVoiceBackend(store=store)}
    settings = Settings(database_url=str(crm.engine.url), send_rate_per_second=1000)
    summary = dispatch(
        crm.engine,
        settings.notifications(),
        crm.ruleset.contact_policy,
        at,
        lead_time=crm.ruleset.precall_lead_time,
        backends=backends,
        sleep=lambda _s: None,
        clock=lambda: 0,
    )
    return summary, store


# --- birthday ---------------------------------------------------------------------------------


def test_birthday_greets_gold_and_above_on_their_day_only(crm):
    crm.customer("GOLD", tier="gold", birthday=date(1990, 11, 21))
    crm.customer("SILVER", tier="silver", birthday=date(1990, 11, 21))
    crm.customer("SUSP", tier="platinum", status="suspended", birthday=date(1990, 11, 21))
    crm.customer("OTHERDAY", tier="gold", birthday=date(1990, 11, 22))
    report = crm.run(date(2026, 11, 21), "birthday")["birthday"]
    assert report["decided"] == 1
    msgs = crm.rows(OutboundMessage, journey="birthday")
    assert [(m.template, m.status, m.category) for m in msgs] == [
        ("greeting", "queued", "marketing")
    ]
    assert "Customer GOLD" in msgs[0].body and "回TD退订" in msgs[0].body
    assert crm.rows(JourneyOccurrence)[0].occurrence == "birthday:2026"


@pytest.mark.parametrize(
    ("as_of", "greeted"),
    [
        (date(2027, 2, 28), True),  # common year: 29 Feb birthdays greeted on 28 Feb
        (date(2027, 3, 1), False),
        (date(2028, 2, 28), False),  # leap year: they wait for their real day
        (date(2028, 2, 29), True),
    ],
)
def test_feb_29_birthdays(crm, as_of, greeted):
    crm.customer("LEAP", tier="gold", birthday=date(1992, 2, 29))
    crm.run(as_of, "birthday")
    assert len(crm.rows(OutboundMessage, journey="birthday")) == (1 if greeted else 0)


def test_diamond_birthday_gets_perk_credit_and_call_task_once_per_year(crm):
    cid = crm.customer("DIA", tier="diamond", birthday=date(1985, 11, 21), balance=Decimal("5.00"))
    crm.run(date(2026, 11, 21), "birthday", "precall_notice")
    ledger = crm.rows(CreditLedger)
    assert [(e.kind, e.amount, e.balance_after) for e in ledger] == [
        ("birthday_perk", Decimal("20.00"), Decimal("25.00"))
    ]
    assert crm.get("DIA").balance == Decimal("25.00")
    tasks = crm.rows(CallTask, customer_id=cid)
    # 21 November 2026 is a Saturday: the manager calls on Monday, announced that morning.
    assert [(t.kind, t.status, t.scheduled_on) for t in tasks] == [
        ("birthday", "awaiting_notice", date(2026, 11, 23))
    ]
    assert crm.rows(OutboundMessage, journey="precall_notice") == []
    before = crm.counts()
    crm.run(date(2026, 11, 21), "birthday")  # rerun: nothing new
    crm.run(date(2026, 11, 22), "birthday")  # next day: not their birthday
    assert crm.counts() == before
    crm.run(date(2026, 11, 23), "birthday", "precall_notice")
    notice = crm.rows(OutboundMessage, journey="precall_notice")
    assert crm.rows(CallTask, customer_id=cid)[0].notice_message_id == notice[0].id
    assert "Li Na" in notice[0].body and "+8613900000001" in notice[0].body
    assert crm.get("DIA").balance == Decimal("25.00")


def test_birthday_sms_is_scheduled_in_the_customers_local_window(crm):
    crm.customer("SH", tier="gold", birthday=date(1990, 11, 21), timezone="Asia/Shanghai")
    crm.customer("NY", tier="gold", birthday=date(1990, 11, 21), timezone="America/New_York")
    crm.customer("LDN", tier="gold", birthday=date(1990, 11, 21), timezone="Europe/London")
    at = utc(2026, 11, 21, 1, 0)  # 09:00 Shanghai, 20:00 New York (previous day), 01:00 London
    crm.run(date(2026, 11, 21), "birthday", at=at)
    by_ref = {m.to_phone: m.scheduled_for for m in crm.rows(OutboundMessage)}
    sched = {crm.get(ref).phone: ref for ref in ("SH", "NY", "LDN")}
    got = {sched[p]: t for p, t in by_ref.items()}
    assert got["SH"] == utc(2026, 11, 21, 1, 0)  # inside the window now
    assert got["NY"] == utc(2026, 11, 21, 14, 0)  # 09:00 EST
    assert got["LDN"] == utc(2026, 11, 21, 9, 0)  # 09:00 GMT


def test_opted_out_customer_gets_no_sms_and_a_no_notice_task(crm):
    cid = crm.customer("OPT", tier="diamond", birthday=date(1985, 11, 21), sms_opt_out=True)
    crm.run(date(2026, 11, 21), "birthday")
    greeting = crm.rows(OutboundMessage, journey="birthday")[0]
    assert greeting.status == "suppressed" and "opted out" in greeting.status_reason
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "ready" and task.no_notice and task.notice_message_id is None
    assert crm.rows(OutboundMessage, journey="precall_notice") == []


def test_do_not_call_customer_gets_no_call_task_of_any_kind(crm):
    pid = crm.plan("BIG", fee="298.00")
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    cid = crm.customer(
        "DNC",
        tier="diamond",
        birthday=date(1985, 11, 21),
        do_not_call=True,
        plan_id=pid,
        joined_on=date(2020, 1, 1),
    )
    crm.usage(cid, months_before(date(2026, 11, 21)), voice=10, data=100, sms=1)
    crm.run(date(2026, 11, 21))
    assert crm.rows(CallTask) == []
    assert len(crm.rows(OutboundMessage, journey="birthday")) == 1  # the greeting itself still goes


# --- grace credit -------------------------------------------------------------------------


def test_grace_credit_granted_once_per_month_with_ledger_and_sms(crm):
    crm.customer("G", tier="gold", balance=Decimal("-5.00"))
    crm.customer("P", tier="platinum", balance=Decimal("-0.01"))
    crm.customer("S", tier="silver", balance=Decimal("-30.00"))  # billing's business
    crm.customer("OK", tier="diamond", balance=Decimal("0.00"))
    crm.run(date(2026, 11, 21), "grace_credit")
    ledger = {(e.kind, e.amount, e.balance_after) for e in crm.rows(CreditLedger)}
    assert ledger == {
        ("grace_advance", Decimal("10.00"), Decimal("5.00")),
        ("grace_advance", Decimal("20.00"), Decimal("19.99")),
    }
    assert crm.get("S").balance == Decimal("-30.00")
    sms = {m.body for m in crm.rows(OutboundMessage, journey="grace_credit")}
    assert any("10.00" in b and "2026-11-24" in b for b in sms)
    assert all(m.category == "service" for m in crm.rows(OutboundMessage))
    # Negative again later in the month: no second grace this month.
    crm.update("G", balance=Decimal("-8.00"))
    crm.run(date(2026, 11, 28), "grace_credit")
    assert len(crm.rows(CreditLedger, kind="grace_advance")) == 2


def test_top_up_closes_grace_as_repaid(crm):
    from crm.importer import import_csv  # the real balances feed

    crm.customer("G", tier="gold", balance=Decimal("-15.00"))
    crm.run(date(2026, 11, 21), "grace_credit")
    assert crm.get("G").balance == Decimal("-5.00")
    feed = crm_tmp_csv("customer_id,balance,as_of\nG,40.00,2026-11-22\n")
    import_csv(
        crm.engine,
        "balances",
        feed,
        Actor("import", "test"),
        utc(2026, 11, 22, 23),  # 07:00 on the 23rd in Shanghai: the end of the 22nd has come
        "Asia/Shanghai",
    )
    crm.run(date(2026, 11, 23), "grace_credit")
    (grace,) = crm.rows(GracePeriod)
    assert (grace.status, grace.closed_on) == ("repaid", date(2026, 11, 23))
    assert crm.get("G").status == "active"


def test_still_negative_at_deadline_suspends_and_creates_followup(crm):
    cid = crm.customer("G", tier="gold", balance=Decimal("-15.00"))
    crm.run(date(2026, 11, 21), "grace_credit")
    crm.dispatch(utc(2026, 11, 21, 2))  # the grace notice reaches the customer at 10:00
    crm.run(date(2026, 11, 24), "grace_credit")  # the deadline day itself: still time to top up
    assert crm.get("G").status == "active"
    crm.run(date(2026, 11, 25), "grace_credit")  # the day after: suspended
    assert crm.get("G").status == "suspended"
    assert crm.get("G").balance == Decimal("-15.00")  # the 10.00 advance was taken back
    (grace,) = crm.rows(GracePeriod)
    assert grace.status == "suspended"
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.kind == "grace_followup"
    with transaction(crm.engine) as s:
        actions = [r.action for r in audit.list_rows(s, customer_ref="G")]
    assert "customer.suspended" in actions
    before = crm.counts()
    crm.run(date(2026, 11, 25), "grace_credit")
    crm.run(date(2026, 11, 26), "grace_credit")
    assert crm.counts() == before


# --- plan fit ---------------------------------------------------------------------------------


def _plan_fit_crm(crm: Crm, voice: int = 50, data: int = 500) -> int:
    big = crm.plan("BIG", fee="198.00", voice=1000, data=20480)
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    crm.plan("DIAMOND_ONLY", fee="8.00", voice=100, data=2048, tiers=("diamond",))
    cid = crm.customer("PF", tier="gold", plan_id=big, last_contact_on=date(2026, 11, 1))
    crm.usage(cid, months_before(date(2026, 11, 21)), voice=voice, data=data, sms=5)
    return cid


def test_plan_fit_suggests_cheapest_eligible_plan_with_saving(crm):
    cid = _plan_fit_crm(crm)
    crm.run(date(2026, 11, 21), "plan_fit")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.kind == "plan_fit"
    d = task.details
    assert (d["current_plan"], d["suggested_plan"]) == ("BIG", "SMALL")  # not the diamond-only plan
    assert (d["current_monthly_cost"], d["suggested_monthly_cost"], d["monthly_saving"]) == (
        "198.00",
        "58.00",
        "140.00",
    )


def test_plan_fit_needs_both_thresholds(crm):
    # 100.00 vs 84.00: saves 16% but only 16.00/month (< 20.00): no task.
    cur = crm.plan("CUR", fee="100.00", voice=1000, data=20480)
    crm.plan("ALT", fee="84.00", voice=1000, data=20480)
    cid = crm.customer("X", tier="gold", plan_id=cur)
    crm.usage(cid, months_before(date(2026, 11, 21)), voice=10, data=10, sms=0)
    crm.run(date(2026, 11, 21), "plan_fit")
    assert crm.rows(CallTask) == []


def test_plan_fit_counts_overage_exactly(crm):
    # SMALL with heavy use pays overage; 3 months of 300 min over = 300*0.15 = 45.00 a month.
    small = crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    crm.plan("MID", fee="78.00", voice=500, data=4096)
    cid = crm.customer("HEAVY", tier="gold", plan_id=small)
    crm.usage(cid, months_before(date(2026, 11, 21)), voice=400, data=1000, sms=0)
    crm.run(date(2026, 11, 21), "plan_fit")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.details["current_monthly_cost"] == "103.00"  # 58 + 300 * 0.15
    assert task.details["monthly_saving"] == "25.00"


def test_plan_fit_never_two_open_tasks_and_cools_down_after_decline(crm):
    cid = _plan_fit_crm(crm)
    crm.run(date(2026, 11, 21), "plan_fit")
    crm.run(date(2026, 12, 21), "plan_fit")  # task still open: no second one
    (task,) = crm.rows(CallTask, customer_id=cid)
    _make_ready(crm, task.id)
    with transaction(crm.engine) as s:
        complete(
            s,
            task.id,
            "declined",
            utc(2026, 12, 22, 3),
            date(2026, 12, 22),
            MANAGER,
            satisfaction=3,
        )
    crm.run(date(2027, 1, 21), "plan_fit")  # 30 days after the decline: cooling down
    assert len(crm.rows(CallTask, customer_id=cid)) == 1
    crm.usage(cid, months_before(date(2027, 3, 23)), voice=50, data=500, sms=5)
    crm.run(date(2027, 3, 23), "plan_fit")  # 91 days after: suggested again
    assert len(crm.rows(CallTask, customer_id=cid)) == 2


def test_plan_fit_skips_customers_without_three_full_months(crm):
    big = crm.plan("BIG", fee="198.00")
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    cid = crm.customer("NEW", tier="gold", plan_id=big)
    crm.usage(cid, months_before(date(2026, 11, 21), 2), voice=1, data=1, sms=0)
    crm.run(date(2026, 11, 21), "plan_fit")
    assert crm.rows(CallTask) == []


# --- callbacks, capacity, retries, escalation -------------------------------------------------


def test_callback_cadence_per_tier(crm):
    as_of = date(2026, 11, 23)  # a Monday
    crm.customer("D_DUE", tier="diamond", last_contact_on=as_of - timedelta(days=30))
    crm.customer("D_NOT", tier="diamond", last_contact_on=as_of - timedelta(days=29))
    crm.customer("S_DUE", tier="silver", last_contact_on=as_of - timedelta(days=180))
    crm.customer("S_NOT", tier="silver", last_contact_on=as_of - timedelta(days=179))
    crm.customer("NEVER", tier="gold", last_contact_on=None, joined_on=as_of - timedelta(days=90))
    crm.run(as_of, "callback")
    due = {crm.get_ref(t.customer_id) for t in crm.rows(CallTask)}
    assert due == {"D_DUE", "S_DUE", "NEVER"}


def test_callbacks_spread_over_capacity_on_working_days(engine):
    crm = Crm(engine)
    crm.manager("M1", capacity=2)
    friday = date(2026, 11, 20)
    for i in range(5):
        crm.customer(f"C{i}", tier="diamond", last_contact_on=friday - timedelta(days=40 + i))
    crm.run(friday, "callback")
    days = sorted(t.scheduled_on for t in crm.rows(CallTask))
    assert days == [friday, friday, date(2026, 11, 23), date(2026, 11, 23), date(2026, 11, 24)]
    # the longest-waiting customers get the first slots
    first = {crm.get_ref(t.customer_id) for t in crm.rows(CallTask) if t.scheduled_on == friday}
    assert first == {"C4", "C3"}


def _make_ready(crm: Crm, task_id: int) -> None:
    with transaction(crm.engine) as s:
        s.get(CallTask, task_id).status = "ready"


def test_no_answer_comes_back_after_two_days_at_most_three_tries(crm):
    cid = crm.customer("CB", tier="diamond", sms_opt_out=True, last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "ready"  # opted out of SMS: no notice, ready at once
    retry = RetryPolicy(retry_days=2, max_attempts=3)
    today = date(2026, 11, 23)
    for attempt in (1, 2, 3):
        with transaction(crm.engine) as s:
            done = complete(
                s, task.id, "no_answer", utc(2026, 11, 23, 4), today, MANAGER, retry=retry
            )
        if attempt < 3:
            task = crm.rows(CallTask, id=done.retry_task_id)[0]
            assert (task.attempt, task.due_on) == (attempt + 1, today + timedelta(days=2))
            today = task.due_on
        else:
            assert done.retry_task_id is None
    assert crm.get("CB").last_contact_on == date(2026, 10, 1)  # never reached
    assert len(crm.rows(CallTask, customer_id=cid)) == 3


def test_reached_outcome_sets_last_contact_and_next_due_date(crm):
    cid = crm.customer("R", tier="diamond", sms_opt_out=True, last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback")
    (task,) = crm.rows(CallTask, customer_id=cid)
    with transaction(crm.engine) as s:
        complete(
            s,
            task.id,
            "reached",
            utc(2026, 11, 23, 4),
            date(2026, 11, 23),
            MANAGER,
            satisfaction=5,
            note="happy",
        )
    assert crm.get("R").last_contact_on == date(2026, 11, 23)
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert (task.status, task.outcome, task.satisfaction) == ("done", "reached", 5)
    crm.run(date(2026, 12, 22), "callback")  # 29 days later: not due
    assert len(crm.rows(CallTask, customer_id=cid)) == 1
    crm.run(date(2026, 12, 23), "callback")  # 30 days: due again
    assert len(crm.rows(CallTask, customer_id=cid)) == 2


def test_completion_is_guarded(crm):
    cid = crm.customer("W", tier="diamond", last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "awaiting_notice"
    with transaction(crm.engine) as s, pytest.raises(InvalidTransition, match="pre-call SMS"):
        complete(s, task.id, "reached", utc(2026, 11, 23, 4), date(2026, 11, 23), MANAGER)


def test_overdue_tasks_escalate_once(crm):
    cid = crm.customer("E", tier="diamond", sms_opt_out=True, last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback")
    crm.run(date(2026, 11, 30), "callback")  # 7 days: not yet
    assert crm.rows(CallTask, customer_id=cid)[0].priority == 0
    crm.run(date(2026, 12, 1), "callback")
    crm.run(date(2026, 12, 2), "callback")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.priority == 1 and task.escalated_at is not None
    with transaction(crm.engine) as s:
        assert [r.action for r in audit.list_rows(s, actions=["task.escalated"])] == [
            "task.escalated"
        ]


# --- pre-call notice through dispatch -----------------------------------------------------------


def test_task_is_ready_two_hours_after_its_notice_is_sent(crm):
    cid = crm.customer("PC", tier="diamond", last_contact_on=date(2026, 10, 1))
    monday_9 = utc(2026, 11, 23, 1, 0)
    crm.run(date(2026, 11, 23), "callback", "precall_notice", at=monday_9)
    summary, store = send_due(crm, monday_9)
    assert summary.sent == 1 and len(store.records()) == 1
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "awaiting_notice" and task.ready_at == monday_9 + timedelta(hours=2)
    send_due(crm, monday_9 + timedelta(hours=1, minutes=59))
    assert crm.rows(CallTask, customer_id=cid)[0].status == "awaiting_notice"
    send_due(crm, monday_9 + timedelta(hours=2))
    assert crm.rows(CallTask, customer_id=cid)[0].status == "ready"


# --- whole day: idempotence and audit ---------------------------------------------------------


def test_rerunning_the_same_day_adds_nothing_and_audit_verifies(crm):
    big = crm.plan("BIG", fee="198.00")
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    as_of = date(2026, 11, 23)
    for i, tier in enumerate(["silver", "gold", "platinum", "diamond"] * 3):
        cid = crm.customer(
            f"C{i}",
            tier=tier,
            plan_id=big,
            birthday=date(1980, 11, 23 - i % 2),
            balance=Decimal("-3.00") if i % 3 == 0 else Decimal("10.00"),
            last_contact_on=as_of - timedelta(days=200) if i % 2 else None,
        )
        crm.usage(cid, months_before(as_of), voice=20, data=100, sms=1)
    first = crm.run(as_of)
    assert sum(r["decided"] for r in first.values()) > 10
    before = crm.counts()
    second = crm.run(as_of)
    assert crm.counts() == before
    assert all(r["decided"] == 0 for r in second.values())
    with transaction(crm.engine) as s:
        result = audit.verify(s)
    assert result.ok and result.rows_checked >= sum(r["decided"] for r in first.values())


def test_plan_fit_makes_one_full_pass_per_month(crm):
    _plan_fit_crm(crm)
    first = crm.run(date(2026, 11, 21), "plan_fit")["plan_fit"]
    assert first["decided"] == 1 and "pass_already_done" not in first
    # A customer added later in the month waits for next month's pass: inputs are monthly.
    late = crm.customer("LATE", tier="gold", plan_id=crm.rows(Plan, code="BIG")[0].id)
    crm.usage(late, months_before(date(2026, 11, 21)), voice=10, data=10, sms=0)
    again = crm.run(date(2026, 11, 25), "plan_fit")["plan_fit"]
    assert again["pass_already_done"] == 1 and again["decided"] == 0
    crm.usage(late, [date(2026, 11, 1)], voice=10, data=10, sms=0)
    december = crm.run(date(2026, 12, 1), "plan_fit")["plan_fit"]
    assert december["decided"] == 1
    assert {t.details["suggested_plan"] for t in crm.rows(CallTask, customer_id=late)} == {"SMALL"}


def test_two_concurrent_runs_of_the_same_day_never_double_send_or_credit(engine):
    """A second scheduler racing the first: the occurrence keys let exactly one win each intent."""
    import threading

    crm = Crm(engine)
    crm.manager("M1", capacity=500)
    for i in range(60):
        crm.customer(
            f"R{i}",
            tier="diamond",
            birthday=date(1980, 11, 23),
            balance=Decimal("-1.00"),
            last_contact_on=date(2026, 9, 1),
        )
    errors: list[BaseException] = []

    def run(run_id: str) -> None:
        try:
            ctx = crm.context(date(2026, 11, 23), run_id=run_id)
            for journey in ("grace_credit", "birthday", "callback", "precall_notice"):
                run_journey(engine, ctx, journey_for(ctx.ruleset, journey))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"sched-{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(crm.rows(CreditLedger, kind="grace_advance")) == 60
    assert len(crm.rows(CreditLedger, kind="birthday_perk")) == 60
    assert all(c.balance == Decimal("69.00") for c in (crm.get(f"R{i}") for i in range(60)))
    assert len(crm.rows(OutboundMessage, journey="birthday")) == 60
    assert len(crm.rows(CallTask, kind="callback")) == 60
    with transaction(crm.engine) as s:
        assert audit.verify(s).ok


def test_plan_fit_sql_prefilter_never_drops_a_customer_the_exact_check_accepts(crm):
    """The SQL bound is only a shortcut: the same customers as costing everyone in Python."""
    import random

    from flows.journeys.plan_fit import best_alternative, load_plans

    rng = random.Random(4)
    as_of = date(2026, 11, 23)
    months = months_before(as_of)
    plan_ids = [
        crm.plan(
            f"P{i}",
            fee=f"{fee}.00",
            voice=voice,
            data=data,
            sms=sms,
            voice_rate=rate,
            data_rate="0.0290",
            sms_rate="0.10",
            tiers=tiers,
        )
        for i, (fee, voice, data, sms, rate, tiers) in enumerate(
            [
                (38, 50, 1024, 50, "0.19", ("silver", "gold")),
                (58, 200, 3072, 100, "0.15", ("silver", "gold", "platinum")),
                (88, 500, 10240, 200, "0.12", ("gold", "platinum", "diamond")),
                (128, 800, 20480, 300, "0.10", ("gold", "platinum", "diamond")),
                (198, 1500, 40960, 500, "0.08", ("platinum", "diamond")),
            ]
        )
    ]
    usage_by_ref = {}
    for i in range(80):
        tier = rng.choice(["silver", "gold", "platinum", "diamond"])
        eligible = {
            "silver": [0, 1],
            "gold": [0, 1, 2, 3],
            "platinum": [1, 2, 3, 4],
            "diamond": [2, 3, 4],
        }[tier]
        cid = crm.customer(f"Q{i}", tier=tier, plan_id=plan_ids[rng.choice(eligible)])
        u = (rng.randrange(0, 2000), rng.randrange(0, 50000), rng.randrange(0, 600))
        crm.usage(cid, months, *u)
        usage_by_ref[f"Q{i}"] = (cid, tier, u)
    crm.run(as_of, "plan_fit")
    decided = {crm.get_ref(t.customer_id) for t in crm.rows(CallTask, kind="plan_fit")}
    trigger = crm.ruleset.journeys["plan_fit"].trigger
    with crm.session() as s:
        plans = load_plans(s)
    current = {ref: crm.get(ref).plan_id for ref in usage_by_ref}
    expected = {
        ref
        for ref, (_cid, tier, u) in usage_by_ref.items()
        if best_alternative(
            plans[current[ref]],
            tier,
            [u, u, u],
            sorted(plans.values(), key=lambda p: p.fee),
            trigger.min_saving_share,
            trigger.min_saving_amount,
        )
    }
    assert decided == expected
    assert 5 < len(expected) < 75  # the sample really exercises both sides


@pytest.mark.parametrize(
    ("current_fee", "alternative_fee", "suggested"),
    [
        ("120.00", "100.00", True),  # saves exactly 20.00 a month (16.7 %): both thresholds met
        ("120.00", "100.01", False),  # 19.99 a month
        ("140.00", "119.00", True),  # 21.00 and exactly 15 %
        ("140.00", "119.01", False),  # 20.99 but 14.99 %
    ],
)
def test_plan_fit_thresholds_at_the_boundary(crm, current_fee, alternative_fee, suggested):
    cur = crm.plan("CUR", fee=current_fee, voice=1000, data=20480, sms=500)
    crm.plan("ALT", fee=alternative_fee, voice=1000, data=20480, sms=500)
    cid = crm.customer("B", tier="gold", plan_id=cur)
    crm.usage(cid, months_before(date(2026, 11, 23)), voice=100, data=100, sms=10)
    crm.run(date(2026, 11, 23), "plan_fit")
    assert len(crm.rows(CallTask, customer_id=cid)) == (1 if suggested else 0)


def test_joining_do_not_call_cancels_open_calls_and_their_notice(crm):
    cid = crm.customer("LATER_DNC", tier="diamond", last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback", "precall_notice")
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "awaiting_notice"
    crm.update("LATER_DNC", do_not_call=True)  # e.g. from `vipcare import customers`
    report = crm.run(date(2026, 11, 24))["hygiene"]
    assert report["tasks_cancelled_do_not_call"] == 1
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.status == "cancelled"
    notice = crm.rows(OutboundMessage, id=task.notice_message_id)[0]
    assert notice.status == "expired" and notice.status_reason.startswith("do_not_call")
    with transaction(crm.engine) as s:
        rows = audit.list_rows(s, customer_ref="LATER_DNC", actions=["task.cancelled"])
    assert [r.action for r in rows] == ["task.cancelled"]
    assert crm.run(date(2026, 11, 25))["hygiene"].get("tasks_cancelled_do_not_call", 0) == 0


def test_closing_the_account_cancels_open_calls(crm):
    cid = crm.customer("CLOSING", tier="diamond", last_contact_on=date(2026, 10, 1))
    crm.run(date(2026, 11, 23), "callback")
    crm.update("CLOSING", status="closed")
    report = crm.run(date(2026, 11, 24))["hygiene"]
    assert report["tasks_cancelled_closed"] == 1
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert (task.status, task.note) == ("cancelled", "the customer's account is closed")
