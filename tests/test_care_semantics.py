"""The care as the programme describes it, checked from the customer's and the manager's side.

Each test is one defect a new user found (issue 8), written as what they would see.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crm.audit import Actor
from crm.importer import import_csv
from crm.models import CallTask, CreditLedger, Customer, GracePeriod, OutboundMessage
from rules import load_rules
from tests.builders import RULES_DIR, Crm, crm_tmp_csv, months_before, utc

MONDAY = date(2026, 11, 23)
NINE = utc(2026, 11, 23, 1, 0)  # 09:00 Shanghai


@pytest.fixture
def crm(engine) -> Crm:
    c = Crm(engine)
    c.manager("M1", capacity=40)
    return c


def _misfit(crm: Crm, ref: str, **kw: object) -> int:
    """A gold customer whose plan costs far more than their usage needs (plan-fit)."""
    big = crm.plan("BIG", fee="198.00", voice=1000, data=20480)
    crm.plan("SMALL", fee="58.00", voice=100, data=2048)
    cid = crm.customer(ref, tier="gold", plan_id=big, **kw)
    crm.usage(cid, months_before(MONDAY), voice=20, data=100, sms=1)
    return cid


# --- one pre-call text a day ----------------------------------------------------------------


def test_two_calls_on_one_day_get_one_pre_call_text_naming_the_manager_once(crm):
    """A misfit customer whose callback is also due: one call planned, one text, both ready."""
    cid = _misfit(crm, "BOTH", last_contact_on=MONDAY - timedelta(days=120))
    crm.run(MONDAY)
    tasks = crm.rows(CallTask, customer_id=cid)
    assert sorted(t.kind for t in tasks) == ["callback", "plan_fit"]
    assert {t.scheduled_on for t in tasks} == {MONDAY}  # one call covers both
    (notice,) = crm.rows(OutboundMessage, journey="precall_notice")
    assert {t.notice_message_id for t in tasks} == {notice.id}
    assert notice.body.count("Li Na") == 1
    _summary, store = crm.dispatch(NINE)
    assert len(store.records()) == 1  # not two identical texts 18 s apart
    crm.dispatch(NINE + timedelta(hours=2))
    assert {t.status for t in crm.rows(CallTask, customer_id=cid)} == {"ready"}


def test_each_customer_reads_the_managers_name_in_their_own_script(engine):
    """A Chinese text names 王静; an English one Wang Jing, when the CRM knows the spelling."""
    crm = Crm(engine)
    spelled = crm.manager("M1", name="王静", name_latin="Wang Jing")
    unspelled = crm.manager("M2", name="李娜")
    overdue = MONDAY - timedelta(days=120)
    for ref, locale, manager in (
        ("ZH", "zh-CN", spelled),
        ("EN", "en-US", spelled),
        ("EN2", "en-GB", unspelled),
    ):
        crm.customer(ref, locale=locale, manager_id=manager, last_contact_on=overdue)
    crm.run(MONDAY, "callback", "precall_notice")
    body = {m.customer_id: m.body for m in crm.rows(OutboundMessage, journey="precall_notice")}
    zh, en, en2 = (body[crm.get(ref).id] for ref in ("ZH", "EN", "EN2"))
    assert "王静" in zh and "Wang Jing" not in zh
    assert "Wang Jing" in en and "王静" not in en
    assert "李娜" in en2  # no Latin spelling on file: the name as written, never blank


def test_a_call_planned_after_todays_text_joins_it(crm):
    cid = _misfit(crm, "LATE", last_contact_on=MONDAY - timedelta(days=120))
    crm.run(MONDAY, "callback", "precall_notice")
    crm.dispatch(NINE)  # today's text goes out
    crm.run(MONDAY, "plan_fit", "precall_notice")  # a second run plans another call today
    assert len(crm.rows(OutboundMessage, journey="precall_notice")) == 1
    (notice,) = crm.rows(OutboundMessage, journey="precall_notice")
    plan_fit = crm.rows(CallTask, customer_id=cid, kind="plan_fit")[0]
    assert plan_fit.notice_message_id == notice.id
    assert plan_fit.ready_at == notice.sent_at + timedelta(hours=2)


def test_the_lead_time_comes_from_the_rule_file(crm, tmp_path: Path):
    """The demo used to drop ``lead_time_hours``; dispatch now always takes the rule's."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for f in RULES_DIR.glob("*.yaml"):
        (rules / f.name).write_text(f.read_text("utf-8"), "utf-8")
    precall = rules / "precall_notice.yaml"
    precall.write_text(
        precall.read_text("utf-8").replace("lead_time_hours: 2", "lead_time_hours: 3"), "utf-8"
    )
    crm.ruleset = load_rules(rules)
    cid = crm.customer("LEAD", tier="diamond", last_contact_on=MONDAY - timedelta(days=40))
    crm.run(MONDAY)
    crm.dispatch(NINE)
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.ready_at == NINE + timedelta(hours=3)


# --- suspended and closed lines ------------------------------------------------------------


def test_suspension_cancels_open_calls_and_withdraws_unsent_marketing(crm):
    """A line suspended at its grace deadline keeps only the follow-up about the suspension."""
    cid = crm.customer(
        "SUSP",
        tier="gold",
        balance=Decimal("-15.00"),
        birthday=date(1990, 11, 26),
        last_contact_on=MONDAY - timedelta(days=100),
    )
    crm.run(MONDAY)  # grace advance + a callback
    crm.dispatch(utc(2026, 11, 23, 2))  # the grace notice goes out at 10:00
    crm.run(date(2026, 11, 26), "birthday")  # a greeting queued for Thursday evening
    crm.run(date(2026, 11, 27))  # deadline 26th passed without a top-up: suspended
    assert crm.get("SUSP").status == "suspended"
    tasks = {t.kind: t for t in crm.rows(CallTask, customer_id=cid)}
    assert tasks["callback"].status == "cancelled"
    assert tasks["callback"].note == "the customer's line is suspended"
    assert tasks["grace_followup"].status in ("awaiting_notice", "ready")
    greeting = crm.rows(OutboundMessage, journey="birthday")[0]  # never dispatched: still queued
    assert (greeting.status, greeting.status_reason) == (
        "expired",
        "suspended: the customer's line is suspended",
    )
    suspended = [m for m in crm.rows(OutboundMessage) if m.template == "suspended_notice"]
    assert suspended and suspended[0].status == "queued"
    assert "suspended" in suspended[0].body or "暂停" in suspended[0].body


def test_an_imported_suspension_is_swept_the_next_morning(crm):
    cid = crm.customer("BILLING", tier="gold", balance=Decimal("-4.00"))
    crm.customer("OTHER", tier="diamond", last_contact_on=MONDAY - timedelta(days=40))
    crm.run(MONDAY)
    with crm.session() as s, s.begin():  # the operator's billing suspends the line meanwhile
        s.get(Customer, cid).status = "suspended"  # type: ignore[union-attr]
    crm.run(MONDAY + timedelta(days=1))
    (grace,) = crm.rows(GracePeriod, customer_id=cid)
    assert grace.status == "cancelled"
    notice = crm.rows(OutboundMessage, journey="grace_credit", customer_id=cid)[0]
    assert notice.status == "expired" and "no longer holds" in notice.status_reason
    kinds = Counter(e.kind for e in crm.rows(CreditLedger, customer_id=cid))
    assert kinds == {"grace_advance": 1, "grace_cancelled": 1}
    assert crm.get("BILLING").balance == Decimal("-4.00")


def test_closing_an_account_withdraws_every_queued_text(crm):
    crm.customer("BYE", tier="gold", birthday=date(1990, 11, 23))
    crm.run(MONDAY, "birthday")
    crm.update("BYE", status="closed")
    crm.run(MONDAY)
    (greeting,) = crm.rows(OutboundMessage, journey="birthday")
    assert (greeting.status, greeting.status_reason) == (
        "expired",
        "closed: the customer's account is closed",
    )


# --- capacity counts every call ----------------------------------------------------------------


def test_no_manager_is_planned_beyond_capacity_whatever_the_kind_of_call(crm):
    """Grace follow-ups, birthdays and callbacks together stay within 3 calls a day."""
    m = crm.manager("SMALL", capacity=3, name="Wang Wu")
    recent = MONDAY - timedelta(days=1)  # no callback due for these
    for i in range(5):
        crm.customer(
            f"G{i}", tier="gold", manager_id=m, balance=Decimal("-9.00"), last_contact_on=recent
        )
    for i in range(3):
        crm.customer(
            f"B{i}",
            tier="diamond",
            manager_id=m,
            birthday=date(1980, 11, 27),
            last_contact_on=recent,
        )
    for i in range(4):
        crm.customer(f"C{i}", tier="diamond", manager_id=m, last_contact_on=date(2026, 10, 1))
    crm.run(MONDAY)
    crm.dispatch(utc(2026, 11, 23, 2))  # the grace notices go out at 10:00
    crm.run(date(2026, 11, 27))  # five grace follow-ups, three birthdays, callbacks already planned
    load = Counter(
        (t.scheduled_on, t.customer_id)
        for t in crm.rows(CallTask, manager_id=m)
        if t.status in ("awaiting_notice", "ready")
    )
    calls_per_day = Counter(day for day, _ in load)
    assert max(calls_per_day.values()) <= 3, calls_per_day
    assert sum(calls_per_day.values()) == 5 + 3 + 4


# --- grace: an advance, repaid only by a real top-up ---------------------------------------------


def _feed(crm: Crm, ref: str, balance: str, day: str, at_hour: int = 0) -> None:
    path = crm_tmp_csv(f"customer_id,balance,as_of\n{ref},{balance},{day}\n")
    # the file as of the end of ``day`` arrives the next morning (08:00 Shanghai), before
    # that day's run
    at = utc(int(day[:4]), int(day[5:7]), int(day[8:10]), at_hour) + timedelta(days=1)
    import_csv(crm.engine, "balances", path, Actor("import", "billing"), at, "Asia/Shanghai")


def test_the_advance_clearing_a_small_debt_is_not_a_repayment(crm):
    """-3.00 plus the 10.00 advance is 7.00, but the customer paid nothing: suspended."""
    crm.customer("SMALLDEBT", tier="gold", balance=Decimal("-3.00"))
    crm.run(MONDAY, "grace_credit")
    crm.dispatch(utc(2026, 11, 23, 2))  # the grace notice goes out at 10:00
    assert crm.get("SMALLDEBT").balance == Decimal("7.00")
    _feed(crm, "SMALLDEBT", "7.00", "2026-11-25")  # billing shows the advance, no top-up
    crm.run(date(2026, 11, 25), "grace_credit")
    assert crm.rows(GracePeriod)[0].status == "open"
    crm.run(date(2026, 11, 27), "grace_credit")
    (grace,) = crm.rows(GracePeriod)
    assert grace.status == "suspended"
    ledger = [(e.kind, e.amount, e.balance_after) for e in crm.rows(CreditLedger)]
    assert ledger == [
        ("grace_advance", Decimal("10.00"), Decimal("7.00")),
        ("grace_expired", Decimal("-10.00"), Decimal("-3.00")),
    ]


def test_a_real_top_up_repays_and_the_advance_is_taken_back(crm):
    crm.customer("PAYS", tier="gold", balance=Decimal("-3.00"))
    crm.run(MONDAY, "grace_credit")
    _feed(crm, "PAYS", "30.00", "2026-11-24")  # topped up 23.00
    crm.run(date(2026, 11, 25), "grace_credit")
    (grace,) = crm.rows(GracePeriod)
    assert (grace.status, grace.closed_on) == ("repaid", date(2026, 11, 25))
    assert crm.get("PAYS").status == "active"
    assert crm.get("PAYS").balance == Decimal("20.00")
    kinds = [(e.kind, e.amount) for e in crm.rows(CreditLedger)]
    assert kinds == [("grace_advance", Decimal("10.00")), ("grace_repaid", Decimal("-10.00"))]


def test_the_grace_text_says_what_happens_to_the_line(crm):
    crm.customer("DEEP", tier="gold", balance=Decimal("-21.58"), locale="en")
    crm.run(MONDAY, "grace_credit")
    (sms,) = crm.rows(OutboundMessage, journey="grace_credit")
    assert sms.body == (
        "Dear Customer DEEP, your balance is -21.58 yuan. We have advanced you 10.00 yuan and"
        " will keep your line open until 2026-11-26. Please top up at least 21.58 yuan by then"
        " to avoid suspension. Questions? Call 10086."
    )
    assert sms.valid_until == utc(2026, 11, 26, 16, 0)  # the end of the deadline, Shanghai


def test_a_line_is_suspended_only_once_the_deadline_day_is_over_where_the_customer_lives(crm):
    """Found by the outage scenario: New York's 26th ends 13 hours after Shanghai's."""
    crm.customer("NYC", tier="gold", balance=Decimal("-15.00"), timezone="America/New_York")
    crm.run(MONDAY, "grace_credit")  # deadline 2026-11-26
    crm.dispatch(utc(2026, 11, 23, 15))  # 10:00 in New York: the notice goes out
    crm.run(date(2026, 11, 27), "grace_credit", at=utc(2026, 11, 27, 0))  # 19:00 on the 26th there
    assert crm.get("NYC").status == "active"
    crm.run(date(2026, 11, 28), "grace_credit", at=utc(2026, 11, 28, 0))
    assert crm.get("NYC").status == "suspended"


def test_a_late_day_never_costs_a_plan_on_usage_that_arrived_after_its_instant(crm):
    from flows.journeys.engine import run_journey
    from flows.journeys.registry import journey_for

    big = crm.plan("BIG", fee="198.00", voice=3000, data=40960)
    crm.plan("SMALL", fee="58.00", voice=300, data=4096)
    cid = crm.customer("P", tier="gold", plan_id=big)
    crm.usage(
        cid, months_before(MONDAY), voice=100, data=1000, sms=0, received_at=utc(2026, 11, 25)
    )
    late = dataclasses.replace(crm.context(MONDAY), now=utc(2026, 11, 25, 3))  # caught up later
    report = run_journey(crm.engine, late, journey_for(crm.ruleset, "plan_fit")).as_dict()
    assert (report["candidates"], report["decided"]) == (0, 0)  # not known then: no usage
    assert crm.rows(CallTask) == []
    crm.run(date(2026, 11, 25), "plan_fit")  # on time, after the figures came: it acts
    (task,) = crm.rows(CallTask, customer_id=cid)
    assert task.details["suggested_plan"] == "SMALL"
