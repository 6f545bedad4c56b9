"""A sixth journey added in YAML alone: validation, preview, explain, run, rerun, audit.

Marketing ops write one file; no Python changes. The same engine runs it with
the same guarantees as the shipped journeys.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crm import audit
from crm.db import transaction
from crm.models import AuditLog, CallTask, CreditLedger, JourneyOccurrence, OutboundMessage
from flows.journeys.explain import explain
from flows.journeys.preview import run_preview
from rules import RulesValidationError, load_rules
from tests.builders import RULES_DIR, Crm

ANNIVERSARY = """\
# Thank VIPs on the anniversary of the day they joined.
journey: anniversary
kind: generic
description: Joining anniversary thanks
audience:
  all:
    - status: active
    - tier: {gte: gold}
trigger:
  date_field: joined_on
limits:
  once_per: year
actions:
  - send_sms: {template: thanks}
  - create_task:
      reason: {zh-CN: "入网周年回访", en: "Joining anniversary call"}
      priority: 2
      when: {tier: diamond}
  - grant_credit: {amount: "5.00", when: {tier: {gte: platinum}}}
templates:
  thanks:
    category: service
    text:
      zh-CN: "尊敬的{{ name }}，感谢您又一年的陪伴！"
      en: "Dear {{ name }}, thank you for another year with us!"
"""
DAY = date(2026, 11, 24)  # a Tuesday


def rules_dir(tmp_path: Path, **files: str) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("*.json"))
    for name, text in files.items():
        (target / f"{name}.yaml").write_text(text, encoding="utf-8")
    return target


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesValidationError) as caught:
        load_rules(rules_dir(tmp_path, anniversary=text))
    return [f"{i.line}: {i.message} ({i.suggestion})" for i in caught.value.issues]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "kind: generic\n",
            "",
            "2: unknown journey 'anniversary'; the built-in journeys are birthday, plan_fit,"
            " grace_credit, precall_notice, callback; a new journey needs the line kind: generic"
            " (add the line: kind: generic)",
        ),
        (
            "  date_field: joined_on\n",
            '  date_field: joined_on\n  on_date: "12-24"\n',
            "9: trigger: give exactly one of condition, date_field or on_date; got date_field,"
            " on_date (None)",
        ),
        (
            "      priority: 2\n",
            "      priority: 12\n",
            "17: priority: expected a value <= 9, got 12 (None)",
        ),
        (
            '{amount: "5.00"',
            '{amount: "500.00"',
            "19: a credit of 500.00 is above the anniversary cap of 50.00 (max_credit in"
            " contact_policy.yaml) (amounts are in yuan with 2 decimals: did you mean 5.00?)",
        ),
        (
            "感谢您又一年的陪伴！",
            "您的余额为{{ balance }}元",
            "24: template 'thanks' (zh-CN): unknown template variable 'balance'; the anniversary"
            " journey provides: name, tier, manager_name, manager_phone, hotline, date, points"
            " (None)",
        ),
        (
            "  once_per: year",
            "  once_per: month",
            "1: a date_field trigger fires once a year (once_per: year) or on the date itself"
            " (once_per: ever), not monthly (None)",
        ),
    ],
)
def test_validation_errors_point_at_the_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in ANNIVERSARY
    assert problems(tmp_path, ANNIVERSARY.replace(old, new, 1)) == [expected]


def test_a_care_call_needs_a_reason(tmp_path: Path) -> None:
    text = ANNIVERSARY.replace(
        '      reason: {zh-CN: "入网周年回访", en: "Joining anniversary call"}\n', ""
    )
    assert problems(tmp_path, text) == [
        "15: a care call task needs a reason: the manager reads it to know why to call"
        ' (add reason: "…" (or a text per locale: {zh-CN: "…", en: "…"}))'
    ]


@pytest.fixture
def crm(engine, tmp_path: Path) -> Crm:
    c = Crm(engine, load_rules(rules_dir(tmp_path, anniversary=ANNIVERSARY)))
    c.manager("M1", capacity=40)
    recent = DAY - timedelta(days=2)  # no callbacks due: only the new journey acts
    c.customer("DIA", tier="diamond", joined_on=date(2019, 11, 24), last_contact_on=recent)
    c.customer("PLAT", tier="platinum", joined_on=date(2021, 11, 24), last_contact_on=recent)
    c.customer("GOLD", tier="gold", joined_on=date(2022, 11, 24), locale="en",
               last_contact_on=recent)  # fmt: skip
    c.customer("SILVER", tier="silver", joined_on=date(2020, 11, 24), last_contact_on=recent)
    c.customer("OTHERDAY", tier="gold", joined_on=date(2020, 11, 25), last_contact_on=recent)
    return c


def test_preview_explain_run_rerun_and_audit(crm: Crm) -> None:
    preview = run_preview(crm.engine, crm.ruleset, "anniversary", DAY, limit=10)
    assert (preview.audience_count, preview.acting_count) == (4, 3)
    assert {c["customer_id"] for c in preview.customers} == {"DIA", "PLAT", "GOLD"}
    before = crm.counts()

    yes = explain(crm.engine, crm.ruleset, "anniversary", "DIA", DAY)
    assert yes.would_act and yes.occurrence == "anniversary:2026"
    assert yes.decision == [
        "send thanks",
        "grant credit 5.00 (care_credit)",
        "call task care (入网周年回访)",
    ]
    no = explain(crm.engine, crm.ruleset, "anniversary", "OTHERDAY", DAY)
    assert not no.would_act
    assert no.reason == "joined_on falls on 11-24 (every year): 2020-11-25"
    assert crm.counts() == before  # preview and explain change nothing

    report = crm.run(DAY)["anniversary"]
    assert report["decided"] == 3
    sms = {m.customer_id: m.body for m in crm.rows(OutboundMessage, journey="anniversary")}
    assert sorted(sms.values()) == [
        "Dear Customer GOLD, thank you for another year with us!",
        "尊敬的Customer DIA，感谢您又一年的陪伴！",
        "尊敬的Customer PLAT，感谢您又一年的陪伴！",
    ]
    (task,) = crm.rows(CallTask, journey="anniversary")
    assert (task.kind, task.priority, task.details["reason"]) == ("care", 2, "入网周年回访")
    credits = {(e.customer_id, e.kind, e.amount) for e in crm.rows(CreditLedger)}
    assert {(k, a) for _, k, a in credits} == {("care_credit", Decimal("5.00"))}
    assert len(credits) == 2  # diamond and platinum

    after = crm.counts()
    crm.run(DAY)  # a rerun adds nothing
    assert crm.counts() == after
    crm.run(DAY + timedelta(days=1))  # the next day is OTHERDAY's anniversary, nobody else's
    decided = [(o.occurrence, crm.get_ref(o.customer_id)) for o in crm.rows(JourneyOccurrence)]
    assert sorted(d for d in decided if d[0].startswith("anniversary")) == [
        ("anniversary:2026", "DIA"),
        ("anniversary:2026", "GOLD"),
        ("anniversary:2026", "OTHERDAY"),
        ("anniversary:2026", "PLAT"),
    ]
    with transaction(crm.engine) as s:
        assert audit.verify(s).ok
        actions = s.query(AuditLog.action).filter(AuditLog.rule_id == "anniversary").all()
    assert sorted({a for (a,) in actions}) == ["journey.anniversary", "ledger.credit"]
    assert {o.occurrence for o in crm.rows(JourneyOccurrence, journey="anniversary")} == {
        "anniversary:2026"
    }


def test_the_shipped_points_reminder_once_a_month_while_points_stay_high(
    engine, tmp_path: Path
) -> None:
    text = (RULES_DIR / "points_reminder.yaml").read_text("utf-8")
    crm = Crm(engine, load_rules(rules_dir(tmp_path, points_reminder=text.replace(
        "enabled: false", "enabled: true"))))  # fmt: skip
    crm.manager("M1", capacity=40)
    recent = DAY - timedelta(days=2)
    crm.customer("RICH", tier="gold", points=25000, last_contact_on=recent)
    crm.customer("SOME", tier="gold", points=6000, last_contact_on=recent)
    crm.customer("FEW", tier="gold", points=4999, last_contact_on=recent)
    crm.run(DAY)
    texts = crm.rows(OutboundMessage, journey="points_reminder")
    assert sorted(crm.get_ref(m.customer_id) for m in texts) == ["RICH", "SOME"]
    assert "25000" in next(m.body for m in texts if crm.get_ref(m.customer_id) == "RICH")
    assert [crm.get_ref(t.customer_id) for t in crm.rows(CallTask, journey="points_reminder")] == [
        "RICH"
    ]
    crm.run(DAY + timedelta(days=3))
    assert len(crm.rows(OutboundMessage, journey="points_reminder")) == 2  # once a month
    crm.run(date(2026, 12, 1))
    assert len(crm.rows(OutboundMessage, journey="points_reminder")) == 4  # next month again


def test_the_shipped_club_invitation_fires_on_its_day_only(engine, tmp_path: Path) -> None:
    text = (RULES_DIR / "club_event.yaml").read_text("utf-8")
    crm = Crm(engine, load_rules(rules_dir(tmp_path, club_event=text.replace(
        "enabled: false", "enabled: true"))))  # fmt: skip
    crm.manager("M1", capacity=40)
    cid = crm.customer("FAN", tier="diamond", last_contact_on=date(2026, 12, 18))
    with crm.session() as s, s.begin():
        from crm.models import CustomerClub

        s.add(CustomerClub(customer_id=cid, club="music"))
    crm.run(date(2026, 12, 19))
    assert crm.rows(OutboundMessage, journey="club_event") == []
    crm.run(date(2026, 12, 20))
    (invite,) = crm.rows(OutboundMessage, journey="club_event")
    assert invite.category == "marketing" and "回TD退订" in invite.body
    assert [e.amount for e in crm.rows(CreditLedger)] == [Decimal("5.00")]
    crm.run(date(2026, 12, 20))
    assert len(crm.rows(OutboundMessage, journey="club_event")) == 1
