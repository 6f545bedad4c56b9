"""Every workspace page, in zh-CN and in en, shows only that language: no raw status,
kind, outcome or reason code, no English sentence on a Chinese page, no Chinese on an
English one (``tests/web_lang.py`` says what counts).

The world has a task of every kind the shipped rules make (callback, birthday, a YAML
journey's care call for an English-speaking customer), a cancelled one, a done one and
its retry, a rescheduled one, and messages queued, sent, failed at the provider, and
expired (withdrawn when the line was suspended), all made by the real journeys,
dispatcher and routes.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm.db import transaction
from crm.models import CallTask, Customer, OutboundMessage, QaSample
from notifications.backends.mock import MockSMSBackend, MockVoiceBackend
from notifications.dispatcher import dispatch
from rules import load_rules
from tests.builders import RULES_DIR
from tests.web_lang import language_problems, visible_texts
from tests.web_support import AS_OF, NAMES, World, build_world, csrf_of, local, sign_in

pytest_plugins = ["tests.web_support"]

EXTRA = {
    "F": "Fay Points",
    "G": "Gao Grace",
    "H": "Hal Unreachable",
    "J": "Jin Suspended",
    "K": "Kai Birthday",
}
DATA = [
    *NAMES.values(),
    *EXTRA.values(),
    "Li Na",
    "Zhang Wei",
    "Wang Supervisor",
    "Plan P128",
    "customer travelling",  # what the manager typed as the reschedule reason
    "Happy with the new plan",  # and as a call note
]


def _rules_with_the_points_journey(tmp_path: Path) -> Any:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("*.py", "*.json", "__*"))
    path = target / "points_reminder.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("enabled: false", "enabled: true"))
    return load_rules(target)


def _dispatch(world: World, at: Any, unreachable: str) -> None:
    sms = MockSMSBackend(store=world.store)
    sms.fail_number(unreachable, "21211")
    dispatch(
        world.engine,
        world.settings.notifications(),
        world.crm.ruleset.contact_policy,
        at,
        lead_time=world.crm.ruleset.precall_lead_time,
        backends={"sms": sms, "voice": MockVoiceBackend(store=world.store)},
    )


def rich_world(engine: Any, tmp_path: Path) -> World:
    world = build_world(engine)
    crm = world.crm
    crm.ruleset = _rules_with_the_points_journey(tmp_path)
    m1 = crm.manager_id("M1")
    long_ago = AS_OF - timedelta(days=40)
    crm.customer(
        "F", name=EXTRA["F"], tier="gold", points=30000, locale="en", manager_id=m1,
        last_contact_on=AS_OF - timedelta(days=5),
    )  # fmt: skip
    crm.customer("G", name=EXTRA["G"], tier="diamond", balance=Decimal("-20.00"), manager_id=m1)
    h = crm.customer("H", name=EXTRA["H"], tier="diamond", last_contact_on=long_ago, manager_id=m1)
    crm.customer("J", name=EXTRA["J"], tier="diamond", last_contact_on=long_ago, manager_id=m1)
    crm.customer(
        "K", name=EXTRA["K"], tier="diamond", birthday=date(1985, AS_OF.month, AS_OF.day),
        last_contact_on=AS_OF - timedelta(days=3), manager_id=m1,
    )  # fmt: skip
    crm.run(AS_OF, at=local(AS_OF, 11, 12))  # the whole day again: only the new customers
    crm.update("J", status="suspended")
    crm.run(AS_OF, at=local(AS_OF, 11, 14))  # hygiene cancels J's call, withdraws its notice
    with transaction(engine) as s:
        phone = s.scalar(select(Customer.phone).where(Customer.id == h))
    _dispatch(world, local(AS_OF, 11, 20), str(phone))
    return world


def _client(world: World, login: str, locale: str) -> TestClient:
    c = TestClient(world.app(), base_url="http://testserver", headers={"accept-language": locale})
    assert sign_in(c, login).status_code == 303
    return c


def work_some_calls(world: World) -> None:
    """A reached call with a note, one not answered (a retry follows), one rescheduled,
    and a QA sample drawn and reviewed: every kind of timeline entry a manager makes."""
    m1 = _client(world, "M1", "en")
    token = csrf_of(m1.get("/day").text)
    a, b, d = world.tasks["A"], world.tasks["B"], world.tasks["D"]
    done = {"csrf_token": token, "outcome": "reached", "satisfaction": "5"}
    done["note"] = "Happy with the new plan"
    assert m1.post(f"/tasks/{a}/complete", data=done, follow_redirects=False).status_code == 303
    missed = {"csrf_token": token, "outcome": "no_answer"}
    assert m1.post(f"/tasks/{d}/complete", data=missed, follow_redirects=False).status_code == 303
    moved = {"csrf_token": token, "to": (AS_OF + timedelta(days=1)).isoformat()}
    moved["reason"] = "customer travelling"
    assert m1.post(f"/tasks/{b}/reschedule", data=moved, follow_redirects=False).status_code == 303
    s1 = _client(world, "S1", "en")
    token = csrf_of(s1.get("/qa").text)
    draw = {"csrf_token": token, "day": AS_OF.isoformat()}
    assert s1.post("/qa/draw", data=draw, follow_redirects=False).status_code == 303


def _pages(world: World) -> tuple[list[str], list[str]]:
    with transaction(world.engine) as s:
        task_ids = list(s.scalars(select(CallTask.id).order_by(CallTask.id)))
        refs = list(s.scalars(select(Customer.external_id).order_by(Customer.external_id)))
        samples = list(s.scalars(select(QaSample.id)))
    manager = [
        "/day",
        "/tasks",
        "/tasks?status=done",
        "/tasks?status=cancelled",
        "/tasks?kind=care",
        "/settings",
        "/tasks/999999999",  # not found
        "/team",  # not allowed
        *(f"/tasks/{i}" for i in task_ids),
        *(f"/customers/{r}" for r in refs if r != "C"),
    ]
    supervisor = [
        "/team",
        "/qa",
        "/qa?reviewed=no",
        "/tasks",
        "/day?manager=M1",
        *(f"/qa/{i}" for i in samples),
        "/customers/C",
    ]
    return manager, supervisor


@pytest.fixture
def world(engine, cheap_argon2, tmp_path) -> World:
    built = rich_world(engine, tmp_path)
    work_some_calls(built)
    return built


def test_the_world_has_what_the_walk_is_for(world):
    """The states the language walk must see really exist (else it proves nothing)."""
    with transaction(world.engine) as s:
        kinds = set(s.scalars(select(CallTask.kind)))
        statuses = set(s.scalars(select(CallTask.status)))
        messages = set(s.scalars(select(OutboundMessage.status)))
        samples = s.scalar(select(QaSample.id))
    assert {"callback", "birthday", "care", "grace_followup"} - kinds <= {"grace_followup"}
    assert {"ready", "done", "cancelled", "awaiting_notice"} <= statuses
    assert {"sent", "failed", "expired"} <= messages
    assert samples is not None


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_every_page_is_in_the_readers_language(world, locale):
    manager, supervisor = _pages(world)
    found: dict[str, list[str]] = {}
    for login, paths in (("M1", manager), ("S1", supervisor)):
        c = _client(world, login, locale)
        for path in paths:
            page = c.get(path)
            assert page.status_code in (200, 403, 404), (path, page.status_code)
            assert f'<html lang="{locale}">' in page.text, path
            problems = language_problems(page.text, locale, DATA)
            if problems:
                found[f"{login} {path}"] = problems
    signed_out = TestClient(world.app(), headers={"accept-language": locale})
    problems = language_problems(signed_out.get("/login").text, locale, DATA)
    if problems:
        found["/login"] = problems
    assert not found, "\n".join(f"{page}: {p}" for page, ps in found.items() for p in ps)


def test_the_raw_codes_the_issue_found_are_labelled(world):
    """``care``, ``expired`` and "customer opted out of SMS" were shown as stored."""
    zh = _client(world, "M1", "zh-CN")
    care = zh.get("/tasks?kind=care").text
    assert "关怀跟进" in care and "积分兑换提醒" in care  # the kind, the YAML's zh reason
    assert "不发短信（客户已退订短信）" in zh.get(f"/tasks/{world.tasks['A']}").text
    j = zh.get("/customers/J").text
    assert "已过期" in j and "客户线路已停机" in j
    h = zh.get("/customers/H").text
    assert "短信服务商未能发送（错误代码 21211）" in h
    en = _client(world, "M1", "en")
    care = en.get("/tasks?kind=care").text
    assert "care call" in care and "Points reminder: suggest a reward to redeem" in care
    team = _client(world, "S1", "zh-CN").get("/team").text
    assert "已过期" in " ".join(visible_texts(team))  # the messages chart's expired status


def test_the_helper_catches_what_it_is_for():
    """The check itself: each kind of slip is reported, a clean page is not."""
    zh = '<html lang="zh-CN"><body><p>状态：expired</p><p>不发短信（customer opted out of SMS）</p>'
    zh += '<p lang="en">English</p>'
    zh += '<blockquote class="sms">Dear Fay, hello there friend</blockquote>'
    problems = language_problems(zh, "zh-CN")
    assert any("'expired'" in p for p in problems)
    assert any("English on a Chinese page" in p for p in problems)
    assert not any("English'" in p or "Dear" in p for p in problems)
    en = '<html lang="en"><body><p title="已完成">done</p><p>awaiting_notice</p>'
    en += '<a lang="zh-CN">中文</a></body></html>'
    problems = language_problems(en, "en")
    assert any("Chinese on an English page" in p for p in problems)
    assert any("'awaiting_notice'" in p for p in problems)
    assert not any("中文" in p for p in problems)
    assert language_problems('<html lang="en"><p>Ready to call</p></html>', "en") == []
